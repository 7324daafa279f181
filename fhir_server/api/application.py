"""The ASGI app object: FastAPI's, on Starlette's request path.

Every route is a plain Starlette route (a handler takes the Request, returns a Response), so
FastAPI's per-request layers do nothing for us but cost time on each request: the
OpenTelemetry check, its body-size limit (unset), and the exit stacks kept for dependencies'
files. `FhirApp` keeps FastAPI's object and lifespan and serves requests as Starlette does.
"""

from __future__ import annotations

from collections import defaultdict

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send


class FhirApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        """Starlette's stack (errors, our middleware, exception handlers) around the router,
        whose routes are looked up among those with as many path segments."""
        router = self.router
        if router.middleware_stack == router.app:  # no middleware of the router's own
            router.middleware_stack = RoutesBySegments(router)
        return Starlette.build_middleware_stack(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await super().__call__(scope, receive, send)
            return
        await Starlette.__call__(self, scope, receive, send)


class RoutesBySegments:
    """The router's first match, tried only among the routes whose path has as many `/` as
    the request's: a path parameter never spans a `/`, so no other route can match, fully or
    by path alone (405). No match (a redirect or 404) is left to the router itself."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.fallback = router.app
        self.routes: dict[int, list[BaseRoute]] | None = defaultdict(list)
        for route in router.routes:
            path = getattr(route, "path", None)
            if not isinstance(path, str) or ":path}" in path:
                self.routes = None  # a route that may span segments: the router decides
                return
            self.routes[path.count("/")].append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or self.routes is None:
            await self.fallback(scope, receive, send)
            return
        scope.setdefault("router", self.router)
        partial = None
        for route in self.routes.get(_route_path(scope).count("/"), ()):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial, partial_scope = route, child_scope
        if partial is not None:
            scope["route"] = partial
            scope.update(partial_scope)
            await partial.handle(scope, receive, send)
            return
        await self.fallback(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path the routes match: without the `root_path` a proxy mounted the app under."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path
