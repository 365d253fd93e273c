"""Who may do what: htpasswd users, an access policy, Basic auth or Docker's bearer-token flow.

Two ways to authenticate a request, chosen by the settings:

* ``htpasswd`` alone: HTTP Basic on every request (``WWW-Authenticate: Basic``).
* ``token_key``: the registry requires a bearer JWT it signed itself and serves the
  token endpoint (``/auth/token``) that hands them out — the flow of Docker Hub and the
  CNCF registry's ``token`` auth: 401 with ``WWW-Authenticate: Bearer realm,service,scope``,
  the client asks the realm for a token with its Basic credentials, and retries.

The policy (TOML) grants actions on repositories; without one, every authenticated
user may do everything and anonymous users nothing::

    [[rule]]
    users = ["alice", "bob"]        # "*" = any authenticated user, "anonymous" = everyone
    repositories = ["team/*"]       # shell patterns
    actions = ["pull", "push"]      # pull, push, delete, or "*"
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import json
import os
import secrets
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kapal.errors import InvalidArgument
from kapal.registry.errors import RegistryError

ALL_ACTIONS = ("pull", "push", "delete")
_VERIFIED_TTL = 300.0  # bcrypt costs ~100 ms: remember good passwords for a while


class Htpasswd:
    """An htpasswd file of bcrypt hashes (``htpasswd -B``), re-read when it changes."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._mtime = -1.0
        self._users: dict[str, bytes] = {}
        self._verified: dict[tuple[str, bytes], float] = {}
        self._load()

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except OSError as error:
            raise InvalidArgument(f"cannot read htpasswd file {self.path}: {error.strerror}") from None
        if mtime == self._mtime:
            return
        users = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not hashed.startswith(("$2y$", "$2b$", "$2a$")):
                raise InvalidArgument(
                    f"{self.path}:{number}: only bcrypt entries (htpasswd -B) are supported"
                )
            users[user] = hashed.encode()
        self._users, self._mtime = users, mtime
        self._verified.clear()

    def check(self, user: str, password: str) -> bool:
        self._load()
        hashed = self._users.get(user)
        if hashed is None:
            return False
        key = (user, hashlib.sha256(password.encode()).digest())
        now = time.monotonic()
        if self._verified.get(key, 0.0) > now:
            return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            self._verified[key] = now + _VERIFIED_TTL
        return ok


@dataclass
class Rule:
    users: list[str]
    repositories: list[str]
    actions: list[str]


class Policy:
    """Actions each user may take on each repository."""

    def __init__(self, rules: list[Rule] | None) -> None:
        self.rules = rules  # None: authenticated users may do everything

    @classmethod
    def load(cls, path: str | None) -> Policy:
        if not path:
            return cls(None)
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise InvalidArgument(f"cannot read policy {path}: {error}") from None
        rules = []
        for number, entry in enumerate(document.get("rule", []), 1):
            actions = entry.get("actions", [])
            if not all(action in (*ALL_ACTIONS, "*") for action in actions):
                raise InvalidArgument(f"{path}: rule {number}: actions are pull, push, delete or *")
            rules.append(Rule(list(entry.get("users", [])), list(entry.get("repositories", ["*"])), actions))
        return cls(rules)

    @property
    def anonymous_allowed(self) -> bool:
        return self.rules is not None and any("anonymous" in rule.users for rule in self.rules)

    def allowed(self, user: str | None, repository: str) -> set[str]:
        if self.rules is None:
            return set(ALL_ACTIONS) if user else set()
        granted: set[str] = set()
        for rule in self.rules:
            # What anyone may do without credentials, a signed-in user may do too.
            applies = "anonymous" in rule.users or (
                user is not None and (user in rule.users or "*" in rule.users)
            )
            if not applies:
                continue
            if any(fnmatch.fnmatchcase(repository, pattern) for pattern in rule.repositories):
                granted.update(ALL_ACTIONS if "*" in rule.actions else rule.actions)
        return granted

    def permits(self, user: str | None, resource: tuple[str, str] | None, actions: list[str]) -> bool:
        if resource is None or resource[0] == "registry":
            return user is not None or self.anonymous_allowed
        return set(actions) <= self.allowed(user, resource[1])


def basic_credentials(request: web.BaseRequest) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def _scope(resource: tuple[str, str] | None, actions: list[str]) -> str | None:
    if resource is None:
        return None
    return f"{resource[0]}:{resource[1]}:{','.join(actions)}"


class BasicAuthorizer:
    def __init__(self, users: Htpasswd, policy: Policy, realm: str = "kapal-registry") -> None:
        self.users = users
        self.policy = policy
        self.realm = realm

    def _challenge(self, message: str) -> RegistryError:
        error = RegistryError("UNAUTHORIZED", message)
        error.headers = {"WWW-Authenticate": f'Basic realm="{self.realm}"'}
        return error

    async def authorize(
        self, request: web.Request, resource: tuple[str, str] | None, actions: list[str]
    ) -> str:
        credentials = basic_credentials(request)
        if credentials is None:
            # The base endpoint always asks: `docker login` relies on that 401 to check credentials.
            if (
                resource is not None
                and self.policy.anonymous_allowed
                and self.policy.permits(None, resource, actions)
            ):
                return ""
            raise self._challenge("authentication required")
        user, password = credentials
        if not self.users.check(user, password):
            raise self._challenge("invalid username or password")
        if not self.policy.permits(user, resource, actions):
            raise RegistryError("DENIED", detail={"scope": _scope(resource, actions)})
        return user


