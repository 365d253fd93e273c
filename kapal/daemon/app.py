"""The Engine API application: routing, API versions, headers and errors.

Each route is served both under ``/vX.Y`` and unprefixed, as dockerd does.
Every response carries ``Api-Version``, ``Server`` and ``Ostype``; every error
becomes ``{"message": ...}`` with the status its class names (kapal.errors).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from kapal import __version__
from kapal.engine import Engine
from kapal.errors import InvalidArgument, KapalError

log = logging.getLogger("kapald")

API_VERSION = "1.47"
MIN_API_VERSION = "1.24"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ENGINE = web.AppKey("engine", Engine)


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (0,)


def api_version(request: web.Request) -> tuple[int, ...]:
    """The API version this request speaks, for the few responses whose shape depends on it."""
    return version_tuple(request.get("api_version", API_VERSION))


def json_response(data: object, status: int = 200) -> web.Response:
    """JSON as dockerd sends it: ``Content-Type: application/json`` exactly (old Go clients compare the
    whole header before decoding an error) and a trailing newline."""
    body = json.dumps(data, separators=(",", ":")).encode() + b"\n"
    return web.Response(body=body, status=status, headers={"Content-Type": "application/json"})


async def read_json_body(request: web.Request) -> dict:
    """A request's JSON object body; no body (or ``null``) is an empty object."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"invalid JSON body: {error}") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: want an object")
    return body


def error_response(status: int, message: str) -> web.Response:
    return json_response({"message": message}, status=status)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.match_info.get("api_version")
    if version:
        if version_tuple(version) < version_tuple(MIN_API_VERSION):
            return error_response(
                400,
                f"client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, "
                "please upgrade your client to a newer version",
            )
        if version_tuple(version) > version_tuple(API_VERSION):
            return error_response(
                400, f"client version {version} is too new. Maximum supported API version is {API_VERSION}"
            )
    request["api_version"] = version or API_VERSION
    try:
        return await handler(request)
    except KapalError as error:
        if error.http_status >= 500:
            log.error("%s %s: %s", request.method, request.path, error.message)
        return error_response(error.http_status, error.message)
    except web.HTTPNotFound:
        return error_response(404, "page not found")
    except web.HTTPMethodNotAllowed:
        return error_response(405, "method not allowed")
    except web.HTTPException:
        raise
    except (ConnectionResetError, ConnectionError):
        raise
    except Exception as error:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, f"internal error: {error}")


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Api-Version"] = API_VERSION
    response.headers["Server"] = f"Docker/{__version__} (linux) kapal/{__version__}"
    response.headers["Ostype"] = "linux"
    response.headers.setdefault("Docker-Experimental", "false")


class Routes:
    """Registers every route twice: with and without the ``/vX.Y`` prefix."""

    def __init__(self, app: web.Application) -> None:
        self._router = app.router

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._router.add_route(method, path, handler)
        self._router.add_route(method, r"/v{api_version:[0-9]+(?:\.[0-9]+)*}" + path, handler)

    def get(self, path: str, handler: Handler) -> None:
        self.add("GET", path, handler)

    def post(self, path: str, handler: Handler) -> None:
        self.add("POST", path, handler)

    def delete(self, path: str, handler: Handler) -> None:
        self.add("DELETE", path, handler)

    def head(self, path: str, handler: Handler) -> None:
        self.add("HEAD", path, handler)


def create_app(engine: Engine) -> web.Application:
    from kapal.daemon.routes import (
        build,
        container_files,
        containers,
        execs,
        images,
        networks,
        system,
        volumes,
    )

    app = web.Application(middlewares=[api_middleware], client_max_size=1 << 40)
    app[ENGINE] = engine
    app.on_response_prepare.append(_add_headers)
    routes = Routes(app)
    system.register(routes)
    images.register(routes)
    containers.register(routes)
    container_files.register(routes)
    execs.register(routes)
    networks.register(routes)
    volumes.register(routes)
    build.register(routes)
    return app
