"""htpasswd Basic auth, the bearer-token flow with scopes, an access policy, and TLS."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import bcrypt
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.registry.conftest import SHARED_BUSYBOX, RegistryProcess
from tests.registry.helpers import (
    absolute,
    error_codes,
    make_tls,
    push_blob,
    push_image,
    sha256,
    write_pem_key,
)

SKOPEO = shutil.which("skopeo")
POLICY = """
[[rule]]
users = ["alice"]
repositories = ["*"]
actions = ["*"]

[[rule]]
users = ["bob"]
repositories = ["team/*"]
actions = ["pull"]

[[rule]]
users = ["carol"]
repositories = ["carol/*"]
actions = ["pull", "push"]

[[rule]]
users = ["anonymous"]
repositories = ["public/*"]
actions = ["pull"]
"""


@pytest.fixture
def auth_files(scratch: Path) -> dict[str, Path]:
    htpasswd = scratch / "htpasswd"
    lines = [
        f"{user}:{bcrypt.hashpw(user.encode() + b'-pw', bcrypt.gensalt(4)).decode()}"
        for user in ("alice", "bob", "carol")
    ]
    htpasswd.write_text("\n".join(lines) + "\n")
    policy = scratch / "policy.toml"
    policy.write_text(POLICY)
    token_key = scratch / "token.pem"
    write_pem_key(ec.generate_private_key(ec.SECP256R1()), token_key)
    ca, cert, key = make_tls(scratch)
    return {
        "htpasswd": htpasswd,
        "policy": policy,
        "token_key": token_key,
        "ca": ca,
        "cert": cert,
        "key": key,
    }


@pytest.fixture
def basic_registry(scratch, auth_files):
    server = RegistryProcess(
        scratch / "basic-root",
        "--htpasswd",
        str(auth_files["htpasswd"]),
        "--policy",
        str(auth_files["policy"]),
    ).start()
    yield server
    server.stop()


@pytest.fixture
def token_registry(scratch, auth_files):
    server = RegistryProcess(
        scratch / "token-root",
        "--htpasswd",
        str(auth_files["htpasswd"]),
        "--policy",
        str(auth_files["policy"]),
        "--token-key",
        str(auth_files["token_key"]),
        "--tls-cert",
        str(auth_files["cert"]),
        "--tls-key",
        str(auth_files["key"]),
        scheme="https",
    ).start(verify=str(auth_files["ca"]))
    yield server
    server.stop()


def test_basic_auth_and_policy(basic_registry):
    url = basic_registry.url
    anonymous = requests.get(f"{url}/v2/")
    assert anonymous.status_code == 401
    assert error_codes(anonymous) == ["UNAUTHORIZED"]
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert requests.get(f"{url}/v2/", auth=("alice", "wrong")).status_code == 401
    assert requests.get(f"{url}/v2/", auth=("nobody", "x")).status_code == 401
    alice = requests.Session()
    alice.auth = ("alice", "alice-pw")
    assert alice.get(f"{url}/v2/").status_code == 200
    push_image(alice, url, "team/app", "v1", [b"team layer"])
    push_image(alice, url, "public/app", "v1", [b"public layer"])
    bob = requests.Session()
    bob.auth = ("bob", "bob-pw")
    assert bob.get(f"{url}/v2/team/app/manifests/v1").status_code == 200
    denied = bob.post(f"{url}/v2/team/app/blobs/uploads/")
    assert denied.status_code == 403
    assert error_codes(denied) == ["DENIED"]
    assert bob.get(f"{url}/v2/other/manifests/v1").status_code == 403
    # Carol may push to carol/* but not read team/*: her mount from there becomes a plain upload.
    carol = requests.Session()
    carol.auth = ("carol", "carol-pw")
    layer = sha256(b"team layer")
    mount = carol.post(f"{url}/v2/carol/app/blobs/uploads/", params={"mount": layer, "from": "team/app"})
    assert mount.status_code == 202
    assert carol.delete(absolute(url, mount.headers["Location"])).status_code == 204
    assert carol.head(f"{url}/v2/carol/app/blobs/{layer}").status_code == 404
    mounted = alice.post(f"{url}/v2/alice/app/blobs/uploads/", params={"mount": layer, "from": "team/app"})
    assert mounted.status_code == 201
    # The policy lets anyone pull public/*, and nothing else.
    assert requests.get(f"{url}/v2/public/app/manifests/v1").status_code == 200
    assert requests.get(f"{url}/v2/team/app/manifests/v1").status_code == 401
    assert requests.delete(f"{url}/v2/public/app/manifests/v1").status_code == 401


def tls_session(ca: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides .verify
    session.verify = ca
    return session


def _challenge(response: requests.Response) -> dict[str, str]:
    scheme, _, params = response.headers["WWW-Authenticate"].partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def test_token_flow_with_scopes(token_registry, auth_files):
    url = token_registry.url
    ca = str(auth_files["ca"])
    session = tls_session(ca)
    first = session.get(f"{url}/v2/team/app/manifests/v1")
    assert first.status_code == 401
    assert error_codes(first) == ["UNAUTHORIZED"]
    challenge = _challenge(first)
    assert challenge == {
        "realm": f"{url}/auth/token",
        "service": "kapal-registry",
        "scope": "repository:team/app:pull",
    }

    def token(user: str | None, scope: str) -> str:
        answer = session.get(
            challenge["realm"],
            params={"service": challenge["service"], "scope": scope},
            auth=(user, f"{user}-pw") if user else None,
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
        assert body["token"] == body["access_token"]
        return body["token"]

    alice = token("alice", "repository:team/app:pull,push")
    claims = jwt.decode(alice, options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]
    assert claims["sub"] == "alice" and claims["aud"] == "kapal-registry"
    writer = tls_session(ca)
    writer.headers["Authorization"] = f"Bearer {alice}"
    push_image(writer, url, "team/app", "v1", [b"layer"])
    # Bob asked for push but the policy grants only pull: the token says so, and push is refused.
    bob = token("bob", "repository:team/app:pull,push")
    assert jwt.decode(bob, options={"verify_signature": False})["access"][0]["actions"] == ["pull"]
    reader = tls_session(ca)
    reader.headers["Authorization"] = f"Bearer {bob}"
    assert reader.get(f"{url}/v2/team/app/manifests/v1").status_code == 200
    refused = reader.post(f"{url}/v2/team/app/blobs/uploads/")
    assert refused.status_code == 401
    assert _challenge(refused)["error"] == "insufficient_scope"
    assert _challenge(refused)["scope"] == "repository:team/app:pull,push"
    # A token for one repository is no good for another, and a forged one is no good at all.
    assert reader.get(f"{url}/v2/team/other/manifests/v1").status_code == 401
    forged = jwt.encode(
        {**jwt.decode(bob, options={"verify_signature": False}), "sub": "alice"},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
    )
    assert (
        session.get(
            f"{url}/v2/team/app/manifests/v1", headers={"Authorization": f"Bearer {forged}"}
        ).status_code
        == 401
    )
    assert (
        session.get(
            challenge["realm"], params={"scope": "repository:x:pull"}, auth=("alice", "bad")
        ).status_code
        == 401
    )
    # Anonymous tokens carry only what the policy gives anonymous users.
    anonymous = token(None, "repository:public/app:pull,push")
    assert jwt.decode(anonymous, options={"verify_signature": False})["access"][0]["actions"] == ["pull"]


@pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")
def test_skopeo_with_credentials_over_tls(token_registry, auth_files, scratch, busybox_tag):
    certs = str(auth_files["ca"].parent)
    target = f"docker://{token_registry.host}/team/busybox:1"
    source = f"oci:{SHARED_BUSYBOX}:{busybox_tag}"

    def skopeo(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=120)

    pushed = skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", "alice:alice-pw", source, target)
    assert pushed.returncode == 0, pushed.stderr
    denied = skopeo("copy", "--dest-cert-dir", certs, "--dest-creds", "bob:bob-pw", source, f"{target}-bob")
    assert denied.returncode != 0
    no_tls = skopeo("inspect", "--creds", "bob:bob-pw", target)
    assert no_tls.returncode != 0 and "certificate" in no_tls.stderr
    inspected = skopeo("inspect", "--cert-dir", certs, "--creds", "bob:bob-pw", target)
    assert inspected.returncode == 0, inspected.stderr
    expected = json.loads((SHARED_BUSYBOX / "index.json").read_text())["manifests"][0]["digest"]
    assert json.loads(inspected.stdout)["Digest"] == expected
    pulled = skopeo(
        "copy", "--src-cert-dir", certs, "--src-creds", "bob:bob-pw", target, f"oci:{scratch / 'out'}:1"
    )
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads((scratch / "out" / "index.json").read_text())["manifests"][0]["digest"] == expected


def test_basic_push_blob_requires_credentials(basic_registry):
    with pytest.raises(AssertionError):
        push_blob(requests.Session(), basic_registry.url, "team/app", b"x")
