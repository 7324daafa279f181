"""The ASGI application: settings and storage in, FHIR REST out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from fhir_server import __version__
from fhir_server.api.application import FhirApp
from fhir_server.api.errors import install_error_handlers
from fhir_server.api.limits import RequestLimits
from fhir_server.api.metadata import metadata
from fhir_server.api.routes import ROUTES, Handler
from fhir_server.api.startup import prepare
from fhir_server.bulk.export.endpoints import ENDPOINTS as EXPORT_ENDPOINTS
from fhir_server.bulk.export.runner import ExportRunner
from fhir_server.config import Settings
from fhir_server.search.registry import use_conformance
from fhir_server.sip.clock import Clock, SystemClock
from fhir_server.sip.obligations import sweep_forever
from fhir_server.storage.factory import create_storage
from fhir_server.storage.port import Storage, lease_owner
from fhir_server.subscriptions.dispatcher import Dispatcher
from fhir_server.subscriptions.events import serve, topics_of
from fhir_server.subscriptions.websocket import (
    SOCKET_PATH,
    WebsocketHub,
    subscription_socket,
    token_key,
)
from fhir_server.validation.structure import warm_up
from fhir_server.validation.validator import Validator


def create_app(
    settings: Settings | None = None,
    storage: Storage | None = None,
    clock: Clock | None = None,
    *,
    prepared: bool = False,
) -> FastAPI:
    """Build the app; `storage` defaults to the engine the settings select, `clock` to the
    system's (tests and scenario playback set their own). `prepared`: the start-up work
    (`startup.prepare`) is done already, as `serve --workers N` does it before the workers."""
    settings = settings or Settings()
    storage = storage or create_storage(settings)
    validator = Validator.from_directories(settings.profile_dirs)
    use_conformance(validator.conformance)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await storage.open()
        warm_up()  # build the definitions' lookup tables before the first request
        if not prepared:
            await prepare(storage, validator.conformance)
        app.state.websockets.key = await token_key(storage)
        owner = lease_owner()
        sweeper = asyncio.create_task(
            sweep_forever(storage, app.state.clock, settings.obligation_sweep_interval, owner)
        )
        dispatching = None
        if settings.dispatch:
            app.state.dispatcher = Dispatcher(
                storage, settings, topics=app.state.topics, websockets=app.state.websockets
            )
            dispatching = asyncio.create_task(app.state.dispatcher.run())
        exporting = asyncio.create_task(app.state.exports.run())  # $export jobs, resumed too
        try:
            yield
        finally:
            for task in (t for t in (sweeper, dispatching, exporting) if t is not None):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            app.state.dispatcher = None
            await storage.close()

    app = FhirApp(
        title="sip-fhir",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.storage = storage
    app.state.validator = validator
    app.state.clock = clock or SystemClock()
    app.state.topics = topics_of(validator.conformance)  # the write path's own
    serve(app.state.topics, app.state.clock)  # for the server's own writes
    app.state.websockets = WebsocketHub()
    app.state.dispatcher = None  # set by the lifespan when settings.dispatch
    app.state.exports = ExportRunner(storage, settings, app.state.clock)
    install_error_handlers(app)
    app.add_middleware(RequestLimits, settings=settings)
    base = settings.base_path.rstrip("/")
    # Plain Starlette routes: handlers take the Request and return a Response, so FastAPI's
    # dependency and body machinery would be pure per-request cost.
    app.router.routes.append(Route(f"{base}/metadata", metadata, methods=["GET"]))
    for path, endpoint, methods in EXPORT_ENDPOINTS:  # $export status and files
        app.router.routes.append(Route(base + path, endpoint, methods=methods))
    for route in ROUTES:
        handler = route.handler if route.method == "GET" else notifying(route.handler)
        app.router.routes.append(Route(base + route.path, handler, methods=[route.method]))
    app.router.routes.append(WebSocketRoute(base + SOCKET_PATH, subscription_socket))
    return app


def notifying(handler: Handler) -> Handler:
    """A write handler that wakes the in-process dispatcher once it answered, so a
    subscriber hears of a commit at once rather than at the next poll."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        finally:
            dispatcher = request.app.state.dispatcher
            if dispatcher is not None:
                dispatcher.notify(subscriptions=_may_write_subscriptions(request))

    handle.__name__ = handler.__name__
    handle.__doc__ = handler.__doc__
    return handle


def _may_write_subscriptions(request: Request) -> bool:
    """A write to Subscription, or a Bundle that may hold one: the dispatcher loads the
    Subscriptions again at once rather than at its next periodic load."""
    type = request.path_params.get("type")
    return type in (None, "Subscription")
