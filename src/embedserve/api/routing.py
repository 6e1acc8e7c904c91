"""Which route a request is for, also before routing has run (a request refused for its key or
its size): its metrics label and its wire format's error shape depend on it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from starlette.routing import BaseRoute, Match
from starlette.types import Scope


def route_for(scope: Scope) -> BaseRoute | None:
    """The route that serves (or would serve) `scope`, or None for a path no route serves."""
    route = scope.get("route")
    if route is not None:
        return route  # type: ignore[no-any-return]
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", ())
    return next((r for r in _flat(routes) if r.matches(scope)[0] == Match.FULL), None)


def _flat(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes, with those of included routers in their place (FastAPI keeps an included
    router whole, as `original_router`, where older versions copied its routes in)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _flat(included.routes)
        else:
            yield route


def allowed_methods(scope: Scope) -> list[str]:
    """The methods the routes of `scope`'s path take (several routes may share a path)."""
    app = scope.get("app")
    routes = getattr(getattr(app, "router", None), "routes", ())
    methods: set[str] = set()
    for route in _flat(routes):
        if route.matches(scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)
