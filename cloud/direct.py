"""Direct dispatch: a ``/v1`` route's own endpoint function, called without the ASGI stack.

Most of the time of a request went to the stack around the endpoint: middleware,
FastAPI's dependency machinery and two thread hops (a ``def`` dependency, then the
endpoint); a batch item paid all of it again, plus a SQLite commit per write. For a
route that is **direct** (see :mod:`cloud.direct_routes`) this module does what FastAPI
would do, in the same order, with the route's own parameter fields, the app's own error
renderers and the endpoint function itself:

1. route: :meth:`~cloud.direct_routes.DirectRoutes.match` (Starlette's rule);
2. path, query and header parameters and the body:
   :meth:`~cloud.direct_routes.Endpoint.bind`, validated by the route's fields;
3. dependencies: the context; the token (401), the rate limit (429, not for batch
   items), the scope (403); the :class:`~cloud.deps.Write`;
4. the endpoint; an :class:`~cloud.errors.ApiError` or ``UnicodeError`` is rendered as
   the app's exception handlers render it; anything else goes up as from a route.

What it does not take it hands over, untouched, to the whole application: no direct
route (404, 405, ``/v1/batch``), a parameter or body that does not validate (FastAPI
writes those 422s, and only FastAPI knows the order of their ``detail``), a body that
is not ``application/json``. Validation has no effect, so handing over is always safe.

* :meth:`DirectDispatch.respond` serves single requests (for
  :class:`~cloud.direct_lane.DirectLane`, one thread hop each).
* :meth:`DirectDispatch.run_until_indirect` serves a run of batch items in one worker
  thread inside :meth:`cloud.store.Store.batch`: the run's writes share one transaction,
  each in its own savepoint (effect, audit row and idempotency record stay
  all-or-nothing per item), and reads see the writes before them. The run's
  idempotency keys are looked up in one query, and the audit and idempotency rows are
  inserted set-wise (``executemany``) before the commit.

``--no-direct`` (``CloudSettings.direct_dispatch``) turns all of it off; the integration
tests run one script against both and compare every answer and the request counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Scope

from cloud.auth import READ, WRITE, Principal, require_scope
from cloud.batch_items import Answer, answer, is_batch, item_headers, parsed_answer, split_path
from cloud.context import CloudContext
from cloud.deps import (
    Write,
    authorise,
    get_context,
    get_principal,
    get_reader,
    get_writer,
    render,
    response_headers,
)
from cloud.direct_routes import NO_BODY, DirectRoutes, Endpoint
from cloud.errors import ApiError, error_response, unicode_error_response
from cloud.idempotency import StoredResponse, json_fingerprint, request_fingerprint
from cloud.models import BatchItem
from cloud.store import WriteRequest


class DirectDispatch:
    """Answers ``/v1`` requests and batch items by calling the endpoints of ``routes`` directly.

    ``routes`` are the app's routes in the order the app matches them (see
    :class:`~cloud.direct_routes.DirectRoutes`). See the module doc for what is direct
    and what is left to the application.
    """

    def __init__(self, context: CloudContext, routes: Iterable[BaseRoute]) -> None:
        self._context = context
        self._routes = DirectRoutes(routes)

    # -- batch items -----------------------------------------------------------------

    def run_until_indirect(
        self,
        parent_headers: Sequence[tuple[bytes, bytes]],
        items: Sequence[BatchItem],
        start: int,
        answers: list[Answer],
    ) -> int:
        """Answer ``items[start:]`` into ``answers`` in one batch transaction (blocking).

        Returns the index of the first item that needs the whole application, or
        ``len(items)``. The completed items are committed before it returns.
        """
        caller = _BatchCaller(self._context, Headers(raw=list(parent_headers)).get("authorization"))
        # the keys of the run, looked up together at its first write (Store.batch)
        keys = [item.idempotency_key for item in items[start:] if item.idempotency_key is not None]
        with self._context.store.batch(keys):
            for index in range(start, len(items)):
                result = self.run(parent_headers, items[index], caller)
                if result is None:
                    return index
                answers.append(result)
        return len(items)

    def run(
        self,
        parent_headers: Sequence[tuple[bytes, bytes]],
        item: BatchItem,
        caller: Callable[[], Principal] | None = None,
    ) -> Answer | None:
        """One item's answer, or ``None`` when it needs the whole application."""
        path, _, query = split_path(item)
        if is_batch(path):
            return None
        found = self._routes.match(item.method, path)
        if found is None:
            return None
        endpoint, path_values = found
        headers = Headers(raw=item_headers(parent_headers, item))
        body = NO_BODY if item.body is None else item.body
        bound = endpoint.bind(path_values, query.encode("latin-1", "replace"), headers, body)
        if bound is None:
            return None
        kwargs, key = bound
        if caller is None:
            caller = _BatchCaller(self._context, headers.get("authorization"))
        fingerprint = json_fingerprint(item.method, path, item.body)
        result = self._invoke(endpoint, kwargs, caller, item.method, path, key, fingerprint, _Answered.of)
        if isinstance(result, _Answered):
            item_answer = result.answer
        else:
            item_answer = answer(result.status_code, result.raw_headers, bytes(result.body))
        status = str(item_answer["status"])
        self._context.stats.record_request(f"{item.method} {endpoint.template}", status, batch_item=True)
        return item_answer

    # -- requests --------------------------------------------------------------------

    def respond(self, scope: Scope, body: bytes) -> Response | None:
        """The response to one HTTP request (blocking), or ``None`` to leave it to the application.

        Direct only when the route is and, if it takes a body, the body is sent as
        ``application/json`` and parses: FastAPI answers anything else (415-like 422s,
        ``json_invalid``) in its own words.
        """
        method: str = scope["method"]
        path: str = scope["path"]
        found = self._routes.match(method, path)
        if found is None:
            return None
        endpoint, path_values = found
        headers = Headers(scope=scope)
        parsed: Any = NO_BODY
        if endpoint.body is not None and body:
            if media_type(headers.get("content-type")) != "application/json":
                return None
            try:
                parsed = json.loads(body)
            except ValueError:
                return None
        bound = endpoint.bind(path_values, scope.get("query_string", b""), headers, parsed)
        if bound is None:
            return None
        kwargs, key = bound
        scope["route"] = endpoint.route  # the route template the request is counted under
        fingerprint = request_fingerprint(method, path, body)

        def caller() -> Principal:
            return authorise(self._context, headers.get("authorization"), rate_limited=True)

        response = self._invoke(endpoint, kwargs, caller, method, path, key, fingerprint, render)
        assert isinstance(response, Response)
        return response

    # -- the shared core -------------------------------------------------------------

    def _invoke(
        self,
        endpoint: Endpoint,
        kwargs: dict[str, Any],
        caller: Callable[[], Principal],
        method: str,
        path: str,
        idempotency_key: str | None,
        fingerprint: str,
        renderer: Callable[..., Any],
    ) -> Response | _Answered:
        """Provide the dependencies, call the endpoint, render an error as the app does.

        The dependencies as :mod:`cloud.deps` provides them: the context; the caller
        (``caller``: 401, and 429 for a request), once; its scope (403) for each
        dependency that needs one; a :class:`~cloud.deps.Write` whose stored response
        ``renderer`` turns into the endpoint's result.
        """
        context = self._context
        principal: Principal | None = None
        try:
            for name, call in endpoint.dependencies:
                if call is get_context:
                    kwargs[name] = context
                    continue
                if principal is None:
                    principal = caller()
                if call is get_reader:
                    require_scope(principal, READ)
                    kwargs[name] = principal
                elif call is get_writer:
                    require_scope(principal, WRITE)
                    kwargs[name] = principal
                elif call is get_principal:
                    kwargs[name] = principal
                else:
                    require_scope(principal, WRITE)
                    request = WriteRequest(principal.client_id, method, path, idempotency_key, fingerprint)
                    kwargs[name] = Write(context, request, renderer)
            result = endpoint.route.endpoint(**kwargs)
        except ApiError as exc:
            return error_response(exc)
        except UnicodeError:
            return unicode_error_response()
        if not isinstance(result, Response | _Answered):
            raise TypeError(f"{endpoint.template}: a direct endpoint must return a Response")
        return result


@dataclass(frozen=True, slots=True)
class _Answered:
    """A batch write's answer, made from its stored response (see :class:`~cloud.deps.Write`)."""

    answer: Answer

    @classmethod
    def of(cls, response: StoredResponse, *, replayed: bool) -> _Answered:
        headers = response_headers(response, replayed=replayed)
        return cls(parsed_answer(response.status, headers, response.body))


class _BatchCaller:
    """The batch's token, authenticated once per run; its expiry is still checked per item."""

    def __init__(self, context: CloudContext, authorization: str | None) -> None:
        self._context = context
        self._authorization = authorization
        self._principal: Principal | None = None

    def __call__(self) -> Principal:
        principal = self._principal
        if principal is None or self._context.clock() >= principal.expires_at:
            # batch items are not rate limited: the batch request was
            principal = authorise(self._context, self._authorization, rate_limited=False)
            self._principal = principal
        return principal


def media_type(content_type: str | None) -> str:
    """A ``Content-Type``'s media type, lower case (``""``: none)."""
    return (content_type or "").split(";")[0].strip().lower()
