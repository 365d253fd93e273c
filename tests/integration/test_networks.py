"""Networking for real: the default bridge, published ports, user-defined networks, no leaks.

Traffic stays on loopback and on the test daemon's own bridge. Every daemon here
gets its own bridge name (and so its own nftables table, ``kapal-<bridge>``) via
daemon.json, so tests may run beside other daemons; the fixture removes the
bridge, the table and any veth left behind even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Daemon, clean_up_after, import_busybox

HTTPD = "mkdir -p /srv && echo page-$N > /srv/index.html && httpd -f -p 80 -h /srv"


def out(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode()


def err(result: subprocess.CompletedProcess) -> str:
    return result.stderr.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(port: int, timeout: float = 10.0) -> str:
    """GET http://127.0.0.1:<port>/ (loopback only), retrying while httpd starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def links() -> list[str]:
    result = subprocess.run(["ip", "-o", "link"], capture_output=True, check=True)
    return [line.split(":")[1].strip().split("@")[0] for line in out(result).splitlines()]


def bridge_state(bridge: str) -> tuple[list[str], list[str]]:
    """The ports (veths) enslaved to *bridge* and its addresses: what this daemon alone made."""
    ports = out(subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True))
    addresses = out(subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge], capture_output=True))
    return (
        sorted(line.split(":")[1].strip().split("@")[0] for line in ports.splitlines()),
        sorted(line.split()[3] for line in addresses.splitlines()),
    )


def nft_rules(table: str) -> int:
    result = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True)
    if result.returncode != 0:
        return 0
    return sum(1 for line in out(result).splitlines() if "dnat" in line or "masquerade" in line)


def remove_network_state(bridge: str, extra_bridges: list[str]) -> None:
    subprocess.run(["nft", "delete", "table", "ip", f"kapal-{bridge}"], capture_output=True)
    for name in [bridge, *extra_bridges]:
        for port in bridge_state(name)[0]:  # only this daemon's veths: other daemons run beside it
            subprocess.run(["ip", "link", "del", port], capture_output=True)
        subprocess.run(["ip", "link", "del", name], capture_output=True)


def user_bridges(daemon: Daemon) -> list[str]:
    try:
        result = daemon.kapal("network", "ls", "-q", "--filter", "type=custom", "--no-trunc", check=False)
        return [f"br-{line[:12]}" for line in out(result).split()]
    except Exception:  # noqa: BLE001 - teardown must go on
        return []


class NetDaemon(Daemon):
    bridge: str

    @property
    def table(self) -> str:
        return f"kapal-{self.bridge}"


@pytest.fixture
def daemon(scratch: Path) -> Iterator[NetDaemon]:
    """A kapald with its own bridge (``kt<hex>``); its bridges, rules and veths are removed afterwards."""
    instance = NetDaemon(scratch)
    instance.bridge = "kt" + secrets.token_hex(4)
    (scratch / "daemon.json").write_text(json.dumps({"bridge": instance.bridge}))
    instance.start()
    extra: list[str] = []
    try:
        yield instance
    finally:
        extra = user_bridges(instance) if instance.process is not None else []
        if instance.process is not None and instance.process.poll() is not None:
            print(instance.log.read_text()[-4000:])  # the daemon died: show why (pytest shows it on failure)
        instance.stop()
        clean_up_after(scratch)
        remove_network_state(instance.bridge, extra)


def run_httpd(daemon: Daemon, name: str, port: int) -> str:
    script = HTTPD.replace("$N", name)
    return out(
        daemon.kapal("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", script)
    ).strip()


HTTP_GET = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 {host} 80 | sed '1,/^\r$/d'"


def http_get(daemon: Daemon, network: str, host: str, tries: int = 50) -> str:
    """The page at http://<host>/ fetched from a throwaway container on *network* ("" on failure).

    nc, not busybox's wget: the wget of Debian's static busybox segfaults on any host *name*
    and with ``-T`` (on the host too), while nc, ping and nslookup work.
    """
    for _ in range(tries):
        result = daemon.kapal(
            "run",
            "--rm",
            "--network",
            network,
            "busybox",
            "sh",
            "-c",
            HTTP_GET.format(host=host),
            check=False,
        )
        if result.returncode == 0 and out(result):
            return out(result)
        time.sleep(0.1)
    return ""


