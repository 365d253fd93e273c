"""The per-container /etc/hostname, /etc/hosts and /etc/resolv.conf, as Docker writes them."""

from __future__ import annotations

import os
import re
from pathlib import Path

HOSTS_HEADER = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
_EXTRA_HOST = re.compile(r"^([^:=]+)[:=](.+)$")
_LOOPBACK_NAMESERVER = re.compile(r"^\s*nameserver\s+(127\.\S*|::1)\s*$", re.M)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def resolv_conf(
    dns: list[str],
    search: list[str],
    options: list[str],
    host_file: str = "/etc/resolv.conf",
    embedded_dns: bool = False,
) -> str:
    """The host's resolv.conf without loopback nameservers (unreachable from a container), or the flags'.

    With the embedded DNS (user-defined networks) the only nameserver is 127.0.0.11, which forwards
    to the --dns servers or the host's; ``ndots:0`` makes a bare container name be tried as is first.
    """
    try:
        host = Path(host_file).read_text()
    except OSError:
        host = ""
    if embedded_dns:
        host_search = [w for line in host.splitlines() if line.startswith("search") for w in line.split()[1:]]
        host_options = [
            w for line in host.splitlines() if line.startswith("options") for w in line.split()[1:]
        ]
        lines = ["nameserver 127.0.0.11"]
        if search or host_search:
            lines.append("search " + " ".join(search or host_search))
        chosen = options or host_options
        if not any(o.startswith("ndots:") for o in chosen):
            chosen = ["ndots:0", *chosen]
        lines.append("options " + " ".join(chosen))
        return "\n".join(lines) + "\n"
    if dns or search or options:
        lines = [f"nameserver {server}" for server in dns]
        if search:
            lines.append("search " + " ".join(search))
        if options:
            lines.append("options " + " ".join(options))
        if not dns:
            lines += [line for line in host.splitlines() if line.startswith("nameserver")]
        return "\n".join(lines) + "\n"
    return _LOOPBACK_NAMESERVER.sub("", host).strip() + "\n"


def write_etc_files(
    directory: Path,
    hostname: str,
    domainname: str,
    host_network: bool,
    extra_hosts: list[str],
    dns: list[str],
    dns_search: list[str],
    dns_options: list[str],
    addresses: list[str] = (),
    embedded_dns: bool = False,
) -> dict[str, str]:
    """Write the three files into *directory*; returns {container path: host path}."""
    full = f"{hostname}.{domainname}" if domainname else hostname
    _atomic_write(directory / "hostname", hostname + "\n")
    if host_network:
        try:
            hosts = Path("/etc/hosts").read_text()
        except OSError:
            hosts = HOSTS_HEADER
    else:
        hosts = HOSTS_HEADER
        for address in addresses:
            hosts += f"{address}\t{full}" + (f" {hostname}" if full != hostname else "") + "\n"
    for entry in extra_hosts:
        # "name:address" (the address may be IPv6, full of colons) or "name=address"
        match = _EXTRA_HOST.match(entry)
        if match:
            hosts += f"{match.group(2)}\t{match.group(1)}\n"
    _atomic_write(directory / "hosts", hosts)
    resolver = resolv_conf(dns, dns_search, dns_options, embedded_dns=embedded_dns)
    _atomic_write(directory / "resolv.conf", resolver)
    return {
        "/etc/hostname": str(directory / "hostname"),
        "/etc/hosts": str(directory / "hosts"),
        "/etc/resolv.conf": str(directory / "resolv.conf"),
    }
