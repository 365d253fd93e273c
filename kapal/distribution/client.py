"""The OCI distribution protocol over aiohttp: one registry host, one repository at a time.

Where a registry is reached is decided by :class:`Registries` (mirrors for
Docker Hub, TLS with system CAs plus ``certs.d/HOST/ca.crt``, plain HTTP for
insecure registries — loopback is insecure by default, as in Docker). A
:class:`Repository` sends requests with the right credentials: it answers a
401 challenge once (Basic or a Bearer token for the repository's scopes) and
retries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kapal.distribution.auth import Challenge, TokenCache, basic_header, parse_challenges
from kapal.distribution.credentials import Credentials
from kapal.distribution.errors import RegistryUnreachable, from_response
from kapal.errors import InvalidArgument, KapalError, Unauthorized
from kapal.image import manifest as mf

DEFAULT_CERTS_D = "/etc/kapal/certs.d"
DOCKER_HUB_HOST = "registry-1.docker.io"
# Largest manifest or index accepted (containerd's limit).
MAX_MANIFEST = 4 << 20
MANIFEST_ACCEPT = ", ".join(
    [mf.OCI_MANIFEST, mf.DOCKER_MANIFEST, mf.OCI_INDEX, mf.DOCKER_MANIFEST_LIST, mf.DOCKER_SCHEMA1_SIGNED]
)
USER_AGENT = "kapal"


@dataclass
class RegistryOptions:
    """The daemon's registry settings (daemon.json keys of the same names)."""

    mirrors: list[str] = field(default_factory=list)
    insecure: list[str] = field(default_factory=list)
    certs_dir: str = DEFAULT_CERTS_D
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5

    @classmethod
    def from_config(cls, extra: dict[str, Any]) -> RegistryOptions:
        return cls(
            mirrors=[str(m).rstrip("/") for m in extra.get("registry-mirrors") or []],
            insecure=[str(r) for r in extra.get("insecure-registries") or []],
            # Not a dockerd setting: tests and unusual installs point it elsewhere from the environment.
            certs_dir=os.environ.get("KAPAL_CERTS_D") or DEFAULT_CERTS_D,
            max_concurrent_downloads=int(extra.get("max-concurrent-downloads") or 3),
            max_concurrent_uploads=int(extra.get("max-concurrent-uploads") or 5),
        )


@dataclass(frozen=True)
class Endpoint:
    """Where a registry host is reached: ``https://host`` or ``http://host``, and how to verify it."""

    host: str  # the name in image references (docker.io, 127.0.0.1:5000)
    url: str  # scheme://host[:port] actually contacted
    ssl: Any  # an SSLContext, or False to skip verification (insecure registries)
    mirror: bool = False


class Registries:
    """Connections, TLS settings and token caches shared by every pull and push of the daemon."""

    def __init__(self, options: RegistryOptions | None = None) -> None:
        self.options = options or RegistryOptions()
        self.tokens = TokenCache()
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._schemes: dict[str, str] = {}  # insecure host -> scheme that answered

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64, limit_per_host=16, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=120),
                headers={"User-Agent": USER_AGENT},
                read_bufsize=1 << 20,
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def is_insecure(self, host: str) -> bool:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]")
        if name == "localhost":
            return True
        for entry in self.options.insecure:
            if entry in (host, name):
                return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return False
        if address.is_loopback:
            return True
        for entry in self.options.insecure:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False

    def ssl_context(self, host: str) -> ssl.SSLContext:
        """System CAs plus ``certs.d/HOST/*.crt``; a client certificate from ``client.cert/.key``."""
        context = self._contexts.get(host)
        if context is not None:
            return context
        context = ssl.create_default_context()
        directory = Path(self.options.certs_dir) / host
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                if entry.suffix == ".crt":
                    context.load_verify_locations(cafile=str(entry))
                elif entry.suffix == ".cert":
                    key = entry.with_suffix(".key")
                    context.load_cert_chain(str(entry), str(key) if key.exists() else None)
        self._contexts[host] = context
        return context

    def has_certs(self, host: str) -> bool:
        return (Path(self.options.certs_dir) / host).is_dir()

    def endpoints(self, host: str) -> list[Endpoint]:
        """Where to try *host*, in order: Docker Hub's mirrors first, then the registry itself."""
        out: list[Endpoint] = []
        if host == "docker.io":
            for mirror in self.options.mirrors:
                mirror_host = mirror.split("://", 1)[-1].split("/", 1)[0]
                scheme = "http" if mirror.startswith("http://") else "https"
                out.append(
                    Endpoint(mirror_host, f"{scheme}://{mirror_host}", self.ssl_context(mirror_host), True)
                )
            return [*out, Endpoint(host, f"https://{DOCKER_HUB_HOST}", self.ssl_context(DOCKER_HUB_HOST))]
        if self.is_insecure(host) and not self.has_certs(host):
            scheme = self._schemes.get(host)
            if scheme == "http":
                return [Endpoint(host, f"http://{host}", False)]
            # Insecure: try TLS without verification, then plain HTTP (Docker's order).
            return [Endpoint(host, f"https://{host}", False), Endpoint(host, f"http://{host}", False)]
        return [Endpoint(host, f"https://{host}", self.ssl_context(host))]

    async def open(
        self, host: str, path: str, credentials: Credentials, actions: Iterable[str] = ("pull",)
    ) -> Repository:
        """A client for repository *path* on *host*, on the first endpoint that answers ``/v2/``."""
        last: KapalError | None = None
        endpoints = self.endpoints(host)
        for endpoint in endpoints:
            repository = Repository(self, endpoint, path, credentials, list(actions))
            try:
                await repository.ping()
            except RegistryUnreachable as error:
                last = error
                continue
            except KapalError as error:
                if endpoint.mirror:
                    last = error
                    continue
                raise
            if endpoint.url.startswith("http://") and not endpoint.mirror:
                self._schemes[host] = "http"
            return repository
        assert last is not None
        raise last


