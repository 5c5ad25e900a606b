"""What makes two writes "the same request" for an idempotency key (pure)."""

from __future__ import annotations

from cloud.idempotency import canonical_body, request_fingerprint


def test_key_order_and_white_space_do_not_change_the_fingerprint() -> None:
    a = request_fingerprint("POST", "/v1/users", b'{"email": "a@b.no", "username": "a"}')
    b = request_fingerprint("post", "/v1/users", b'{"username":"a",\n "email":"a@b.no"}')
    assert a == b


def test_method_path_and_body_each_change_the_fingerprint() -> None:
    base = request_fingerprint("POST", "/v1/users", b'{"email":"a@b.no"}')
    assert request_fingerprint("PUT", "/v1/users", b'{"email":"a@b.no"}') != base
    assert request_fingerprint("POST", "/v1/companies", b'{"email":"a@b.no"}') != base
    assert request_fingerprint("POST", "/v1/users", b'{"email":"A@b.no"}') != base


def test_no_body_and_blank_body_are_the_same_request() -> None:
    path = "/v1/users/u1/deactivate"
    assert request_fingerprint("POST", path, b"") == request_fingerprint("POST", path, b"  \n")


def test_nested_values_are_canonical_too() -> None:
    assert canonical_body(b'{"s":{"b":{"roles":["x"],"modules":[]}}}') == canonical_body(
        b'{"s": {"b": {"modules": [], "roles": ["x"]}}}'
    )


def test_a_body_that_is_not_json_is_hashed_as_sent() -> None:
    assert canonical_body(b"not json") == b"not json"
    assert request_fingerprint("POST", "/v1/x", b"not json") != request_fingerprint(
        "POST", "/v1/x", b"not  json"
    )
