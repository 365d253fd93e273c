"""Pull-through cache: fetch what is missing from an upstream registry, keep it, serve it.

Manifests by digest and blobs never change, so once cached they are served without
asking upstream again. A tag is trusted for ``tag_ttl`` seconds after it was fetched,
then re-fetched; if upstream cannot be reached the cached tag is served stale rather
than failing the pull. Everything fetched is verified against its digest before it is
stored (blobs go through an ordinary upload session, so the same checks apply).
Concurrent requests for the same missing blob share one download.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl

import aiohttp

from kapal.content import digest as digests
from kapal.errors import InvalidArgument
from kapal.registry import manifests
from kapal.registry.errors import RegistryError
from kapal.registry.storage import RegistryStorage
from kapal.registry.uploads import UploadSessions

log = logging.getLogger("kapal.registry.proxy")
_ACCEPT = ", ".join(sorted(manifests.MANIFEST_TYPES))


class Upstream:
    def __init__(
        self,
        storage: RegistryStorage,
        remote: str,
        username: str | None = None,
        password: str | None = None,
        tag_ttl: float = 3600.0,
        ca_file: str | None = None,
    ) -> None:
        self.storage = storage
        self.uploads = UploadSessions(storage)
        self.remote = remote.rstrip("/")
        self.basic = aiohttp.BasicAuth(username, password or "") if username else None
        self.tag_ttl = tag_ttl
        self._session: aiohttp.ClientSession | None = None
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._fetching: dict[str, asyncio.Future] = {}
        self._ssl: ssl.SSLContext | bool = True
        if ca_file:
            try:
                self._ssl = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as error:
                raise InvalidArgument(f"cannot load --proxy-ca {ca_file}: {error}") from None

    async def close(self, _app: object = None) -> None:
        if self._session is not None:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60),
                connector=aiohttp.TCPConnector(ssl=self._ssl),
            )
        return self._session

    async def _token(self, challenge: str, scope_hint: str) -> str | None:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.get("realm")
        if not realm:
            return None
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope_hint)}
        async with self._client().get(realm, params=query, auth=self.basic) as response:
            if response.status != 200:
                raise RegistryError("UNAVAILABLE", f"upstream token service answered {response.status}")
            body = await response.json(content_type=None)
        return body.get("token") or body.get("access_token")

    async def _get(self, name: str, path: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
        """GET ``/v2/<name>/<path>`` upstream, answering its auth challenge once. Caller releases."""
        scope = f"repository:{name}:pull"
        url = f"{self.remote}/v2/{name}/{path}"
        for _ in range(2):
            sent = dict(headers)
            auth = None
            if scope in self._tokens:
                sent["Authorization"] = f"Bearer {self._tokens[scope]}"
            else:
                auth = self.basic
            response = await self._client().get(url, headers=sent, auth=auth)
            if response.status != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            if not challenge.lower().startswith("bearer"):
                break
            token = await self._token(challenge.partition(" ")[2], scope)
            if token is None:
                break
            self._tokens[scope] = token
        raise RegistryError("UNAUTHORIZED", f"upstream {self.remote} refused our credentials for {name}")

    async def ensure_manifest(self, name: str, reference: str) -> None:
        storage = self.storage
        is_digest = ":" in reference
        if is_digest:
            with contextlib.suppress(RegistryError):
                storage.resolve(name, reference)
                return
        else:
            with contextlib.suppress(FileNotFoundError, RegistryError):
                if storage.tag_age(name, reference) < self.tag_ttl:
                    return
        try:
            response = await self._get(name, f"manifests/{reference}", {"Accept": _ACCEPT})
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            log.warning("upstream %s unreachable for %s:%s: %s", self.remote, name, reference, error)
            return  # serve what we have (stale tag) or answer unknown
        try:
            if response.status == 404:
                if not is_digest:
                    with contextlib.suppress(RegistryError):
                        storage.delete_manifest(name, reference)
                return
            if response.status != 200:
                log.warning("upstream answered %s for %s:%s", response.status, name, reference)
                return
            data = await response.read()
            content_type = response.headers.get("Content-Type")
        finally:
            response.release()
        if is_digest and digests.of_bytes(data, reference.partition(":")[0]) != reference:
            raise RegistryError("DIGEST_INVALID", f"upstream sent a manifest that is not {reference}")
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: storage.put_manifest(name, reference, data, content_type, [], check_references=False),
        )

    async def ensure_blob(self, name: str, digest: str) -> None:
        with contextlib.suppress(RegistryError):
            self.storage.blob_stat(name, digest)
            return
        key = f"{name}@{digest}"
        running = self._fetching.get(key)
        if running is not None:
            await asyncio.shield(running)
            return
        future = asyncio.get_running_loop().create_future()
        self._fetching[key] = future
        try:
            await self._fetch_blob(name, digest)
            future.set_result(None)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved here, re-raised to the waiters
            raise
        finally:
            del self._fetching[key]

    async def _fetch_blob(self, name: str, digest: str) -> None:
        try:
            response = await self._get(name, f"blobs/{digest}", {})
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise RegistryError("UNAVAILABLE", f"upstream {self.remote} unreachable: {error}") from None
        try:
            if response.status == 404:
                raise RegistryError("BLOB_UNKNOWN", detail={"digest": digest})
            if response.status != 200:
                raise RegistryError("UNAVAILABLE", f"upstream answered {response.status} for blob {digest}")
            session = self.uploads.start(name)
            try:
                await self.uploads.append(name, session, response.content.iter_chunked(1 << 20), None, None)
                await asyncio.get_running_loop().run_in_executor(
                    None, self.uploads.finish, name, session, digest
                )
            except BaseException:
                with contextlib.suppress(RegistryError):
                    self.uploads.cancel(name, session)
                raise
        finally:
            response.release()
