"""The one boundary for untrusted input: bytes from HTTP bodies, query strings and data-channel messages
become checked Python values here, or a `RequestError` that says which status, what and which field."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

MAX_JSON_DEPTH = 16  # nesting of objects and arrays; the deepest valid body (a config in an offer) has 2
MAX_MESSAGE_BYTES = 16 * 1024  # one data-channel message
M = TypeVar("M", bound=BaseModel)


class RequestError(Exception):
    """Input the server refuses: `status` is the HTTP status (400 malformed, 413 too large, 415 wrong type,
    422 well-formed but invalid, 503/507 no room), `field` the part of the input at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def decode_text(data: bytes, field: str) -> str:
    """Strict UTF-8, with no NUL characters (SDP and JSON are text)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"{field} is not UTF-8 text (byte {exc.start})", field) from None
    if "\x00" in text:
        raise RequestError(400, f"{field} holds a NUL character", field)
    return text


def parse_json(data: bytes | str, field: str = "body", limit: int | None = None) -> Any:
    """A JSON document of at most `limit` bytes and MAX_JSON_DEPTH levels."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if limit is not None and size > limit:
        raise RequestError(413, f"{field} is {size} bytes; at most {limit} are accepted", field)
    text = decode_text(data, field) if isinstance(data, bytes) else data
    try:
        value = json.loads(text)
    except RecursionError:
        raise RequestError(400, f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field) from None
    except ValueError as exc:
        raise RequestError(400, f"{field} is not valid JSON ({exc})", field) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise RequestError(400, f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field)
    return value


def validated(model: type[M], value: object, field: str = "") -> M:
    """`value` as `model`, or a 422 (400 when it is not even a JSON object) naming the first field at fault;
    `field` is where `value` sits ("" for a whole body)."""
    if not isinstance(value, dict):
        raise RequestError(400, f"{field or 'body'} must be a JSON object", field or None)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise invalid(exc, field) from None


def invalid(exc: ValidationError, prefix: str) -> RequestError:
    """A 422 naming the first field a pydantic model refused, as `prefix.field`."""
    error = exc.errors()[0]
    name = ".".join(str(p) for p in error["loc"])
    field = f"{prefix}.{name}" if prefix and name else (name or prefix or None)
    return RequestError(422, f"{name or prefix or 'body'}: {error['msg']}", field)


def _depth(value: object) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest
