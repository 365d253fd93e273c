"""Network commands: ``network create|ls|inspect|rm|prune|connect|disconnect`` and ``port``.

Output is docker's: ``network ls`` columns, ``port``'s ``80/tcp -> 0.0.0.0:8080`` lines.
"""

from __future__ import annotations

from kapal.cli.common import (
    CommandError,
    Context,
    DaemonError,
    for_each,
    output_rows,
    parse_filter_flags,
    parser,
    sorted_row,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _options(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep and flag == "--opt":
            raise CommandError(f'invalid argument "{item}" for "{flag}" flag: expected key=value', 125)
        out[key] = value
    return out


def create(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] NETWORK", "Create a network")
    p.add_argument("name")
    p.add_argument("-d", "--driver", default="bridge")
    p.add_argument("--subnet", action="append", default=[])
    p.add_argument("--gateway", action="append", default=[])
    p.add_argument("--internal", action="store_true")
    p.add_argument("--attachable", action="store_true")
    p.add_argument("--label", action="append", default=[])
    p.add_argument("-o", "--opt", action="append", default=[])
    opts = p.parse_args(args)
    config = []
    for index, subnet in enumerate(opts.subnet):
        entry = {"Subnet": subnet}
        if index < len(opts.gateway):
            entry["Gateway"] = opts.gateway[index]
        config.append(entry)
    body = {
        "Name": opts.name,
        "Driver": opts.driver,
        "Internal": opts.internal,
        "Attachable": opts.attachable,
        "Labels": _options(opts.label, "--label"),
        "Options": _options(opts.opt, "--opt"),
        "IPAM": {"Driver": "default", "Config": config},
    }
    result = ctx.client.json("POST", "/networks/create", body=body)
    print(result["Id"])
    return 0


def ls(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "List networks")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    opts = p.parse_args(args)
    networks = ctx.client.get("/networks", {"filters": parse_filter_flags(opts.filter) or None})
    networks.sort(key=lambda n: n["Name"])
    if opts.quiet:
        for network in networks:
            print(network["Id"] if opts.no_trunc else network["Id"][:12])
        return 0
    rows = [
        sorted_row(
            {
                "ID": n["Id"] if opts.no_trunc else n["Id"][:12],
                "Name": n["Name"],
                "Driver": n["Driver"],
                "Scope": n["Scope"],
                "IPv6": str(n.get("EnableIPv6", False)).lower(),
                "Internal": str(n.get("Internal", False)).lower(),
                "Labels": ",".join(f"{k}={v}" for k, v in (n.get("Labels") or {}).items()),
                "CreatedAt": n.get("Created", ""),
            }
        )
        for n in networks
    ]
    header = {
        "ID": "NETWORK ID",
        "Name": "NAME",
        "Driver": "DRIVER",
        "Scope": "SCOPE",
        "IPv6": "IPV6",
        "Internal": "INTERNAL",
        "Labels": "LABELS",
        "CreatedAt": "CREATED",
    }
    output_rows(opts.format, "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}", header, rows)
    return 0


def inspect(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog, f"{prog} [OPTIONS] NETWORK [NETWORK...]", "Display detailed information on one or more networks"
    )
    p.add_argument("networks", nargs="+")
    p.add_argument("-f", "--format")
    p.add_argument("-v", "--verbose", action="store_true")
    opts = p.parse_args(args)
    from kapal.cli.commands.images import inspect_each

    return inspect_each(
        ctx,
        opts.networks,
        lambda name: f"/networks/{name}",
        lambda name: f"Error response from daemon: network {name} not found",
        opts.format,
    )


def rm(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} NETWORK [NETWORK...]", "Remove one or more networks")
    p.add_argument("networks", nargs="+")
    p.add_argument("-f", "--force", action="store_true")
    opts = p.parse_args(args)

    def remove(name: str) -> None:
        try:
            ctx.client.json("DELETE", f"/networks/{name}")
        except DaemonError as error:
            if not (opts.force and error.status == 404):
                raise

    return for_each(opts.networks, remove)


def connect(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] NETWORK CONTAINER", "Connect a container to a network")
    p.add_argument("network")
    p.add_argument("container")
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--ip")
    opts = p.parse_args(args)
    endpoint: dict[str, Any] = {"Aliases": opts.alias or None}
    if opts.ip:
        endpoint["IPAMConfig"] = {"IPv4Address": opts.ip}
    body = {"Container": opts.container, "EndpointConfig": endpoint}
    ctx.client.json("POST", f"/networks/{opts.network}/connect", body=body)
    return 0


def disconnect(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS] NETWORK CONTAINER", "Disconnect a container from a network")
    p.add_argument("network")
    p.add_argument("container")
    p.add_argument("-f", "--force", action="store_true")
    opts = p.parse_args(args)
    ctx.client.json(
        "POST",
        f"/networks/{opts.network}/disconnect",
        body={"Container": opts.container, "Force": opts.force},
    )
    return 0


def port_lines(ports: dict[str, Any], wanted: str | None) -> list[str]:
    """docker port's lines: ``80/tcp -> 0.0.0.0:8080`` for all, ``0.0.0.0:8080`` for one port."""

    def key_order(key: str) -> tuple[int, str]:
        number, _, proto = key.partition("/")
        return (int(number) if number.isdigit() else 0, proto)

    lines = []
    if wanted is not None:
        key = wanted if "/" in wanted else f"{wanted}/tcp"
        for binding in ports.get(key) or []:
            lines.append(_host_address(binding))
        return lines
    for key in sorted(ports, key=key_order):
        for binding in ports[key] or []:
            lines.append(f"{key} -> {_host_address(binding)}")
    return lines


def _host_address(binding: dict[str, str]) -> str:
    host_ip = binding.get("HostIp") or "0.0.0.0"
    host = f"[{host_ip}]" if ":" in host_ip else host_ip
    return f"{host}:{binding.get('HostPort', '')}"


def port(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(
        prog,
        f"{prog} CONTAINER [PRIVATE_PORT[/PROTO]]",
        "List port mappings or a specific mapping for the container",
    )
    p.add_argument("container")
    p.add_argument("port", nargs="?")
    opts = p.parse_args(args)
    data = ctx.client.get(f"/containers/{opts.container}/json")
    ports = (data.get("NetworkSettings") or {}).get("Ports") or {}
    lines = port_lines(ports, opts.port)
    if opts.port is not None and not lines:
        key = opts.port if "/" in opts.port else f"{opts.port}/tcp"
        raise CommandError(f"Error: No public port '{key}' published for {opts.container}", 1)
    for line in lines:
        print(line)
    return 0


def format_ports(ports: list[dict[str, Any]]) -> str:
    """``docker ps``'s PORTS column: ``127.0.0.1:8080->80/tcp, 81/tcp`` (published first, sorted)."""

    def order(port: dict[str, Any]) -> tuple[int, int, str, str]:
        return (
            0 if port.get("PublicPort") else 1,
            port.get("PrivatePort", 0),
            port.get("Type", ""),
            port.get("IP", ""),
        )

    out = []
    for port in sorted(ports, key=order):
        inner = f"{port.get('PrivatePort')}/{port.get('Type', 'tcp')}"
        if port.get("PublicPort"):
            ip = port.get("IP") or "0.0.0.0"
            host = f"[{ip}]" if ":" in ip else ip
            out.append(f"{host}:{port['PublicPort']}->{inner}")
        elif inner not in out:
            out.append(inner)
    return ", ".join(out)