def test_published_port_and_three_containers(daemon: NetDaemon, busybox: str) -> None:
    ports = [free_port() for _ in range(3)]
    for index, port in enumerate(ports):
        run_httpd(daemon, f"web{index}", port)
    for index, port in enumerate(ports):
        assert fetch(port) == f"page-web{index}\n"
    assert out(daemon.kapal("port", "web0")) == f"80/tcp -> 127.0.0.1:{ports[0]}\n"
    assert out(daemon.kapal("port", "web1", "80")) == f"127.0.0.1:{ports[1]}\n"
    settings = json.loads(out(daemon.kapal("inspect", "-f", "{{json .NetworkSettings}}", "web2")))
    assert settings["Ports"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(ports[2])}]}
    bridge = settings["Networks"]["bridge"]
    assert settings["IPAddress"] == bridge["IPAddress"] and bridge["IPAddress"].startswith("10.89.")
    assert settings["Gateway"] == bridge["Gateway"] and settings["MacAddress"] == bridge["MacAddress"]
    hosts = out(daemon.kapal("exec", "web2", "cat", "/etc/hosts"))
    assert settings["IPAddress"] in hosts
    network = json.loads(out(daemon.kapal("network", "inspect", "bridge")))[0]
    assert network["Options"]["com.docker.network.bridge.name"] == daemon.bridge
    assert len(network["Containers"]) == 3
    names = out(daemon.kapal("network", "ls", "--format", "{{.Name}}")).split()
    assert sorted(names) == ["bridge", "host", "none"]
    daemon.kapal("rm", "-f", "web0", "web1", "web2")


def test_containers_reach_each_other_on_the_default_bridge(daemon: NetDaemon, busybox: str) -> None:
    server = run_httpd(daemon, "server", free_port())
    address = out(daemon.kapal("inspect", "-f", "{{.NetworkSettings.IPAddress}}", server)).strip()
    assert http_get(daemon, "bridge", address) == "page-server\n"
    daemon.kapal("rm", "-f", "server")


