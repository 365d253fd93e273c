"""The engine's registry service: pulls, pushes and logins share connections, tokens and limits."""

from __future__ import annotations

from kapal import reference
from kapal.distribution.auth import basic_header, fetch_token
from kapal.distribution.client import Registries, RegistryOptions, Repository
from kapal.distribution.credentials import Credentials, normalise_server
from kapal.distribution.pull import Emit, Puller
from kapal.distribution.push import Pusher
from kapal.errors import InvalidArgument, Unauthorized
from kapal.image.manifest import parse_platform
from kapal.image.store import ImageStore
from kapal.metadata import Database


class Distribution:
    def __init__(self, images: ImageStore, db: Database, options: RegistryOptions | None = None) -> None:
        self.registries = Registries(options)
        self.puller = Puller(images, db, self.registries)
        self.pusher = Pusher(images, db, self.registries)

    async def pull(
        self, name: str, tag: str, credentials: Credentials, emit: Emit, platform: str | None = None
    ) -> None:
        """``POST /images/create?fromImage=NAME&tag=TAG``; a name without tag or digest pulls every tag."""
        ref = reference.parse(name, default_tag=False)
        if tag:
            if tag.startswith(("sha256:", "sha512:")):
                ref = reference.parse(f"{ref.repository}@{tag}")
            else:
                if not reference.valid_tag(tag):
                    raise InvalidArgument(f"invalid tag format: {tag!r}")
                ref = reference.Reference(ref.domain, ref.path, tag, None)
        wanted = parse_platform(platform) if platform else None
        all_tags = ref.tag is None and ref.digest is None
        await self.puller.pull(ref, credentials, emit, wanted, all_tags)

    async def push(self, name: str, tag: str | None, credentials: Credentials, emit: Emit) -> None:
        await self.pusher.push(name, tag or None, credentials, emit)

    async def login(self, credentials: Credentials) -> str:
        """Check *credentials* against their registry (``POST /auth``); returns an identity token or ""."""
        host = normalise_server(credentials.server_address or "docker.io")
        endpoint = self.registries.endpoints(host)
        last: Exception | None = None
        for candidate in endpoint:
            repository = Repository(self.registries, candidate, "", credentials, [])
            try:
                await repository.ping()
            except Exception as error:  # noqa: BLE001 - the next endpoint may answer
                last = error
                continue
            challenge = repository.challenge
            if challenge is None:
                return ""
            if challenge.scheme == "basic":
                session = self.registries.session
                url = f"{candidate.url}/v2/"
                async with session.get(
                    url, headers={"Authorization": basic_header(credentials)}, ssl=candidate.ssl
                ) as response:
                    if response.status == 200:
                        return ""
                    raise Unauthorized(
                        f"login attempt to {url} failed with status: {response.status} {response.reason}"
                    )
            await fetch_token(
                self.registries.session,
                challenge.params.get("realm", ""),
                challenge.params.get("service", ""),
                [],
                credentials,
                candidate.ssl,
            )
            return ""
        assert last is not None
        raise last

    async def close(self) -> None:
        await self.registries.close()
