"""Linux bridges and veth pairs, over netlink (pyroute2): no ``ip`` process per change.

A network is a bridge holding the gateway address; a container joins it with a
veth pair whose host end is a bridge port and whose other end is moved into the
container's network namespace (``/proc/<pid>/ns/net``) and renamed ``eth0``.
The container end vanishes with the namespace when the container's last
process exits, which takes the host end with it; ``delete_link`` is still
called on detach for the case where the namespace outlives the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import functools
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from pyroute2 import IPRoute, NetlinkError

from kapal.errors import KapalError


class NetworkSetupError(KapalError):
    """The kernel refused a network change (the netlink error is in the message)."""


P = ParamSpec("P")
R = TypeVar("R")


def _off_loop(function: Callable[P, R]) -> Callable[P, R]:
    """Run *function* in a worker thread when the caller's thread runs an asyncio loop.

    pyroute2's synchronous IPRoute drives a private event loop with
    ``run_until_complete``, which fails inside a running loop (kapald's shutdown
    calls ``Engine.close`` on the loop's thread). Other callers are already on
    worker threads and call straight through.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return function(*args, **kwargs)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netlink") as pool:
            return pool.submit(function, *args, **kwargs).result()

    return wrapper


def _sysctl(path: str, value: str) -> None:
    """Write a sysctl through /proc (a file write, not a ``sysctl`` process)."""
    try:
        current = Path(path).read_text().strip()
        if current != value:
            Path(path).write_text(value)
    except OSError as error:
        raise NetworkSetupError(f"setting {path} to {value}: {error}") from None


def enable_ip_forward() -> None:
    """Routing between the bridge and the host's uplinks needs forwarding on (Docker turns it on too)."""
    _sysctl("/proc/sys/net/ipv4/ip_forward", "1")


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def in_netns(pid: int, work: Callable[[], R]) -> R:
    """Run *work* in a fresh thread that has entered the network namespace of *pid*.

    Not pyroute2's NetNS: it forks a helper process, and a forked copy of kapald
    shares the asyncio signal wake-up fd, so signals pyroute2 sends its helper
    reach kapald's loop as if kapald got them (a SIGTERM that shut the daemon
    down). setns changes only the calling thread's namespace, and the thread is
    fresh and goes back before it ends, so no other work ever runs in the
    container's namespace. Sockets *work* opens stay in the container's namespace
    for good, whichever thread uses them later.
    """

    def run() -> R:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                return work()
            finally:
                _setns(own)
        finally:
            os.close(own)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netns") as pool:
        return pool.submit(run).result()


def _in_netns(pid: int, work: Callable[[IPRoute], R]) -> R:
    """Run *work* with an IPRoute socket opened inside the network namespace of *pid*."""

    def with_netlink() -> R:
        with IPRoute() as ipr:
            return work(ipr)

    return in_netns(pid, with_netlink)


@_off_loop
def link_names() -> set[str]:
    with IPRoute() as ipr:
        return {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}


@_off_loop
def host_routes(exclude: set[str] = frozenset()) -> list[ipaddress.IPv4Network]:
    """Destinations of the host's IPv4 routes (main table), minus those of the devices *exclude* names."""
    out: list[ipaddress.IPv4Network] = []
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for route in ipr.get_routes(family=2, table=254):
            if names.get(route.get_attr("RTA_OIF")) in exclude:
                continue
            dst = route.get_attr("RTA_DST")
            if dst is None:
                continue  # the default route overlaps everything by design; it is not a conflict
            out.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
    return out


@_off_loop
def ensure_bridge(name: str, gateway: str, prefixlen: int, mtu: int) -> None:
    """Create the bridge (or adopt the one a previous run left), give it the gateway address, bring it up.

    ``route_localnet`` is set on this bridge only: it lets packets DNATed from
    127.0.0.1 on the host leave through it (see nat.py for why).
    """
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
                found = ipr.link_lookup(ifname=name)
            index = found[0]
            have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(family=2, index=index)}
            if (gateway, prefixlen) not in have:
                for address, length in have:
                    ipr.addr("del", index=index, address=address, prefixlen=length)
                ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
            ipr.link("set", index=index, state="up", mtu=mtu)
    except NetlinkError as error:
        raise NetworkSetupError(f"setting up bridge {name}: {error}") from None
    _sysctl(f"/proc/sys/net/ipv4/conf/{name}/route_localnet", "1")


@_off_loop
def delete_link(name: str) -> bool:
    """Delete an interface of the host's namespace if it exists; whether it did."""
    try:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
            if not found:
                return False
            ipr.link("del", index=found[0])
            return True
    except NetlinkError as error:
        if error.code == errno.ENODEV:
            return False
        raise NetworkSetupError(f"deleting {name}: {error}") from None


@_off_loop
def add_veth(
    bridge: str,
    host_ifname: str,
    pid: int,
    ifname: str,
    address: str,
    prefixlen: int,
    gateway: str,
    mac: str,
    mtu: int,
    default_route: bool,
) -> None:
    """Plug the container whose process is *pid* into *bridge* as *ifname* with *address*.

    On failure the host end is deleted (which deletes the pair): nothing is left half-made.
    """
    peer = "kp" + host_ifname[4:]  # temporary name of the container end while it is on the host
    try:
        with IPRoute() as ipr:
            master = ipr.link_lookup(ifname=bridge)
            if not master:
                raise NetworkSetupError(f"bridge {bridge} does not exist")
            delete_link(host_ifname)  # a leftover of a crash between add and the database row
            ipr.link("add", ifname=host_ifname, kind="veth", peer={"ifname": peer}, mtu=mtu)
            host_index = ipr.link_lookup(ifname=host_ifname)[0]
            peer_index = ipr.link_lookup(ifname=peer)[0]
            ipr.link("set", index=peer_index, mtu=mtu)
            ipr.link("set", index=host_index, master=master[0], state="up")
            ipr.link("set", index=peer_index, net_ns_pid=pid)

        def configure(ns: IPRoute) -> None:
            index = ns.link_lookup(ifname=peer)[0]
            ns.link("set", index=index, ifname=ifname, address=mac)
            ns.addr("add", index=index, address=address, prefixlen=prefixlen)
            ns.link("set", index=index, state="up")
            lo = ns.link_lookup(ifname="lo")
            if lo:
                ns.link("set", index=lo[0], state="up")
            if default_route:
                ns.route("add", dst="0.0.0.0/0", gateway=gateway, oif=index)

        _in_netns(pid, configure)
    except (NetlinkError, OSError, IndexError) as error:
        delete_link(host_ifname)
        raise NetworkSetupError(f"connecting the container to {bridge}: {error}") from None
    except NetworkSetupError:
        delete_link(host_ifname)
        raise


@_off_loop
def remove_veth_in(pid: int, ifname: str) -> None:
    """Delete *ifname* inside the namespace of *pid* (disconnecting a running container)."""
    try:

        def remove(ns: IPRoute) -> None:
            found = ns.link_lookup(ifname=ifname)
            if found:
                ns.link("del", index=found[0])

        _in_netns(pid, remove)
    except (NetlinkError, OSError) as error:
        raise NetworkSetupError(f"removing {ifname} from the container: {error}") from None


@_off_loop
def lo_up(pid: int) -> None:
    """Loopback up in a namespace without other interfaces (``--network none``): Docker does it too."""
    try:

        def up(ns: IPRoute) -> None:
            lo = ns.link_lookup(ifname="lo")
            if lo:
                ns.link("set", index=lo[0], state="up")

        _in_netns(pid, up)
    except (NetlinkError, OSError) as error:
        raise NetworkSetupError(f"bringing lo up: {error}") from None
