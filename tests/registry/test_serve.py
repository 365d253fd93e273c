"""`kapal-registry serve` settings: config file, workers, bad input, key generation."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.registry.conftest import REPO, RegistryProcess, free_port
from tests.registry.helpers import push_image

ENV = dict(os.environ, PYTHONPATH=str(REPO))


def kapal_registry(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kapal.registry.main", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
    )


def test_config_file_sets_everything_flags_win(scratch):
    port = free_port()
    key = scratch / "token.pem"
    assert kapal_registry("keygen", str(key)).returncode == 0
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    config = scratch / "registry.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\nroot = "{scratch / "from-config"}"\nread-only = true\n')
    server = RegistryProcess(scratch / "unused", "--config", str(config), port=port)
    # The fixture passes --listen and --root too; they win over the file.
    server.start()
    try:
        assert (scratch / "unused").is_dir() and not (scratch / "from-config").exists()
        refused = requests.post(f"{server.url}/v2/x/blobs/uploads/")
        assert refused.status_code == 405  # read-only came from the file
    finally:
        server.stop()


def test_bad_settings_fail_with_one_line(scratch):
    cases = [
        (
            [
                "serve",
                "--root",
                str(scratch / "r"),
                "--listen",
                "127.0.0.1:1",
                "--tls-cert",
                str(scratch / "none.pem"),
                "--tls-key",
                str(scratch / "none.key"),
            ],
            "cannot load TLS certificate",
        ),
        (["serve", "--listen", "127.0.0.1:0"], "--root is required"),
        (
            ["serve", "--root", str(scratch / "r"), "--htpasswd", str(scratch / "missing")],
            "cannot read htpasswd",
        ),
    ]
    config = scratch / "bad.toml"
    config.write_text('root = "/tmp/x"\nsurprise = 1\n')
    cases.append((["serve", "--config", str(config)], "unknown setting 'surprise'"))
    for args, message in cases:
        result = kapal_registry(*args)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr


def test_several_workers_share_the_port(scratch):
    server = RegistryProcess(scratch / "root", "--workers", "2").start()
    try:
        session = requests.Session()
        digests = {
            push_image(requests.Session(), server.url, f"w/app{n}", "v1", [os.urandom(1000)])[0]
            for n in range(8)
        }
        assert len(digests) == 8
        for n in range(8):
            assert session.head(f"{server.url}/v2/w/app{n}/manifests/v1").status_code == 200
        pids = {
            line.split('pid="')[1].split('"')[0]
            for _ in range(20)
            for line in requests.get(f"{server.url}/metrics").text.splitlines()
            if 'pid="' in line
        }
        assert pids  # each answer comes from one worker, named by its pid
    finally:
        assert server.stop() == 0
