"""The one boundary for untrusted input: bytes from HTTP bodies, query strings and data-channel messages
become checked Python values here, or a `RequestError` of the kind that says what went wrong (see errors.py)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..pipeline.config import first_error
from .errors import Invalid, Malformed, TooLarge

MAX_JSON_DEPTH = 16  # nesting of objects and arrays; the deepest valid body (a config in an offer) has 2
MAX_MESSAGE_BYTES = 16 * 1024  # one data-channel message
M = TypeVar("M", bound=BaseModel)


def decode_text(data: bytes, field: str) -> str:
    """Strict UTF-8, with no NUL characters (SDP and JSON are text)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Malformed(f"{field} is not UTF-8 text (byte {exc.start})", field) from None
    if "\x00" in text:
        raise Malformed(f"{field} holds a NUL character", field)
    return text


def parse_json(data: bytes | str, field: str = "body", limit: int | None = None) -> Any:
    """A JSON document of at most `limit` bytes and MAX_JSON_DEPTH levels."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if limit is not None and size > limit:
        raise TooLarge(f"{field} is {size} bytes; at most {limit} are accepted", field)
    text = decode_text(data, field) if isinstance(data, bytes) else data
    try:
        value = json.loads(text)
    except RecursionError:
        raise Malformed(f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field) from None
    except ValueError as exc:
        raise Malformed(f"{field} is not valid JSON ({exc})", field) from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise Malformed(f"{field} is nested deeper than {MAX_JSON_DEPTH} levels", field)
    return value


def validated(model: type[M], value: object, field: str = "") -> M:
    """`value` as `model`, or Invalid (Malformed when it is not even a JSON object) naming the first field at fault;
    `field` is where `value` sits ("" for a whole body)."""
    if not isinstance(value, dict):
        raise Malformed(f"{field or 'body'} must be a JSON object", field or None)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise invalid(exc, field) from None


def invalid(exc: ValidationError, prefix: str) -> Invalid:
    """A refusal naming the first field a pydantic model refused, as `prefix.field`."""
    return Invalid(*first_error(exc, prefix))


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
