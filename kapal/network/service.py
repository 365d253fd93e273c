"""The network service: Docker's networks (bridge, host, none, user-defined bridges) and published ports.

The container service calls three hooks around a container's life:

* ``prepare(container) -> [address]`` before its /etc files are written, so /etc/hosts can name
  the container's own address (the address is allocated here, the kernel is not touched);
* ``attach(container, pid) -> NetworkSettings`` once the process (and its network namespace) exists
  but before it runs: veth into the namespace, host ports reserved, NAT rules loaded;
* ``detach(container)`` when it exits or is removed: everything attach made is undone.

Kernel state (bridges, the nftables table) is created lazily, on the first container that needs it,
so a daemon that never runs a bridged container never touches the host's network. On shutdown it is
removed when no container still runs; when some do (they outlive kapald, as with Docker's
live-restore), it is left for them and the next daemon adopts it (``recover``).

One lock serializes every change: network changes are rare and short next to a container start.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kapal.container.model import Container, now_rfc3339
from kapal.errors import Conflict, Forbidden, InvalidArgument, KapalError, NotFound
from kapal.events import EventBus
from kapal.metadata import Database
from kapal.network import bridge as links
from kapal.network.firewall import ForwardAccept
from kapal.network.ipam import IPAM, Endpoint, Network, PortMapping
from kapal.network.nat import EPHEMERAL_RANGE, Forward, NatTable, PortReservations, Subnet

log = logging.getLogger("kapald")

BUILTIN = ("bridge", "host", "none")
PASSIVE_MODES = ("none", "host")  # no endpoint: lo only, or the host's own stack


@dataclass
class NetworkOptions:
    """daemon.json's network keys: ``bridge`` (name of the default bridge), ``bip``, ``mtu``,
    ``default-address-pools``.

    Subnets kapal picks itself are the first of the pools' subnets that overlaps no route on the
    host: by default /24s of 10.89.0.0/16, which collides with neither Docker's 172.17.0.0/16 nor
    Podman's 10.88.0.0/16; the route check keeps two kapalds (each with its own bridge) from picking
    the same one.
    """

    bridge: str = "kapal0"
    bip: str = ""  # "10.89.0.1/24": gateway address and prefix of the default bridge
    mtu: int = 1500
    pools: list[tuple[str, int]] = field(default_factory=lambda: [("10.89.0.0/16", 24)])  # (base, size)
    lock_dir: Path = Path("/run/kapal-networks")

    @classmethod
    def from_config(cls, extra: dict[str, Any]) -> NetworkOptions:
        options = cls()
        if extra.get("bridge"):
            options.bridge = str(extra["bridge"])
        if len(options.bridge) > 15:
            raise InvalidArgument(f"bridge name {options.bridge!r} is longer than 15 characters")
        if extra.get("bip"):
            options.bip = str(extra["bip"])
        if extra.get("mtu"):
            options.mtu = int(extra["mtu"])
        if extra.get("default-address-pools"):
            options.pools = [_address_pool(pool) for pool in extra["default-address-pools"]]
        return options


class NetworkService:
    def __init__(self, db: Database, options: NetworkOptions, events: EventBus | None = None) -> None:
        self.options = options
        self.events = events
        self.ipam = IPAM(db)
        self.nat = NatTable(f"kapal-{options.bridge}")
        self.firewall = ForwardAccept(f"kapal-{options.bridge}")
        self.ports = PortReservations()
        self.containers: Any = None  # the ContainerService, for names and connect/disconnect
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._up: set[str] = set()  # ids of networks whose bridge this daemon has set up
        self._dns: Any = None  # the EmbeddedDNS, made when a container first joins a user network
        self._reaper = links.LinkReaper()
        self._ensure_builtin()

    # -- networks -------------------------------------------------------------------------------

    def _ensure_builtin(self) -> None:
        have = {n.name: n for n in self.ipam.networks()}
        for name, driver in (("none", "null"), ("host", "host")):
            if name not in have:
                self.ipam.add_network(Network(secrets.token_hex(32), name, driver, "", "", "", now_rfc3339()))
        default = have.get("bridge")
        if default is None:
            subnet, gateway = self._default_subnet([])
            self.ipam.add_network(
                Network(
                    secrets.token_hex(32),
                    "bridge",
                    "bridge",
                    subnet,
                    gateway,
                    self.options.bridge,
                    now_rfc3339(),
                    {"Options": _bridge_options(self.options.bridge, True)},
                )
            )
        elif self.options.bip and self.options.bip != f"{default.gateway}/{default.prefixlen}":
            if self.ipam.endpoints(network_id=default.id):
                log.warning("bip %s ignored while containers use the default bridge", self.options.bip)
            else:
                subnet, gateway = self._default_subnet([])
                self.ipam.update_subnet(default.id, subnet, gateway)

    def _default_subnet(self, taken: list[str]) -> tuple[str, str]:
        if self.options.bip:
            interface = ipaddress.IPv4Interface(self.options.bip)
            return str(interface.network), str(interface.ip)
        return self._free_subnet(taken)

    def _free_subnet(self, taken: list[str]) -> tuple[str, str]:
        """The first subnet of the pools overlapping neither a host route nor another kapal network."""
        mine = {n.bridge for n in self.ipam.networks() if n.bridge} | {self.options.bridge}
        used = links.host_routes(exclude=mine) + [ipaddress.IPv4Network(s) for s in taken if s]
        used += [ipaddress.IPv4Network(n.subnet) for n in self.ipam.networks() if n.subnet]
        for base, size in self.options.pools:
            for candidate in ipaddress.IPv4Network(base).subnets(new_prefix=size):
                if not any(candidate.overlaps(other) for other in used):
                    return str(candidate), str(next(candidate.hosts()))
        raise Conflict(
            "could not find an available, non-overlapping IPv4 address pool among the default pools"
            f" ({', '.join(f'{base}/{size}' for base, size in self.options.pools)})"
        )

    def list(self) -> list[Network]:
        return self.ipam.networks()

    def get(self, ref: str) -> Network:
        """A network by full ID, name, or unique ID prefix (Docker's order)."""
        networks = self.ipam.networks()
        for network in networks:
            if network.id == ref:
                return network
        for network in networks:
            if network.name == ref:
                return network
        matches = [n for n in networks if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(
                f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
            )
        raise NotFound(f"network {ref} not found")

    def create(
        self,
        name: str,
        driver: str = "bridge",
        subnet: str = "",
        gateway: str = "",
        internal: bool = False,
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
        attachable: bool = False,
    ) -> Network:
        if not name:
            raise InvalidArgument("network name is required")
        if driver not in ("bridge", ""):
            raise InvalidArgument(f"plugin {driver!r} not found: only the bridge driver is supported")
        if name in BUILTIN:
            raise Forbidden(f"operation is not permitted on predefined {name} network ")
        with self._lock:
            if any(n.name == name for n in self.ipam.networks()):
                raise Conflict(f"network with name {name} already exists")
            auto_subnet = not subnet
            if subnet:
                try:
                    net = ipaddress.IPv4Network(subnet, strict=True)
                except ValueError as error:
                    raise InvalidArgument(f"invalid subnet {subnet}: {error}") from None
                mine = {n.bridge for n in self.ipam.networks() if n.bridge}
                others = links.host_routes(exclude=mine) + [
                    ipaddress.IPv4Network(n.subnet) for n in self.ipam.networks() if n.subnet
                ]
                for other in others:
                    if net.overlaps(other):
                        raise Forbidden(f"Pool overlaps with other one on this address space ({other})")
                gateway = gateway or str(next(net.hosts()))
                if ipaddress.IPv4Address(gateway) not in net:
                    raise InvalidArgument(f"gateway {gateway} is not in subnet {subnet}")
            else:
                subnet, gateway = self._free_subnet([])
            network_id = secrets.token_hex(32)
            bridge_name = (options or {}).get("com.docker.network.bridge.name") or f"br-{network_id[:12]}"
            record = {
                "Labels": labels or {},
                "Options": options or {},
                "Internal": internal,
                "Attachable": attachable,
                "AutoSubnet": auto_subnet,
            }
            network = Network(network_id, name, "bridge", subnet, gateway, bridge_name, now_rfc3339(), record)
            self.ipam.add_network(network)
        self._publish("create", network)
        return network

    def remove(self, ref: str) -> Network:
        network = self.get(ref)
        if network.builtin:
            raise Forbidden(f"{network.name} is a pre-defined network and cannot be removed")
        with self._lock:
            if self.ipam.endpoints(network_id=network.id):
                raise Forbidden(
                    f"error while removing network: network {network.name} id {network.id}"
                    " has active endpoints"
                )
            self.ipam.remove_network(network.id)
            self._up.discard(network.id)
            links.delete_link(network.bridge)
            self._apply_nat()
        self._publish("destroy", network)
        return network

    def prune(self) -> list[str]:
        removed = []
        for network in self.list():
            if network.builtin or self.ipam.endpoints(network_id=network.id):
                continue
            try:
                self.remove(network.id)
                removed.append(network.name)
            except KapalError as error:
                log.warning("pruning network %s: %s", network.name, error)
        return removed

    def endpoints(self, network: Network) -> list[Endpoint]:
        return self.ipam.endpoints(network_id=network.id)

    # -- kernel state ---------------------------------------------------------------------------

    def _claim(self) -> None:
        """Own the default bridge's name host-wide: two daemons on one bridge would share addresses."""
        if self._lock_fd is not None:
            return
        self.options.lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self.options.lock_dir / f"{self.options.bridge}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise Conflict(
                f"bridge {self.options.bridge} is in use by another kapald: "
                'give each daemon its own "bridge" in daemon.json'
            ) from None
        self._lock_fd = fd

    def _claimable(self) -> bool:
        """Whether this daemon may own the default bridge's name (no other kapald holds it)."""
        try:
            self._claim()
        except Conflict:
            return False
        return True

    def _ensure_up(self, network: Network) -> Network:
        """Bring *network*'s bridge up (once per daemon); returns the network as it now is.

        The overlap check and the bridge's creation happen under a host-wide lock, so two
        kapalds starting at once cannot both take a subnet. A subnet kapal chose itself (no
        ``bip``, no ``--subnet``) that a route on the host now overlaps, typically another
        daemon's bridge, is replaced by a free one while no container holds an address in it.
        """
        if network.id in self._up:
            return network
        self._claim()
        with _host_lock(self.options.lock_dir / "setup.lock"):
            net = ipaddress.IPv4Network(network.subnet)
            mine = {n.bridge for n in self.ipam.networks() if n.bridge}
            clash = next((r for r in links.host_routes(exclude=mine) if r.overlaps(net)), None)
            if clash is not None:
                auto = not self.options.bip if network.name == "bridge" else network.record.get("AutoSubnet")
                if not auto or self.ipam.endpoints(network_id=network.id):
                    raise Conflict(
                        f"network {network.name} ({network.subnet}) overlaps the host route {clash}: "
                        'choose another subnet ("bip" in daemon.json for the default bridge)'
                    )
                subnet, gateway = self._free_subnet([])
                self.ipam.update_subnet(network.id, subnet, gateway)
                network = self.get(network.id)
                net = ipaddress.IPv4Network(network.subnet)
            links.enable_ip_forward()
            links.ensure_bridge(network.bridge, network.gateway, net.prefixlen, self.options.mtu)
        self._up.add(network.id)
        self._apply_nat()  # its masquerade and isolation rules
        return network

    def _apply_nat(self) -> None:
        networks = {n.id: n for n in self.ipam.networks()}
        subnets = [
            Subnet(networks[i].subnet, networks[i].bridge, bool(networks[i].record.get("Internal")))
            for i in sorted(self._up)
            if i in networks
        ]
        forwards = [
            Forward(p.host_ip, p.host_port, p.proto, e.address, p.container_port)
            for e in self.ipam.endpoints()
            for p in e.ports
        ]
        self.nat.apply(subnets, forwards)
        self.firewall.apply({s.bridge for s in subnets})

    def recover(self) -> None:
        """After a daemon (re)start: adopt the bridges and rules of containers that kept running."""
        with self._lock:
            endpoints = self.ipam.endpoints()
            if not endpoints:
                return
            networks = {n.id: n for n in self.ipam.networks()}
            for network_id in {e.network_id for e in endpoints}:
                try:
                    self._ensure_up(networks[network_id])
                except KapalError as error:
                    log.warning("restoring network %s: %s", networks[network_id].name, error)
            for endpoint in endpoints:
                for p in endpoint.ports:
                    try:
                        self.ports.reserve(p.host_ip, p.host_port, p.proto)
                    except KapalError as error:
                        log.warning("re-reserving port of %s: %s", endpoint.container_id[:12], error)
            self._apply_nat()

    def drop_stale(self, running: set[str]) -> None:
        """Release endpoints of containers that no longer run (a crash between exit and detach)."""
        with self._lock:
            stale = [e for e in self.ipam.endpoints() if e.container_id not in running]
            for endpoint in stale:
                self._release(endpoint)
            if stale:
                self._apply_nat()

    def close(self) -> None:
        """Daemon shutdown: remove bridges and rules unless containers still use them."""
        if self._dns is not None:
            self._dns.close()
        self._reaper.flush()
        with self._lock:
            self.ports.release_all()
            if self.ipam.endpoints():
                log.info("leaving kapal's bridges and NAT rules for the containers still running")
            elif self._lock_fd is not None or (self.nat.exists() and self._claimable()):
                # ours, or left by a crashed run of ours: another kapald's live bridge is never touched
                try:
                    self.nat.remove()
                except KapalError as error:
                    log.warning("removing NAT rules: %s", error)
                self.firewall.remove()
                for network in self.ipam.networks():
                    if network.bridge:
                        try:
                            links.delete_link(network.bridge)
                        except KapalError as error:
                            log.warning("removing bridge %s: %s", network.bridge, error)
                self._up.clear()
                if self._lock_fd is not None:  # nothing left to guard: leave no file behind either
                    (self.options.lock_dir / f"{self.options.bridge}.lock").unlink(missing_ok=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- container hooks ------------------------------------------------------------------------

    def plan(self, host_config: dict[str, Any], networking: dict[str, Any] | None = None) -> dict[str, Any]:
        """At create: the container's networks and their endpoint configs (``endpoints_config``).

        An unknown network is an error now, as dockerd says, not at start. ``NetworkingConfig``'s
        entry for the NetworkMode network gives its aliases and static address; entries for other
        networks join the container to those too (API 1.44+).
        """
        mode = _mode(host_config)
        if mode in PASSIVE_MODES or mode.startswith("container:"):
            return {}
        wanted = dict((networking or {}).get("EndpointsConfig") or {})
        primary = self.get(mode)
        own = [wanted.pop(key, None) for key in {mode, primary.name, primary.id, "default"}]
        plan: dict[str, Any] = {}
        for ref, config in [(mode, next((c for c in own if c), None))] + list(wanted.items()):
            network = self.get(ref)
            if network.name in plan:
                continue
            if network.builtin and network.name != "bridge":
                raise InvalidArgument(
                    f"container cannot be connected to the {network.name} network and others"
                )
            plan[network.name] = _endpoint_config(network, config or {})
        return plan

    def _joined(self, container: Container) -> list[tuple[Network, dict[str, Any]]]:
        """The networks the container is on, in order (eth0 first); a network since removed is skipped."""
        configs = container.endpoints_config
        mode = _mode(container.host_config)
        if configs is None:  # created before endpoint configs were recorded
            if mode in PASSIVE_MODES or mode.startswith("container:"):
                return []
            configs = {mode: {}}
        out = []
        for name, config in configs.items():
            try:
                out.append((self.get(config.get("NetworkID") or name), config))
            except NotFound:
                log.warning("container %s: network %s no longer exists", container.short_id, name)
        return out

    def prepare(self, container: Container) -> list[str]:
        """Allocate the container's addresses on its networks (for /etc/hosts); idempotent."""
        addresses = []
        with self._lock:
            for index, (network, config) in enumerate(self._joined(container)):
                network = self._ensure_up(network)  # may still move an unused auto subnet off a clash
                endpoint = self.ipam.allocate(network, container.id, f"eth{index}", _static_ip(config))
                addresses.append(endpoint.address)
        return addresses

    def uses_embedded_dns(self, container: Container) -> bool:
        """Containers on user-defined networks resolve each other through 127.0.0.11, as in Docker."""
        return any(not network.builtin for network, _ in self._joined(container))

    def attach(self, container: Container, pid: int) -> dict[str, Any]:
        mode = _mode(container.host_config)
        if mode == "none":
            links.lo_up(pid)
        joined = self._joined(container)
        if not joined:
            return self.settings(container, pid)
        with self._lock:
            gateway_network = _gateway_network(joined)
            made: list[Endpoint] = []
            try:
                for index, (network, config) in enumerate(joined):
                    network = self._ensure_up(network)
                    endpoint = self.ipam.allocate(network, container.id, f"eth{index}", _static_ip(config))
                    made.append(endpoint)
                    if index == 0:
                        endpoint.ports = self._reserve_ports(container)
                        self.ipam.set_ports(endpoint.id, endpoint.ports)
                    self._plug(network, endpoint, pid, network.id == gateway_network)
                if any(e.ports for e in made):
                    self._apply_nat()
            except BaseException:
                for endpoint in made:
                    self._release(endpoint)
                if any(e.ports for e in made):
                    self._apply_nat()
                raise
        if any(not network.builtin for network, _ in joined):
            self._serve_dns(container, pid)
        for network, _ in joined:
            self._publish("connect", network, container=container.id)
        return self.settings(container, pid)

    def _plug(self, network: Network, endpoint: Endpoint, pid: int, default_route: bool) -> None:
        """The container's veth on *network*; a bridge deleted under kapald is made again, once."""
        for attempt in (1, 2):
            try:
                links.add_veth(
                    network.bridge,
                    endpoint.host_ifname,
                    pid,
                    endpoint.ifname,
                    endpoint.address,
                    network.prefixlen,
                    network.gateway,
                    endpoint.mac,
                    self.options.mtu,
                    default_route=default_route,
                )
                return
            except links.BridgeMissing:
                if attempt == 2:
                    raise
                log.warning("bridge %s was deleted under kapald: making it again", network.bridge)
                self._up.discard(network.id)
                self._ensure_up(network)

    def detach(self, container: Container) -> None:
        if self._dns is not None:
            self._dns.stop_serving(container.id)
        with self._lock:
            endpoints = self.ipam.endpoints(container_id=container.id)
            for endpoint in endpoints:
                self._release(endpoint)
            if any(e.ports for e in endpoints):
                self._apply_nat()
        networks = {n.id: n for n in self.ipam.networks()}
        for endpoint in endpoints:
            if endpoint.network_id in networks:
                self._publish("disconnect", networks[endpoint.network_id], container=container.id)
        container.network_settings = self.settings(container, 0)

    def connect(self, network_ref: str, container_ref: str, config: dict[str, Any] | None = None) -> None:
        """Join a container to a network: live when it runs, from its next start when it does not."""
        network = self.get(network_ref)
        container = self.containers.get(container_ref)
        mode = _mode(container.host_config)
        if network.name in ("host", "none") or mode in PASSIVE_MODES or mode.startswith("container:"):
            if mode in PASSIVE_MODES or mode.startswith("container:"):
                raise Forbidden(
                    f"container sharing network namespace with another container or host cannot be "
                    f"connected to any other network ({mode})"
                )
            raise Forbidden(
                f"container cannot be disconnected from host network or connected to {network.name} network"
            )
        endpoint_config = _endpoint_config(network, config or {})
        with self._lock:
            joined = self._joined(container)
            if any(n.id == network.id for n, _ in joined):
                raise Forbidden(
                    f"endpoint with name {container.name} already exists in network {network.name}"
                )
            if container.endpoints_config is None:
                container.endpoints_config = {n.name: c for n, c in joined}
            container.endpoints_config[network.name] = endpoint_config
            if container.running:
                taken = {e.ifname for e in self.ipam.endpoints(container_id=container.id)}
                ifname = next(f"eth{i}" for i in range(64) if f"eth{i}" not in taken)
                try:
                    network = self._ensure_up(network)
                    endpoint = self.ipam.allocate(network, container.id, ifname, _static_ip(endpoint_config))
                    try:
                        self._plug(network, endpoint, container.state.pid, default_route=False)
                    except BaseException:
                        self._release(endpoint)
                        raise
                except BaseException:
                    container.endpoints_config.pop(network.name, None)
                    raise
                self._apply_nat()
        if container.running and not network.builtin:
            self._serve_dns(container, container.state.pid)
            self._use_embedded_dns(container)
        if container.running:
            self._publish("connect", network, container=container.id)
        container.network_settings = self.settings(container, container.state.pid if container.running else 0)
        self.containers.save_state(container)

    def disconnect(self, network_ref: str, container_ref: str, force: bool = False) -> None:
        network = self.get(network_ref)
        container = self.containers.get(container_ref)
        with self._lock:
            joined = self._joined(container)
            if not any(n.id == network.id for n, _ in joined):
                raise Forbidden(f"container {container.id} is not connected to network {network.name}")
            container.endpoints_config = {n.name: c for n, c in joined if n.id != network.id}
            mine = [e for e in self.ipam.endpoints(container_id=container.id) if e.network_id == network.id]
            for endpoint in mine:
                if container.running:
                    try:
                        links.remove_veth_in(container.state.pid, endpoint.ifname)
                    except KapalError:
                        if not force:
                            raise
                self._release(endpoint)
            if mine:
                self._apply_nat()
        if self._dns is not None and not self.uses_embedded_dns(container):
            self._dns.stop_serving(container.id)
        if mine:
            self._publish("disconnect", network, container=container.id)
        container.network_settings = self.settings(container, container.state.pid if container.running else 0)
        self.containers.save_state(container)

    # -- embedded DNS ---------------------------------------------------------------------------

    def _serve_dns(self, container: Container, pid: int) -> None:
        if self._dns is None:
            from kapal.network.dns import EmbeddedDNS  # dnspython: only once a user network is used

            self._dns = EmbeddedDNS(self.dns_lookup, self.dns_reverse)
        if container.id in self._dns.serving():
            return
        upstreams = list(container.host_config.get("Dns") or []) or host_nameservers()
        try:
            self._dns.serve(container.id, pid, upstreams)
        except OSError as error:
            log.warning("embedded DNS for %s: %s", container.short_id, error)

    def _use_embedded_dns(self, container: Container) -> None:
        """A running container that joins its first user network resolves through 127.0.0.11 from
        now on, as in Docker. Written in place: the file is bind-mounted into the container."""
        from kapal.container.etc_files import resolv_conf

        hc = container.host_config
        path = self.containers.path(container) / "resolv.conf"
        try:
            if "127.0.0.11" in path.read_text():
                return
            text = resolv_conf(
                hc.get("Dns") or [], hc.get("DnsSearch") or [], hc.get("DnsOptions") or [], embedded_dns=True
            )
            with open(path, "w") as file:
                file.write(text)
        except OSError as error:
            log.warning("updating the resolv.conf of %s: %s", container.short_id, error)

    def resume(self, running: list[Container]) -> None:
        """After a daemon restart: serve DNS again to running containers on user-defined networks."""
        for container in running:
            if container.state.pid and self.uses_embedded_dns(container):
                self._serve_dns(container, container.state.pid)

    def _peers(self, container_id: str) -> Iterator[tuple[Network, Endpoint, Container]]:
        """Every endpoint on the user-defined networks *container_id* is on, with its container."""
        networks = {n.id: n for n in self.ipam.networks()}
        mine = {e.network_id for e in self.ipam.endpoints(container_id=container_id)}
        for network_id in mine:
            network = networks.get(network_id)
            if network is None or network.builtin:
                continue
            for endpoint in self.ipam.endpoints(network_id=network_id):
                try:
                    peer = self.containers.get(endpoint.container_id)
                except NotFound:
                    continue
                yield network, endpoint, peer

    def dns_lookup(self, container_id: str, name: str) -> list[str] | None:
        """Addresses of the containers named *name* (name, alias, short ID…) on the asker's networks."""
        found = []
        for network, endpoint, peer in self._peers(container_id):
            names = dns_names(peer, network)
            if name in names or name in {f"{n}.{network.name.lower()}" for n in names}:
                found.append(endpoint.address)
        return found or None

    def dns_reverse(self, container_id: str, address: str) -> str | None:
        for network, endpoint, peer in self._peers(container_id):
            if endpoint.address == address:
                return f"{peer.name}.{network.name}"
        return None

    # -- helpers --------------------------------------------------------------------------------

    def _publish(self, action: str, network: Network, **extra: str) -> None:
        """Docker's network events: create, destroy, and connect/disconnect naming the container."""
        if self.events is not None:
            attributes = {"name": network.name, "type": network.driver, **extra}
            self.events.publish("network", action, network.id, **attributes)

    def _release(self, endpoint: Endpoint) -> None:
        for p in endpoint.ports:
            self.ports.release(p.host_ip, p.host_port, p.proto)
        self._reaper.delete(endpoint.host_ifname)
        self.ipam.release(endpoint.id)

    def _reserve_ports(self, container: Container) -> list[PortMapping]:
        """Bind every published host port (PortBindings, and ExposedPorts with -P); all or nothing."""
        hc = container.host_config
        bindings: dict[str, list[dict[str, str]]] = {
            k: list(v or []) for k, v in (hc.get("PortBindings") or {}).items()
        }
        if hc.get("PublishAllPorts"):
            for key in container.config.get("ExposedPorts") or {}:
                if not bindings.get(key):
                    bindings[key] = [{"HostIp": "", "HostPort": ""}]
        done: list[PortMapping] = []
        try:
            for key, entries in bindings.items():
                port_text, _, proto = key.partition("/")
                proto = proto or "tcp"
                if proto not in ("tcp", "udp"):
                    raise InvalidArgument(f"unsupported protocol {proto} in {key}")
                try:
                    port = int(port_text)
                except ValueError:
                    raise InvalidArgument(f"invalid port {key!r}") from None
                for entry in entries:
                    host_ip = (entry or {}).get("HostIp") or ""
                    if host_ip and ipaddress.ip_address(host_ip).version == 6:
                        continue  # no IPv6 yet; Docker also adds a [::] binding for each port
                    host_ip = "" if host_ip == "0.0.0.0" else host_ip
                    host_port = (entry or {}).get("HostPort") or ""
                    if not host_port:
                        number = self.ports.reserve_any(host_ip, proto, *EPHEMERAL_RANGE)
                    elif "-" in host_port:
                        low, _, high = host_port.partition("-")
                        number = self.ports.reserve_any(host_ip, proto, int(low), int(high))
                    else:
                        number = int(host_port)
                        self.ports.reserve(host_ip, number, proto)
                    done.append(PortMapping(host_ip, number, port, proto))
        except BaseException:
            for p in done:
                self.ports.release(p.host_ip, p.host_port, p.proto)
            raise
        return done

    def settings(self, container: Container, pid: int) -> dict[str, Any]:
        """Inspect's NetworkSettings for the container now (empty addresses when it does not run)."""
        networks = {n.id: n for n in self.ipam.networks()}
        endpoints = {e.network_id: e for e in self.ipam.endpoints(container_id=container.id)}
        mode = _mode(container.host_config)
        out = empty_settings()
        if pid:
            out["SandboxKey"] = f"/proc/{pid}/ns/net"
        ports: dict[str, Any] = {key: None for key in container.config.get("ExposedPorts") or {}}
        joined = self._joined(container)
        for network, config in joined:
            endpoint = endpoints.get(network.id)
            out["Networks"][network.name] = endpoint_settings(network, endpoint, config, container)
            for p in endpoint.ports if endpoint else []:
                key = f"{p.container_port}/{p.proto}"
                ports[key] = (ports.get(key) or []) + [
                    {"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)}
                ]
        if not joined:
            name = "default" if mode.startswith("container:") else mode
            network = next((n for n in networks.values() if n.name == name), None)
            out["Networks"][name] = endpoint_settings(network, None)
        primary = endpoints.get(joined[0][0].id) if joined else None
        if primary is not None and mode == "bridge":
            network = networks[primary.network_id]
            out.update(
                {
                    "EndpointID": primary.id,
                    "Gateway": network.gateway,
                    "IPAddress": primary.address,
                    "IPPrefixLen": network.prefixlen,
                    "MacAddress": primary.mac,
                    "Bridge": network.bridge,
                }
            )
        out["Ports"] = ports if pid else {}
        return out


def host_nameservers(path: str = "/etc/resolv.conf") -> list[str]:
    """The host's resolvers, loopback ones included: kapald forwards from the host's namespace."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    return [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]


def dns_names(container: Container, network: Network) -> list[str]:
    """Docker's DNSNames: the names a container answers to on *network* (lower case)."""
    config = (container.endpoints_config or {}).get(network.name) or {}
    names = [container.name, *(config.get("Aliases") or []), container.short_id]
    hostname = container.config.get("Hostname")
    if hostname and hostname != container.short_id:
        names.append(hostname)
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(name.lower(), None)
    return list(seen)


def _endpoint_config(network: Network, config: dict[str, Any]) -> dict[str, Any]:
    """The parts of an EndpointSettings request kapal keeps, checked as dockerd checks them."""
    aliases = [str(a) for a in config.get("Aliases") or []]
    if aliases and network.builtin:
        raise InvalidArgument(
            "network-scoped alias is supported only for containers in user defined networks"
        )
    ipam = config.get("IPAMConfig") or {}
    address = ipam.get("IPv4Address") or ""
    if address:
        if network.builtin:
            raise InvalidArgument("user specified IP address is supported on user defined networks only")
        if network.record.get("AutoSubnet"):
            raise InvalidArgument(
                "user specified IP address is supported only when connecting to networks with user "
                "configured subnets"
            )
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise InvalidArgument(f"invalid IPv4 address: {address}") from None
    return {
        "NetworkID": network.id,
        "Aliases": aliases or None,
        "IPAMConfig": {"IPv4Address": address} if address else None,
        "GwPriority": int(config.get("GwPriority") or 0),
    }


def _static_ip(config: dict[str, Any]) -> str | None:
    return ((config or {}).get("IPAMConfig") or {}).get("IPv4Address") or None


def _gateway_network(joined: list[tuple[Network, dict[str, Any]]]) -> str | None:
    """The network giving the default route: highest GwPriority, then name (Docker's rule); never internal."""
    candidates = [(n, c) for n, c in joined if not n.record.get("Internal")]
    if not candidates:
        return None
    best = min(candidates, key=lambda item: (-int(item[1].get("GwPriority") or 0), item[0].name))
    return best[0].id


@contextlib.contextmanager
def _host_lock(path: Path) -> Iterator[None]:
    """An exclusive flock shared by every kapald on the host (blocking: setups are short)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _address_pool(pool: Any) -> tuple[str, int]:
    """One of daemon.json's ``default-address-pools``: ``{"base": "10.10.0.0/16", "size": 24}``."""
    try:
        base = ipaddress.IPv4Network(str(pool["base"]), strict=True)
        size = int(pool["size"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidArgument(f"invalid default-address-pools entry {pool!r}: {error}") from None
    if not base.prefixlen <= size <= 30:
        raise InvalidArgument(
            f"invalid default-address-pools entry {pool!r}: size must be between {base.prefixlen} and 30"
        )
    return str(base), size


def _mode(host_config: dict[str, Any]) -> str:
    mode = str(host_config.get("NetworkMode") or "")
    return "bridge" if mode in ("", "default") else mode


def _bridge_options(name: str, default: bool) -> dict[str, str]:
    options = {"com.docker.network.bridge.name": name}
    if default:
        options.update(
            {
                "com.docker.network.bridge.default_bridge": "true",
                "com.docker.network.bridge.enable_ip_masquerade": "true",
            }
        )
    return options


def empty_settings() -> dict[str, Any]:
    return {
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": "",
        "Ports": {},
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": "",
        "Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "MacAddress": "",
        "Networks": {},
    }


def endpoint_settings(
    network: Network | None,
    endpoint: Endpoint | None,
    config: dict[str, Any] | None = None,
    container: Container | None = None,
) -> dict[str, Any]:
    """Docker's EndpointSettings; addresses empty when the container is not attached."""
    config = config or {}
    user_defined = network is not None and not network.builtin
    return {
        "IPAMConfig": config.get("IPAMConfig"),
        "Links": None,
        "Aliases": config.get("Aliases"),
        "MacAddress": endpoint.mac if endpoint else "",
        "DriverOpts": None,
        "GwPriority": int(config.get("GwPriority") or 0),
        "NetworkID": network.id if network else "",
        "EndpointID": endpoint.id if endpoint else "",
        "Gateway": network.gateway if (network and endpoint) else "",
        "IPAddress": endpoint.address if endpoint else "",
        "IPPrefixLen": network.prefixlen if (network and endpoint) else 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names(container, network) if (container and network and user_defined) else None,
    }
