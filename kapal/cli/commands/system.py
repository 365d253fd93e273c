"""System commands: version, info, events, system df."""

from __future__ import annotations

import os
import sys

from kapal import __version__
from kapal.cli.client import API_VERSION, ConnectError, DaemonError
from kapal.cli.common import CommandError, Context, output_rows, parse_filter_flags, parser, sorted_row
from kapal.units import human_size_with_precision

TYPE_CHECKING = False  # typing costs milliseconds of start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any


def human_size(n: float) -> str:
    """``units.HumanSize``: what ``system df`` prints (four significant digits)."""
    return human_size_with_precision(n, 4)


def _python_version() -> str:
    return "python" + ".".join(str(part) for part in sys.version_info[:3])


def _os_arch() -> str:
    machine = os.uname().machine
    return "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def version(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "Show the kapal version information")
    p.add_argument("-f", "--format")
    opts = p.parse_args(args)
    client_info = {
        "Version": __version__,
        "ApiVersion": API_VERSION,
        "DefaultAPIVersion": API_VERSION,
        "GoVersion": _python_version(),
        "GitCommit": "",
        "BuildTime": "",
        "Os": "linux",
        "Arch": _os_arch().split("/")[1],
        "Context": "default",
    }
    server: dict[str, Any] | None = None
    error: Exception | None = None
    try:
        server = ctx.client.get("/version")
    except (ConnectError, DaemonError) as exc:
        error = exc
    if opts.format:
        from kapal.cli import template

        print(template.parse(opts.format).render({"Client": client_info, "Server": server}))
    else:
        lines = [
            "Client:",
            f" Version:           {__version__}",
            f" API version:       {API_VERSION}",
            f" Go version:        {client_info['GoVersion']}",
            " Git commit:        ",
            " Built:             ",
            f" OS/Arch:           {_os_arch()}",
            " Context:           default",
        ]
        if server is not None:
            lines += [
                "",
                f"Server: {server.get('Platform', {}).get('Name', '')}",
                " Engine:",
                f"  Version:          {server.get('Version', '')}",
                f"  API version:      {server.get('ApiVersion', '')}"
                f" (minimum version {server.get('MinAPIVersion', '')})",
                f"  Go version:       {server.get('GoVersion', '')}",
                f"  Git commit:       {server.get('GitCommit', '')}",
                f"  Built:            {server.get('BuildTime', '')}",
                f"  OS/Arch:          {server.get('Os', '')}/{server.get('Arch', '')}",
                "  Experimental:     false",
            ]
        print("\n".join(lines))
    if error is not None:
        message = error.message if isinstance(error, DaemonError) else str(error)
        raise CommandError(message)
    return 0


def info(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "Display system-wide information")
    p.add_argument("-f", "--format")
    opts = p.parse_args(args)
    data = ctx.client.get("/info")
    if opts.format:
        from kapal.cli import template

        fmt = "{{json .}}" if opts.format == "json" else opts.format
        print(template.parse(fmt).render(data))
        return 0
    lines = [
        "Client:",
        f" Version:    {__version__}",
        " Context:    default",
        " Debug Mode: false",
        "",
        "Server:",
        f" Containers: {data['Containers']}",
        f"  Running: {data['ContainersRunning']}",
        f"  Paused: {data['ContainersPaused']}",
        f"  Stopped: {data['ContainersStopped']}",
        f" Images: {data['Images']}",
        f" Server Version: {data['ServerVersion']}",
        f" Storage Driver: {data['Driver']}",
    ]
    lines += [f"  {key}: {value}" for key, value in data.get("DriverStatus") or []]
    plugins = data.get("Plugins") or {}
    lines += [
        f" Logging Driver: {data['LoggingDriver']}",
        f" Cgroup Driver: {data['CgroupDriver']}",
        f" Cgroup Version: {data['CgroupVersion']}",
        " Plugins:",
        f"  Volume: {' '.join(plugins.get('Volume') or [])}",
        f"  Network: {' '.join(plugins.get('Network') or [])}",
        f"  Log: {' '.join(plugins.get('Log') or [])}",
        f" Swarm: {data['Swarm']['LocalNodeState']}",
        f" Runtimes: {' '.join(sorted(data.get('Runtimes') or {}))}",
        f" Default Runtime: {data['DefaultRuntime']}",
        f" Init Binary: {data['InitBinary']}",
        " Security Options:",
    ]
    lines += [f"  {option.split(',')[0].partition('=')[2]}" for option in data.get("SecurityOptions") or []]
    lines += [
        f" Kernel Version: {data['KernelVersion']}",
        f" Operating System: {data['OperatingSystem']}",
        f" OSType: {data['OSType']}",
        f" Architecture: {data['Architecture']}",
        f" CPUs: {data['NCPU']}",
        f" Total Memory: {_bytes_size(data['MemTotal'])}",
        f" Name: {data['Name']}",
        f" ID: {data['ID']}",
        f" Kapal Root Dir: {data['DockerRootDir']}",
        f" Debug Mode: {str(data['Debug']).lower()}",
        f" Experimental: {str(data['ExperimentalBuild']).lower()}",
        " Insecure Registries:",
    ]
    lines += [f"  {cidr}" for cidr in data["RegistryConfig"]["InsecureRegistryCIDRs"]]
    lines.append(f" Live Restore Enabled: {str(data['LiveRestoreEnabled']).lower()}")
    print("\n".join(lines))
    for warning in data.get("Warnings") or []:
        print(warning, file=sys.stderr)
    return 0


