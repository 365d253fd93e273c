"""``GET /containers/{id}/attach/ws``: a container's stdio over a websocket, through aiohttp's
websocket client on kapald's socket."""

from __future__ import annotations

import asyncio

import aiohttp
from conftest import Daemon


async def _connect(
    daemon: Daemon, path: str
) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket)))
    try:
        ws = await session.ws_connect(f"http://kapal{path}")
    except BaseException:
        await session.close()
        raise
    return session, ws


async def _received(ws: aiohttp.ClientWebSocketResponse) -> list[aiohttp.WSMessage]:
    """Every data message until the daemon closes the websocket."""
    messages = []
    async for message in ws:
        if message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            messages.append(message)
    return messages


def test_attach_ws_before_start_sees_all_output(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("create", "--name", "talker", "busybox", "sh", "-c", "echo out; echo err >&2; echo end")

    async def scenario() -> list[aiohttp.WSMessage]:
        session, ws = await _connect(daemon, "/v1.47/containers/talker/attach/ws?stream=1&stdout=1&stderr=1")
        async with session:
            await asyncio.to_thread(daemon.kapal, "start", "talker")
            return await asyncio.wait_for(_received(ws), 30)

    messages = asyncio.run(scenario())
    assert all(message.type == aiohttp.WSMsgType.BINARY for message in messages)
    # Not multiplexed: stdout and stderr arrive as they are, no 8-byte headers.
    assert sorted(b"".join(message.data for message in messages).splitlines()) == [b"end", b"err", b"out"]


def test_attach_ws_stdin_and_text_frames_before_1_28(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("run", "-d", "-i", "--name", "echoer", "busybox", "cat")

    async def scenario(version: str) -> tuple[aiohttp.WSMsgType, str]:
        session, ws = await _connect(
            daemon, f"/v{version}/containers/echoer/attach/ws?stream=1&stdin=1&stdout=1&stderr=1"
        )
        async with session:
            await ws.send_bytes(f"hello {version}\n".encode())
            message = await asyncio.wait_for(ws.receive(), 30)
            await ws.close()
            return message.type, message.data if isinstance(message.data, str) else message.data.decode()

    assert asyncio.run(scenario("1.47")) == (aiohttp.WSMsgType.BINARY, "hello 1.47\n")
    assert asyncio.run(scenario("1.27")) == (aiohttp.WSMsgType.TEXT, "hello 1.27\n")
    daemon.kapal("rm", "-f", "echoer")


def test_attach_ws_replays_logs(daemon: Daemon, busybox: str) -> None:
    daemon.kapal("run", "--name", "done", "busybox", "sh", "-c", "echo first; echo second >&2")

    async def scenario(streams: str) -> bytes:
        session, ws = await _connect(daemon, f"/containers/done/attach/ws?logs=1&{streams}")
        async with session:
            return b"".join(message.data for message in await asyncio.wait_for(_received(ws), 30))

    assert asyncio.run(scenario("stdout=1&stderr=1")) == b"first\nsecond\n"
    assert asyncio.run(scenario("stdout=1")) == b"first\n"
    missing = asyncio.run(_status(daemon, "/containers/nosuch/attach/ws?stream=1"))
    assert missing == 404


async def _status(daemon: Daemon, path: str) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(daemon.socket))) as session:
        try:
            await session.ws_connect(f"http://kapal{path}")
        except aiohttp.WSServerHandshakeError as error:
            return error.status
    return 101
