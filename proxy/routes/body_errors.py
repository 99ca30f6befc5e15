"""What a rejected request body is told: the single most useful client error for a body that
msgspec would not decode into its type, naming the field and what to send instead.

400 for a body of the wrong shape (not JSON, not an object, an unknown field, a wrong type),
422 for a number out of its range. Request values are echoed cut short, never whole.
"""

from __future__ import annotations

import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from proxy.errors import ECHO_CHARS, ClientError, InvalidParameter, InvalidRequest, echo

RANGES = {
    "max_new_tokens": "an integer from 1 to {limit}",
    "max_tokens": "an integer from 1 to {limit}",
    "max_completion_tokens": "an integer from 1 to {limit}",
    "temperature": "a number from 0 to 2 (0 means greedy decoding)",
    "top_p": "a number greater than 0 and at most 1",
    "top_k": "an integer from 1 to 1000",
    "repetition_penalty": "a number greater than 0 and at most 10 (1 means none)",
}

# msgspec's messages: "Expected `int` >= 1 - at `$.parameters.max_new_tokens`".
_AT = re.compile(r" - at `\$(.*)`$")
_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(.*)`$")
_MISSING = re.compile(r"^Object missing required field `(.*)`$")
_BYTE = re.compile(r"\(byte (\d+)\)$")
_KEY_BEFORE = re.compile(rb'"([^"\\]{1,64})"\s*:\s*-?$')
_OUT_OF_RANGE = re.compile(r"Expected `(int|float)` [<>]=? ")


def _location(message: str) -> tuple[str, tuple[str | int, ...]]:
    """(the message without its location, the location as field names and indexes)."""
    found = _AT.search(message)
    if found is None:
        return message, ()
    loc: list[str | int] = []
    for name, index in _PART.findall(found.group(1)):
        if name:
            loc.append(name)
        elif index != "...":
            loc.append(int(index))
    return message[: found.start()], tuple(loc)


def _field(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def _value_at(body: bytes, loc: tuple[str | int, ...]) -> object:
    """The value the client sent at ``loc`` (only ever read to say what was wrong)."""
    value: Any = msgspec.json.decode(body)
    for part in loc:
        value = value[part]
    return value


def _struct_at(root: type, loc: tuple[str | int, ...]) -> type:
    """The Struct type that holds the fields at ``loc`` below ``root``."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        hint = next(f.type for f in msgspec.structs.fields(current) if f.name == part)
        current = _struct_in(hint) or current
    return current  # type: ignore[no-any-return]


def _struct_in(hint: Any) -> type | None:
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return hint
    if get_origin(hint) in (Union, types.UnionType, Annotated, list):
        for arg in get_args(hint):
            found = _struct_in(arg)
            if found is not None:
                return found
    return None


def _non_finite(body: bytes, message: str) -> ClientError | None:
    """The error for NaN or Infinity, which JSON cannot hold (msgspec refuses them as
    malformed), or for a number too large to be finite (1e999)."""
    found = _BYTE.search(message)
    if found is not None:
        at = int(found.group(1))
        if not body[at:].startswith((b"NaN", b"Infinity")):
            return None
        key = _KEY_BEFORE.search(body[max(0, at - 80) : at])
        param = key.group(1).decode("utf-8", "replace") if key else None
    elif message.startswith("Number out of range"):
        param = _field(_location(message)[1])
    else:
        return None
    where = param or "a number"
    return InvalidRequest(
        f"{where} is NaN or infinite, which JSON cannot hold; send a finite number",
        code="invalid_json",
        param=param,
    )


def rejected_body(
    error: msgspec.MsgspecError, body: bytes, *, root: type, max_new_tokens_limit: int
) -> ClientError:
    """The client error for a ``body`` that did not decode into ``root``."""
    message = str(error)
    non_finite = _non_finite(body, message)
    if non_finite is not None:
        return non_finite
    if not isinstance(error, msgspec.ValidationError):  # a DecodeError: not JSON at all
        return InvalidRequest(
            f"request body is not valid JSON ({message}); send a JSON object",
            code="invalid_json",
        )
    text, loc = _location(message)
    name = _field(loc)
    unknown = _UNKNOWN.match(text)
    if unknown is not None:
        allowed = ", ".join(f.name for f in msgspec.structs.fields(_struct_at(root, loc)))
        field = _field((*loc, unknown.group(1)))
        return InvalidRequest(
            f"unknown field {echo(field)}; allowed here: {allowed}",
            code="unknown_field",
            param=field[:ECHO_CHARS],
        )
    missing = _MISSING.match(text)
    if missing is not None:
        field = _field((*loc, missing.group(1)))
        return InvalidRequest(f"{field} is required; send it", param=field)
    if not loc and text.startswith("Expected `object`"):
        return InvalidRequest("request body must be a JSON object", code="invalid_json")
    if _OUT_OF_RANGE.match(text):
        expected = RANGES.get(str(loc[-1]), text.removeprefix("Expected ").replace("`", ""))
        got = echo(_value_at(body, loc))
        return InvalidParameter(
            f"{name} must be {expected.format(limit=max_new_tokens_limit)}; got {got}",
            param=name,
        )
    return InvalidRequest(f"{name}: {text.replace('`', '')}", param=name if loc else None)