def test_network_none_has_only_lo(daemon: NetDaemon, busybox: str) -> None:
    result = daemon.kapal("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    names = [line.split(":")[1].strip() for line in out(result).splitlines()]
    assert names == ["lo"]
    missing = daemon.kapal("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert missing.returncode != 0 and "network nosuchnet not found" in err(missing)


def test_port_conflict_is_a_clear_error(daemon: NetDaemon, busybox: str) -> None:
    port = free_port()
    run_httpd(daemon, "first", port)
    second = daemon.kapal(
        "run", "-d", "--name", "second", "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "30", check=False
    )
    assert second.returncode != 0
    assert f"127.0.0.1:{port}" in err(second) and "port is already allocated" in err(second)
    assert fetch(port) == "page-first\n"  # the failed start took nothing from the first
    with socket.socket() as holder:  # a host process holding the port: the same clear error
        holder.bind(("127.0.0.1", 0))
        held = holder.getsockname()[1]
        third = daemon.kapal("run", "-d", "-p", f"127.0.0.1:{held}:80", "busybox", "sleep", "30", check=False)
        assert third.returncode != 0 and f"127.0.0.1:{held}" in err(third)
    daemon.kapal("rm", "-f", "first", "second")


def host_network_state(bridges: list[str], table: str) -> dict[str, object]:
    """What a container's network leaves on the host that is this daemon's alone: its bridges'
    ports and addresses, the lines of its nftables table (rules and chains alike). (Veths that
    left their bridge are checked by name: other daemons run beside this one.)"""
    listing = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True)
    return {
        "bridges": {bridge: bridge_state(bridge) for bridge in bridges},
        "table": sorted(line.strip() for line in out(listing).splitlines()),
    }


def _readlink_or_gone(path: str) -> str:
    try:
        return os.readlink(path)
    except FileNotFoundError:  # closed since listdir
        return ""


def test_no_leaks_after_200_cycles(daemon: NetDaemon, busybox: str) -> None:
    """200 create/start/rm cycles (docker-py, so the count is cheap) on the default bridge and on a
    user network with DNS, each publishing a port: nothing is left behind, not even a socket."""
    docker = pytest.importorskip("docker")
    client = docker.APIClient(base_url=daemon.host, version="1.44")
    client.create_network("cycles")
    run_httpd(daemon, "warm", free_port())  # the bridges and the table exist before counting
    daemon.kapal("run", "-d", "--name", "warm2", "--network", "cycles", "busybox", "sleep", "300")
    bridges = [daemon.bridge, *user_bridges(daemon)]
    kapald_fds = f"/proc/{daemon.process.pid}/fd"
    before = host_network_state(bridges, daemon.table)
    fds_before = len(os.listdir(kapald_fds))
    veths = []  # kapal names a veth after its endpoint: "veth" + the endpoint ID's first 9 digits
    for index in range(200):
        network = "cycles" if index % 2 else "bridge"
        container = client.create_container(
            "busybox",
            ["sleep", "30"],
            ports=[80],
            host_config=client.create_host_config(
                port_bindings={80: ("127.0.0.1", free_port())}, network_mode=network
            ),
        )
        client.start(container)
        endpoint = client.inspect_container(container)["NetworkSettings"]["Networks"][network]["EndpointID"]
        veths.append("veth" + endpoint[:9])
        if index == 1:  # the port's rule is there while it runs
            assert host_network_state(bridges, daemon.table) != before
        client.remove_container(container, force=True)
    for _ in range(50):  # veths are deleted in the background; the kernel takes a moment too
        if host_network_state(bridges, daemon.table) == before:
            break
        time.sleep(0.1)
    assert host_network_state(bridges, daemon.table) == before
    assert not set(veths) & set(links())
    assert not [name for name in links() if name.startswith("kp")]  # no container end left outside
    client.close()  # docker-py keeps up to 25 connections (a pool per URL); kapald sees them close
    for _ in range(50):
        fds = sorted(_readlink_or_gone(f"{kapald_fds}/{fd}") for fd in os.listdir(kapald_fds))
        if len(fds) <= fds_before + 2:
            break
        time.sleep(0.1)
    assert len(fds) <= fds_before + 2, "\n".join(fds)  # DNS sockets, veth netlink sockets: closed
    for network in ("bridge", "cycles"):
        endpoints = json.loads(out(daemon.kapal("network", "inspect", network)))[0]["Containers"]
        assert len(endpoints) == 1
    daemon.kapal("rm", "-f", "warm", "warm2")


def test_daemon_stop_removes_bridge_and_rules_and_restart_adopts(daemon: NetDaemon, busybox: str) -> None:
    port = free_port()
    run_httpd(daemon, "kept", port)
    assert fetch(port) == "page-kept\n"
    daemon.stop()  # a container still runs: its bridge and rules stay for it
    assert daemon.bridge in links() and nft_rules(daemon.table) > 0
    assert fetch(port) == "page-kept\n"
    daemon.start()
    assert out(daemon.kapal("port", "kept")) == f"80/tcp -> 127.0.0.1:{port}\n"
    daemon.kapal("rm", "-f", "kept")
    other = free_port()
    run_httpd(daemon, "again", other)  # the adopted bridge serves new containers too
    assert fetch(other) == "page-again\n"
    daemon.kapal("rm", "-f", "again")
    daemon.stop()  # nothing runs: everything kapal made goes
    assert daemon.bridge not in links()
    assert nft_rules(daemon.table) == 0
    assert subprocess.run(["nft", "list", "table", "ip", daemon.table], capture_output=True).returncode != 0
    daemon.start()


def test_user_defined_network(daemon: NetDaemon, busybox: str) -> None:
    network_id = out(daemon.kapal("network", "create", "appnet")).strip()
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "appsrv",
        "--network",
        "appnet",
        "busybox",
        "sh",
        "-c",
        HTTPD.replace("$N", "app"),
    )
    info = json.loads(out(daemon.kapal("network", "inspect", "appnet")))[0]
    assert info["Id"] == network_id and info["Driver"] == "bridge"
    subnet = info["IPAM"]["Config"][0]["Subnet"]
    address = info["Containers"][next(iter(info["Containers"]))]["IPv4Address"].split("/")[0]
    assert subnet.startswith("10.89.") and not subnet.startswith("10.89.0.")
    assert http_get(daemon, "appnet", address) == "page-app\n"
    in_use = daemon.kapal("network", "rm", "appnet", check=False)
    assert in_use.returncode == 1 and "has active endpoints" in err(in_use)
    builtin = daemon.kapal("network", "rm", "bridge", check=False)
    assert builtin.returncode == 1 and "pre-defined" in err(builtin)
    daemon.kapal("rm", "-f", "appsrv")
    assert out(daemon.kapal("network", "rm", "appnet")) == "appnet\n"
    assert f"br-{network_id[:12]}" not in links()


