"""RUN's network (the default bridge, as dockerd's legacy builder; ``--network=none|host``) and a
build cancelled by its client going away. Traffic stays on the test daemon's own bridge."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import socket
import tarfile
import time
from pathlib import Path

from build_helpers import build, sh, write_context
from conftest import Daemon


def _endpoints(daemon: Daemon) -> int:
    network = json.loads(daemon.kapal("network", "inspect", "bridge").stdout)[0]
    return len(network["Containers"] or {})


def test_run_is_on_the_default_bridge(daemon: Daemon, busybox: str, scratch: Path) -> None:
    serve = "mkdir /www && echo peer-says-hi > /www/index && httpd -f -p 8080 -h /www"
    peer = daemon.kapal("run", "-d", busybox, "sh", "-c", serve).stdout.decode().strip()
    try:
        address = json.loads(daemon.kapal("inspect", peer).stdout)[0]["NetworkSettings"]["IPAddress"]
        assert address
        context = write_context(
            scratch / "ctx",
            {
                "Dockerfile": """
                    FROM busybox
                    ARG PEER
                    RUN ip -o -4 addr show eth0 > /eth0.txt && cat /etc/hosts > /hosts.txt \\
                        && hostname > /hostname.txt && ip route > /route.txt \\
                        && ip -o link show lo > /lo.txt \\
                        && for i in 1 2 3 4 5; do \
                            wget -q -O /peer.txt http://$PEER:8080/index && break; sleep 1; done
                    RUN --network=none ip -o link > /none.txt
                    RUN --network=host cat /proc/net/dev > /host.txt
                """,
            },
        )
        image, log = build(daemon, context, "--build-arg", f"PEER={address}")
        out = sh(daemon, image, "cat /eth0.txt /peer.txt /hosts.txt /hostname.txt /route.txt /lo.txt")
        eth0, peer_text = out.splitlines()[:2]
        run_address = eth0.split("inet ")[1].split("/")[0]
        subnet = ".".join(address.split(".")[:3])
        assert run_address.startswith(subnet + ".") and run_address != address
        assert peer_text == "peer-says-hi"
        hostname = sh(daemon, image, "cat /hostname.txt").strip()
        assert f"{run_address}\t{hostname}" in out  # /etc/hosts names the RUN container
        assert "default via" in out
        assert "UP" in sh(daemon, image, "cat /lo.txt")
        none = sh(daemon, image, "cat /none.txt")
        assert "eth0" not in none and "lo:" in none
        host_devices = sh(daemon, image, "cat /host.txt")
        assert daemon_bridge(daemon) in host_devices  # the host's own interfaces
        # the build's endpoints are gone: only the peer is on the bridge
        assert _endpoints(daemon) == 1
        # the namespaces were held by threads of kapald, not processes; none is left in one
        assert _thread_namespaces(daemon) == {os.readlink(f"/proc/{daemon.process.pid}/ns/net")}

        # the networkmode query (kapal build --network) applies to every RUN without its own
        context = write_context(
            scratch / "none",
            {
                "Dockerfile": "FROM busybox\nRUN ip -o link > /links.txt\n"
                "RUN --network=default ip -o link > /b.txt\n"
            },
        )
        image, _ = build(daemon, context, "--network", "none")
        assert "eth0" not in sh(daemon, image, "cat /links.txt /b.txt")  # default: the build's network
        _, log = build(daemon, context, "--network", "no-such-network", check=False)
        assert "network no-such-network not found" in log

        # a user-defined network: its subnet, and the embedded DNS answers the peer's name
        daemon.kapal("network", "create", "buildnet")
        try:
            subnet = json.loads(daemon.kapal("network", "inspect", "buildnet").stdout)[0]["IPAM"]["Config"][0]
            network = ipaddress.ip_network(subnet["Subnet"])
            daemon.kapal("network", "connect", "--alias", "the-peer", "buildnet", peer)
            context = write_context(
                scratch / "user",
                {
                    "Dockerfile": "FROM busybox\nRUN ip -o -4 addr show eth0 > /eth0.txt "
                    "&& cat /etc/resolv.conf > /resolv.txt && wget -q -O /peer.txt http://the-peer:8080/index\n"
                },
            )
            image, _ = build(daemon, context, "--network", "buildnet")
            out = sh(daemon, image, "cat /eth0.txt /resolv.txt /peer.txt")
            run_address = ipaddress.ip_address(out.split("inet ")[1].split("/")[0])
            assert run_address in network and "nameserver 127.0.0.11" in out
            assert out.endswith("peer-says-hi\n")
        finally:
            daemon.kapal("network", "disconnect", "buildnet", peer, check=False)
            daemon.kapal("network", "rm", "buildnet", check=False)
    finally:
        daemon.kapal("rm", "-f", peer)


def _thread_namespaces(daemon: Daemon) -> set[str]:
    assert daemon.process is not None
    tasks = Path(f"/proc/{daemon.process.pid}/task")
    found = set()
    for task in tasks.iterdir():
        try:
            found.add(os.readlink(task / "ns" / "net"))
        except FileNotFoundError:  # a thread that just ended
            continue
    return found


def daemon_bridge(daemon: Daemon) -> str:
    return json.loads((daemon.base / "daemon.json").read_text())["bridge"]


def _sleeps(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline[:2] == [b"sleep", marker.encode()]:
                found.append(int(pid))
    return found


def test_a_client_that_goes_away_cancels_its_build(daemon: Daemon, busybox: str, scratch: Path) -> None:
    marker = "3217"
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w") as tar:
        dockerfile = f"FROM {busybox}\nRUN echo started-run && sleep {marker}\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    data = body.getvalue()
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(daemon.socket))
    client.sendall(
        b"POST /v1.47/build?t=cancelled:latest HTTP/1.1\r\nHost: kapal\r\n"
        b"Content-Type: application/x-tar\r\n" + f"Content-Length: {len(data)}\r\n\r\n".encode() + data
    )
    received = b""
    client.settimeout(60)
    while b"started-run" not in received:
        chunk = client.recv(65536)
        assert chunk, received
        received += chunk
    _go_away_while_it_runs(daemon, client, marker, "cancelled:latest")
    runtime_root = daemon.exec_root / "runtime" / "crun"
    assert not runtime_root.is_dir() or os.listdir(runtime_root) == []
    # the daemon builds on
    context = write_context(scratch / "after", {"Dockerfile": "FROM busybox\nRUN echo ok > /ok\n"})
    image, _ = build(daemon, context)
    assert sh(daemon, image, "cat /ok") == "ok\n"


def _build_dirs(daemon: Daemon) -> list[str]:
    builds = daemon.data_root / "builder" / "builds"
    return sorted(os.listdir(builds)) if builds.is_dir() else []


def test_a_client_that_goes_away_mid_context_cancels_the_started_build(
    daemon: Daemon, busybox: str, scratch: Path
) -> None:
    """The build started on the Dockerfile while the body was still coming: it goes with the client."""
    marker = "3218"
    dockerfile = f"FROM {busybox}\nRUN sleep {marker}\nCOPY later.txt /\n".encode()
    info = tarfile.TarInfo("Dockerfile")
    info.size = len(dockerfile)
    member = info.tobuf(tarfile.PAX_FORMAT) + dockerfile + b"\0" * (-len(dockerfile) % 512)
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(daemon.socket))
    client.sendall(
        b"POST /v1.47/build?t=gone:latest HTTP/1.1\r\nHost: kapal\r\nContent-Type: application/x-tar\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(member), member)
    )
    _go_away_while_it_runs(daemon, client, marker, "gone:latest")
    assert _thread_namespaces(daemon) == {os.readlink(f"/proc/{daemon.process.pid}/ns/net")}


def _go_away_while_it_runs(daemon: Daemon, client: socket.socket, marker: str, tag: str) -> None:
    """Once the build's ``RUN sleep <marker>`` runs, close *client*: everything of the build goes."""
    deadline = time.monotonic() + 60
    while not _sleeps(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sleeps(marker), "the RUN never started"
    client.close()
    deadline = time.monotonic() + 60
    while (_sleeps(marker) or _build_dirs(daemon)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sleeps(marker) == []  # the RUN container was killed
    assert _build_dirs(daemon) == []  # and the build's files removed
    assert _endpoints(daemon) == 0
    assert daemon.kapal("image", "inspect", tag, check=False).returncode != 0
