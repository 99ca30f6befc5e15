"""The floor of any forwarding gateway in Python: Starlette on uvicorn (uvloop, httptools)
with one POST route that turns the seed's body into one OpenAI-compatible request, sends it
with aiohttp (one pooled session) and answers the reply's text as JSON. No cache, no guard,
no validation, no log, no metrics: one upstream request per call, as the gateway's miss.

Run: ``python -m bench.naive_forwarder PORT UPSTREAM_URL``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:7860"
session: aiohttp.ClientSession | None = None


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    payload = {
        "model": "llama-2-7b-chat",
        "messages": [{"role": "user", "content": body["inputs"]}],
        "max_tokens": body.get("parameters", {}).get("max_new_tokens", 64),
    }
    assert session is not None
    async with session.post(f"{UPSTREAM}/v1/chat/completions", data=orjson.dumps(payload),
                            headers={"Content-Type": "application/json"}) as reply:  # fmt: skip
        answer = orjson.loads(await reply.read())
    text = answer["choices"][0]["message"]["content"]
    return Response(orjson.dumps({"generated_text": text, "model": answer["model"]}),
                    media_type="application/json")  # fmt: skip


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    global session
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    yield
    await session.close()


app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])], lifespan=lifespan)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
