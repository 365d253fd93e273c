"""Linux bridges and veth pairs, over netlink (pyroute2): no ``ip`` process per change.

A network is a bridge holding the gateway address; a container joins it with a
veth pair whose host end is a bridge port and whose other end is moved into the
container's network namespace (``/proc/<pid>/ns/net``) and renamed ``eth0``.
The container end vanishes with the namespace when the container's last
process exits, which takes the host end with it; the host end is still
deleted on detach (in the background, ``LinkReaper``) for the case where the
namespace outlives the process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import errno
import fcntl
import functools
import ipaddress
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from pyroute2 import IPRoute, NetlinkError

from kapal.errors import KapalError

log = logging.getLogger("kapald")


class NetworkSetupError(KapalError):
    """The kernel refused a network change (the netlink error is in the message)."""


class BridgeMissing(NetworkSetupError):
    """The bridge a container should join is gone (someone deleted it under kapald)."""


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
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


_netns_worker: concurrent.futures.ThreadPoolExecutor | None = None
_netns_worker_lock = threading.Lock()


def _worker() -> concurrent.futures.ThreadPoolExecutor:
    global _netns_worker
    with _netns_worker_lock:
        if _netns_worker is None:
            _netns_worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netns")
        return _netns_worker


def _retire_worker(pool: concurrent.futures.ThreadPoolExecutor) -> None:
    global _netns_worker
    with _netns_worker_lock:
        if _netns_worker is pool:
            _netns_worker = None
    pool.shutdown(wait=False)


def in_netns(pid: int, work: Callable[[], R]) -> R:
    """Run *work* on kapald's netns thread, inside the network namespace of *pid*.

    Not pyroute2's NetNS: it forks a helper process, and a forked copy of kapald
    shares the asyncio signal wake-up fd, so signals pyroute2 sends its helper
    reach kapald's loop as if kapald got them (a SIGTERM that shut the daemon
    down). setns changes only the calling thread's namespace; one long-lived
    thread, used for nothing else, enters the container's namespace and always
    goes back (a thread that could not is retired, never reused). Sockets *work*
    opens stay in the container's namespace for good, whichever thread uses them.
    """
    pool = _worker()

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
                try:
                    _setns(own)
                except OSError:
                    _retire_worker(pool)
                    raise
        finally:
            os.close(own)

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
            ipr.link("del", ifname=name)
            return True
    except NetlinkError as error:
        if error.code in (errno.ENODEV, errno.ENOENT):
            return False
        raise NetworkSetupError(f"deleting {name}: {error}") from None


class LinkReaper:
    """Deletes veths in the background: a deletion waits ~15 ms for the kernel (RCU), and by the time
    a container is detached its namespace is usually being torn down, taking the pair with it.

    The address and the database row are released at once; a name is never reused (each veth is
    named after its endpoint's random ID), so a late deletion cannot hit a newer link.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def delete(self, name: str) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="link-reaper", daemon=True)
                self._thread.start()
        self._queue.put(name)

    def flush(self) -> None:
        """Wait until every deletion asked for so far is done (daemon shutdown)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            name = self._queue.get()
            try:
                if name is not None:
                    delete_link(name)
            except KapalError as error:
                log.warning("deleting %s: %s", name, error)
            finally:
                self._queue.task_done()


def _index(ipr: IPRoute, name: str) -> int | None:
    """The index of link *name*: one targeted request, not a dump of every link on the host."""
    try:
        return ipr.link("get", ifname=name)[0]["index"]
    except NetlinkError as error:
        if error.code in (errno.ENODEV, errno.ENOENT):
            return None
        raise


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

    The container's end is created inside its namespace, already named and addressed at
    layer 2: moving a link between namespaces waits for the kernel's RCU grace period
    (~15 ms), creating it there does not. On failure the host end is deleted (which
    deletes the pair): nothing is left half-made.
    """
    try:
        with IPRoute() as ipr:
            master = _index(ipr, bridge)
            if master is None:
                raise BridgeMissing(f"bridge {bridge} does not exist")
            pair = {
                "ifname": host_ifname,
                "kind": "veth",
                "mtu": mtu,
                "peer": {"ifname": ifname, "address": mac, "mtu": mtu, "net_ns_pid": pid},
            }
            try:
                ipr.link("add", **pair)
            except NetlinkError as error:
                if error.code != errno.EEXIST:
                    raise
                delete_link(host_ifname)  # a leftover of a crash between add and the database row
                ipr.link("add", **pair)
            ipr.link("set", ifname=host_ifname, master=master, state="up")

        def configure(ns: IPRoute) -> None:
            index = _index(ns, ifname)
            if index is None:
                raise NetworkSetupError(f"{ifname} did not appear in the container")
            ns.addr("add", index=index, address=address, prefixlen=prefixlen)
            ns.link("set", index=index, state="up")
            lo = _index(ns, "lo")
            if lo is not None:
                ns.link("set", index=lo, state="up")
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
    """Loopback up in a namespace without other interfaces (``--network none``): Docker does it too.

    Two ioctls on a datagram socket, not a netlink session: this is on every such start's path.
    """

    def up() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
            if not flags & IFF_UP:
                fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))

    try:
        in_netns(pid, up)
    except OSError as error:
        raise NetworkSetupError(f"bringing lo up: {error}") from None