def _bytes_size(n: float) -> str:
    from kapal.units import bytes_size

    return bytes_size(n)


def _event_time(time_nano: int) -> str:
    """jsonmessage.RFC3339NanoFixed in local time."""
    import datetime

    seconds, nanos = divmod(time_nano, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds).astimezone()
    offset = moment.strftime("%z")
    zone = "Z" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}{zone}"


def _parse_time_flag(value: str | None) -> str | None:
    """``--since``/``--until``: a Unix time, an RFC 3339 date, or a duration like ``10m``."""
    if not value:
        return None
    import datetime
    import re
    import time

    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", value)
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
        return f"{time.time() - seconds:.9f}"
    try:
        return f"{float(value):.9f}"
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"invalid time {value!r}", 125) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return f"{moment.timestamp():.9f}"


def events(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "Get real time events from the server")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format")
    p.add_argument("--since")
    p.add_argument("--until")
    opts = p.parse_args(args)
    query = {
        "filters": parse_filter_flags(opts.filter) or None,
        "since": _parse_time_flag(opts.since),
        "until": _parse_time_flag(opts.until),
    }
    compiled = None
    if opts.format:
        from kapal.cli import template

        compiled = template.parse("{{json .}}" if opts.format == "json" else opts.format)
    for event in ctx.client.stream("GET", "/events", query):
        if compiled is not None:
            print(compiled.render(event), flush=True)
            continue
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        attrs = ", ".join(f"{key}={attributes[key]}" for key in sorted(attributes))
        line = f"{_event_time(event['timeNano'])} {event['Type']} {event['Action']} {actor.get('ID', '')}"
        if attrs:
            line += f" ({attrs})"
        print(line, flush=True)
    return 0


DF_TABLE = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_HEADER = {
    "Type": "TYPE",
    "TotalCount": "TOTAL",
    "Active": "ACTIVE",
    "Size": "SIZE",
    "Reclaimable": "RECLAIMABLE",
}


def _reclaimable(reclaim: int, total: int) -> str:
    text = human_size(reclaim)
    if total > 0:
        text += f" ({int(100 * reclaim / total)}%)"
    return text


def df(ctx: Context, prog: str, args: list[str]) -> int:
    p = parser(prog, f"{prog} [OPTIONS]", "Show kapal disk usage")
    p.add_argument("--format")
    p.add_argument("-v", "--verbose", action="store_true")
    opts = p.parse_args(args)
    data = ctx.client.get("/system/df")
    images = data.get("Images") or []
    layers_size = data.get("LayersSize", 0)
    active = [image for image in images if image.get("Containers", 0) > 0]
    used = sum(image["Size"] - max(image.get("SharedSize", 0), 0) for image in active)
    containers = data.get("Containers") or []
    volumes = data.get("Volumes") or []
    cache = data.get("BuildCache") or []
    rows = [
        sorted_row(row)
        for row in [
            {
                "Type": "Images",
                "TotalCount": str(len(images)),
                "Active": str(len(active)),
                "Size": human_size(layers_size),
                "Reclaimable": _reclaimable(max(layers_size - used, 0), layers_size),
            },
            {
                "Type": "Containers",
                "TotalCount": str(len(containers)),
                "Active": str(
                    sum(1 for c in containers if c.get("State") in ("running", "paused", "restarting"))
                ),
                "Size": human_size(sum(c.get("SizeRw", 0) for c in containers)),
                "Reclaimable": _reclaimable(
                    sum(
                        c.get("SizeRw", 0) for c in containers if c.get("State") not in ("running", "paused")
                    ),
                    sum(c.get("SizeRw", 0) for c in containers),
                ),
            },
            {
                "Type": "Local Volumes",
                "TotalCount": str(len(volumes)),
                "Active": str(sum(1 for v in volumes if (v.get("UsageData") or {}).get("RefCount", 0) > 0)),
                "Size": human_size(sum(max((v.get("UsageData") or {}).get("Size", 0), 0) for v in volumes)),
                "Reclaimable": _reclaimable(
                    sum(
                        max(usage.get("Size", 0), 0)
                        for usage in ((v.get("UsageData") or {}) for v in volumes)
                        if usage.get("RefCount", 0) == 0
                    ),
                    sum(max((v.get("UsageData") or {}).get("Size", 0), 0) for v in volumes),
                ),
            },
            {
                "Type": "Build Cache",
                "TotalCount": str(len(cache)),
                "Active": str(sum(1 for c in cache if c.get("InUse"))),
                "Size": human_size(sum(c.get("Size", 0) for c in cache if not c.get("Shared"))),
                "Reclaimable": human_size(sum(c.get("Size", 0) for c in cache if not c.get("InUse"))),
            },
        ]
    ]
    if opts.verbose and not opts.format:
        from kapal.cli.commands.images import IMAGES_HEADER, image_rows

        print("Images space usage:\n")
        fmt = (
            "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
            "\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}"
        )
        output_rows(None, fmt, IMAGES_HEADER, image_rows(images, False, False))
        return 0
    output_rows(opts.format, DF_TABLE, DF_HEADER, rows)
    return 0
