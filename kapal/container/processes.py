"""A running container's processes and resources: ``top``, ``stats`` and ``update``.

Everything is read where the kernel keeps it (the container's cgroup,
``/proc``) rather than asked of the runtime: a stats stream samples every
second per watcher, and spawning ``crun`` for each sample would cost more
than the sample. The JSON is Docker's (``ContainerTopOKBody``,
``StatsResponse``, ``ContainerUpdateOKBody``) so the docker CLI computes its
percentages from it exactly as it does against dockerd.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kapal.container.model import DEAD, REMOVING, RESTARTING, Container
from kapal.errors import Conflict, InvalidArgument, KapalError
from kapal.runtime import cgroups
from kapal.runtime.spec import container_resources

if TYPE_CHECKING:
    from kapal.container.service import ContainerService

ZERO_TIME = "0001-01-01T00:00:00Z"
_NS = 1_000_000_000
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# v1 controllers that hold a container's processes, the most likely first.
_V1_PROC_CONTROLLERS = ("pids", "memory", "cpu", "cpuacct", "freezer", "devices", "systemd")
# ps arguments Docker refuses: changing the PID column's title would break the PID filter.
_PS_RENAME_PID = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")
_UPDATE_INTS = (
    "Memory",
    "MemorySwap",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "BlkioWeight",
)
_RESTART_POLICIES = ("", "no", "always", "on-failure", "unless-stopped")


class UpdateError(KapalError):
    """The runtime refused new limits for a running container (dockerd: "Cannot update container")."""


def _now() -> str:
    """The time now as Go's ``time.RFC3339Nano`` writes it (UTC, trailing zeros of the fraction dropped)."""
    seconds, fraction = divmod(time.time_ns(), _NS)
    text = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:09d}".rstrip("0")
    return text + "Z"


def _event_attributes(container: Container) -> dict[str, str]:
    attributes = {"image": container.image, "name": container.name}
    attributes.update(container.labels)
    return attributes


# --------------------------------------------------------------------------------------------
# Where a container's cgroup files are


def _v1_dir(controller: str, container_id: str) -> Path | None:
    """The container's directory in a v1 hierarchy (``cpu`` and ``cpuacct`` may share one)."""
    root = cgroups.ROOT
    candidates = [root / controller]
    try:
        candidates += [entry for entry in root.iterdir() if controller in entry.name.split(",")]
    except OSError:
        pass
    for hierarchy in candidates:
        directory = hierarchy / cgroups.PARENT / container_id
        if directory.is_dir():
            return directory
    return None


def _v2_dir(container_id: str) -> Path:
    return cgroups.ROOT / cgroups.PARENT / container_id


def _read(path: Path | None, name: str) -> str | None:
    if path is None:
        return None
    try:
        return (path / name).read_text()
    except OSError:
        return None


def _int(path: Path | None, name: str) -> int | None:
    text = _read(path, name)
    if text is None:
        return None
    word = text.split()[0] if text.split() else ""
    if word == "max":
        return None
    try:
        return int(word)
    except ValueError:
        return None


def _key_values(text: str | None) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            values[key] = int(value)
        except ValueError:
            continue
    return values


def container_pids(service: ContainerService, container: Container) -> list[int]:
    """Every process in the container's cgroup (sub-cgroups included), the runtime's list otherwise."""
    if service.cgroup_layout.version == 2:
        directories = [_v2_dir(container.id)]
    else:
        directories = [d for c in _V1_PROC_CONTROLLERS if (d := _v1_dir(c, container.id)) is not None]
    for directory in directories:
        if not directory.is_dir():
            continue
        pids: set[int] = set()
        for procs in [directory / "cgroup.procs", *directory.rglob("*/cgroup.procs")]:
            for word in (_read(procs.parent, "cgroup.procs") or "").split():
                if word.isdigit():
                    pids.add(int(word))
        if pids:
            return sorted(pids)
    return service.runtime(container.runtime).processes(container.id)


