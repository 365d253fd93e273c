"""NAT for kapal's networks: one nftables table per daemon, rewritten whole in one transaction.

Every rule kapal needs lives in ``table ip <name>`` (``kapal-<bridge>``), which
kapal owns outright: the host's other tables and iptables rules are never read
or changed, and removing the table removes every trace. Each change (a
container starts or stops) regenerates the table from the database and loads
it with a single ``nft -f -``: delete-and-recreate inside one transaction is
atomic, so no packet ever sees half a rule set and no stale rule can survive.

Published ports to 127.0.0.1: a connection from the host to a published port
on loopback is DNATed in the ``output`` hook to the container's address. Such a
packet still carries source 127.0.0.1, which the kernel refuses to route out of
a non-loopback device, so kapal sets ``route_localnet`` on its own bridges (and
nowhere else) and masquerades ``127.0.0.0/8 → bridge`` traffic to the gateway
address, so replies come back through the bridge. This is Docker's
``userland-proxy: false`` mode. kapal chose it over a userland proxy (Docker's
default docker-proxy) because a proxy is a process (or at least a socket and a
copy loop) per published port, doubles the data path, and hides the client's
address from the container for non-loopback clients too; route_localnet costs
nothing and only affects kapal's bridges.

Ports are still *reserved* by binding a socket on the host port for as long as
the mapping exists (``PortReservations``): a port held by a host process, or by
another container, is a clear error at start, and no host process can take a
published port later. The sockets never listen, so they never see traffic.
"""

from __future__ import annotations

import random
import socket
import subprocess
from dataclasses import dataclass

from kapal.errors import Conflict, KapalError

EPHEMERAL_RANGE = (49153, 60999)  # Docker's range for -p without a host port


class NatError(KapalError):
    """nft refused the rule set (its message is included)."""


@dataclass(frozen=True)
class Forward:
    """A published port: (host ip, host port, proto) → (container ip, container port)."""

    host_ip: str
    host_port: int
    proto: str
    address: str
    port: int


@dataclass(frozen=True)
class Subnet:
    subnet: str
    bridge: str
    internal: bool = False


class NatTable:
    """kapal's nftables table for one daemon, named after its default bridge."""

    def __init__(self, name: str, nft: str = "nft") -> None:
        self.name = name
        self.nft = nft

    def script(self, subnets: list[Subnet], forwards: list[Forward]) -> str:
        table = f"ip {self.name}"
        lines = [
            f"table {table} {{}}",  # so the delete never fails, whatever the state
            f"delete table {table}",
            f"table {table} {{",
            "  chain prerouting {",
            "    type nat hook prerouting priority -100; policy accept;",
            "    fib daddr type local jump published",
            "  }",
            "  chain output {",
            "    type nat hook output priority -100; policy accept;",
            "    fib daddr type local jump published",
            "  }",
            "  chain published {",
        ]
        for f in forwards:
            match = f"ip daddr {f.host_ip} " if f.host_ip not in ("", "0.0.0.0") else ""
            lines.append(f"    {match}{f.proto} dport {f.host_port} dnat to {f.address}:{f.port}")
        lines += [
            "  }",
            "  chain postrouting {",
            "    type nat hook postrouting priority 100; policy accept;",
        ]
        for s in subnets:
            if not s.internal:
                lines.append(f'    ip saddr {s.subnet} oifname != "{s.bridge}" masquerade')
            # a container reaching a published port of its own network (even its own): without this the
            # reply would go straight back over the bridge, from an address the client never dialled
            lines.append(f'    ip saddr {s.subnet} oifname "{s.bridge}" ct status dnat masquerade')
            # loopback-sourced connections DNATed to a container (route_localnet): reply via the bridge
            lines.append(f'    ip saddr 127.0.0.0/8 oifname "{s.bridge}" masquerade')
        lines += ["  }"]
        lines += self._filter(subnets)
        lines += ["}"]
        return "\n".join(lines) + "\n"

    @staticmethod
    def _filter(subnets: list[Subnet]) -> list[str]:
        """Isolation, as Docker's DOCKER-ISOLATION chains: an internal network's traffic stays on its
        bridge, and no container reaches another network's containers through the host, except
        by a published port (DNATed connections are let through, as with Docker's proxy)."""
        bridges = sorted({s.bridge for s in subnets})
        lines = [
            "  chain forward {",
            "    type filter hook forward priority 0; policy accept;",
        ]
        for s in subnets:
            if s.internal:
                lines.append(f'    iifname "{s.bridge}" oifname != "{s.bridge}" drop')
                lines.append(f'    oifname "{s.bridge}" iifname != "{s.bridge}" drop')
        if len(bridges) > 1:
            lines.append("    ct status dnat accept")
            for bridge in bridges:
                others = ", ".join(f'"{b}"' for b in bridges if b != bridge)
                lines.append(f'    iifname "{bridge}" oifname {{ {others} }} drop')
        lines.append("  }")
        return lines

    def apply(self, subnets: list[Subnet], forwards: list[Forward]) -> None:
        if not subnets and not forwards:
            self.remove()
            return
        self._run(self.script(subnets, forwards))

    def remove(self) -> None:
        self._run(f"table ip {self.name} {{}}\ndelete table ip {self.name}\n")

    def exists(self) -> bool:
        result = subprocess.run([self.nft, "list", "table", "ip", self.name], capture_output=True)
        return result.returncode == 0

    def _run(self, script: str) -> None:
        try:
            result = subprocess.run([self.nft, "-f", "-"], input=script.encode(), capture_output=True)
        except FileNotFoundError:
            raise NatError("the nft binary is not installed (apt-get install nftables)") from None
        if result.returncode != 0:
            raise NatError(f"nft: {result.stderr.decode().strip()}")


class PortReservations:
    """Host ports held by a bound (never listening) socket while a container publishes them."""

    def __init__(self) -> None:
        self._sockets: dict[tuple[str, int, str], socket.socket] = {}

    def held(self) -> set[tuple[str, int, str]]:
        return set(self._sockets)

    def reserve(self, host_ip: str, port: int, proto: str) -> None:
        """Bind (host_ip, port); a port in use anywhere on the host is a Conflict naming it."""
        key = (host_ip or "0.0.0.0", port, proto)
        if key in self._sockets:
            raise Conflict(_in_use(*key))
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        try:
            sock.bind((key[0], port))
        except OSError as error:
            sock.close()
            raise Conflict(f"{_in_use(*key)} ({error.strerror})") from None
        sock.set_inheritable(False)
        self._sockets[key] = sock

    def reserve_any(self, host_ip: str, proto: str, low: int, high: int) -> int:
        """Reserve a free port in [low, high], tried in random order (Docker: 49153–60999 by default)."""
        candidates = list(range(low, high + 1))
        random.shuffle(candidates)
        for port in candidates[:512] if high - low > 512 else candidates:
            try:
                self.reserve(host_ip, port, proto)
                return port
            except Conflict:
                continue
        raise Conflict(f"no free host port in {low}-{high} for {host_ip or '0.0.0.0'}/{proto}")

    def release(self, host_ip: str, port: int, proto: str) -> None:
        sock = self._sockets.pop((host_ip or "0.0.0.0", port, proto), None)
        if sock is not None:
            sock.close()

    def release_all(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


def _in_use(host_ip: str, port: int, proto: str) -> str:
    return (
        f"driver failed programming external connectivity: Bind for {host_ip}:{port}"
        f"{'' if proto == 'tcp' else '/' + proto} failed: port is already allocated"
    )
