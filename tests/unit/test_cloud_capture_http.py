"""cloud-capture's httpx adapter, with a transport injected: the feed's answers and failures
become pages and vudsync errors once, here."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from pydantic import SecretStr

from cloudcapture.http_feed import CloudFailing, HttpCloudFeed, cursor_position
from cloudcapture.ports import CloudUnreachable, CursorExpired
from kernel.errors import AuthenticationFailed, PermanentError

Handler = Callable[[httpx.Request], httpx.Response]


def _feed(handler: Handler) -> HttpCloudFeed:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            form = dict(x.split("=") for x in request.content.decode().split("&"))
            assert form["scope"] == "directory%3Aread"  # read scope only
            if form["client_secret"] != "s3cret":
                return httpx.Response(401, json={"error": "invalid_client"})
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        assert request.headers["Authorization"] == "Bearer t"
        return handler(request)

    return HttpCloudFeed("http://cloud", "vudsync", SecretStr("s3cret"), transport=httpx.MockTransport(route))


def test_a_page_of_the_feed_with_its_cursor_and_position() -> None:
    seen: list[httpx.Request] = []

    def changes(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"items": [{"seq": 12}], "cursor": "c1.0.12.1700000000", "more": True}
        )

    page = _feed(changes).changes("c1.0.3.1700000000", 500)
    assert (page.items, page.cursor, page.more, page.position) == (
        ({"seq": 12},),
        "c1.0.12.1700000000",
        True,
        12,
    )
    assert seen[0].url.params["cursor"] == "c1.0.3.1700000000" and seen[0].url.params["limit"] == "500"


def test_no_cursor_asks_for_the_cursor_of_now() -> None:
    def changes(request: httpx.Request) -> httpx.Response:
        assert "cursor" not in request.url.params
        return httpx.Response(200, json={"items": [], "cursor": "c1.2.40.1700000000", "more": False})

    assert _feed(changes).changes(None, 1).position == 40


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(410, json={"error": "cursor_expired"}), CursorExpired),
        (httpx.Response(503, json={"error": "injected_fault"}), CloudFailing),
        (httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "rate_limited"}), CloudFailing),
        (httpx.Response(400, json={"error": "invalid_cursor"}), PermanentError),
    ],
)
def test_failures_of_the_feed_become_vudsync_errors(answer: httpx.Response, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        _feed(lambda _r: answer).changes("c1.0.3.1700000000", 10)
    if answer.status_code == 429:
        assert getattr(raised.value, "retry_after", None) == 7.0


def test_a_cloud_that_does_not_answer_is_unreachable() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(CloudUnreachable):
        _feed(down).changes(None, 1)


def test_refused_credentials_never_show_the_secret() -> None:
    feed = HttpCloudFeed(
        "http://cloud",
        "vudsync",
        SecretStr("wrong-secret-123"),
        transport=httpx.MockTransport(lambda r: httpx.Response(401, json={"error": "invalid_client"})),
    )
    with pytest.raises(AuthenticationFailed) as raised:
        feed.changes(None, 1)
    assert "wrong-secret-123" not in str(raised.value) + repr(raised.value)


def test_a_user_or_company_that_is_not_there_is_none() -> None:
    def lookup(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/users/cu1":
            return httpx.Response(200, json={"id": "cu1", "external_id": "u1"})
        return httpx.Response(404, json={"error": "not_found"})

    feed = _feed(lookup)
    assert feed.user("cu1") == {"id": "cu1", "external_id": "u1"}
    assert feed.user("cu2") is None and feed.company("cc1") is None


def test_access_of_many_users_is_read_in_batches_of_500() -> None:
    batches: list[int] = []

    def batch(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["requests"]
        batches.append(len(items))
        answers = []
        for item in items:
            uid = item["path"].split("/")[3]
            body = {"items": [{"user_id": uid, "company_id": "cc1"}]}
            answers.append({"status": 200, "body": body, "headers": {}})
        return httpx.Response(200, json={"responses": answers})

    out = _feed(batch).access([f"cu{i}" for i in range(1200)])
    assert batches == [500, 500, 200]
    assert out["cu1199"] == [{"user_id": "cu1199", "company_id": "cc1"}]


@pytest.mark.parametrize("cursor", ["", "c2.0.1.1", "c1.0.x.1", "c1.0.1"])
def test_a_cursor_of_an_unknown_form_is_refused(cursor: str) -> None:
    with pytest.raises(PermanentError):
        cursor_position(cursor)
