"""Fixtures for registry tests: a real CNCF registry (Debian's docker-registry) on loopback.

Each registry gets a free port, its storage on tmpfs, and optionally htpasswd
auth, token auth or TLS with a CA made for the test (installed into a certs.d
directory the daemon is pointed at with ``KAPAL_CERTS_D``).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from certificates import CertificateAuthority  # noqa: F401 - re-exported for the tests here
from conftest import Daemon, clean_up_after, import_busybox

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Registry:
    """One docker-registry process; ``restart`` keeps its storage and port."""

    def __init__(self, base: Path, auth: dict | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.base = base
        self.base.mkdir(parents=True, exist_ok=True)
        self.storage = base / "storage"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = base / "registry.log"
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "kapal-test"},
        }
        if auth:
            config["auth"] = auth
        if tls:
            config["http"]["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
        self.scheme = "https" if tls else "http"
        self.config = base / "config.yml"
        # JSON is YAML: no YAML library needed.
        self.config.write_text(json.dumps(config))

    def start(self) -> Registry:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [REGISTRY_BIN, "serve", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"docker-registry did not start: {self.log.read_text()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def blob_path(self, digest: str) -> Path:
        hexpart = digest.partition(":")[2]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"


@pytest.fixture
def registry(scratch: Path) -> Iterator[Registry]:
    instance = Registry(scratch / "registry").start()
    try:
        yield instance
    finally:
        instance.stop()


def htpasswd_file(path: Path, user: str, password: str) -> Path:
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.write_text(f"{user}:{hashed}\n")
    return path


@pytest.fixture
def certs_d(scratch: Path) -> Path:
    path = scratch / "certs.d"
    path.mkdir()
    return path


@pytest.fixture
def kapald(scratch: Path, certs_d: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    """A kapald whose certs.d is the test's, and whose CLI keeps its config.json in the test's directory."""
    monkeypatch.setenv("KAPAL_CERTS_D", str(certs_d))
    monkeypatch.setenv("DOCKER_CONFIG", str(scratch / "docker-config"))
    instance = Daemon(scratch / "daemon")
    instance.base.mkdir()
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        clean_up_after(instance.base)


@pytest.fixture
def busybox_image(kapald: Daemon, busybox_rootfs: Path) -> str:
    return import_busybox(kapald, busybox_rootfs)


def registry_request(
    registry: Registry, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A raw request to a plain-HTTP test registry (to build what kapal would not push: an index)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def put_blob(registry: Registry, repository: str, data: bytes) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, _ = registry_request(registry, "POST", f"/v2/{repository}/blobs/uploads/")
    assert status == 202, status
    location = headers["Location"]
    separator = "&" if "?" in location else "?"
    path = location.split(registry.host, 1)[-1]
    status, _, body = registry_request(
        registry,
        "PUT",
        f"{path}{separator}digest={digest}",
        data,
        {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
    )
    assert status == 201, (status, body)
    return digest


def put_manifest(registry: Registry, repository: str, reference: str, data: bytes, media_type: str) -> str:
    import hashlib

    status, _, body = registry_request(
        registry, "PUT", f"/v2/{repository}/manifests/{reference}", data, {"Content-Type": media_type}
    )
    assert status == 201, (status, body)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def get_manifest(registry: Registry, repository: str, reference: str) -> bytes:
    accept = (
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    )
    status, _, body = registry_request(
        registry, "GET", f"/v2/{repository}/manifests/{reference}", b"", {"Accept": accept}
    )
    assert status == 200, (status, body)
    return body


def rootfs_with_file(busybox_rootfs: Path, out: Path, name: str, size: int) -> Path:
    """The busybox rootfs plus one file of *size* random bytes (an incompressible layer)."""
    import shutil
    import tarfile

    shutil.copyfile(busybox_rootfs, out)
    random_file = out.with_suffix(".bin")
    with open(random_file, "wb") as sink:
        left = size
        while left:
            n = min(left, 1 << 20)
            sink.write(os.urandom(n))
            left -= n
    with tarfile.open(out, "a") as tar:
        tar.add(random_file, arcname=name)
    random_file.unlink()
    return out


class TokenIssuer:
    """A token server as distribution's token auth expects: JWTs (ES256, x5c) naming granted access.

    Users with a password get what they ask for; anonymous callers may only pull ``public/*``.
    It runs an aiohttp app on its own event loop in a thread and records every request.
    """

    def __init__(self, directory: Path, users: dict[str, str]) -> None:
        import asyncio
        import threading

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        directory.mkdir(parents=True, exist_ok=True)
        self.users = users
        self.issuer = "kapal-test-issuer"
        self.service = "kapal-test-registry"
        self.requests: list[dict] = []
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kapal token issuer")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = directory / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        import base64

        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.realm = f"http://127.0.0.1:{self.port}/token"

    async def _start(self) -> int:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/token", self._token)
        app.router.add_post("/token", self._token)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _token(self, request):  # noqa: ANN001, ANN202 - an aiohttp handler
        import base64
        import secrets as random
        import time

        import jwt
        from aiohttp import web

        account = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(user) != password:
                return web.json_response(
                    {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}, status=401
                )
            account = user
        scopes = request.query.getall("scope", [])
        self.requests.append({"account": account, "scopes": scopes})
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            granted = wanted if account else [a for a in wanted if a == "pull" and name.startswith("public/")]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": random.token_hex(8),
            "access": access,
        }
        token = jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": self.x5c})
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})

    def auth_config(self) -> dict:
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.bundle),
            }
        }

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
