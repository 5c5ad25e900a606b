"""Idempotency keys: what makes two requests "the same request".

The fingerprint of a write is SHA-256 over its method, path and canonical body (JSON
re-serialised with sorted keys, so key order and white space do not matter). The same
``Idempotency-Key`` with the same fingerprint replays the stored response; with another
fingerprint it is refused (``idempotency_key_reused``).

Only successful (2xx) responses are stored, in the same SQLite transaction as the effect
(see :meth:`cloud.store.Store.write`). A refused request (4xx) had no effect, so the same
key may be sent again once the cause is fixed (``vudsync dlq retry`` relies on that).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import orjson

MAX_KEY_LENGTH = 255


def canonical_body(raw: bytes) -> bytes:
    """JSON bodies in canonical form; anything else (empty, not JSON) as sent."""
    if not raw.strip():
        return b""
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw
    return canonical_json(parsed)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no white space, UTF-8 as is: the bytes every fingerprint is taken over.

    The standard library's ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` defines them (stored fingerprints were made with it). orjson
    writes the very same bytes for strings, integers, booleans, null, lists and objects
    with string keys (keys sorted by code point either way), several times faster; it
    writes some floats differently (``1e-05`` → ``0.00001``) and refuses integers over
    64 bits and lone surrogates. So orjson only for values without floats, the standard
    library for the rest.
    """
    if _orjson_canonical(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: integers over 64 bits, lone surrogates
            pass
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def _orjson_canonical(value: Any) -> bool:
    """Whether orjson's canonical form of ``value`` is the standard library's: no floats.

    (Keys that are not strings make orjson raise, which falls back too.)
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif not (kind is str or kind is int or kind is bool or item is None):
            return False  # floats (NaN, Infinity too), tuples, anything else
    return True


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """Hex SHA-256 of method, path and canonical body."""
    return _fingerprint(method, path, canonical_body(body))


def json_fingerprint(method: str, path: str, body: Any) -> str:
    """:func:`request_fingerprint` of a body already parsed from JSON (``None``: no body).

    The same digest as the request ``json.dumps(body)`` would have: the canonical form of
    parsed JSON does not depend on how it was written.
    """
    return _fingerprint(method, path, b"" if body is None else canonical_json(body))


def _fingerprint(method: str, path: str, canonical: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(method.upper().encode("ascii"))
    digest.update(b"\n")
    digest.update(path.encode("utf-8", "surrogatepass"))
    digest.update(b"\n")
    digest.update(canonical)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as stored under an idempotency key (and replayed from it)."""

    status: int
    body: Any
    headers: dict[str, str]
