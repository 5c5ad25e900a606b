"""The direct routes: taken apart once at start-up, matched and bound as FastAPI would.

A route is **direct** when it is a ``def`` endpoint whose dependencies are all among
:mod:`cloud.deps`' five and whose parameters are plain one-value path, query and header
parameters (and at most one JSON body). For such a route this module works out once what
FastAPI works out per request:

* :class:`DirectRoutes` finds the route serving a method and a path (Starlette's rule:
  the first route in order whose pattern and method match), or says the application
  must (``None``: no direct route, 404, 405);
* :meth:`Endpoint.bind` validates the path, query and header parameters and the body
  with the route's own fields, or says the application must (``None``: FastAPI writes
  those 422s, and only FastAPI knows the order of their ``detail``).

No effect here: handing a request over to the application is always safe.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.convertors import PathConvertor
from starlette.datastructures import Headers, QueryParams
from starlette.routing import BaseRoute, Match

from cloud.deps import get_context, get_principal, get_reader, get_write, get_writer

# the dependencies cloud.direct knows how to provide (see DirectDispatch._invoke)
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
NO_BODY: Any = object()


@dataclass(frozen=True, slots=True)
class Param:
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
    def of(cls, field: Any) -> Param | None:
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


def _take_all(fields: Sequence[Param], received: Mapping[str, Any], values: dict[str, Any]) -> bool:
    return all(param.take(received, values) for param in fields)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A direct route, taken apart once at start-up."""

    route: APIRoute
    template: str
    path_params: Sequence[Param]
    query_params: Sequence[Param]
    header_params: Sequence[Param]
    key_param: Param | None  # get_write's one header: Idempotency-Key
    body: Any  # the body's ModelField, or None
    body_name: str
    dependencies: tuple[tuple[str, Callable[..., Any]], ...]

    def bind(
        self,
        path_values: dict[str, Any],
        query: bytes,
        headers: Headers,
        body: Any,
    ) -> tuple[dict[str, Any], str | None] | None:
        """The endpoint's validated arguments and the Idempotency-Key, or ``None`` if any is invalid.

        ``body`` is the parsed JSON body, or :data:`NO_BODY`.
        """
        kwargs: dict[str, Any] = {}
        key: dict[str, Any] = {}
        if not _take_all(self.path_params, path_values, kwargs):
            return None
        if self.query_params and not _take_all(self.query_params, QueryParams(query), kwargs):
            return None
        if not _take_all(self.header_params, headers, kwargs):
            return None
        if self.key_param is not None and not self.key_param.take(headers, key):
            return None
        if self.body is not None:
            if body is NO_BODY:
                return None
            value, errors = self.body.validate(body, {}, loc=("body",))
            if errors:
                return None
            kwargs[self.body_name] = value
        return kwargs, next(iter(key.values()), None)


def _simple(fields: Sequence[Any]) -> list[Param] | None:
    found = [Param.of(field) for field in fields]
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


def direct_endpoint(route: APIRoute) -> Endpoint | None:
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
    key_param: Param | None = None
    for sub in dependant.dependencies:
        if sub.call not in _DEPENDENCIES or sub.name is None:
            return None
        inner = _subtree_params(sub)
        if sub.call is get_write:
            if len(inner) != 1 or not isinstance(inner[0].field_info, params.Header):
                return None
            key_param = Param.of(inner[0])
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
    return Endpoint(
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


class DirectRoutes:
    """The app's routes, each with its :class:`Endpoint` when it is direct.

    ``routes`` are the app's routes in the order the app matches them. The app's own
    routes (``/openapi.json``, ``/docs``) are left out: they never match a ``/v1`` path.
    """

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._routes: list[tuple[BaseRoute, Endpoint | None]] = [
            (route, direct_endpoint(route) if isinstance(route, APIRoute) else None) for route in routes
        ]
        # the routes that can match a path of each shape, in the app's order (see _shape)
        shapes = {shape for route, _ in self._routes if (shape := _route_shape(route)) is not None}
        self._by_shape: dict[tuple[str, int], list[tuple[BaseRoute, Endpoint | None]]] = {
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

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, Any]] | None:
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
