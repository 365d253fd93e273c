"""Registry authentication as Docker does it: the ``WWW-Authenticate`` challenge decides.

A registry answers ``401`` with ``WWW-Authenticate: Basic realm=…`` (send the
user's password on every request) or ``Bearer realm=…,service=…,scope=…``
(fetch a short-lived token from the realm for that service and scope — with
the user's password, an identity token, or anonymously — and send it). Tokens
are cached per (realm, service, scopes, user) until shortly before they expire,
and fetched again when a registry rejects one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kapal.distribution.credentials import Credentials
from kapal.distribution.errors import RegistryUnreachable, registry_error_text
from kapal.errors import InvalidArgument, Unauthorized

_PARAM_RE = re.compile(r'\s*([a-zA-Z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')
# Tokens are used until this many seconds before they expire.
_EXPIRY_MARGIN = 10
# RFC 6750 via the distribution token spec: 60 seconds when the server does not say.
_DEFAULT_EXPIRY = 60


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """The challenges of ``WWW-Authenticate`` headers (several per header are allowed)."""
    out = []
    for header in headers:
        text = header.strip()
        while text:
            match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", text)
            if not match:
                break
            scheme = match.group(1).lower()
            text = text[match.end() :]
            params: dict[str, str] = {}
            while True:
                param = _PARAM_RE.match(text)
                # A bare token followed by another token is the next challenge's scheme.
                if not param:
                    break
                value = param.group(2) if param.group(2) is not None else param.group(3)
                params[param.group(1).lower()] = re.sub(r"\\(.)", r"\1", value or "")
                text = text[param.end() :]
            out.append(Challenge(scheme, params))
            text = text.lstrip(", ")
    return out


def basic_header(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens shared by every operation of the daemon, refreshed when they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    async def token(
        self,
        session: aiohttp.ClientSession,
        challenge: Challenge,
        scopes: list[str],
        credentials: Credentials,
        ssl: Any,
        refresh: bool = False,
    ) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise InvalidArgument(f"registry sent an invalid token realm {realm!r}")
        service = challenge.params.get("service", "")
        key = (realm, service, credentials.username, credentials.identity_token, *sorted(scopes))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached and not refresh and cached.expires > time.monotonic():
                return cached.value
            value, lifetime = await fetch_token(session, realm, service, scopes, credentials, ssl)
            self._tokens[key] = _Token(value, time.monotonic() + max(lifetime - _EXPIRY_MARGIN, 1))
            return value


async def fetch_token(
    session: aiohttp.ClientSession,
    realm: str,
    service: str,
    scopes: list[str],
    credentials: Credentials,
    ssl: Any,
) -> tuple[str, int]:
    """Ask the token server for a token (distribution's token spec); returns (token, lifetime)."""
    query = [("service", service)] if service else []
    query += [("scope", scope) for scope in scopes]
    headers = {}
    try:
        if credentials.identity_token:
            # OAuth2 refresh-token grant, as the docker daemon does with an identity token.
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": "kapal",
                "service": service,
                "scope": " ".join(scopes),
            }
            request = session.post(realm, data=form, ssl=ssl)
        else:
            if credentials.username or credentials.password:
                headers["Authorization"] = basic_header(credentials)
                query.append(("account", credentials.username))
            request = session.get(realm, params=query, headers=headers, ssl=ssl)
        async with request as response:
            body = await response.read()
            status = response.status
    except (TimeoutError, aiohttp.ClientError, OSError) as error:
        raise RegistryUnreachable(f"fetching a token from {realm}: {error or type(error).__name__}") from None
    if status in (401, 403):
        _, text = registry_error_text(body)
        raise Unauthorized(f"unauthorized: {text or 'incorrect username or password'}")
    if status != 200:
        raise RegistryUnreachable(f"token server {realm} answered {status}")
    try:
        document = json.loads(body)
        token = document.get("token") or document.get("access_token")
        lifetime = int(document.get("expires_in") or _DEFAULT_EXPIRY)
    except (ValueError, AttributeError, TypeError):
        raise RegistryUnreachable(f"token server {realm} sent an invalid answer") from None
    if not token:
        raise RegistryUnreachable(f"token server {realm} sent no token")
    return str(token), lifetime
