"""Bridges between aiohttp's event loop and the engine's blocking services.

The engine's services are plain blocking Python (they hash, unpack and fsync);
the daemon runs each in a worker thread. These adapters let such a thread read
a request body and write a response body as ordinary file objects, and let it
report progress as Docker's JSON message stream.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from kapal.errors import KapalError

log = logging.getLogger("kapald")
T = TypeVar("T")
Emit = Callable[[dict[str, Any]], None]


class _BodyRaw(io.RawIOBase):
    def __init__(self, content: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._content = content
        self._loop = loop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        future = asyncio.run_coroutine_threadsafe(self._content.read(len(buffer)), self._loop)
        data = future.result()
        buffer[: len(data)] = data
        return len(data)


def body_reader(request: web.Request) -> io.BufferedReader:
    """The request body as a blocking file, for use in a worker thread only."""
    return io.BufferedReader(_BodyRaw(request.content, asyncio.get_running_loop()), buffer_size=1 << 20)


class ResponseWriter(io.RawIOBase):
    """A blocking file whose writes go to a prepared aiohttp response, from a worker thread."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._response = response
        self._loop = loop

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        if chunk:
            asyncio.run_coroutine_threadsafe(self._response.write(chunk), self._loop).result()
        return len(chunk)


def json_line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\r\n"


def error_message(error: BaseException) -> dict[str, Any]:
    """An in-band error, with the deprecated ``error`` field docker-py still keys on."""
    text = error.message if isinstance(error, KapalError) else f"internal error: {error}"
    return {"errorDetail": {"message": text}, "error": text}


async def json_progress(
    request: web.Request,
    work: Callable[[Emit], T],
    prepare: bool = True,
    cancel: Callable[[], None] | None = None,
) -> tuple[web.StreamResponse, T | None]:
    """Run *work(emit)* in a thread, streaming what it emits as JSON lines.

    An error after the 200 went out is sent in-band, as Docker does. With *cancel*, a client
    that goes away (even while nothing is sent) calls it and leaves the thread to end on its own.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)

    def emit(message: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, message)

    def run() -> T:
        try:
            return work(emit)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    task = asyncio.ensure_future(asyncio.to_thread(run))
    if cancel is None:
        while (message := await queue.get()) is not None:
            await response.write(json_line(message))
    else:
        try:
            finished = await _relay_while_connected(request, response, queue)
        except asyncio.CancelledError:
            _abandon(task, cancel)
            raise
        except ConnectionError:
            finished = False
        if not finished:
            _abandon(task, cancel)
            return response, None
    result: T | None = None
    try:
        result = await task
    except Exception as error:  # reported in-band: the status line is gone already
        if not isinstance(error, KapalError):
            log.exception("error in streamed request %s", request.path)
        await response.write(json_line(error_message(error)))
    await response.write_eof()
    return response, result


async def _relay_while_connected(
    request: web.Request, response: web.StreamResponse, queue: asyncio.Queue[dict[str, Any] | None]
) -> bool:
    """Send the queue's messages until its end (True) or until the client is gone (False)."""
    getter = asyncio.ensure_future(queue.get())
    try:
        while True:
            done, _ = await asyncio.wait({getter}, timeout=0.5)
            if not done:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return False
                continue
            message = getter.result()
            if message is None:
                return True
            getter = asyncio.ensure_future(queue.get())
            await response.write(json_line(message))
    finally:
        getter.cancel()


def _abandon(task: asyncio.Future[Any], cancel: Callable[[], None]) -> None:
    asyncio.get_running_loop().run_in_executor(None, cancel)  # it may block (killing a process)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # ends on its own, unawaited


async def iterate_in_thread(produce: Callable[[], Iterator[T]], buffer: int = 256) -> AsyncIterator[T]:
    """Run a blocking generator in a worker thread and iterate it from the event loop.

    The queue is bounded so a slow client slows the reader instead of filling memory;
    closing the async iterator stops the thread at its next item.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(buffer)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def run() -> None:
        try:
            for item in produce():
                if stop.is_set():
                    return
                put(("item", item))
            put(("end", None))
        except BaseException as error:  # handed to the event loop side
            if not stop.is_set():
                put(("error", error))

    loop.run_in_executor(None, run)
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                break
            if kind == "error":
                raise value
            yield value
    finally:
        # The worker notices at its next item; draining unblocks a put it may be waiting in.
        stop.set()
        while not queue.empty():
            queue.get_nowait()


def frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed stream frame: 8-byte header (stream, size) and the data."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def frame_log_entry(entry: Any, multiplexed: bool, timestamps: bool) -> bytes:
    from kapal.container.logs import format_time

    data = entry.data
    if timestamps:
        data = format_time(entry.time_nano).encode() + b" " + data
    if not multiplexed:
        return data
    return frame(1 if entry.stream == "stdout" else 2, data)
