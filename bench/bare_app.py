"""The floor any Starlette gateway pays: uvicorn (uvloop, httptools) serving one POST route
that reads the body, parses it with orjson and answers a fixed 300-byte JSON.

Run: ``python -m bench.bare_app PORT``.
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

REPLY = orjson.dumps({"generated_text": "x" * 253, "model": "llama-2-7b-chat"})


async def chat(request: Request) -> Response:
    orjson.loads(await request.body())
    return Response(REPLY, media_type="application/json")


app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
