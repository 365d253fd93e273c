"""Registry credentials and challenges: what the CLI stores and sends, what registries ask for."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from kapal.distribution.auth import parse_challenges
from kapal.distribution.credentials import (
    DOCKER_HUB_AUTH_KEY,
    ConfigFile,
    Credentials,
    auth_key,
    decode_config_header,
    decode_header,
)
from kapal.errors import InvalidArgument


def test_bearer_challenge_with_quoted_scope() -> None:
    (challenge,) = parse_challenges(
        [
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull,push"'
        ]
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull,push",
    }


def test_basic_challenge_and_several_in_one_header() -> None:
    challenges = parse_challenges(
        ['Basic realm="Registry Realm"', 'Bearer realm="https://t/x", error="invalid_token"']
    )
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[1].params["error"] == "invalid_token"
    assert parse_challenges(['Basic realm="a \\"quoted\\" realm"'])[0].params["realm"] == 'a "quoted" realm'


def test_registry_auth_header_round_trip_in_both_alphabets() -> None:
    credentials = Credentials(username="ann", password="p?>~ss", server_address="127.0.0.1:5000")
    header = credentials.to_header()
    assert decode_header(header) == credentials
    document = json.dumps(
        {"username": "ann", "password": "p?>~ss", "serveraddress": "127.0.0.1:5000"}
    ).encode()
    assert decode_header(base64.b64encode(document).decode().rstrip("=")) == credentials
    assert decode_header("").anonymous
    assert decode_header(base64.urlsafe_b64encode(b"{}").decode()).anonymous
    with pytest.raises(InvalidArgument, match="invalid X-Registry-Auth header"):
        decode_header("%%%not base64")
    assert decode_header(Credentials(identity_token="tok").to_header()).identity_token == "tok"


def test_registry_config_header_maps_registries() -> None:
    value = base64.urlsafe_b64encode(
        json.dumps({"r:5000": {"username": "u", "password": "p"}}).encode()
    ).decode()
    assert decode_config_header(value)["r:5000"].username == "u"
    assert decode_config_header("garbage!") == {}


def test_auth_keys_follow_docker() -> None:
    assert auth_key("docker.io") == DOCKER_HUB_AUTH_KEY
    assert auth_key("https://index.docker.io/v1/") == DOCKER_HUB_AUTH_KEY
    assert auth_key("https://Registry.Example.com:5000/v2/") == "registry.example.com:5000"


def test_config_file_store_get_erase(tmp_path: Path) -> None:
    config = ConfigFile(tmp_path)
    config.store("127.0.0.1:5000", Credentials(username="ann", password="secret"))
    stored = json.loads((tmp_path / "config.json").read_text())
    assert base64.b64decode(stored["auths"]["127.0.0.1:5000"]["auth"]) == b"ann:secret"
    assert stat.S_IMODE(os.stat(tmp_path / "config.json").st_mode) == 0o600
    again = ConfigFile(tmp_path).get("http://127.0.0.1:5000")
    assert (again.username, again.password) == ("ann", "secret")
    assert ConfigFile(tmp_path).get("other:1").anonymous
    assert ConfigFile(tmp_path).erase("127.0.0.1:5000")
    assert not ConfigFile(tmp_path).erase("127.0.0.1:5000")


def test_config_file_keeps_unknown_keys_and_reads_identity_tokens(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"psFormat": "{{.ID}}", "auths": {"r:1": {"auth": "", "identitytoken": "refresh"}}})
    )
    assert ConfigFile(tmp_path).get("r:1").identity_token == "refresh"
    config = ConfigFile(tmp_path)
    config.store("r:2", Credentials(username="u", password="p"))
    assert json.loads((tmp_path / "config.json").read_text())["psFormat"] == "{{.ID}}"


def test_credential_helper_is_used_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A credsStore helper (a script speaking the docker-credential protocol) holds the secrets."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = tmp_path / "store.json"
    helper = bin_dir / "docker-credential-testing"
    helper.write_text(
        f"""#!/usr/bin/env python3
import json, sys
path = {str(store)!r}
try:
    data = json.load(open(path))
except FileNotFoundError:
    data = {{}}
action = sys.argv[1]
payload = sys.stdin.read()
if action == "store":
    entry = json.loads(payload)
    data[entry["ServerURL"]] = entry
    json.dump(data, open(path, "w"))
elif action == "get":
    if payload.strip() not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps(data[payload.strip()]))
elif action == "erase":
    data.pop(payload.strip(), None)
    json.dump(data, open(path, "w"))
"""
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "testing"}))
    config = ConfigFile(tmp_path)
    config.store("127.0.0.1:5000", Credentials(username="ann", password="in-helper"))
    assert "in-helper" not in (tmp_path / "config.json").read_text()
    assert json.loads(store.read_text())["127.0.0.1:5000"]["Secret"] == "in-helper"
    found = ConfigFile(tmp_path).get("127.0.0.1:5000")
    assert (found.username, found.password) == ("ann", "in-helper")
    assert ConfigFile(tmp_path).get("unknown:1").anonymous
    assert ConfigFile(tmp_path).erase("127.0.0.1:5000")
    assert ConfigFile(tmp_path).get("127.0.0.1:5000").anonymous
