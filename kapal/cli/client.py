"""The CLI's connection to kapald: stdlib ``http.client`` over the Unix socket.

No third-party HTTP stack: the CLI must start in a few tens of milliseconds.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urlencode

API_VERSION = "1.47"
DEFAULT_HOST = "unix:///run/kapal/kapal.sock"


class DaemonError(Exception):
    """The daemon answered with an error; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConnectError(Exception):
    pass


def default_host() -> str:
    return os.environ.get("KAPAL_HOST") or os.environ.get("DOCKER_HOST") or DEFAULT_HOST


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    def __init__(self, host: str | None = None) -> None:
        self.host = host or default_host()
        if self.host.startswith("unix://"):
            self._path = self.host[len("unix://") :]
        elif self.host.startswith("/"):
            self._path = self.host
        else:
            raise ConnectError(f"unsupported host {self.host!r}: kapal speaks to unix:// sockets")

    def _connect_error(self) -> ConnectError:
        return ConnectError(
            f"Cannot connect to the kapal daemon at {self.host}. Is the kapal daemon running?"
        )

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | list[tuple[str, Any]] | None = None,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send a request; returns the response, raising DaemonError for 4xx/5xx."""
        url = f"/v{API_VERSION}{path}"
        if query:
            items = query.items() if isinstance(query, dict) else query
            pairs = [(k, _query_value(v)) for k, v in items if v is not None]
            if pairs:
                url += "?" + urlencode(pairs)
        conn = _UnixConnection(self._path)
        headers = dict(headers or {})
        try:
            if body is not None and not isinstance(body, bytes):
                headers.setdefault("Content-Type", "application/x-tar")
                conn.putrequest(method, url)
                headers["Transfer-Encoding"] = "chunked"
                for key, value in headers.items():
                    conn.putheader(key, value)
                conn.endheaders()
                while chunk := body.read(1 << 20):
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            else:
                conn.request(method, url, body=body, headers=headers)
            response = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as error:
            if isinstance(error, PermissionError):
                raise ConnectError(
                    f"permission denied while trying to connect to the kapal daemon socket at {self.host}"
                ) from None
            raise self._connect_error() from None
        if response.status >= 400:
            data = response.read()
            try:
                message = json.loads(data)["message"]
            except (ValueError, KeyError, TypeError):
                message = data.decode(errors="replace").strip() or response.reason
            raise DaemonError(response.status, message)
        return response

    def json(self, method: str, path: str, query: Any = None, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        headers = {"Content-Type": "application/json"} if data is not None else None
        response = self.request(method, path, query, data, headers)
        raw = response.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, query: Any = None) -> Any:
        return self.json("GET", path, query)

    def stream(self, method: str, path: str, query: Any = None, body: Any = None) -> Iterator[dict[str, Any]]:
        """Decode a JSON message stream (newline- or concatenation-separated objects)."""
        response = self.request(method, path, query, body)
        decoder = json.JSONDecoder()
        buffer = ""
        while True:
            chunk = response.read1(65536) if hasattr(response, "read1") else response.read(65536)
            if not chunk:
                break
            buffer += chunk.decode(errors="replace")
            while True:
                buffer = buffer.lstrip()
                if not buffer:
                    break
                try:
                    value, end = decoder.raw_decode(buffer)
                except json.JSONDecodeError:
                    break
                buffer = buffer[end:]
                yield value


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
