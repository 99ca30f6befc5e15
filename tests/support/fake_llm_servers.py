"""In-test servers that speak the wire formats of text-generation-inference and of
OpenAI-compatible servers (vLLM-style), error bodies included, since the real ones need a GPU.

Replies echo the prompt so tests can check what arrived. Words in the prompt choose a fault:
VALIDATION (a context-length error, 422 / 400), REFUSED (another validation error),
OVERLOADED (429), GENERROR (424 / 500), STREAMERROR (an error event
after the first token), SLOW (a stream of a word every 0.1 s for 30 s). Every request is
recorded with its headers and body, and when a client hangs up on a stream, the time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

# The answer of the servers' deterministic mode: what a greedy model would always say.
ANSWER = "Rest well and drink water."


def continue_answer(written: str, answer: str = ANSWER) -> list[str]:
    """The pieces a deterministic model generates after ``written`` (the start of its answer
    already in the prompt): the rest of ``answer``, or all of it."""
    written = written.strip()
    rest = answer[len(written) :] if written and answer.startswith(written) else answer
    return re.findall(r"\s*\S+", rest)


def written_after_inst(prompt: str) -> str:
    """The start of the answer a Llama 2 prompt already holds: its text after ``[/INST]``."""
    return prompt.rsplit("[/INST]", 1)[-1] if "[/INST]" in prompt else ""


class Cut(Exception):
    """Raised inside a streamed body: the server drops the connection mid-stream."""


def _json(payload: Any, status: int = 200) -> Response:
    # Compact JSON, as serde_json and FastAPI write it.
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


class FakeServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        # When each generation request arrived (monotonic time).
        self.arrivals: list[float] = []
        # Answers a test scripted for the next requests, in order: (status, body, headers).
        self.script: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        # While True, every generation is a 503 with an explanation (an outage).
        self.down = False
        # Models (as named upstream) that answer 503 while the others work.
        self.down_models: set[str] = set()
        # When each client of a SLOW stream hung up (monotonic time), in order.
        self.hung_up: list[float] = []
        # Deterministic mode: streams ANSWER continued from the prompt (see continue_answer).
        self.answer = False
        # In deterministic mode: drop the connection, or fall silent, after this many tokens.
        self.cut_after: int | None = None
        self.stall_after: int | None = None
        # Seconds a stream waits before its answer begins (a slow first token).
        self.first_token_delay = 0.0

    async def pieces(self, pieces: list[str], frame: Callable[[int, str, bool], bytes]) -> Any:
        """A stream of ``frame(index, piece, last)``, cut or stalled as the server is set."""
        for index, piece in enumerate(pieces):
            if index == self.cut_after:
                raise Cut("the test server drops this stream")
            if index == self.stall_after:
                await asyncio.sleep(3600)
            yield frame(index, piece, index == len(pieces) - 1)
            await asyncio.sleep(0.01)

    def slow_stream(self, frame: Callable[[int], bytes]) -> StreamingResponse:
        """``frame(i)`` every 0.1 s for 30 s; a client that hangs up is recorded."""

        async def events() -> AsyncIterator[bytes]:
            try:
                for index in range(300):
                    yield frame(index)
                    await asyncio.sleep(0.1)
            except BaseException:  # cancelled: the server saw the client disconnect
                self.hung_up.append(time.monotonic())
                raise

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _record(self, request: Request) -> dict[str, Any]:
        body = orjson.loads(await request.body())
        self.requests.append((request.url.path, dict(request.headers), body))
        self.arrivals.append(time.monotonic())
        return body

    def scripted(self, body: dict[str, Any]) -> Response | None:
        """The answer a test scripted or an outage imposes on this request, if any."""
        if self.script:
            status, payload, headers = self.script.pop(0)
            return Response(orjson.dumps(payload), status_code=status, headers=headers,
                            media_type="application/json")  # fmt: skip
        if self.down or body.get("model") in self.down_models:
            return _json({"error": "Service temporarily overloaded, try again"}, 503)
        return None


class FakeTGI(FakeServer):
    """text-generation-inference's /generate, /generate_stream and /health."""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/generate", self.generate, methods=["POST"]),
                Route("/generate_stream", self.generate_stream, methods=["POST"]),
                Route("/health", lambda request: Response(status_code=200)),
            ]
        )

    @staticmethod
    def _fault(prompt: str) -> Response | None:
        if "REFUSED" in prompt:
            return _json(
                {
                    "error": "Input validation error: `temperature` must be strictly positive",
                    "error_type": "validation",
                },
                422,
            )
        if "VALIDATION" in prompt:
            return _json(
                {
                    "error": "Input validation error: `inputs` must have less than 4096 "
                    "tokens. Given: 5000",
                    "error_type": "validation",
                },
                422,
            )
        if "OVERLOADED" in prompt:
            return _json({"error": "Model is overloaded", "error_type": "overloaded"}, 429)
        if "GENERROR" in prompt:
            return _json(
                {
                    "error": "Request failed during generation: Server error: CUDA out of memory",
                    "error_type": "generation",
                },
                424,
            )
        return None

    @staticmethod
    def _words(body: dict[str, Any]) -> tuple[list[str], str]:
        words = ["Echo:"] + body["inputs"].split()[-6:]
        limit = body["parameters"].get("max_new_tokens", 20)
        finish = "length" if len(words) > limit else "eos_token"
        return words[:limit], finish

    async def generate(self, request: Request) -> Response:
        body = await self._record(request)
        if (fault := self.scripted(body) or self._fault(body["inputs"])) is not None:
            return fault
        words, finish = self._words(body)
        return _json(
            {
                "generated_text": " ".join(words),
                "details": {
                    "finish_reason": finish,
                    "generated_tokens": len(words),
                    "seed": None,
                    "prefill": [],
                    "tokens": [],
                },
            }
        )

    async def generate_stream(self, request: Request) -> Response:
        body = await self._record(request)
        if (fault := self.scripted(body) or self._fault(body["inputs"])) is not None:
            return fault
        if self.answer:
            limit = body["parameters"].get("max_new_tokens", 20)
            pieces = continue_answer(written_after_inst(body["inputs"]))[:limit]

            def tgi_frame(index: int, piece: str, last: bool) -> bytes:
                event: dict[str, Any] = {
                    "index": index + 1,
                    "token": {"id": index, "text": piece, "logprob": 0.0, "special": False},
                    "generated_text": None,
                    "details": None,
                }
                if last:
                    event["generated_text"] = "".join(pieces)
                    event["details"] = {"finish_reason": "eos_token", "generated_tokens": index + 1}
                return b"data:" + orjson.dumps(event) + b"\n\n"

            return StreamingResponse(self.pieces(pieces, tgi_frame), media_type="text/event-stream")
        if "SLOW" in body["inputs"]:
            return self.slow_stream(
                lambda i: (
                    b"data:"
                    + orjson.dumps(
                        {
                            "index": i + 1,
                            "token": {"id": i, "text": f" w{i}", "logprob": 0.0, "special": False},
                            "generated_text": None,
                            "details": None,
                        }  # fmt: skip
                    )
                    + b"\n\n"
                )
            )
        words, finish = self._words(body)

        async def events() -> AsyncIterator[bytes]:
            for index, word in enumerate(words):
                token = {
                    "id": 100 + index,
                    "text": (" " if index else "") + word,
                    "logprob": -0.25,
                    "special": False,
                }
                last = index == len(words) - 1
                event = {
                    "index": index + 1,
                    "token": token,
                    "generated_text": None,
                    "details": None,
                    "top_tokens": None,
                }
                if index == 1 and "STREAMERROR" in body["inputs"]:
                    yield (
                        b"data:"
                        + orjson.dumps(
                            {
                                "error": "Request failed during generation: "
                                "Server error: shard 0 died",
                                "error_type": "generation",
                            }
                        )
                        + b"\n\n"
                    )
                    return
                if last:
                    yield (
                        b"data:"
                        + orjson.dumps(
                            {**event, "token": {**token, "id": 2, "text": "</s>", "special": True}}
                        )
                        + b"\n\n"
                    )
                    event["generated_text"] = " ".join(words)
                    event["details"] = {
                        "finish_reason": finish,
                        "generated_tokens": len(words),
                        "seed": None,
                    }
                    event["index"] += 1
                yield b"data:" + orjson.dumps(event) + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


