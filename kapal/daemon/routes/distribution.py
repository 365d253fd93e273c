"""Registry routes: pull (``/images/create?fromImage``), push and ``/auth``.

Progress goes out as Docker's JSON message stream. The 200 and its headers
are sent with the first message, so a pull that fails before it starts (no
such repository, bad credentials) answers with the error's own HTTP status,
as dockerd does; later failures are reported in-band.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from kapal.daemon.app import ENGINE, Routes, json_response, read_json_body
from kapal.daemon.streams import error_message, json_line
from kapal.distribution.credentials import Credentials, decode_header
from kapal.errors import InvalidArgument, KapalError

Emit = Callable[[dict[str, Any]], None]


async def stream_progress(request: web.Request, run: Callable[[Emit], Awaitable[None]]) -> web.StreamResponse:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    task = asyncio.ensure_future(run(queue.put_nowait))

    async def send(message: dict[str, Any]) -> None:
        if not response.prepared:
            await response.prepare(request)
        await response.write(json_line(message))

    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await send(getter.result())
                continue
            getter.cancel()
            break
        while not queue.empty():
            await send(queue.get_nowait())
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    error = task.exception()
    if error is not None:
        if not response.prepared:
            raise error
        await response.write(json_line(error_message(error)))
    if not response.prepared:
        await response.prepare(request)
    await response.write_eof()
    return response


def credentials_of(request: web.Request) -> Credentials:
    return decode_header(request.headers.get("X-Registry-Auth"))


async def pull_image(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    name = request.query.get("fromImage", "")
    tag = request.query.get("tag", "")
    platform = request.query.get("platform") or None
    credentials = credentials_of(request)
    return await stream_progress(
        request, lambda emit: engine.distribution.pull(name, tag, credentials, emit, platform)
    )


async def push_image(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    name = request.match_info["name"]
    tag = request.query.get("tag", "")
    try:
        credentials = credentials_of(request)
    except InvalidArgument:
        credentials = Credentials()  # moby ignores an undecodable header on push
    return await stream_progress(request, lambda emit: engine.distribution.push(name, tag, credentials, emit))


async def auth(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = await read_json_body(request)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid auth configuration")
    credentials = Credentials.from_json(body)
    try:
        token = await engine.distribution.login(credentials)
    except KapalError:
        raise
    return json_response({"Status": "Login Succeeded", "IdentityToken": token})


def register(routes: Routes) -> None:
    routes.post("/images/{name:.+}/push", push_image)
    routes.post("/auth", auth)