# --------------------------------------------------------------------------------------------
# top


def _fields(line: str) -> list[str]:
    """Go's ``fieldsASCII``: split on ASCII whitespace only (ps may print other spaces in commands)."""
    return [field for field in re.split(r"[\t\n\f\r ]+", line) if field]


def _parse_ps(output: str, pids: set[int]) -> dict[str, Any]:
    """dockerd's ``parsePSOutput``: keep the rows of the container's PIDs (and their thread rows)."""
    lines = output.split("\n")
    titles = _fields(lines[0]) if lines else []
    if "PID" not in titles:
        raise KapalError("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    processes: list[list[str]] = []
    keep_threads = False
    for line in lines[1:]:
        if not line:
            continue
        fields = _fields(line)
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":
            if keep_threads:
                processes.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError:
            raise KapalError(f"Unexpected pid '{fields[pid_index]}'") from None
        keep_threads = pid in pids
        if keep_threads:
            processes.append(_fit(fields, len(titles)))
    return {"Titles": titles, "Processes": processes}


def _fit(fields: list[str], columns: int) -> list[str]:
    """Merge the overhanging fields (a command's arguments) into the last column."""
    return [*fields[: columns - 1], " ".join(fields[columns - 1 :])]


def top(service: ContainerService, ref: str, ps_args: str = "") -> dict[str, Any]:
    """``GET /containers/{id}/top``: host ``ps`` output, filtered to the container's processes."""
    ps_args = ps_args or "-ef"
    for key, value in _PS_RENAME_PID.findall(ps_args):
        if key != "pid":
            raise InvalidArgument(f'specifying "{key}={value}" is not allowed')
    container = service.get(ref)
    if container.state.status == RESTARTING:
        raise Conflict(f"Container {container.id} is restarting, wait until the container is running")
    if not container.running:
        raise Conflict(f"Container {container.id} is not running")
    pids = container_pids(service, container)
    args = [arg for arg in ps_args.split(" ") if arg]
    quick = "-q" + ",".join(str(pid) for pid in pids)
    result = subprocess.run(["ps", *args, quick], capture_output=True, timeout=30)
    if result.returncode != 0:
        # Some options (forest listings) refuse -q: list everything and filter instead.
        result = subprocess.run(["ps", *args], capture_output=True, timeout=30)
        if result.returncode != 0:
            first = result.stderr.decode(errors="replace").strip().splitlines()
            raise KapalError(f"ps: {first[0] if first else f'exit status {result.returncode}'}")
    listing = _parse_ps(result.stdout.decode(errors="replace"), set(pids))
    service.events.publish("container", "top", container.id, **_event_attributes(container))
    return listing


# --------------------------------------------------------------------------------------------
# stats


def _machine_memory() -> int:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def system_cpu_usage() -> tuple[int, int]:
    """(host CPU time in ns, online CPUs) from /proc/stat, as dockerd's ``getSystemCPUUsage``.

    The first seven fields of the ``cpu`` line (user to softirq) in clock
    ticks, turned into nanoseconds; the CPUs are the ``cpuN`` lines.
    """
    usage, cpus = 0, 0
    try:
        with open("/proc/stat") as proc_stat:
            for line in proc_stat:
                fields = line.split()
                if not fields:
                    continue
                if fields[0] == "cpu" and len(fields) >= 8:
                    usage = sum(int(value) for value in fields[1:8]) * _NS // _CLOCK_TICKS
                elif fields[0].startswith("cpu") and len(fields[0]) > 3:
                    cpus += 1
    except (OSError, ValueError):
        pass
    return usage, cpus


def _empty_cpu() -> dict[str, Any]:
    return {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def _empty_blkio() -> dict[str, Any]:
    return {
        key: None
        for key in (
            "io_service_bytes_recursive",
            "io_serviced_recursive",
            "io_queue_recursive",
            "io_service_time_recursive",
            "io_wait_time_recursive",
            "io_merged_recursive",
            "io_time_recursive",
            "sectors_recursive",
        )
    }


def empty_stats(container: Container) -> dict[str, Any]:
    """What dockerd answers for a container that is not running: zero values, name and ID."""
    return {
        "read": ZERO_TIME,
        "preread": ZERO_TIME,
        "pids_stats": {},
        "blkio_stats": _empty_blkio(),
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": _empty_cpu(),
        "precpu_stats": _empty_cpu(),
        "memory_stats": {},
        "name": f"/{container.name}",
        "id": container.id,
    }


def _blkio_v1(path: Path | None, name: str) -> list[dict[str, Any]]:
    entries = []
    for line in (_read(path, name) or "").splitlines():
        fields = line.split()
        if len(fields) != 3 or ":" not in fields[0]:
            continue
        major, _, minor = fields[0].partition(":")
        try:
            entries.append(
                {"major": int(major), "minor": int(minor), "op": fields[1], "value": int(fields[2])}
            )
        except ValueError:
            continue
    return entries


def _stats_v1(container_id: str) -> dict[str, Any]:
    memory_dir = _v1_dir("memory", container_id)
    cpuacct_dir = _v1_dir("cpuacct", container_id)
    cpu_dir = _v1_dir("cpu", container_id)
    pids_dir = _v1_dir("pids", container_id)
    blkio_dir = _v1_dir("blkio", container_id)

    ticks = _key_values(_read(cpuacct_dir, "cpuacct.stat"))
    cpu_usage: dict[str, Any] = {
        "total_usage": _int(cpuacct_dir, "cpuacct.usage") or 0,
        "usage_in_kernelmode": ticks.get("system", 0) * _NS // _CLOCK_TICKS,
        "usage_in_usermode": ticks.get("user", 0) * _NS // _CLOCK_TICKS,
    }
    percpu = [int(value) for value in (_read(cpuacct_dir, "cpuacct.usage_percpu") or "").split()]
    if percpu:
        cpu_usage["percpu_usage"] = percpu
    throttling = _key_values(_read(cpu_dir, "cpu.stat"))

    limit = _int(memory_dir, "memory.limit_in_bytes") or 0
    memory: dict[str, Any] = {
        "usage": _int(memory_dir, "memory.usage_in_bytes") or 0,
        "max_usage": _int(memory_dir, "memory.max_usage_in_bytes") or 0,
        "stats": _key_values(_read(memory_dir, "memory.stat")),
        "failcnt": _int(memory_dir, "memory.failcnt") or 0,
        "limit": limit,
    }
    blkio = _empty_blkio()
    service_bytes = _blkio_v1(blkio_dir, "blkio.io_service_bytes_recursive")
    serviced = _blkio_v1(blkio_dir, "blkio.io_serviced_recursive")
    if not service_bytes:  # no CFQ scheduler: the throttle policy still counts
        service_bytes = _blkio_v1(blkio_dir, "blkio.throttle.io_service_bytes_recursive")
        serviced = _blkio_v1(blkio_dir, "blkio.throttle.io_serviced_recursive")
    blkio["io_service_bytes_recursive"] = service_bytes
    blkio["io_serviced_recursive"] = serviced
    pids: dict[str, Any] = {"current": _int(pids_dir, "pids.current") or 0}
    pids_limit = _int(pids_dir, "pids.max")
    if pids_limit:
        pids["limit"] = pids_limit
    return {
        "cpu_usage": cpu_usage,
        "throttling_data": {
            "periods": throttling.get("nr_periods", 0),
            "throttled_periods": throttling.get("nr_throttled", 0),
            "throttled_time": throttling.get("throttled_time", 0),
        },
        "memory": memory,
        "blkio": blkio,
        "pids": pids,
    }


def _stats_v2(container_id: str) -> dict[str, Any]:
    base = _v2_dir(container_id)
    cpu = _key_values(_read(base, "cpu.stat"))
    memory: dict[str, Any] = {
        "usage": _int(base, "memory.current") or 0,
        "stats": _key_values(_read(base, "memory.stat")),
        "limit": _int(base, "memory.max") or 0,
    }
    blkio = _empty_blkio()
    service_bytes: list[dict[str, Any]] = []
    serviced: list[dict[str, Any]] = []
    for line in (_read(base, "io.stat") or "").splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        values = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
        try:
            ids = {"major": int(major), "minor": int(minor)}
            service_bytes += [
                {**ids, "op": "read", "value": int(values.get("rbytes", 0))},
                {**ids, "op": "write", "value": int(values.get("wbytes", 0))},
            ]
            serviced += [
                {**ids, "op": "read", "value": int(values.get("rios", 0))},
                {**ids, "op": "write", "value": int(values.get("wios", 0))},
            ]
        except ValueError:
            continue
    blkio["io_service_bytes_recursive"] = service_bytes
    blkio["io_serviced_recursive"] = serviced
    pids: dict[str, Any] = {"current": _int(base, "pids.current") or 0}
    pids_limit = _int(base, "pids.max")
    if pids_limit:
        pids["limit"] = pids_limit
    return {
        "cpu_usage": {
            "total_usage": cpu.get("usage_usec", 0) * 1000,
            "usage_in_kernelmode": cpu.get("system_usec", 0) * 1000,
            "usage_in_usermode": cpu.get("user_usec", 0) * 1000,
        },
        "throttling_data": {
            "periods": cpu.get("nr_periods", 0),
            "throttled_periods": cpu.get("nr_throttled", 0),
            "throttled_time": cpu.get("throttled_usec", 0) * 1000,
        },
        "memory": memory,
        "blkio": blkio,
        "pids": pids,
    }


def _networks(container: Container) -> dict[str, Any]:
    """Interface counters from the container's network namespace (none for ``none`` and ``host``)."""
    mode = container.host_config.get("NetworkMode") or "none"
    pid = container.state.pid
    if mode in ("none", "host") or mode.startswith("container:") or pid <= 0:
        return {}
    try:
        with open(f"/proc/{pid}/net/dev") as dev:
            lines = dev.read().splitlines()[2:]
    except OSError:
        return {}
    names = ("bytes", "packets", "errors", "dropped")
    networks: dict[str, Any] = {}
    for line in lines:
        interface, _, counters = line.partition(":")
        interface = interface.strip()
        values = counters.split()
        if interface == "lo" or len(values) < 12:
            continue
        try:
            numbers = [int(value) for value in values]
        except ValueError:
            continue
        entry = {f"rx_{name}": numbers[i] for i, name in enumerate(names)}
        entry.update({f"tx_{name}": numbers[8 + i] for i, name in enumerate(names)})
        networks[interface] = entry
    return networks


def stats(service: ContainerService, ref: str, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """One sample of ``GET /containers/{id}/stats``; *previous* (the last sample) fills ``precpu_stats``.

    The docker CLI's CPU % is the container's CPU time delta over the host's
    (``system_cpu_usage``) delta, times the online CPUs: both are read here in
    the same units dockerd uses, so the percentages agree.
    """
    container = service.get(ref)
    if not container.running:
        return empty_stats(container)
    layout = service.cgroup_layout
    sample = _stats_v2(container.id) if layout.version == 2 else _stats_v1(container.id)
    system_usage, online = system_cpu_usage()
    machine = _machine_memory()
    memory = sample["memory"]
    if machine and (not memory["limit"] or memory["limit"] > machine):
        memory["limit"] = machine  # "no limit" reads as the host's memory, as dockerd reports it
    result: dict[str, Any] = {
        "read": _now(),
        "preread": ZERO_TIME,
        "pids_stats": sample["pids"],
        "blkio_stats": sample["blkio"],
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {
            "cpu_usage": sample["cpu_usage"],
            "system_cpu_usage": system_usage,
            "online_cpus": online or os.cpu_count() or 1,
            "throttling_data": sample["throttling_data"],
        },
        "precpu_stats": _empty_cpu(),
        "memory_stats": memory,
        "name": f"/{container.name}",
        "id": container.id,
    }
    if previous is not None and previous.get("read") not in (None, ZERO_TIME):
        result["preread"] = previous["read"]
        result["precpu_stats"] = previous["cpu_stats"]
    networks = _networks(container)
    if networks:
        result["networks"] = networks
    return result


# --------------------------------------------------------------------------------------------
# update


def _request_int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if value in (None, ""):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"invalid {key}: {value!r}") from None


def _effective_swap(host_config: dict[str, Any]) -> int:
    """The swap limit dockerd would have stored: twice the memory when only memory was given."""
    swap = int(host_config.get("MemorySwap") or 0)
    memory = int(host_config.get("Memory") or 0)
    if swap == 0 and memory > 0:
        return memory * 2
    return swap


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        try:
            cpus.update(range(int(first), int(last or first) + 1))
        except ValueError:
            raise InvalidArgument(f"invalid value {text!r} for cpuset") from None
    return cpus


def _check_cpuset(value: str, online_file: str, what: str) -> None:
    try:
        with open(online_file) as online:
            available = online.read().strip()
    except OSError:
        return
    if not _cpu_list(value) <= _cpu_list(available):
        raise InvalidArgument(
            f"Requested {what} are not available - requested {value}, available: {available}"
        )


def _validate_request(body: dict[str, Any]) -> dict[str, int]:
    """dockerd's checks on the update request itself (before it is merged)."""
    values = {key: _request_int(body, key) for key in _UPDATE_INTS}
    if values["NanoCpus"] and (values["CpuPeriod"] or values["CpuQuota"]):
        raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set")
    cpus = os.cpu_count() or 1
    if values["NanoCpus"] and not 10_000_000 <= values["NanoCpus"] <= cpus * _NS:
        raise InvalidArgument(
            f"Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
        )
    if body.get("CpusetCpus"):
        _check_cpuset(str(body["CpusetCpus"]), "/sys/devices/system/cpu/online", "CPUs")
    if body.get("CpusetMems"):
        _check_cpuset(str(body["CpusetMems"]), "/sys/devices/system/node/online", "memory nodes")
    return values


def _blkio_weight_supported(layout: cgroups.Layout) -> bool:
    """Whether block IO weights can be set at all (they need the BFQ or CFQ I/O scheduler)."""
    if layout.version == 2:
        base = cgroups.ROOT / cgroups.PARENT
        return (base / "io.weight").exists() or (base / "io.bfq.weight").exists()
    base = cgroups.ROOT / "blkio"
    return (base / "blkio.weight").exists() or (base / "blkio.bfq.weight").exists()


def _merged_host_config(container: Container, body: dict[str, Any]) -> dict[str, Any]:
    """dockerd's ``UpdateContainer``: the request's non-zero values over the container's HostConfig."""
    values = _validate_request(body)
    current = container.host_config
    merged = dict(current)

    def conflict(message: str) -> Conflict:
        # dockerd wraps what UpdateContainer refuses with the container it is about.
        return Conflict(f"Cannot update container {container.id}: {message}")

    if values["NanoCpus"] > 0 and int(current.get("CpuPeriod") or 0) > 0:
        raise conflict("Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set")
    if values["NanoCpus"] > 0 and int(current.get("CpuQuota") or 0) > 0:
        raise conflict("Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set")
    if values["CpuPeriod"] > 0 and int(current.get("NanoCpus") or 0) > 0:
        raise conflict("Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set")
    if values["CpuQuota"] > 0 and int(current.get("NanoCpus") or 0) > 0:
        raise conflict("Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set")
    for key in ("BlkioWeight", "CpuShares", "NanoCpus", "CpuPeriod", "CpuQuota", "MemoryReservation"):
        if values[key]:
            merged[key] = values[key]
    for key in ("CpusetCpus", "CpusetMems"):
        if body.get(key):
            merged[key] = str(body[key])
    if values["Memory"]:
        swap = _effective_swap(current)
        if values["Memory"] > swap and values["MemorySwap"] == 0:
            raise conflict(
                "Memory limit should be smaller than already set memoryswap limit, "
                "update the memoryswap at the same time"
            )
        merged["Memory"] = values["Memory"]
        merged["MemorySwap"] = swap  # what dockerd stored; a new MemorySwap below replaces it
    if values["MemorySwap"]:
        merged["MemorySwap"] = values["MemorySwap"]
    if body.get("PidsLimit") is not None:
        pids = _request_int(body, "PidsLimit")
        merged["PidsLimit"] = pids if pids > 0 else 0  # 0 and -1 both mean unlimited
    policy = body.get("RestartPolicy") or {}
    name = str(policy.get("Name") or "")
    if name:
        if name not in _RESTART_POLICIES:
            raise InvalidArgument(f"invalid restart policy '{name}'")
        retries = int(policy.get("MaximumRetryCount") or 0)
        if retries and name != "on-failure":
            raise InvalidArgument(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'"
            )
        if retries < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
        if name != "no" and current.get("AutoRemove"):
            raise conflict("Restart policy cannot be updated because AutoRemove is enabled for the container")
        merged["RestartPolicy"] = {"Name": name, "MaximumRetryCount": retries}
    return merged


def _live_resources(host_config: dict[str, Any]) -> dict[str, Any]:
    """The OCI ``linux.resources`` to hand ``<runtime> update``: what the limits now are.

    Device rules are left out: an update cannot change them.
    """
    resources = container_resources(host_config, [])
    resources.pop("devices", None)
    return resources


def _lift_pids_limit(service: ContainerService, container: Container) -> None:
    """Write ``max`` to the container's ``pids.max``: the runtimes cannot lift a limit themselves.

    crun ignores a limit of 0 and writes -1 literally (which the kernel
    refuses), so an unlimited pids count is set in the cgroup directly.
    """
    if service.cgroup_layout.version == 2:
        directory: Path | None = _v2_dir(container.id)
    else:
        directory = _v1_dir("pids", container.id)
    if directory is None:
        return
    try:
        (directory / "pids.max").write_text("max")
    except OSError as error:
        raise UpdateError(
            f"Cannot update container {container.id}: writing pids.max: {error.strerror}"
        ) from None


def update(service: ContainerService, ref: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /containers/{id}/update``: new resource limits and restart policy.

    Stored in the container's HostConfig (so the next start uses them) and,
    when it runs, applied at once with ``<runtime> update``; if the runtime
    refuses, nothing is stored.
    """
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: want an object")
    container = service.get(ref)
    if container.state.status in (REMOVING, DEAD):
        raise Conflict(
            f'Cannot update container {container.id}: container is marked for removal and cannot be "update"'
        )
    warnings: list[str] = []
    if _request_int(body, "BlkioWeight") and not _blkio_weight_supported(service.cgroup_layout):
        # dockerd's answer on such a host: a warning, and the weight is dropped.
        warnings.append(
            "Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded."
        )
        body = {key: value for key, value in body.items() if key != "BlkioWeight"}
    merged = _merged_host_config(container, body)
    resources = _live_resources(merged)
    lifted = "pids" not in resources and int(container.host_config.get("PidsLimit") or 0) > 0
    if container.running:
        try:
            service.runtime(container.runtime).update(container.id, resources)
        except KapalError as error:
            raise UpdateError(f"Cannot update container {container.id}: {error}") from None
        if lifted:
            _lift_pids_limit(service, container)
    container.host_config = merged
    service.save_state(container)
    service.events.publish("container", "update", container.id, **_event_attributes(container))
    return {"Warnings": warnings}