def test_docker_cli_run_publish_and_port(daemon: NetDaemon, busybox: str) -> None:
    port = free_port()
    daemon.docker(
        "run",
        "-d",
        "--name",
        "dweb",
        "-p",
        f"127.0.0.1:{port}:80",
        "busybox",
        "sh",
        "-c",
        HTTPD.replace("$N", "docker"),
    )
    assert fetch(port) == "page-docker\n"
    assert out(daemon.docker("port", "dweb")) == f"80/tcp -> 127.0.0.1:{port}\n"
    assert f"127.0.0.1:{port}->80/tcp" in out(daemon.docker("ps"))
    names = out(daemon.docker("network", "ls", "--format", "{{.Name}}")).split()
    assert "bridge" in names
    daemon.docker("rm", "-f", "dweb")


def test_names_and_aliases_resolve_on_a_user_network_only(daemon: NetDaemon, busybox: str) -> None:
    daemon.kapal("network", "create", "front")
    daemon.kapal("network", "create", "back")
    daemon.kapal(
        "run", "-d", "--name", "web", "--network", "front", "--network-alias", "www",
        "busybox", "sh", "-c", HTTPD.replace("$N", "web"),
    )  # fmt: skip
    assert http_get(daemon, "front", "web") == "page-web\n"
    assert http_get(daemon, "front", "www", tries=1) == "page-web\n"
    web_id = out(daemon.kapal("inspect", "-f", "{{.Id}}", "web")).strip()
    assert http_get(daemon, "front", web_id[:12], tries=1) == "page-web\n"
    resolv = out(daemon.kapal("run", "--rm", "--network", "front", "busybox", "cat", "/etc/resolv.conf"))
    assert "nameserver 127.0.0.11" in resolv and "ndots:0" in resolv
    lookup = daemon.kapal("run", "--rm", "--network", "front", "busybox", "nslookup", "web", "127.0.0.11")
    address = json.loads(out(daemon.kapal("inspect", "web")))[0]["NetworkSettings"]["Networks"]["front"]
    assert address["IPAddress"] in out(lookup)
    assert address["Aliases"] == ["www"] and address["DNSNames"][:2] == ["web", "www"]
    # another network: neither the name nor the address is reachable (Docker's isolation)
    assert http_get(daemon, "back", "web", tries=1) == ""
    assert http_get(daemon, "back", address["IPAddress"], tries=1) == ""
    # the default bridge has no embedded DNS, as in Docker
    plain = out(daemon.kapal("run", "--rm", "busybox", "cat", "/etc/resolv.conf"))
    assert "127.0.0.11" not in plain
    daemon.kapal("rm", "-f", "web")


def test_connect_with_alias_before_start_and_static_ip(daemon: NetDaemon, busybox: str) -> None:
    daemon.kapal("network", "create", "--subnet", "10.89.200.0/24", "fixed")
    daemon.kapal("create", "--name", "db", "busybox", "sh", "-c", HTTPD.replace("$N", "db"))
    daemon.kapal("network", "connect", "--alias", "database", "--ip", "10.89.200.50", "fixed", "db")
    daemon.kapal("start", "db")
    settings = json.loads(out(daemon.kapal("inspect", "db")))[0]["NetworkSettings"]["Networks"]
    assert set(settings) == {"bridge", "fixed"}
    assert settings["fixed"]["IPAddress"] == "10.89.200.50"
    assert settings["fixed"]["IPAMConfig"] == {"IPv4Address": "10.89.200.50"}
    assert http_get(daemon, "fixed", "database") == "page-db\n"
    # the connection is the container's: it comes back after a stop and start
    daemon.kapal("stop", "-t", "1", "db")
    daemon.kapal("start", "db")
    assert http_get(daemon, "fixed", "database") == "page-db\n"
    taken = daemon.kapal(
        "run", "--rm", "--network", "fixed", "--ip", "10.89.200.50", "busybox", "true", check=False
    )
    assert taken.returncode == 125 and "Address already in use" in err(taken)
    daemon.kapal("network", "disconnect", "fixed", "db")
    assert http_get(daemon, "fixed", "database", tries=1) == ""
    alias_on_bridge = daemon.kapal("run", "--rm", "--network-alias", "x", "busybox", "true", check=False)
    assert alias_on_bridge.returncode == 125 and "user defined networks" in err(alias_on_bridge)
    daemon.kapal("rm", "-f", "db")


