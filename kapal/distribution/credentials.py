"""Registry credentials as the docker CLI keeps them, and as it hands them to the daemon.

``config.json`` (in ``$DOCKER_CONFIG`` or ``~/.docker``) holds ``auths``
(``{"host": {"auth": base64("user:password")}}`` or an ``identitytoken``),
and may delegate to credential helpers: ``credsStore`` for every registry,
``credHelpers`` per registry; a helper is ``docker-credential-NAME`` speaking
JSON on stdin/stdout (``get``, ``store``, ``erase``). The CLI sends the chosen
credentials to the daemon in ``X-Registry-Auth``: URL-safe base64 of the JSON
auth config. Docker Hub's key is ``https://index.docker.io/v1/`` for
historical reasons.

This module is on the CLI's path: standard library only, imported lazily.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kapal.errors import InvalidArgument

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
# A helper's Username for an identity (refresh) token instead of a password.
TOKEN_USERNAME = "<token>"


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""
    server_address: str = ""

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)

    def to_header(self) -> str:
        """The ``X-Registry-Auth`` value (URL-safe base64 JSON, as the Go client writes it)."""
        document: dict[str, str] = {}
        if self.identity_token:
            document["identitytoken"] = self.identity_token
        else:
            document["username"] = self.username
            document["password"] = self.password
        if self.registry_token:
            document["registrytoken"] = self.registry_token
        if self.server_address:
            document["serveraddress"] = self.server_address
        return base64.urlsafe_b64encode(json.dumps(document).encode()).decode()

    @classmethod
    def from_json(cls, document: dict) -> Credentials:
        username = str(document.get("username") or document.get("Username") or "")
        password = str(document.get("password") or document.get("Password") or "")
        encoded = document.get("auth") or document.get("Auth")
        if encoded and not username:
            try:
                username, _, password = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidArgument("invalid auth configuration: bad base64 in auth") from None
        return cls(
            username=username,
            password=password,
            identity_token=str(document.get("identitytoken") or document.get("IdentityToken") or ""),
            registry_token=str(document.get("registrytoken") or document.get("RegistryToken") or ""),
            server_address=str(document.get("serveraddress") or document.get("ServerAddress") or ""),
        )


def decode_header(value: str | None) -> Credentials:
    """Decode ``X-Registry-Auth``: standard or URL-safe base64, padded or not; empty is anonymous."""
    if not value or not value.strip():
        return Credentials()
    text = value.strip()
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        document = json.loads(raw or b"{}")
    except (binascii.Error, ValueError):
        raise InvalidArgument("invalid X-Registry-Auth header") from None
    if not isinstance(document, dict):
        raise InvalidArgument("invalid X-Registry-Auth header")
    return Credentials.from_json(document)


def decode_config_header(value: str | None) -> dict[str, Credentials]:
    """Decode ``X-Registry-Config``: a map of registry to auth config; errors are ignored as by moby."""
    if not value:
        return {}
    text = value.strip() + "=" * (-len(value.strip()) % 4)
    try:
        document = json.loads(base64.b64decode(text.replace("-", "+").replace("_", "/")))
    except (binascii.Error, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    return {key: Credentials.from_json(entry) for key, entry in document.items() if isinstance(entry, dict)}


def auth_key(registry: str) -> str:
    """The ``auths`` key of a registry host: Docker Hub's legacy URL, else the bare host[:port]."""
    host = normalise_server(registry)
    return DOCKER_HUB_AUTH_KEY if host in _HUB_HOSTS else host


