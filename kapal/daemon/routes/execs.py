"""Exec routes: create, start (hijacked like attach), inspect, resize."""

from __future__ import annotations

import asyncio

from aiohttp import web

from kapal.daemon.app import ENGINE, Routes, json_response, read_json_body
from kapal.daemon.hijack import STDERR, STDOUT, hijack
from kapal.daemon.routes.containers import detach_sequence, pump
from kapal.errors import InvalidArgument, KapalError


async def create_exec(request: web.Request) -> web.Response:
    body = await read_json_body(request)
    session = await asyncio.to_thread(request.app[ENGINE].execs.create, request.match_info["id"], body)
    return json_response({"Id": session.id}, status=201)


async def start_exec(request: web.Request) -> web.StreamResponse:
    execs = request.app[ENGINE].execs
    session = execs.get(request.match_info["id"])
    body = await read_json_body(request)
    tty = body.get("Tty", session.config.get("Tty"))
    if body.get("Detach"):
        await asyncio.to_thread(execs.start, session.id, tty, False)
        return web.Response(status=200)
    # As dockerd: upgrade first, then start; a process that cannot start reports on the stream itself
    # and its exit code (126/127) comes from inspect.
    stdin = bool(session.config.get("AttachStdin"))
    detach = detach_sequence(session.config.get("DetachKeys") or None) if tty and stdin else b""
    response, conn = await hijack(request, multiplexed=not tty)
    want = {
        STDOUT: bool(session.config.get("AttachStdout", True)),
        STDERR: bool(session.config.get("AttachStderr", True)),
    }
    try:
        try:
            sock = await asyncio.to_thread(execs.start, session.id, tty, True)
        except KapalError as error:
            await conn.write(f"{error.message}\r\n".encode(), STDOUT)
            return response
        detached = await pump(sock, conn, want, stdin, detach)
        # `docker exec` asks for the exit code as soon as the stream ends: have it ready first.
        try:
            if not detached:
                await asyncio.wait_for(asyncio.wrap_future(session.done), 10)
        except (TimeoutError, KapalError):
            pass
        await conn.close_write()
    finally:
        await conn.close()
    return response


async def inspect_exec(request: web.Request) -> web.Response:
    return json_response(request.app[ENGINE].execs.get(request.match_info["id"]).to_json())


async def resize_exec(request: web.Request) -> web.Response:
    try:
        height, width = int(request.query.get("h") or 0), int(request.query.get("w") or 0)
    except ValueError:
        raise InvalidArgument("height and width must be integers") from None
    await asyncio.to_thread(request.app[ENGINE].execs.resize, request.match_info["id"], height, width)
    return web.Response(status=200)


def register(routes: Routes) -> None:
    routes.post("/containers/{id}/exec", create_exec)
    routes.post("/exec/{id}/start", start_exec)
    routes.get("/exec/{id}/json", inspect_exec)
    routes.post("/exec/{id}/resize", resize_exec)