class FakeOpenAI(FakeServer):
    """An OpenAI-compatible server's /v1/chat/completions, /v1/completions and /v1/models."""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/models", self.models),
            ]
        )

    async def models(self, request: Request) -> Response:
        self.requests.append((request.url.path, dict(request.headers), {}))
        if self.down:  # an outage takes the whole server down
            return _json({"error": "Service temporarily overloaded, try again"}, 503)
        return _json({"object": "list", "data": []})

    async def completions(self, request: Request) -> Response:
        body = await self._record(request)
        chat = "messages" in body
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if (scripted := self.scripted(body)) is not None:
            return scripted
        if body.get("stream") and self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        if "REFUSED" in prompt:
            return _json(
                {
                    "object": "error",
                    "message": "temperature must be greater than 0",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                400,
            )
        if "VALIDATION" in prompt:
            return _json(
                {
                    "object": "error",
                    "message": "This model's maximum context length is 4096 tokens.",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                400,
            )
        if "OVERLOADED" in prompt:
            return _json(
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                429,
            )
        if "GENERROR" in prompt:
            return _json(
                {
                    "error": {
                        "message": "The server had an error",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                500,
            )
        words = (["Echo:"] + prompt.split()[-6:])[: body.get("max_tokens") or 20]
        text = " ".join(words)
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": len(words),
            "total_tokens": 11 + len(words),
        }
        head = {"id": "cmpl-test", "created": 1700000000, "model": body["model"]}
        if not body.get("stream"):
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "stop"}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            obj = "chat.completion" if chat else "text_completion"
            return _json({**head, "object": obj, "choices": [choice], "usage": usage})

        if self.answer:
            last = body["messages"][-1] if chat else None
            written = (
                last["content"]
                if chat and body.get("continue_final_message") and last["role"] == "assistant"
                else written_after_inst(body.get("prompt", ""))
            )
            pieces = continue_answer(written)

            def openai_frame(index: int, piece: str, last: bool) -> bytes:
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                frame = {**head, "object": "chat.completion.chunk", "choices": [choice]}
                data = b"data: " + orjson.dumps(frame) + b"\n\n"
                if last:
                    done = {**choice, "delta": {}, "finish_reason": "stop"}
                    data += b"data: " + orjson.dumps({**frame, "choices": [done]}) + b"\n\n"
                    data += b"data: [DONE]\n\n"
                return data

            return StreamingResponse(
                self.pieces(pieces, openai_frame), media_type="text/event-stream"
            )
        if "SLOW" in prompt:
            return self.slow_stream(
                lambda i: (
                    b"data: "
                    + orjson.dumps(
                        {
                            **head,
                            "object": "chat.completion.chunk",
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"content": f" w{i}"},
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                        }  # fmt: skip
                    )
                    + b"\n\n"
                )
            )

        async def events() -> AsyncIterator[bytes]:
            obj = "chat.completion.chunk" if chat else "text_completion"
            for index, word in enumerate(words):
                piece = (" " if index else "") + word
                part = {"delta": {"content": piece}} if chat else {"text": piece}
                yield (
                    b"data: "
                    + orjson.dumps(
                        {
                            **head,
                            "object": obj,
                            "choices": [
                                {"index": 0, **part, "logprobs": None, "finish_reason": None}
                            ],
                        }
                    )
                    + b"\n\n"
                )
                if index == 1 and "STREAMERROR" in prompt:
                    yield (
                        b"data: "
                        + orjson.dumps(
                            {"error": {"message": "upstream died", "type": "server_error"}}
                        )
                        + b"\n\n"
                    )
                    return
            final = {"delta": {}} if chat else {"text": ""}
            yield (
                b"data: "
                + orjson.dumps(
                    {
                        **head,
                        "object": obj,
                        "choices": [
                            {"index": 0, **final, "logprobs": None, "finish_reason": "stop"}
                        ],
                    }
                )
                + b"\n\n"
            )
            if (body.get("stream_options") or {}).get("include_usage"):
                # The usage chunk, after the finish chunk, as OpenAI and vLLM send it.
                usage_chunk = {**head, "object": obj, "choices": [], "usage": usage}
                yield b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