def test_internal_network_has_no_way_out(daemon: NetDaemon, busybox: str) -> None:
    daemon.kapal("run", "-d", "--name", "outside", "busybox", "sh", "-c", HTTPD.replace("$N", "outside"))
    outside = out(daemon.kapal("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "outside")).strip()
    assert http_get(daemon, "bridge", outside) == "page-outside\n"
    daemon.kapal("network", "create", "--internal", "sealed")
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "inner",
        "--network",
        "sealed",
        "busybox",
        "sh",
        "-c",
        HTTPD.replace("$N", "in"),
    )
    routes = out(daemon.kapal("run", "--rm", "--network", "sealed", "busybox", "ip", "route"))
    assert "default" not in routes and routes.strip()
    assert http_get(daemon, "sealed", "inner") == "page-in\n"  # inside it, names work
    assert http_get(daemon, "sealed", outside, tries=1) == ""
    assert json.loads(out(daemon.kapal("network", "inspect", "sealed")))[0]["Internal"] is True
    daemon.kapal("rm", "-f", "outside", "inner")


def test_embedded_dns_comes_back_after_a_daemon_crash(daemon: NetDaemon, busybox: str) -> None:
    daemon.kapal("network", "create", "survive")
    daemon.kapal(
        "run",
        "-d",
        "--name",
        "keeper",
        "--network",
        "survive",
        "busybox",
        "sh",
        "-c",
        HTTPD.replace("$N", "k"),
    )
    daemon.kapal("run", "-d", "--name", "asker", "--network", "survive", "busybox", "sleep", "300")
    fetch_keeper = ("exec", "asker", "sh", "-c", HTTP_GET.format(host="keeper"))
    assert out(daemon.kapal(*fetch_keeper)) == "page-k\n"
    daemon.stop(signal.SIGKILL)
    daemon.start()
    assert out(daemon.kapal(*fetch_keeper)) == "page-k\n"
    daemon.kapal("rm", "-f", "keeper", "asker")


COMPOSE_FILE = """\
version: "3.8"
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /srv && echo page-compose > /srv/index.html && httpd -f -p 80 -h /srv"]
    ports:
      - "127.0.0.1:{port}:80"
  client:
    image: busybox
    command: ["sleep", "300"]
    depends_on: [web]
"""


def test_docker_compose_two_services_by_name_and_published_port(daemon: NetDaemon, busybox: str) -> None:
    """Debian's docker-compose (1.29, docker-py underneath) speaking the Engine API to kapald."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    project = daemon.base / "app"
    project.mkdir()
    port = free_port()
    (project / "docker-compose.yml").write_text(COMPOSE_FILE.format(port=port))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
    env.update(DOCKER_HOST=daemon.host, COMPOSE_PROJECT_NAME="kt")

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([compose, *args], cwd=project, env=env, capture_output=True, timeout=120)
        assert result.returncode == 0, f"docker-compose {' '.join(args)}: {err(result)}"
        return result

    run("up", "-d")
    try:
        assert fetch(port) == "page-compose\n"
        fetch_web = ("exec", "-T", "client", "sh", "-c", HTTP_GET.format(host="web"))
        for _ in range(50):
            result = subprocess.run([compose, *fetch_web], cwd=project, env=env, capture_output=True)
            if out(result):
                break
            time.sleep(0.1)
        assert out(result) == "page-compose\n"
        networks = out(daemon.kapal("network", "ls", "--format", "{{.Name}}")).split()
        assert "kt_default" in networks
        ps = out(run("ps"))
        assert "kt_web_1" in ps and "kt_client_1" in ps and "Up" in ps
    finally:
        run("down")
    assert out(daemon.kapal("ps", "-aq")) == ""
    assert "kt_default" not in out(daemon.kapal("network", "ls", "--format", "{{.Name}}")).split()


def test_docker_cli_alias_resolution_and_network_events(daemon: NetDaemon, busybox: str) -> None:
    since = str(int(time.time()) - 1)
    daemon.docker("network", "create", "dnet")
    daemon.docker(
        "run", "-d", "--name", "dsrv", "--network", "dnet", "--network-alias", "svc",
        "busybox", "sh", "-c", HTTPD.replace("$N", "svc"),
    )  # fmt: skip
    for _ in range(50):
        page = out(
            daemon.docker(
                "run",
                "--rm",
                "--network",
                "dnet",
                "busybox",
                "sh",
                "-c",
                HTTP_GET.format(host="svc"),
                check=False,
            )
        )
        if page:
            break
        time.sleep(0.1)
    assert page == "page-svc\n"
    daemon.docker("rm", "-f", "dsrv")
    daemon.docker("network", "rm", "dnet")
    events = daemon.docker(
        "events", "--since", since, "--until", str(int(time.time()) + 1),
        "--filter", "type=network", "--filter", "network=dnet",
        "--format", "{{.Action}} {{.Actor.Attributes.name}}",
    )  # fmt: skip
    actions = [line.split()[0] for line in out(events).splitlines()]
    assert actions[0] == "create" and actions[-1] == "destroy"
    assert actions.count("connect") >= 2 and actions.count("disconnect") >= 2


def test_beside_a_firewall_that_drops_forwarded_traffic(daemon: NetDaemon, busybox: str) -> None:
    """dockerd sets iptables' FORWARD policy to DROP (and loads br_netfilter, which sends bridged
    traffic through it): kapal accepts its own bridges' traffic there, and takes it back after."""
    if shutil.which("iptables") is None or not os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
        pytest.skip("needs iptables and br_netfilter (what makes a DROP policy reach bridged traffic)")
    if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").read_text().strip() != "1":
        pytest.skip("bridged traffic does not pass through iptables on this host")
    listing = out(subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True))
    policy = "DROP" if "-P FORWARD DROP" in listing else "ACCEPT"
    subprocess.run(["iptables", "-P", "FORWARD", "DROP"], check=True)
    try:
        daemon.kapal("network", "create", "walled")
        daemon.kapal(
            "run",
            "-d",
            "--name",
            "wsrv",
            "--network",
            "walled",
            "busybox",
            "sh",
            "-c",
            HTTPD.replace("$N", "w"),
        )
        assert http_get(daemon, "walled", "wsrv") == "page-w\n"
        tagged = out(subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True))
        assert f"kapal:{daemon.table}" in tagged
        daemon.kapal("rm", "-f", "wsrv")
        daemon.kapal("network", "rm", "walled")
        daemon.stop()  # nothing runs: every rule of the daemon's goes
        assert f"kapal:{daemon.table}" not in out(
            subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True)
        )
        daemon.start()
    finally:
        subprocess.run(["iptables", "-P", "FORWARD", policy], check=True)