def normalise_server(server: str) -> str:
    """``https://host:5000/v2/`` → ``host:5000``; Docker Hub's names → ``docker.io``."""
    text = server.strip()
    for scheme in ("https://", "http://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    host = text.split("/", 1)[0].lower()
    return "docker.io" if host in _HUB_HOSTS else host


def config_dir() -> Path:
    configured = os.environ.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path.home() / ".docker"


class ConfigFile:
    """``config.json``: read, changed and written back atomically, unknown keys kept."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or config_dir()) / "config.json"
        try:
            self.data = json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            self.data = {}
        except (OSError, ValueError) as error:
            raise InvalidArgument(f"loading config file {self.path}: {error}") from None
        if not isinstance(self.data, dict):
            raise InvalidArgument(f"loading config file {self.path}: not a JSON object")

    def _helper(self, key: str) -> str | None:
        helpers = self.data.get("credHelpers") or {}
        host = normalise_server(key)
        for name, helper in helpers.items():
            if normalise_server(name) == host:
                return str(helper)
        store = self.data.get("credsStore")
        return str(store) if store else None

    def _entry_key(self, key: str) -> str | None:
        host = normalise_server(key)
        for name in self.data.get("auths") or {}:
            if name == key or normalise_server(name) == host:
                return name
        return None

    def get(self, registry: str) -> Credentials:
        key = auth_key(registry)
        helper = self._helper(key)
        if helper:
            found = run_helper(helper, "get", key)
            if found is not None:
                username, secret = found.get("Username", ""), found.get("Secret", "")
                if username == TOKEN_USERNAME:
                    return Credentials(identity_token=secret, server_address=key)
                return Credentials(username=username, password=secret, server_address=key)
        name = self._entry_key(key)
        if name is None:
            return Credentials(server_address=key)
        entry = Credentials.from_json(self.data["auths"][name])
        return Credentials(
            username=entry.username,
            password=entry.password,
            identity_token=entry.identity_token,
            registry_token=entry.registry_token,
            server_address=key,
        )

    def store(self, registry: str, credentials: Credentials) -> None:
        key = auth_key(registry)
        helper = self._helper(key)
        auths = self.data.setdefault("auths", {})
        if helper:
            secret = credentials.identity_token or credentials.password
            username = TOKEN_USERNAME if credentials.identity_token else credentials.username
            run_helper(
                helper, "store", json.dumps({"ServerURL": key, "Username": username, "Secret": secret})
            )
            auths[key] = {}
        else:
            entry: dict[str, str] = {}
            if credentials.identity_token:
                entry["auth"] = base64.b64encode(f"{credentials.username}:".encode()).decode()
                entry["identitytoken"] = credentials.identity_token
            else:
                entry["auth"] = base64.b64encode(
                    f"{credentials.username}:{credentials.password}".encode()
                ).decode()
            auths[key] = entry
        self.save()

    def erase(self, registry: str) -> bool:
        """Forget the credentials of *registry*; False when there were none."""
        key = auth_key(registry)
        helper = self._helper(key)
        found = False
        if helper:
            found = run_helper(helper, "get", key) is not None
            if found:
                run_helper(helper, "erase", key)
        name = self._entry_key(key)
        if name is not None:
            del self.data["auths"][name]
            found = True
        if found:
            self.save()
        return found

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".config.json.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(self.data, out, indent="\t")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def run_helper(helper: str, action: str, payload: str) -> dict | None:
    """Run ``docker-credential-HELPER ACTION`` with *payload* on stdin; None when it has nothing."""
    program = f"docker-credential-{helper}"
    try:
        result = subprocess.run([program, action], input=payload.encode(), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise InvalidArgument(f"credential helper {program} is not installed") from None
    output = result.stdout.decode(errors="replace").strip()
    if result.returncode != 0:
        if (
            "credentials not found" in output.lower()
            or "credentials not found" in result.stderr.decode().lower()
        ):
            return None
        raise InvalidArgument(
            f"error from credential helper {program} {action}: {output or result.stderr.decode().strip()}"
        )
    if action != "get":
        return {}
    try:
        document = json.loads(output)
    except ValueError:
        raise InvalidArgument(f"credential helper {program} returned invalid JSON") from None
    return document if isinstance(document, dict) else None
