"""IP address management: networks and their endpoints, kept in the metadata database.

The database is the only record of which address belongs to which container, so
a daemon restart (or crash) loses nothing: the ``UNIQUE (network_id, address)``
constraint makes handing out one address twice impossible even if two threads
raced past the in-memory lock, and a restarted daemon resumes from the rows.

Addresses are handed out round-robin after the last one given (the network's
``last_address`` cursor), as Docker's bit-sequence allocator does: an address
just released is not reused at once, so a peer's stale ARP entry or a slow
client of the previous owner does not reach the wrong container.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from kapal.errors import Conflict, InvalidArgument, NotFound, Unavailable
from kapal.metadata import Database

# The tables (networks, endpoints) are created by their migration in kapal.metadata.MIGRATIONS.


@dataclass
class Network:
    id: str
    name: str
    driver: str
    subnet: str
    gateway: str
    bridge: str
    created: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen if self.subnet else 0

    @property
    def builtin(self) -> bool:
        return self.name in ("bridge", "host", "none")


@dataclass
class PortMapping:
    """One published port: host (ip, port, proto) → container port."""

    host_ip: str  # "" means every address
    host_port: int
    container_port: int
    proto: str  # tcp, udp

    def to_json(self) -> dict[str, Any]:
        return {
            "HostIp": self.host_ip,
            "HostPort": self.host_port,
            "Port": self.container_port,
            "Proto": self.proto,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PortMapping:
        return cls(data["HostIp"], int(data["HostPort"]), int(data["Port"]), data["Proto"])


@dataclass
class Endpoint:
    id: str
    network_id: str
    container_id: str
    address: str
    mac: str
    host_ifname: str
    ifname: str
    ports: list[PortMapping] = field(default_factory=list)


def mac_for(address: str) -> str:
    """Docker's MAC scheme, 02:42 + the IPv4 address: locally administered, unique per address."""
    packed = ipaddress.IPv4Address(address).packed
    return "02:42:" + ":".join(f"{byte:02x}" for byte in packed)


class IPAM:
    """Networks and endpoints rows; every allocation is one database transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- networks -------------------------------------------------------------------------------

    def networks(self) -> list[Network]:
        rows = self.db.query("SELECT * FROM networks ORDER BY created")
        return [_network(row) for row in rows]

    def add_network(self, network: Network) -> None:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM networks WHERE name = ?", (network.name,)).fetchone():
                raise Conflict(f"network with name {network.name} already exists")
            conn.execute(
                "INSERT INTO networks (id, name, driver, subnet, gateway, bridge, created, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    network.id,
                    network.name,
                    network.driver,
                    network.subnet,
                    network.gateway,
                    network.bridge,
                    network.created,
                    json.dumps(network.record),
                ),
            )

    def update_subnet(self, network_id: str, subnet: str, gateway: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE networks SET subnet = ?, gateway = ?, last_address = '' WHERE id = ?",
                (subnet, gateway, network_id),
            )

    def remove_network(self, network_id: str) -> None:
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM endpoints WHERE network_id = ?", (network_id,)).fetchone():
                raise Conflict(f"network {network_id} has active endpoints")
            conn.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    # -- endpoints ------------------------------------------------------------------------------

    def endpoints(self, network_id: str | None = None, container_id: str | None = None) -> list[Endpoint]:
        sql, params = "SELECT * FROM endpoints WHERE 1", []
        if network_id is not None:
            sql += " AND network_id = ?"
            params.append(network_id)
        if container_id is not None:
            sql += " AND container_id = ?"
            params.append(container_id)
        return [_endpoint(row) for row in self.db.query(sql + " ORDER BY rowid", tuple(params))]

    def allocate(
        self, network: Network, container_id: str, ifname: str, address: str | None = None
    ) -> Endpoint:
        """The container's endpoint on *network*: its existing one, or one with a fresh address.

        *address* asks for that address (``--ip``); taken or outside the subnet, it is refused.
        """
        subnet = ipaddress.IPv4Network(network.subnet)
        gateway = ipaddress.IPv4Address(network.gateway)
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT * FROM endpoints WHERE network_id = ? AND container_id = ?",
                (network.id, container_id),
            ).fetchone()
            if row is not None:
                return _endpoint(row)
            used = {
                r[0]
                for r in conn.execute("SELECT address FROM endpoints WHERE network_id = ?", (network.id,))
            }
            cursor = conn.execute("SELECT last_address FROM networks WHERE id = ?", (network.id,)).fetchone()
            if cursor is None:
                raise NotFound(f"network {network.name} not found")
            if address:
                candidate = _requested(network, address, used)
            else:
                candidate = _next_free(network, subnet, gateway, cursor[0], used)
            endpoint_id = secrets.token_hex(32)
            endpoint = Endpoint(
                id=endpoint_id,
                network_id=network.id,
                container_id=container_id,
                address=candidate,
                mac=mac_for(candidate),
                host_ifname="veth" + endpoint_id[:9],
                ifname=ifname,
            )
            conn.execute(
                "INSERT INTO endpoints (id, network_id, container_id, address, mac, host_ifname, ifname)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    endpoint.id,
                    endpoint.network_id,
                    container_id,
                    endpoint.address,
                    endpoint.mac,
                    endpoint.host_ifname,
                    endpoint.ifname,
                ),
            )
            if not address:
                conn.execute("UPDATE networks SET last_address = ? WHERE id = ?", (candidate, network.id))
        return endpoint

    def set_ports(self, endpoint_id: str, ports: list[PortMapping]) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE endpoints SET ports = ? WHERE id = ?",
                (json.dumps([p.to_json() for p in ports]), endpoint_id),
            )

    def release(self, endpoint_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))


def _requested(network: Network, address: str, used: set[str]) -> str:
    try:
        wanted = ipaddress.IPv4Address(address)
    except ValueError:
        raise InvalidArgument(f"invalid IPv4 address: {address}") from None
    subnet = ipaddress.IPv4Network(network.subnet)
    if wanted not in subnet or wanted in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(
            f"no configured subnet or ip-range contain the IP address {address} of network {network.name}"
        )
    if str(wanted) in used or str(wanted) == network.gateway:
        raise Conflict(f"Address already in use: {address} on network {network.name}")
    return str(wanted)


def _next_free(
    network: Network,
    subnet: ipaddress.IPv4Network,
    gateway: ipaddress.IPv4Address,
    last: str,
    used: set[str],
) -> str:
    """Round-robin from the address after the last one handed out."""
    hosts = [int(h) for h in subnet.hosts() if h != gateway]
    start = 0
    if last:
        last_int = int(ipaddress.IPv4Address(last))
        start = next((i + 1 for i, h in enumerate(hosts) if h == last_int), 0)
    for step in range(len(hosts)):
        candidate = str(ipaddress.IPv4Address(hosts[(start + step) % len(hosts)]))
        if candidate not in used:
            return candidate
    raise Unavailable(f"no available IPv4 addresses on network {network.name}: {subnet}")


def _network(row: Any) -> Network:
    return Network(
        id=row["id"],
        name=row["name"],
        driver=row["driver"],
        subnet=row["subnet"],
        gateway=row["gateway"],
        bridge=row["bridge"],
        created=row["created"],
        record=json.loads(row["record"]),
    )


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row["id"],
        network_id=row["network_id"],
        container_id=row["container_id"],
        address=row["address"],
        mac=row["mac"],
        host_ifname=row["host_ifname"],
        ifname=row["ifname"],
        ports=[PortMapping.from_json(p) for p in json.loads(row["ports"])],
    )