def test_live_connect_gives_a_running_container_the_names_of_the_network(
    daemon: NetDaemon, busybox: str
) -> None:
    daemon.kapal("network", "create", "late")
    daemon.kapal(
        "run", "-d", "--name", "lsrv", "--network", "late", "busybox", "sh", "-c", HTTPD.replace("$N", "late")
    )
    daemon.kapal("run", "-d", "--name", "lcli", "busybox", "sleep", "300")  # on the default bridge
    daemon.kapal("network", "connect", "late", "lcli")
    fetch_server = ("exec", "lcli", "sh", "-c", HTTP_GET.format(host="lsrv"))
    for _ in range(50):
        page = out(daemon.kapal(*fetch_server, check=False))
        if page:
            break
        time.sleep(0.1)
    assert page == "page-late\n"
    assert "nameserver 127.0.0.11" in out(daemon.kapal("exec", "lcli", "cat", "/etc/resolv.conf"))
    daemon.kapal("network", "disconnect", "late", "lcli")
    assert out(daemon.kapal(*fetch_server, check=False)) == ""
    daemon.kapal("rm", "-f", "lsrv", "lcli")


def test_a_second_daemon_on_the_same_bridge_leaves_it_alone(
    daemon: NetDaemon, busybox: str, busybox_rootfs: Path
) -> None:
    """A kapald that stops must never remove another live kapald's bridge and rules (a benchmark's
    daemon on the default bridge name once took a running daemon's kapal0 with it)."""
    port = free_port()
    run_httpd(daemon, "owner", port)
    assert fetch(port) == "page-owner\n"
    other = Daemon(daemon.base / "other")
    other.base.mkdir()
    (other.base / "daemon.json").write_text(json.dumps({"bridge": daemon.bridge}))
    other.start()
    try:
        import_busybox(other, busybox_rootfs)  # never a pull: tests stay off the internet
        refused = other.kapal("run", "--rm", "busybox", "true", check=False)
        assert refused.returncode != 0 and "in use by another kapald" in err(refused)
    finally:
        other.stop()  # no clean_up_after: it would remove the bridge named in other's daemon.json
    assert daemon.bridge in links() and nft_rules(daemon.table) > 0
    assert fetch(port) == "page-owner\n"
    # a bridge deleted under the daemon is made again for the next container
    daemon.kapal("rm", "-f", "owner")
    subprocess.run(["ip", "link", "del", daemon.bridge], check=True)
    run_httpd(daemon, "again", port)
    assert fetch(port) == "page-again\n"
    daemon.kapal("rm", "-f", "again")


