"""Direct dispatch: a ``/v1`` route's own endpoint function, called without the ASGI stack.

Most of the time of a request went to the stack around the endpoint: middleware,
FastAPI's dependency machinery and two thread hops (a ``def`` dependency, then the
endpoint); a batch item paid all of it again, plus a SQLite commit per write. For a
route that is **direct** — a ``def`` endpoint whose dependencies are all among
:mod:`cloud.deps`' five — this module does what FastAPI would do, in the same order,
with the route's own parameter fields, the app's own error renderers and the endpoint
function itself:

1. route: the first route whose path pattern and method match (Starlette's rule);
2. path, query and header parameters and the body: validated by the route's fields;
3. dependencies: the context; the token (401), the rate limit (429, not for batch
   items), the scope (403); the :class:`~cloud.deps.Write`;
4. the endpoint; an :class:`~cloud.errors.ApiError` or ``UnicodeError`` is rendered as
   the app's exception handlers render it; anything else goes up as from a route.

What it does not take it hands over, untouched, to the whole application: no direct
route (404, 405, ``/v1/batch``), a parameter or body that does not validate (FastAPI
writes those 422s, and only FastAPI knows the order of their ``detail``), a body that
is not ``application/json``. Validation has no effect, so handing over is always safe.

* :class:`DirectLane` serves single requests, one thread hop each.
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

import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.auth import READ, WRITE, Principal, require_scope
from cloud.batch import Answer, answer, is_batch, item_headers, parsed_answer, split_path
from cloud.context import BATCH_ITEM, CloudContext
from cloud.deps import (
    Write,
    authorise,
    get_context,
    get_principal,
    get_reader,
    get_write,
    get_writer,
    render,
    response_headers,
)
from cloud.errors import ApiError, error_response, unicode_error_response
from cloud.idempotency import StoredResponse, json_fingerprint, request_fingerprint
from cloud.middleware import read_body
from cloud.models import BatchItem
from cloud.store import WriteRequest

# the dependencies this module knows how to provide (see _Endpoint.call)
_DEPENDENCIES: frozenset[Callable[..., Any]] = frozenset(
    {get_context, get_principal, get_reader, get_writer, get_write}
)


# parameter types taken one value each (FastAPI reads lists differently)
_SCALARS: frozenset[Any] = frozenset(
    {str, int, float, bool, str | None, int | None, float | None, bool | None}
)
# an item's headers here have no content-length (its body is never serialised)
_UNSET_HEADERS = frozenset({"content-length"})
# an item or request without a body (``None`` is a JSON body: null)
_NO_BODY: Any = object()


@dataclass(frozen=True, slots=True)
class _Param:
    """One path, query or header parameter, read as ``request_params_to_args`` reads it.

    FastAPI works out each field's request key, its shape and its default on every
    request; they are worked out here once. The value is validated by the field itself.
    """

    field: Any  # fastapi's ModelField
    name: str
    key: str
    loc: tuple[str, str]
    required: bool
    validate_default: bool

    @classmethod
    def of(cls, field: Any) -> _Param | None:
        """``None`` when the field is not a plain one-value parameter."""
        info = field.field_info
        if not isinstance(info, params.Param) or info.annotation not in _SCALARS or field.config:
            return None
        key = getattr(field, "validation_alias", None) or field.alias
        if not isinstance(key, str) or key.lower() in _UNSET_HEADERS:
            return None
        return cls(
            field, field.name, key, (info.in_.value, key), info.is_required(), bool(info.validate_default)
        )

    def take(self, received: Mapping[str, Any], values: dict[str, Any]) -> bool:
        """Put the valid value (or the default) in ``values``; ``False`` if it is not valid."""
        value = received.get(self.key)
        if value is None:
            if self.required:
                return False
            value = deepcopy(self.field.default)
            if not self.validate_default:
                values[self.name] = value
                return True
        valid, errors = self.field.validate(value, {}, loc=self.loc)
        if errors:
            return False
        values[self.name] = valid
        return True


def _take_all(fields: Sequence[_Param], received: Mapping[str, Any], values: dict[str, Any]) -> bool:
    return all(param.take(received, values) for param in fields)


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """A direct route, taken apart once at start-up."""

    route: APIRoute
    template: str
    path_params: Sequence[_Param]
    query_params: Sequence[_Param]
    header_params: Sequence[_Param]
    key_param: _Param | None  # get_write's one header: Idempotency-Key
    body: Any  # the body's ModelField, or None
    body_name: str
    dependencies: tuple[tuple[str, Callable[..., Any]], ...]


def _simple(fields: Sequence[Any]) -> list[_Param] | None:
    found = [_Param.of(field) for field in fields]
    return None if None in found else [p for p in found if p is not None]


def _params(dependant: Dependant) -> list[Any]:
    return [
        *dependant.path_params,
        *dependant.query_params,
        *dependant.header_params,
        *dependant.cookie_params,
        *dependant.body_params,
    ]


def _subtree_params(dependant: Dependant) -> list[Any]:
    found = _params(dependant)
    for sub in dependant.dependencies:
        found += _subtree_params(sub)
    return found


def _endpoint(route: APIRoute) -> _Endpoint | None:
    """``route`` taken apart, or ``None`` when it is not direct (FastAPI serves it)."""
    dependant = route.dependant
    if (
        inspect.iscoroutinefunction(route.endpoint)
        or dependant.cookie_params
        or len(dependant.body_params) > 1
        or dependant.request_param_name
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    ):
        return None
    body = dependant.body_params[0] if dependant.body_params else None
    if body is not None:
        info = body.field_info
        if not isinstance(info, params.Body) or info.embed or route.body_field is not body:
            return None
    dependencies: list[tuple[str, Callable[..., Any]]] = []
    key_param: _Param | None = None
    for sub in dependant.dependencies:
        if sub.call not in _DEPENDENCIES or sub.name is None:
            return None
        inner = _subtree_params(sub)
        if sub.call is get_write:
            if len(inner) != 1 or not isinstance(inner[0].field_info, params.Header):
                return None
            key_param = _Param.of(inner[0])
            if key_param is None:
                return None
        elif inner:
            return None
        dependencies.append((sub.name, sub.call))
    path_params = _simple(dependant.path_params)
    query_params = _simple(dependant.query_params)
    header_params = _simple(dependant.header_params)
    if path_params is None or query_params is None or header_params is None:
        return None
    return _Endpoint(
        route=route,
        template=route.path,
        path_params=path_params,
        query_params=query_params,
        header_params=header_params,
        key_param=key_param,
        body=body,
        body_name=body.name if body is not None else "",
        dependencies=tuple(dependencies),
    )


class DirectDispatch:
    """Answers ``/v1`` requests and batch items by calling the endpoints of ``routes`` directly.

    ``routes`` are the app's routes in the order the app matches them. The app's own
    routes (``/openapi.json``, ``/docs``) are left out: they never match a ``/v1`` path.
    See the module doc for what is direct and what is left to the application.
    """

    def __init__(self, context: CloudContext, routes: Iterable[BaseRoute]) -> None:
        self._context = context
        self._routes: list[tuple[BaseRoute, _Endpoint | None]] = [
            (route, _endpoint(route) if isinstance(route, APIRoute) else None) for route in routes
        ]
        # the routes that can match a path of each shape, in the app's order (see _shape)
        shapes = {shape for route, _ in self._routes if (shape := _route_shape(route)) is not None}
        self._by_shape: dict[tuple[str, int], list[tuple[BaseRoute, _Endpoint | None]]] = {
            shape: [(r, e) for r, e in self._routes if _route_shape(r) in (shape, None)] for shape in shapes
        }
        self._any_shape = [(r, e) for r, e in self._routes if _route_shape(r) is None]

    @property
    def direct_templates(self) -> list[str]:
        """``"METHOD /path"`` of every direct route (for tests and docs)."""
        return [
            f"{method} {endpoint.template}"
            for route, endpoint in self._routes
            if endpoint is not None
            for method in sorted(endpoint.route.methods or ())
        ]

    def match(self, method: str, path: str) -> tuple[_Endpoint, dict[str, Any]] | None:
        """The direct route serving ``method path`` and its path parameters, or ``None``.

        Starlette's rule (the first route in order whose pattern and method match), tried
        only on the routes that can match a path of this shape.
        """
        for route, endpoint in self._by_shape.get(_shape(path), self._any_shape):
            if not isinstance(route, APIRoute):
                scope = {"type": "http", "path": path, "root_path": "", "method": method}
                if route.matches(scope)[0] is not Match.NONE:
                    return None
                continue
            found = route.path_regex.match(path)
            if found is None:
                continue
            if route.methods and method not in route.methods:
                continue  # Starlette goes on looking for a route with this method too
            if endpoint is None:
                return None
            values = {key: route.param_convertors[key].convert(v) for key, v in found.groupdict().items()}
            return endpoint, values
        return None

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
        found = self.match(item.method, path)
        if found is None:
            return None
        endpoint, path_values = found
        headers = Headers(raw=item_headers(parent_headers, item))
        body = _NO_BODY if item.body is None else item.body
        bound = self._bind(endpoint, path_values, query.encode("latin-1", "replace"), headers, body)
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
        found = self.match(method, path)
        if found is None:
            return None
        endpoint, path_values = found
        headers = Headers(scope=scope)
        parsed: Any = _NO_BODY
        if endpoint.body is not None and body:
            if _media_type(headers.get("content-type")) != "application/json":
                return None
            try:
                parsed = json.loads(body)
            except ValueError:
                return None
        bound = self._bind(endpoint, path_values, scope.get("query_string", b""), headers, parsed)
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

    def _bind(
        self,
        endpoint: _Endpoint,
        path_values: dict[str, Any],
        query: bytes,
        headers: Headers,
        body: Any,
    ) -> tuple[dict[str, Any], str | None] | None:
        """The endpoint's validated arguments and the Idempotency-Key, or ``None`` if any is invalid."""
        kwargs: dict[str, Any] = {}
        key: dict[str, Any] = {}
        if not _take_all(endpoint.path_params, path_values, kwargs):
            return None
        if endpoint.query_params and not _take_all(endpoint.query_params, QueryParams(query), kwargs):
            return None
        if not _take_all(endpoint.header_params, headers, kwargs):
            return None
        if endpoint.key_param is not None and not endpoint.key_param.take(headers, key):
            return None
        if endpoint.body is not None:
            if body is _NO_BODY:
                return None
            value, errors = endpoint.body.validate(body, {}, loc=("body",))
            if errors:
                return None
            kwargs[endpoint.body_name] = value
        return kwargs, next(iter(key.values()), None)

    def _invoke(
        self,
        endpoint: _Endpoint,
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


def _shape(path: str) -> tuple[str, int]:
    """A path's first two segments (``/v1/users``) and its number of slashes."""
    return "/".join(path.split("/", 3)[:3]), path.count("/")


def _route_shape(route: BaseRoute) -> tuple[str, int] | None:
    """The one :func:`_shape` of every path ``route`` can match; ``None`` when it can match several.

    A template's literal text is matched as is and a parameter other than ``:path``
    never matches a slash, so a path of another shape cannot match. Anything else (a
    mount, a ``:path`` parameter, a parameter in the first two segments) may match any
    shape and is tried for every path.
    """
    if not isinstance(route, APIRoute) or any(
        isinstance(convertor, PathConvertor) for convertor in route.param_convertors.values()
    ):
        return None
    shape = _shape(route.path_format)
    return None if "{" in shape[0] else shape


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


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


class DirectLane:
    """ASGI middleware: ``/v1`` requests with a direct route skip the rest of the stack.

    Installed inside :class:`~cloud.middleware.TrafficMiddleware` (faults and counting
    stay as they are) and outside FastAPI. The body is read first; the request runs in a
    worker thread (SQLite blocks), once; anything :meth:`DirectDispatch.respond` leaves
    to the application goes on to it with the body replayed. An unexpected exception
    goes up to Starlette's server-error handler, as it would from a route.
    """

    def __init__(self, app: ASGIApp, *, direct: DirectDispatch) -> None:
        self.app = app
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith("/v1/")
            or scope.get("root_path")
            or scope.get(BATCH_ITEM)  # left to FastAPI by DirectDispatch.run already
        ):
            await self.app(scope, receive, send)
            return
        replay, body, complete = await read_body(receive)
        response = await run_in_threadpool(self.direct.respond, scope, body) if complete else None
        if response is None:
            await self.app(scope, replay, send)
        else:
            await response(scope, replay, send)