class TokenIssuer:
    """Signs and checks the registry's JWTs (ES256 for an EC key, RS256 for RSA)."""

    def __init__(self, key_path: str, service: str, ttl: int) -> None:
        try:
            key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise InvalidArgument(f"cannot load token key {key_path}: {error}") from None
        if isinstance(key, ec.EllipticCurvePrivateKey):
            self.algorithm = "ES256"
        elif isinstance(key, rsa.RSAPrivateKey):
            self.algorithm = "RS256"
        else:
            raise InvalidArgument(f"token key {key_path} must be an EC P-256 or RSA key")
        self.private_key = key
        self.public_key = key.public_key()
        der = self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = hashlib.sha256(der).hexdigest()[:32]
        self.service = service
        self.ttl = ttl
        self.issuer = f"kapal-registry/{service}"

    def issue(self, user: str, access: list[dict]) -> dict:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "iat": now,
            "nbf": now - 5,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.key_id})
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued}

    def verify(self, token: str) -> dict:
        return jwt.decode(
            token, self.public_key, algorithms=[self.algorithm], audience=self.service, issuer=self.issuer
        )


def parse_scope(text: str) -> tuple[str, str, list[str]] | None:
    """``repository:team/app:pull,push`` → ("repository", "team/app", ["pull", "push"])."""
    kind, _, rest = text.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, [action for action in actions.split(",") if action]


class TokenAuthorizer:
    def __init__(
        self, issuer: TokenIssuer, users: Htpasswd | None, policy: Policy, realm: str | None
    ) -> None:
        self.issuer = issuer
        self.users = users
        self.policy = policy
        self.realm = realm

    def _realm(self, request: web.BaseRequest) -> str:
        return self.realm or f"{request.scheme}://{request.host}/auth/token"

    def _challenge(
        self, request: web.BaseRequest, resource, actions, error: str | None = None
    ) -> RegistryError:
        failure = RegistryError("UNAUTHORIZED", "authentication required")
        parts = [f'Bearer realm="{self._realm(request)}"', f'service="{self.issuer.service}"']
        scope = _scope(resource, actions)
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        failure.headers = {"WWW-Authenticate": ",".join(parts)}
        return failure

    async def authorize(
        self, request: web.Request, resource: tuple[str, str] | None, actions: list[str]
    ) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            raise self._challenge(request, resource, actions)
        try:
            claims = self.issuer.verify(token.strip())
        except jwt.PyJWTError:
            raise self._challenge(request, resource, actions, "invalid_token") from None
        if resource is not None:
            granted: set[str] = set()
            for entry in claims.get("access", []):
                if entry.get("type") == resource[0] and entry.get("name") == resource[1]:
                    granted.update(entry.get("actions", []))
            if "*" not in granted and not set(actions) <= granted:
                raise self._challenge(request, resource, actions, "insufficient_scope")
        return claims.get("sub", "")

    async def token_endpoint(self, request: web.Request) -> web.Response:
        """GET (Basic credentials, ``scope`` parameters) or POST (OAuth2 password grant)."""
        if request.method == "POST":
            form = await request.post()
            credentials = (str(form.get("username", "")), str(form.get("password", "")))
            scopes = str(form.get("scope", "")).split()
            if form.get("grant_type") != "password":
                return _token_error(400, "unsupported_grant_type")
        else:
            credentials = basic_credentials(request)
            scopes = [part for value in request.query.getall("scope", []) for part in value.split()]
        user: str | None = None
        if credentials is not None:
            if self.users is None or not self.users.check(*credentials):
                return _token_error(401, "invalid username or password")
            user = credentials[0]
        access = []
        for text in scopes:
            scope = parse_scope(text)
            if scope is None:
                continue
            kind, name, wanted = scope
            if kind == "repository":
                allowed = self.policy.allowed(user, name)
                granted = [action for action in wanted if action in allowed]
            elif kind == "registry" and name == "catalog":
                granted = wanted if user is not None else []
            else:
                granted = []
            access.append({"type": kind, "name": name, "actions": granted})
        answer = self.issuer.issue(user or "", access)
        if request.method == "POST":
            answer["scope"] = " ".join(scopes)
        return web.Response(body=json.dumps(answer).encode(), headers={"Content-Type": "application/json"})


def _token_error(status: int, message: str) -> web.Response:
    body = {"errors": [{"code": "UNAUTHORIZED" if status == 401 else "UNSUPPORTED", "message": message}]}
    headers = {"Content-Type": "application/json"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="kapal-registry token service"'
    return web.Response(status=status, body=json.dumps(body).encode(), headers=headers)


def make_authorizer(settings: dict[str, object]) -> tuple[object, list[web.RouteDef]]:
    users = Htpasswd(str(settings["htpasswd"])) if settings.get("htpasswd") else None
    policy = Policy.load(settings.get("policy"))  # type: ignore[arg-type]
    if settings.get("token_key"):
        issuer = TokenIssuer(
            str(settings["token_key"]),
            str(settings["token_service"]),
            int(settings["token_ttl"]),  # type: ignore[arg-type]
        )
        authorizer = TokenAuthorizer(issuer, users, policy, settings.get("token_realm"))  # type: ignore[arg-type]
        return authorizer, [web.route("*", "/auth/token", authorizer.token_endpoint)]
    assert users is not None
    return BasicAuthorizer(users, policy), []


def generate_key(path: str) -> None:
    """Write a new EC P-256 private key (PEM) for --token-key."""
    key = ec.generate_private_key(ec.SECP256R1())
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
