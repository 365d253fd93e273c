# ruff: noqa: F811 - pytest fixtures are imported from registries.py and named as arguments
"""Authenticated and TLS registries: htpasswd (Basic), token auth (Bearer), a test CA; login and logout."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from conftest import Daemon
from registries import (  # noqa: F401 - fixtures
    CertificateAuthority,
    Registry,
    TokenIssuer,
    busybox_image,
    certs_d,
    htpasswd_file,
    kapald,
)


def one_line_error(result) -> str:  # noqa: ANN001
    assert result.returncode != 0, result.stdout
    text = result.stderr.decode().strip()
    assert "\n" not in text, text
    return text


def test_tls_with_basic_auth_login_push_pull_logout(
    kapald: Daemon, busybox_image: str, scratch: Path, certs_d: Path
) -> None:
    ca = CertificateAuthority(scratch / "ca")
    htpasswd = htpasswd_file(scratch / "htpasswd", "alice", "s3cret")
    registry = Registry(
        scratch / "secure",
        auth={"htpasswd": {"realm": "kapal-test", "path": str(htpasswd)}},
        tls=(ca.cert_path, ca.key_path),
    ).start()
    try:
        ca.install(certs_d, registry.host)
        name = f"{registry.host}/private/busybox:v1"
        kapald.kapal("tag", "busybox:latest", name)
        assert "unauthorized" in one_line_error(kapald.kapal("push", name, check=False))

        wrong = kapald.kapal(
            "login", "-u", "alice", "--password-stdin", registry.host, input=b"nope\n", check=False
        )
        assert "401" in one_line_error(wrong)
        login = kapald.kapal("login", "-u", "alice", "--password-stdin", registry.host, input=b"s3cret\n")
        assert login.stdout.decode().strip() == "Login Succeeded"
        config = json.loads((scratch / "docker-config" / "config.json").read_text())
        assert base64.b64decode(config["auths"][registry.host]["auth"]) == b"alice:s3cret"

        kapald.kapal("push", name)
        kapald.kapal("rmi", name, "busybox:latest")
        kapald.kapal("pull", name)
        assert kapald.kapal("run", "--rm", name, "echo", "ok").stdout.decode().strip() == "ok"

        # The docker CLI logs in through kapald's /auth and pulls with its own config.json.
        kapald.kapal("rmi", name)
        kapald.docker("login", "-u", "alice", "--password-stdin", registry.host, input=b"s3cret\n")
        assert "Downloaded newer image" in kapald.docker("pull", name).stdout.decode()

        out = kapald.kapal("logout", registry.host).stdout.decode()
        assert out.strip() == f"Removing login credentials for {registry.host}"
        assert (
            registry.host not in json.loads((scratch / "docker-config" / "config.json").read_text())["auths"]
        )
        kapald.kapal("rmi", name)
        assert "unauthorized" in one_line_error(kapald.kapal("pull", name, check=False))
    finally:
        registry.stop()


def test_certificate_from_an_unknown_ca_is_refused(kapald: Daemon, scratch: Path, certs_d: Path) -> None:
    trusted = CertificateAuthority(scratch / "trusted")
    other = CertificateAuthority(scratch / "other")
    registry = Registry(scratch / "untrusted", tls=(other.cert_path, other.key_path)).start()
    try:
        trusted.install(certs_d, registry.host)
        text = one_line_error(kapald.kapal("pull", f"{registry.host}/x/y:v1", check=False))
        assert "certificate" in text.lower(), text
    finally:
        registry.stop()


def test_token_auth_end_to_end(kapald: Daemon, busybox_image: str, scratch: Path) -> None:
    issuer = TokenIssuer(scratch / "issuer", {"bob": "hunter2"})
    registry = Registry(scratch / "token-registry", auth=issuer.auth_config()).start()
    try:
        private = f"{registry.host}/private/busybox:v1"
        public = f"{registry.host}/public/busybox:v1"
        kapald.kapal("tag", "busybox:latest", private)
        kapald.kapal("tag", "busybox:latest", public)
        assert "unauthorized" in one_line_error(kapald.kapal("push", private, check=False))
        assert issuer.requests and issuer.requests[-1]["account"] == ""

        wrong = kapald.kapal(
            "login", "-u", "bob", "--password-stdin", registry.host, input=b"x\n", check=False
        )
        assert "unauthorized" in one_line_error(wrong)
        kapald.kapal("login", "-u", "bob", "--password-stdin", registry.host, input=b"hunter2\n")

        issued = len(issuer.requests)
        out = kapald.kapal("push", private).stdout.decode()
        assert "Pushed" in out
        push_tokens = issuer.requests[issued:]
        # One token for the push scope serves every request of the push.
        assert len(push_tokens) == 1, push_tokens
        assert push_tokens[0] == {"account": "bob", "scopes": ["repository:private/busybox:pull,push"]}
        kapald.kapal("push", public)

        kapald.kapal("rmi", private, public, "busybox:latest")
        kapald.kapal("pull", private)
        assert kapald.kapal("run", "--rm", private, "echo", "token").stdout.decode().strip() == "token"

        # Anonymous: public repositories pull, private ones are refused.
        kapald.kapal("logout", registry.host)
        kapald.kapal("rmi", private)
        kapald.kapal("pull", public)
        assert "unauthorized" in one_line_error(kapald.kapal("pull", private, check=False))
    finally:
        registry.stop()
        issuer.close()