def test_default_address_pools_from_daemon_json(scratch: Path, busybox_rootfs: Path) -> None:
    pooled = NetDaemon(scratch)
    pooled.bridge = "kt" + secrets.token_hex(4)
    pools = [{"base": "10.91.0.0/16", "size": 26}]
    (scratch / "daemon.json").write_text(
        json.dumps({"bridge": pooled.bridge, "default-address-pools": pools})
    )
    pooled.start()
    try:
        import_busybox(pooled, busybox_rootfs)
        pooled.kapal("network", "create", "pooled")
        subnets = {
            name: json.loads(out(pooled.kapal("network", "inspect", name)))[0]["IPAM"]["Config"][0]["Subnet"]
            for name in ("bridge", "pooled")
        }
        assert subnets["bridge"].startswith("10.91.") and subnets["bridge"].endswith("/26")
        assert subnets["pooled"].startswith("10.91.") and subnets["pooled"] != subnets["bridge"]
        address = out(pooled.kapal("run", "--rm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0"))
        assert " 10.91." in address and "/26" in address
    finally:
        extra = user_bridges(pooled)
        pooled.stop()
        clean_up_after(scratch)
        remove_network_state(pooled.bridge, extra)
    bad = NetDaemon(scratch / "bad")
    bad.base.mkdir()
    (bad.base / "daemon.json").write_text(json.dumps({"default-address-pools": [{"base": "10.92.0.0/16"}]}))
    with pytest.raises(RuntimeError, match="default-address-pools"):
        bad.start()


def test_testcontainers_container_network_wait_and_exec(
    daemon: NetDaemon, busybox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """testcontainers-python against kapald: a network with an alias, an HTTP wait, a mapped port,
    logs and exec. Ryuk (its reaper) is off: its image comes from Docker Hub; the host is pinned
    to 127.0.0.1 (this VM has /.dockerenv, which would send testcontainers to the outer gateway)."""
    container_module = pytest.importorskip("testcontainers.core.container")
    from testcontainers.core.config import ConnectionMode, testcontainers_config
    from testcontainers.core.network import Network
    from testcontainers.core.wait_strategies import HttpWaitStrategy, LogMessageWaitStrategy

    monkeypatch.setenv("DOCKER_HOST", daemon.host)
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "tc_host_override", "127.0.0.1")
    monkeypatch.setattr(testcontainers_config, "connection_mode_override", ConnectionMode.docker_host)
    DockerContainer = container_module.DockerContainer
    with Network() as network:
        web = (
            DockerContainer("busybox")
            .with_command(["sh", "-c", HTTPD.replace("$N", "tc")])
            .with_exposed_ports(80)
            .with_env("GREETING", "hello")
            .with_network(network)
            .with_network_aliases("web")
            .waiting_for(HttpWaitStrategy(80).for_status_code(200))
        )
        with web:
            assert web.get_container_host_ip() == "127.0.0.1"
            assert fetch(web.get_exposed_port(80)) == "page-tc\n"
            result = web.exec(["sh", "-c", "echo $GREETING; hostname"])
            assert result.exit_code == 0
            assert result.output.decode().split()[0] == "hello"
            client = (
                DockerContainer("busybox")
                .with_command(["sh", "-c", HTTP_GET.format(host="web") + "; echo fetched"])
                .with_network(network)
                .waiting_for(LogMessageWaitStrategy("fetched"))
            )
            with client:
                stdout, _ = client.get_logs()
                assert stdout.decode() == "page-tc\nfetched\n"
        names = out(daemon.kapal("ps", "-a", "--format", "{{.Names}}")).split()
        assert names == []
    assert network.name not in out(daemon.kapal("network", "ls", "--format", "{{.Name}}")).split()
