"""The embedded DNS server: Docker's 127.0.0.11 for containers on user-defined networks.

Docker runs its resolver in the daemon and reaches it from the container through
iptables rules that redirect 127.0.0.11:53 to a random port. kapal needs no
rules: it binds UDP and TCP sockets to 127.0.0.11:53 *inside* each container's
network namespace (a socket keeps the namespace it was made in; see
``bridge.in_netns``), and one thread of kapald serves all of them. The socket a
query arrives on tells whose query it is, so each container sees only the
names of the networks it is on.

Names of containers are answered here (A, and PTR for their addresses; AAAA
gets an empty answer, there is no IPv6). Every other query is forwarded, from
kapald's own namespace, to the container's ``--dns`` servers or else the
host's: a host resolver on loopback (systemd-resolved's 127.0.0.53) works too,
which it cannot from inside a container.

The sockets die with kapald; a restarted kapald serves running containers
again (``NetworkService.resume``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from kapal.network.bridge import in_netns

log = logging.getLogger("kapald")

ADDRESS = "127.0.0.11"
TTL = 600  # Docker's for container records
FORWARD_TIMEOUT = 3.0

#: (container id, lower-case name without the final dot) → addresses, or None when not a container's
Lookup = Callable[[str, str], list[str] | None]
#: (container id, address) → the name of the container holding it, or None
ReverseLookup = Callable[[str, str], str | None]


@dataclass
class _Served:
    container_id: str
    upstreams: list[str]
    sockets: list[socket.socket] = field(default_factory=list)


class EmbeddedDNS:
    def __init__(self, lookup: Lookup, reverse: ReverseLookup) -> None:
        self._lookup = lookup
        self._reverse = reverse
        self._selector = selectors.DefaultSelector()
        self._served: dict[str, _Served] = {}
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._pending: list[tuple[str, object]] = []  # ("add", _Served) | ("remove", _Served)
        self._workers = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="dns")
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- public ---------------------------------------------------------------------------------

    def serve(self, container_id: str, pid: int, upstreams: list[str]) -> None:
        """Answer on 127.0.0.11:53 in the network namespace of *pid* (its lo must be up)."""

        def bind() -> list[socket.socket]:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                for sock in (udp, tcp):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((ADDRESS, 53))
                    sock.setblocking(False)
                tcp.listen(16)
            except OSError:
                udp.close()
                tcp.close()
                raise
            return [udp, tcp]

        self.stop_serving(container_id)
        served = _Served(container_id, list(upstreams), in_netns(pid, bind))
        with self._lock:
            if self._closed:
                for sock in served.sockets:
                    sock.close()
                return
            self._served[container_id] = served
            self._pending.append(("add", served))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dns", daemon=True)
                self._thread.start()
        self._wake()

    def stop_serving(self, container_id: str) -> None:
        with self._lock:
            served = self._served.pop(container_id, None)
            if served is None:
                return
            self._pending.append(("remove", served))
        self._wake()

    def serving(self) -> set[str]:
        with self._lock:
            return set(self._served)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for served in self._served.values():
                self._pending.append(("remove", served))
            self._served.clear()
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(5)
        self._workers.shutdown(wait=False, cancel_futures=True)

    # -- the serving thread -----------------------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"\0")
        except OSError:
            pass

    def _apply_pending(self) -> bool:
        with self._lock:
            pending, self._pending = self._pending, []
            closed = self._closed
        for action, served in pending:
            assert isinstance(served, _Served)
            for sock in served.sockets:
                if action == "add":
                    self._selector.register(sock, selectors.EVENT_READ, served)
                else:
                    try:
                        self._selector.unregister(sock)
                    except (KeyError, ValueError):
                        pass
                    sock.close()
        return not closed

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                served = key.data
                if served is None:
                    try:
                        while self._wake_read.recv(512):
                            pass
                    except BlockingIOError:
                        pass
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket) and isinstance(served, _Served)
                try:
                    if sock.type == socket.SOCK_DGRAM:
                        self._read_udp(sock, served)
                    else:
                        connection, _ = sock.accept()
                        self._workers.submit(self._serve_tcp, connection, served)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as error:
                    log.debug("dns socket of %s: %s", served.container_id[:12], error)
            if not self._apply_pending():
                return

    def _read_udp(self, sock: socket.socket, served: _Served) -> None:
        while True:
            try:
                query, peer = sock.recvfrom(4096)
            except BlockingIOError:
                return
            reply = self._answer(served, query)
            if reply is not None:
                sock.sendto(reply, peer)
            else:
                self._workers.submit(self._forward_udp, sock, peer, query, served)

    def _forward_udp(self, sock: socket.socket, peer: object, query: bytes, served: _Served) -> None:
        reply = self._forward(served, query)
        if reply is not None:
            try:
                sock.sendto(reply, peer)
            except OSError:
                pass

    def _serve_tcp(self, connection: socket.socket, served: _Served) -> None:
        with connection:
            connection.setblocking(True)
            connection.settimeout(10)
            try:
                while True:
                    head = _read_exactly(connection, 2)
                    if head is None:
                        return
                    query = _read_exactly(connection, struct.unpack("!H", head)[0])
                    if query is None:
                        return
                    reply = self._answer(served, query) or self._forward(served, query, tcp=True)
                    if reply is None:
                        return
                    connection.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return

    # -- answering ------------------------------------------------------------------------------

    def _answer(self, served: _Served, wire: bytes) -> bytes | None:
        """The reply when the name is a container's (or the query is malformed); None: forward it."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None if len(wire) < 12 else _error_reply(wire, dns.rcode.FORMERR)
        if len(query.question) != 1:
            return _reply(query, dns.rcode.FORMERR)
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN:
            return None
        name = question.name.to_text(omit_final_dot=True).lower()
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addresses = self._lookup(served.container_id, name)
            if addresses is None:
                return None
            response = dns.message.make_response(query)
            response.flags |= dns.flags.RA
            if question.rdtype == dns.rdatatype.A and addresses:
                random.shuffle(addresses)  # Docker's round-robin over aliases shared by several
                response.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", "A", addresses))
            return response.to_wire()
        if question.rdtype == dns.rdatatype.PTR:
            try:
                address = dns.reversename.to_address(question.name)
            except (dns.exception.DNSException, ValueError):
                return None
            target = self._reverse(served.container_id, address)
            if target is None:
                return None
            response = dns.message.make_response(query)
            response.flags |= dns.flags.RA
            response.answer.append(dns.rrset.from_text_list(question.name, TTL, "IN", "PTR", [target + "."]))
            return response.to_wire()
        return None

    def _forward(self, served: _Served, wire: bytes, tcp: bool = False) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        for server in served.upstreams:
            try:
                if tcp:
                    return dns.query.tcp(query, server, timeout=FORWARD_TIMEOUT).to_wire()
                response = dns.query.udp(query, server, timeout=FORWARD_TIMEOUT, ignore_trailing=True)
                if response.flags & dns.flags.TC:
                    response = dns.query.tcp(query, server, timeout=FORWARD_TIMEOUT)
                return response.to_wire()
            except (dns.exception.DNSException, OSError) as error:
                log.debug("forwarding a query of %s to %s: %s", served.container_id[:12], server, error)
        return _reply(query, dns.rcode.SERVFAIL)


def _reply(query: dns.message.Message, rcode: dns.rcode.Rcode) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    response.set_rcode(rcode)
    return response.to_wire()


def _error_reply(wire: bytes, rcode: dns.rcode.Rcode) -> bytes:
    """A header-only reply to a query too broken to parse: its ID, QR set, the error code."""
    query_id = wire[:2]
    flags = 0x8000 | (int(rcode) & 0xF)
    return query_id + struct.pack("!HHHHH", flags, 0, 0, 0, 0)


def _read_exactly(connection: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