class Repository:
    """Requests about one repository, authenticated as the registry's challenge asks."""

    def __init__(
        self,
        registries: Registries,
        endpoint: Endpoint,
        path: str,
        credentials: Credentials,
        actions: list[str],
    ) -> None:
        self.registries = registries
        self.endpoint = endpoint
        self.path = path
        self.credentials = credentials
        self.scopes = [f"repository:{path}:{','.join(actions)}"]
        self.challenge: Challenge | None = None
        self._authorization: str | None = None

    @property
    def base(self) -> str:
        return f"{self.endpoint.url}/v2/{self.path}"

    def add_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            self.scopes.append(scope)
            self._authorization = None

    async def ping(self) -> None:
        """``GET /v2/``: proves the endpoint speaks the protocol and learns its challenge."""
        url = f"{self.endpoint.url}/v2/"
        try:
            async with self._raw("GET", url, {}) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise RegistryUnreachable(describe_network_error(error, url)) from None
        if response.status == 401:
            self._learn(response)
            return
        if response.status >= 400:
            raise RegistryUnreachable(f"{url} answered {response.status}")

    def _learn(self, response: aiohttp.ClientResponse) -> None:
        challenges = parse_challenges(response.headers.getall("WWW-Authenticate", []))
        for wanted in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == wanted:
                    self.challenge = challenge
                    self._authorization = None
                    return

    async def _authorize(self, refresh: bool = False) -> str | None:
        if self.challenge is None:
            return None
        if self._authorization and not refresh:
            return self._authorization
        if self.challenge.scheme == "basic":
            if self.credentials.anonymous:
                return None
            self._authorization = basic_header(self.credentials)
        else:
            if self.credentials.registry_token:
                self._authorization = f"Bearer {self.credentials.registry_token}"
                return self._authorization
            token = await self.registries.tokens.token(
                self.registries.session,
                self.challenge,
                self.scopes,
                self.credentials,
                self.endpoint.ssl,
                refresh=refresh,
            )
            self._authorization = f"Bearer {token}"
        return self._authorization

    def _raw(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
        return self.registries.session.request(method, url, headers=headers, ssl=self.endpoint.ssl, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        what: str,
        headers: dict[str, str] | None = None,
        ok: Iterable[int] = (200,),
        data: Any = None,
        params: Any = None,
        allow_redirects: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send a request; on a 401 learn the challenge and retry once. The caller releases the response.

        A body that is an async iterator cannot be replayed, so callers uploading
        streams authenticate first (any earlier request of the repository does it).
        """
        if not url.startswith(("http://", "https://")):
            url = self.endpoint.url + url
        allowed = set(ok)
        for attempt in range(2):
            head = dict(headers or {})
            authorization = await self._authorize(refresh=attempt > 0)
            if authorization:
                head["Authorization"] = authorization
            try:
                response = await self._raw(
                    method, url, head, data=data, params=params, allow_redirects=allow_redirects
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as error:
                raise RegistryUnreachable(
                    f"{what}: {describe_network_error(error, self.endpoint.url)}"
                ) from None
            if response.status in allowed:
                return response
            body = await response.read()
            response.release()
            replayable = not callable(getattr(data, "__anext__", None))
            if response.status == 401 and attempt == 0 and replayable:
                self._learn(response)
                if self.challenge is not None:
                    continue
            if response.status == 401 and self.credentials.anonymous:
                raise Unauthorized(f"{what}: unauthorized: authentication required")
            raise from_response(response.status, body, what)
        raise AssertionError("unreachable")

    # -- manifests -------------------------------------------------------------------------------

    async def get_manifest(self, reference: str, what: str) -> tuple[bytes, str]:
        """(bytes, media type) of the manifest or index *reference* (a tag or digest) names."""
        response = await self.request(
            "GET", f"{self.base}/manifests/{reference}", what, {"Accept": MANIFEST_ACCEPT}
        )
        try:
            length = response.content_length
            if length is not None and length > MAX_MANIFEST:
                raise InvalidArgument(f"{what}: manifest too large ({length} bytes)")
            data = await response.content.read(MAX_MANIFEST + 1)
            if len(data) > MAX_MANIFEST:
                raise InvalidArgument(f"{what}: manifest too large")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise RegistryUnreachable(f"{what}: {describe_network_error(error, self.endpoint.url)}") from None
        finally:
            response.release()
        return data, media_type

    async def put_manifest(self, reference: str, data: bytes, media_type: str, what: str) -> str:
        response = await self.request(
            "PUT",
            f"{self.base}/manifests/{reference}",
            what,
            {"Content-Type": media_type},
            ok=(200, 201, 202),
            data=data,
        )
        digest = response.headers.get("Docker-Content-Digest", "")
        response.release()
        return digest

    async def tags(self) -> list[str]:
        out: list[str] = []
        url = f"{self.base}/tags/list"
        while url:
            response = await self.request("GET", url, f"tags of {self.path}")
            try:
                document = await response.json(content_type=None)
                link = response.headers.get("Link", "")
            finally:
                response.release()
            out += [str(tag) for tag in (document.get("tags") or [])]
            url = ""
            if link.startswith("<") and 'rel="next"' in link:
                url = link[1 : link.index(">")]
                if url.startswith("/"):
                    url = self.endpoint.url + url
        return out

    # -- blobs -----------------------------------------------------------------------------------

    async def blob_exists(self, digest: str) -> bool:
        response = await self.request("HEAD", f"{self.base}/blobs/{digest}", f"blob {digest}", ok=(200, 404))
        response.release()
        return response.status == 200

    async def get_blob(self, digest: str, offset: int = 0) -> aiohttp.ClientResponse:
        """A blob's body from *offset* (a ``Range`` request; the answer may be 206 or a full 200)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return await self.request(
            "GET", f"{self.base}/blobs/{digest}", f"blob {digest}", headers, ok=(200, 206)
        )

    async def mount(self, digest: str, source: str) -> str | None:
        """Cross-repository mount; None when done, else the upload location the registry opened."""
        self.add_scope(f"repository:{source}:pull")
        response = await self.request(
            "POST",
            f"{self.base}/blobs/uploads/",
            f"mounting {digest}",
            ok=(201, 202),
            params={"mount": digest, "from": source},
        )
        response.release()
        if response.status == 201:
            return None
        return self._location(response)

    async def start_upload(self) -> str:
        response = await self.request(
            "POST", f"{self.base}/blobs/uploads/", f"uploading to {self.path}", ok=(202,)
        )
        response.release()
        return self._location(response)

    def _location(self, response: aiohttp.ClientResponse) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise InvalidArgument("registry opened an upload without a Location")
        if location.startswith("/"):
            location = self.endpoint.url + location
        return location

    async def upload_chunk(
        self, location: str, chunks: AsyncIterator[bytes], start: int, size: int, what: str
    ) -> str:
        """PATCH one chunk of *size* bytes at *start*; returns the next location."""
        response = await self.request(
            "PATCH",
            location,
            what,
            {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + size - 1}",
                "Content-Length": str(size),
            },
            ok=(202,),
            data=chunks,
        )
        response.release()
        return self._location(response)

    async def finish_upload(
        self, location: str, digest: str, what: str, body: Any = None, size: int = 0
    ) -> None:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        separator = "&" if "?" in location else "?"
        response = await self.request(
            "PUT", f"{location}{separator}digest={digest}", what, headers, ok=(201, 204), data=body
        )
        response.release()


def describe_network_error(error: BaseException, url: str) -> str:
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"tls: failed to verify certificate of {url}: {error.certificate_error}"
    if isinstance(error, aiohttp.ClientConnectorError):
        number = error.os_error.errno
        reason = os.strerror(number).lower() if number else str(error.os_error)
        return f"dial tcp {url.split('://', 1)[-1]}: connect: {reason}"
    if isinstance(error, asyncio.TimeoutError):
        return f"timeout talking to {url}"
    text = str(error) or type(error).__name__
    return f"{url}: {text}"
