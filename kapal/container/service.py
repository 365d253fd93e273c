"""The container service: create, start, stop, kill, wait, remove, list — Docker's lifecycle.

A container's files live in ``<data root>/containers/<id>/``: the overlay
``upper``/``work`` directories and ``rootfs`` mount point, the OCI bundle
(``config.json``), its /etc files, conmon's log and exit files. Its record
lives in the database. The OCI container exists only while the container runs:
``start`` creates it under a fresh conmon, the exit handler deletes it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import secrets
import shutil
import signal as signals
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kapal.container import model, names
from kapal.container.etc_files import write_etc_files
from kapal.container.log_rotation import CONMON_CAP_FACTOR, LogRotator, RotatedLog
from kapal.container.model import CREATED, DEAD, EXITED, PAUSED, REMOVING, RESTARTING, RUNNING, Container
from kapal.container.mounts import (
    prepare_mounts,
    release_mounts,
    remove_mounts,
    resolve_mounts,
    set_root_propagation,
)
from kapal.container.watcher import ExitWatcher
from kapal.errors import Conflict, InvalidArgument, KapalError, NotFound
from kapal.events import EventBus
from kapal.image.layers import LayerStore
from kapal.image.store import Image, ImageStore
from kapal.metadata import Database
from kapal.runtime import cgroups, monitor, rootfs
from kapal.runtime.oci import OCIRuntime
from kapal.runtime.seccomp_cache import SeccompCache
from kapal.runtime.spec import HostFacts, build_spec, process_args
from kapal.volume.service import VolumeService

log = logging.getLogger("kapald")

DEFAULT_STOP_TIMEOUT = 10


def parse_signal(value: str | int | None, default: int = signals.SIGTERM) -> int:
    """``SIGTERM``, ``TERM``, ``15`` → 15, as Docker accepts them."""
    if value in (None, ""):
        return default
    if isinstance(value, int):
        return value
    text = str(value).strip().upper()
    if text.isdigit():
        number = int(text)
        if not 0 < number < 65:
            raise InvalidArgument(f"Invalid signal: {value}")
        return number
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(signals.Signals[text])
    except KeyError:
        raise InvalidArgument(f"Invalid signal: {value}") from None


class StartError(KapalError):
    """The runtime could not start the container's process (Docker: 400 from start)."""

    http_status = 400


@dataclass
class RuntimeOptions:
    default_runtime: str = "crun"
    runtimes: dict[str, dict] = field(default_factory=dict)


@dataclass
class _Waiter:
    condition: str  # not-running, next-exit, removed
    future: concurrent.futures.Future


class ContainerService:
    def __init__(
        self,
        root: Path,
        exec_root: Path,
        db: Database,
        images: ImageStore,
        layers: LayerStore,
        events: EventBus,
        options: RuntimeOptions,
    ) -> None:
        self.dir = root / "containers"
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o710)
        self.exec_root = exec_root
        self.exit_dir = exec_root / "exits"
        self.exit_dir.mkdir(parents=True, exist_ok=True)
        self.db = db
        self.images = images
        self.layers = layers
        self.events = events
        self.options = options
        self.host = HostFacts.detect()
        self.cgroup_layout = cgroups.detect()
        self._lock = threading.RLock()
        self._containers: dict[str, Container] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        self._attach_waiting: dict[str, list[concurrent.futures.Future]] = {}
        self._stopping: set[str] = set()
        self._runtimes: dict[str, OCIRuntime] = {}
        self.watcher = ExitWatcher(self._on_monitor_exit)
        self.log_rotator = LogRotator()
        self.seccomp_cache = SeccompCache()
        # Told when a container starts and when it stops (health checks); each has started()/stopped().
        self.listeners: list[Any] = []
        # Sets up a container's network once its process (and network namespace) exists, before the
        # process runs: ``attach(container, pid) -> NetworkSettings dict`` and ``detach(container)``.
        self.network: Any = None
        # Volumes and the mount points that reference them (set by the engine); None: no mounts.
        self.volumes: VolumeService | None = None
        images.image_users = self.image_users
        for row in db.query("SELECT record FROM containers"):
            container = Container.from_record(row["record"])
            self._containers[container.id] = container
        self._janitor_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._sweep_orphans()

    # -- lookup --------------------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """A container by full ID, name, or unique ID prefix (in that order, as Docker)."""
        with self._lock:
            if ref in self._containers:
                return self._containers[ref]
            name = ref.lstrip("/")
            for container in self._containers.values():
                if container.name == name:
                    return container
            matches = [c for c in self._containers.values() if ref and c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def list(self) -> list[Container]:
        with self._lock:
            return sorted(self._containers.values(), key=lambda c: c.created, reverse=True)

    def image_users(self, image_id: str) -> list[tuple[str, bool]]:
        with self._lock:
            return [(c.id, c.running) for c in self._containers.values() if c.image_id == image_id]

    def _save(self, container: Container) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO containers (id, name, image_id, created, record)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    container.id,
                    container.name,
                    container.image_id,
                    model.parse_rfc3339(container.created),
                    container.to_record(),
                ),
            )

    def path(self, container: Container) -> Path:
        return self.dir / container.id

    def runtime(self, name: str | None) -> OCIRuntime:
        name = name or self.options.default_runtime
        if name not in self._runtimes:
            self._runtimes[name] = OCIRuntime.find(name, self.exec_root, self.options.runtimes)
        return self._runtimes[name]

    # -- create --------------------------------------------------------------------------------

    def create(self, body: dict[str, Any], name: str | None = None) -> Container:
        image_name = body.get("Image") or ""
        if not image_name:
            raise InvalidArgument("config cannot be empty in order to create a container")
        image = self.images.get(image_name)
        image_config = image.config.get("config") or {}
        host_config = dict(body.get("HostConfig") or {})
        runtime_name = host_config.get("Runtime") or self.options.default_runtime
        self.runtime(runtime_name)  # an unknown runtime is an error now, not at start
        args = process_args(image_config, body)
        config = _merged_config(image_config, body, image_name)
        container_id = secrets.token_hex(32)
        with self._lock:
            if name:
                name = model.validate_name(name)
                for other in self._containers.values():
                    if other.name == name:
                        raise Conflict(
                            f'Conflict. The container name "/{name}" is already in use by container '
                            f'"{other.id}". You have to remove (or rename) that container to be able to '
                            "reuse that name."
                        )
            else:
                name = names.generate(lambda n: any(c.name == n for c in self._containers.values()))
            if host_config.get("NetworkMode") in (None, "", "default"):
                host_config["NetworkMode"] = "bridge"
            # An unknown network fails create, as in dockerd; the plan is the container's endpoints.
            endpoints = self.network.plan(host_config, body.get("NetworkingConfig")) if self.network else {}
            host_config["Runtime"] = runtime_name
            container = Container(
                id=container_id,
                name=name,
                image=image_name,
                image_id=image.id,
                created=model.now_rfc3339(),
                config=config,
                host_config=host_config,
                args=args,
                runtime=runtime_name,
                endpoints_config=endpoints,
            )
            if self.network is not None:
                container.network_settings = self.network.settings(container, 0)
            self._containers[container_id] = container
        try:
            _log_limits(container)  # bad --log-opt values refuse the create, as in dockerd
            directory = self.path(container)
            for sub in ("upper", "work", "rootfs"):
                (directory / sub).mkdir(parents=True, exist_ok=True)
            if self.volumes is not None:
                # Validates -v/--mount (a bad one refuses the create) and creates the volumes.
                prepare_mounts(container, self.volumes, self.get)
            self._save(container)
        except BaseException:
            with self._lock:
                self._containers.pop(container_id, None)
            shutil.rmtree(self.path(container), ignore_errors=True)
            if self.volumes is not None:
                self.volumes.release(container_id)
            raise
        self.events.publish("container", "create", container.id, **self._event_attributes(container))
        return container

    def _event_attributes(self, container: Container, **extra: str) -> dict[str, str]:
        attributes = {"image": container.image, "name": container.name}
        attributes.update(container.labels)
        attributes.update(extra)
        return attributes

    # -- start ---------------------------------------------------------------------------------

    def mount_rootfs(self, container: Container, image: Image | None = None) -> Path:
        """Mount the container's root filesystem (if it is not) and return its path."""
        directory = self.path(container)
        target = directory / "rootfs"
        if not rootfs.is_mounted(target):
            image = image or self.images.get_by_id(container.image_id)
            lowers = [str(self.layers.path(diff_id)) for diff_id, _ in reversed(image.layers)]
            rootfs.mount_overlay(lowers, directory / "upper", directory / "work", target)
        return target

    def start(self, ref: str) -> Container:
        container = self.get(ref)
        with self._lock:
            if container.running:
                raise _NotModified()
            container.require(CREATED, EXITED, action="start")
            container.manually_stopped = False
        self._start(container)
        return container

    def _start(self, container: Container) -> None:
        directory = self.path(container)
        runtime = self.runtime(container.runtime)
        # Loaded once: reading an image verifies its config blob and queries its rows.
        image = self.images.get_by_id(container.image_id)
        target = self.mount_rootfs(container, image)
        try:
            hc = container.host_config
            hostname = container.config.get("Hostname") or container.id[:12]
            addresses = self.network.prepare(container) if self.network is not None else []
            etc = write_etc_files(
                directory,
                hostname,
                container.config.get("Domainname") or "",
                hc.get("NetworkMode") == "host",
                hc.get("ExtraHosts") or [],
                hc.get("Dns") or [],
                hc.get("DnsSearch") or [],
                hc.get("DnsOptions") or [],
                addresses=addresses,
                embedded_dns=self.network is not None and self.network.uses_embedded_dns(container),
            )
            image_config = image.config.get("config") or {}
            mounts: list[dict[str, Any]] = []
            if self.volumes is not None:
                mounts = resolve_mounts(container, self.volumes, image_config, target)
            create_body = dict(container.config)
            create_body["HostConfig"] = hc
            spec = build_spec(
                image_config,
                create_body,
                str(target),
                str(directory),
                container.id,
                etc,
                self.host,
                cgroups.cgroups_path(container.id),
                mounts=mounts,
            )
            set_root_propagation(spec, mounts)
            if hc.get("Init"):
                _add_init(spec)
            seccomp_key = self.seccomp_cache.annotate(runtime, spec)
            _write_json(directory / "config.json", spec)
            max_size, max_file = _log_limits(container)
            if (runtime.root / container.id).exists():
                runtime.delete(container.id)  # left over from a crash
            launched = monitor.launch_container(
                runtime,
                container.id,
                directory,
                self.exit_dir,
                directory / "ctr.log" if _logs_enabled(container) else None,
                container.tty,
                bool(container.config.get("OpenStdin")),
                # As dockerd: a TTY's stdin is never closed by a client leaving (it may detach)
                stdin_once=bool(container.config.get("StdinOnce")) and not container.tty,
                # Rotation is kapald's (log_rotation); conmon's cut only bounds the disk while it is down.
                log_size_max=max_size * max_file * CONMON_CAP_FACTOR if max_file > 1 else max_size,
            )
        except KapalError as error:
            self._start_failed(container, error)
            raise
        except BaseException:
            rootfs.unmount(target)
            if self.volumes is not None:
                release_mounts(container, self.volumes)
            raise
        if seccomp_key is not None:
            self.seccomp_cache.learn(seccomp_key, runtime, container.id)
        with self._lock:
            container.state = model.State(
                status=RUNNING,
                pid=launched.pid,
                conmon_pid=launched.conmon_pid,
                started_at=model.now_rfc3339(),
                health=container.state.health,
            )
            if self.network is None:
                self._save(container)  # else once, below, with the network settings too
            waiting = self._attach_waiting.pop(container.id, [])
        # Attach before the process runs, so not a byte of its output is missed.
        for future in waiting:
            if future.done():
                continue
            try:
                future.set_result(monitor.connect_attach(directory))
            except OSError as error:
                future.set_exception(NotFound(f"attaching to {container.short_id}: {error}"))
        self._watch_log(container)
        if not self.watcher.watch(launched.conmon_pid, container.id):
            self._on_monitor_exit(container.id)
            return
        if self.network is not None:
            try:
                settings = self.network.attach(container, launched.pid)
            except KapalError as error:
                runtime.kill(container.id, signals.SIGKILL)
                raise StartError(f"setting up the network: {error}") from None
            with self._lock:
                container.network_settings = settings or {}
                self._save(container)
        try:
            runtime.start(container.id)
        except KapalError as error:
            runtime.kill(container.id, signals.SIGKILL)
            raise StartError(str(error)) from None
        for listener in self.listeners:
            listener.started(container)
        self.events.publish("container", "start", container.id, **self._event_attributes(container))

    def _watch_log(self, container: Container) -> None:
        if not _logs_enabled(container):
            return
        max_size, max_file = _log_limits(container)
        if max_size and max_file > 1:
            directory = self.path(container)
            self.log_rotator.watch(
                container.id, RotatedLog(directory / "ctr.log", directory, max_size, max_file)
            )

    def save_state(self, container: Container) -> None:
        with self._lock:
            if container.id in self._containers:
                self._save(container)

    def _start_failed(self, container: Container, error: KapalError) -> None:
        text = str(error)
        lowered = text.replace("No such file or directory", "no such file or directory").replace(
            "Permission denied", "permission denied"
        )
        code = 127 if "no such file or directory" in lowered or "not found" in lowered else 126
        if "permission denied" not in lowered and code != 127:
            code = 128
        try:
            self.runtime(container.runtime).delete(container.id)
        except KapalError:
            pass
        rootfs.unmount(self.path(container) / "rootfs")
        if self.volumes is not None:
            release_mounts(container, self.volumes)
        message = f"failed to create task for container: OCI runtime create failed: {lowered}"
        with self._lock:
            container.state.error = lowered
            container.state.exit_code = code
            if container.state.status != CREATED:
                container.state.status = EXITED
            self._save(container)
            waiting = self._attach_waiting.pop(container.id, [])
        for future in waiting:
            if not future.done():
                future.set_exception(StartError(message))
        self._notify(container, ("next-exit",))
        error.args = (message,)
        if container.host_config.get("AutoRemove"):
            # as dockerd: a --rm container that cannot start is removed (`docker run --rm` waits for that)
            self.remove(container.id, force=True, volumes=True)

    def attach(self, container: Container) -> concurrent.futures.Future:
        """A socket connected to the container's stdio, once it runs (now, if it runs already).

        For a container not yet started, the socket is connected by ``start`` before the
        process runs, so an attached client sees all of its output.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if not container.running:
                self._attach_waiting.setdefault(container.id, []).append(future)
                return future
        try:
            future.set_result(monitor.connect_attach(self.path(container)))
        except OSError as error:
            future.set_exception(NotFound(f"container {container.short_id} has no attach socket: {error}"))
        return future

    def resize(self, ref: str, height: int, width: int) -> None:
        container = self.get(ref)
        if not container.running:
            raise Conflict(f"Container {container.id} is not running")
        monitor.resize(self.path(container), height, width)

    # -- exit ----------------------------------------------------------------------------------

    def _on_monitor_exit(self, container_id: str) -> None:
        """conmon ended: the container has exited. Record it, clean up, restart or remove it."""
        with self._lock:
            container = self._containers.get(container_id)
            if container is None or container.state.status not in (RUNNING, PAUSED, RESTARTING):
                return
        for listener in self.listeners:
            listener.stopped(container)
        directory = self.path(container)
        code = monitor.read_exit(directory)
        oom = monitor.oom_killed(directory)
        self._cleanup_runtime(container)
        with self._lock:
            container.state.status = EXITED
            container.state.exit_code = 255 if code is None else code
            container.state.oom_killed = oom
            container.state.pid = 0
            container.state.conmon_pid = 0
            container.state.finished_at = model.now_rfc3339()
            stopping = container.id in self._stopping
            restarts = not stopping and self._should_restart(container)
            if restarts or not container.host_config.get("AutoRemove"):
                # An auto-removed container's record goes next: writing it first would cost a
                # sync for nothing (were kapald to die in between, recovery finds its exit again).
                self._save(container)
        if oom:
            self.events.publish("container", "oom", container.id, **self._event_attributes(container))
        self.events.publish(
            "container",
            "die",
            container.id,
            **self._event_attributes(container, exitCode=str(container.state.exit_code)),
        )
        self._notify(container, ("not-running", "next-exit"))
        if restarts:
            self._schedule_restart(container)
            return
        if container.host_config.get("AutoRemove"):
            try:
                self.remove(container.id, force=True, volumes=True)
            except KapalError as error:
                log.warning("auto-removing %s failed: %s", container.short_id, error)

    def unmount_rootfs(self, container: Container) -> None:
        """Unmount a stopped container's root filesystem (a running one keeps it)."""
        if not container.running:
            rootfs.unmount(self.path(container) / "rootfs")

    def _cleanup_runtime(self, container: Container) -> None:
        self.log_rotator.forget(container.id)
        if self.network is not None:
            try:
                self.network.detach(container)
            except KapalError as error:
                log.warning("releasing the network of %s: %s", container.short_id, error)
        runtime = self.runtime(container.runtime)
        if (runtime.root / container.id).exists():
            try:
                runtime.delete(container.id)
            except KapalError as error:
                log.warning("deleting %s from the runtime: %s", container.short_id, error)
        try:
            rootfs.unmount(self.path(container) / "rootfs")
        except KapalError as error:
            log.warning("unmounting %s: %s", container.short_id, error)
        if self.volumes is not None:
            release_mounts(container, self.volumes)
        cgroups.remove(container.id, self.cgroup_layout)

    def _notify(self, container: Container, conditions: tuple[str, ...]) -> None:
        with self._lock:
            waiters = self._waiters.get(container.id, [])
            fire = [w for w in waiters if w.condition in conditions]
            self._waiters[container.id] = [w for w in waiters if w.condition not in conditions]
        result = {"StatusCode": container.state.exit_code, "Error": None}
        if container.state.error and container.state.exit_code:
            result["Error"] = {"Message": container.state.error}
        for waiter in fire:
            if not waiter.future.done():
                waiter.future.set_result(result)

    def _should_restart(self, container: Container) -> bool:
        policy = container.host_config.get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        if container.manually_stopped or name in ("no", ""):
            return False
        if name == "on-failure":
            limit = int(policy.get("MaximumRetryCount") or 0)
            return container.state.exit_code != 0 and (limit == 0 or container.restart_count < limit)
        return name in ("always", "unless-stopped")

    def _schedule_restart(self, container: Container) -> None:
        delay = min(0.1 * (2 ** min(container.restart_count, 10)), 60.0)
        with self._lock:
            container.state.status = RESTARTING
            self._save(container)

        def restart() -> None:
            time.sleep(delay)
            with self._lock:
                if container.id not in self._containers or container.state.status != RESTARTING:
                    return
                container.restart_count += 1
            try:
                self._start(container)
            except KapalError as error:
                log.warning("restarting %s failed: %s", container.short_id, error)
                with self._lock:
                    container.state.status = EXITED
                    self._save(container)

        threading.Thread(target=restart, name=f"restart-{container.short_id}", daemon=True).start()

    # -- wait, stop, kill ----------------------------------------------------------------------

    def wait(self, ref: str, condition: str = "not-running") -> concurrent.futures.Future:
        if condition not in ("not-running", "next-exit", "removed", ""):
            raise InvalidArgument(f"invalid condition: {condition!r}")
        container = self.get(ref)
        condition = condition or "not-running"
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if condition == "not-running" and container.state.status in (CREATED, EXITED, DEAD):
                future.set_result({"StatusCode": container.state.exit_code, "Error": None})
            else:
                self._waiters.setdefault(container.id, []).append(_Waiter(condition, future))
        return future

    def kill(self, ref: str, signal: str | int | None = None) -> None:
        container = self.get(ref)
        number = parse_signal(signal, signals.SIGKILL)
        with self._lock:
            container.require(RUNNING, PAUSED, action="kill")
        if container.state.status == PAUSED and number == signals.SIGKILL:
            self._stopping.add(container.id)
        self._signal(container, number)
        if container.state.status == PAUSED and number == signals.SIGKILL:
            self.runtime(container.runtime).resume(container.id)
        self.events.publish(
            "container", "kill", container.id, **self._event_attributes(container, signal=str(number))
        )

    def _signal(self, container: Container, number: int) -> None:
        """Signal the container's first process, as ``<runtime> kill`` would, without spawning one.

        A pidfd makes it race-free: a recycled PID is never signalled by mistake.
        """
        pid = container.state.pid
        if pid > 0:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return
            try:
                if _is_container_init(pid, container.state.conmon_pid):
                    signals.pidfd_send_signal(fd, number)
                    return
            except ProcessLookupError:
                return
            finally:
                os.close(fd)
        self.runtime(container.runtime).kill(container.id, number)

    def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        container = self.get(ref)
        with self._lock:
            if container.state.status == RESTARTING:
                container.manually_stopped = True
                container.state.status = EXITED
                self._save(container)
                return
            if not container.running:
                raise _NotModified()
            container.manually_stopped = True
            self._stopping.add(container.id)
        try:
            self._stop(container, timeout, signal)
        finally:
            with self._lock:
                self._stopping.discard(container.id)
        self.events.publish("container", "stop", container.id, **self._event_attributes(container))

    def _stop(self, container: Container, timeout: int | None, signal: str | None) -> None:
        if timeout is None or timeout < -1:
            timeout = container.config.get("StopTimeout")
        if timeout is None:
            timeout = DEFAULT_STOP_TIMEOUT
        number = parse_signal(signal or container.config.get("StopSignal"), signals.SIGTERM)
        exited = self.wait(container.id, "not-running")
        runtime = self.runtime(container.runtime)
        if container.state.status == PAUSED:
            runtime.resume(container.id)
        self._signal(container, number)
        try:
            exited.result(timeout=None if timeout == -1 else timeout)
            return
        except concurrent.futures.TimeoutError:
            pass
        self._signal(container, signals.SIGKILL)
        try:
            exited.result(timeout=10)
        except concurrent.futures.TimeoutError:
            runtime.kill(container.id, signals.SIGKILL, all_processes=True)
            exited.result(timeout=30)

    def restart(self, ref: str, timeout: int | None = None, signal: str | None = None) -> None:
        container = self.get(ref)
        if container.running:
            with self._lock:
                self._stopping.add(container.id)
            try:
                self._stop(container, timeout, signal)
            finally:
                with self._lock:
                    self._stopping.discard(container.id)
        with self._lock:
            container.manually_stopped = False
        self._start(container)
        self.events.publish("container", "restart", container.id, **self._event_attributes(container))

    def pause(self, ref: str) -> None:
        container = self.get(ref)
        with self._lock:
            container.require(RUNNING, action="pause")
        self.runtime(container.runtime).pause(container.id)
        with self._lock:
            container.state.status = PAUSED
            self._save(container)
        self.events.publish("container", "pause", container.id, **self._event_attributes(container))

    def unpause(self, ref: str) -> None:
        container = self.get(ref)
        if container.state.status != PAUSED:
            raise Conflict(f"Container {container.id} is not paused")
        self.runtime(container.runtime).resume(container.id)
        with self._lock:
            container.state.status = RUNNING
            self._save(container)
        self.events.publish("container", "unpause", container.id, **self._event_attributes(container))

    # -- remove, rename ------------------------------------------------------------------------

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """Remove a container; with *volumes* its anonymous volumes too (``docker rm -v``)."""
        container = self.get(ref)
        with self._lock:
            if container.state.status == REMOVING:
                raise Conflict(f"removal of container {container.short_id} is already in progress")
            if container.running and not force:
                raise Conflict(
                    f'cannot remove container "/{container.name}": container is running: stop the container '
                    "before removing or force remove"
                )
        if container.running:
            container.manually_stopped = True
            self._stopping.add(container.id)
            exited = self.wait(container.id, "not-running")
            try:
                if container.state.status == PAUSED:
                    self.runtime(container.runtime).resume(container.id)
                self._signal(container, signals.SIGKILL)
                exited.result(timeout=30)
            finally:
                self._stopping.discard(container.id)
        with self._lock:
            container.state.status = REMOVING
            self._attach_waiting.pop(container.id, None)
        self._cleanup_runtime(container)
        (self.exit_dir / container.id).unlink(missing_ok=True)
        if self.volumes is not None:
            remove_mounts(container, self.volumes, volumes)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (container.id,))
        with self._lock:
            self._containers.pop(container.id, None)
        self.events.publish("container", "destroy", container.id, **self._event_attributes(container))
        self._notify(container, ("removed", "not-running", "next-exit"))
        # Gone from the API and unmounted; its files go after the reply (IDs are never reused,
        # and a directory left by a crash is swept at the next start).
        self._janitor().submit(shutil.rmtree, self.path(container), ignore_errors=True)

    def _janitor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._janitor_pool is None:
                self._janitor_pool = concurrent.futures.ThreadPoolExecutor(1, "janitor")
            return self._janitor_pool

    def _sweep_orphans(self) -> None:
        """Remove container directories no record names (their removal was cut short)."""
        for entry in os.scandir(self.dir):
            if entry.is_dir(follow_symlinks=False) and entry.name not in self._containers:
                target = Path(entry.path)
                if not rootfs.is_mounted(target / "rootfs"):
                    shutil.rmtree(target, ignore_errors=True)

    def rename(self, ref: str, new_name: str) -> None:
        container = self.get(ref)
        new_name = model.validate_name(new_name)
        with self._lock:
            for other in self._containers.values():
                if other.name == new_name and other.id != container.id:
                    raise Conflict(
                        f'Conflict. The container name "/{new_name}" is already in use by container '
                        f'"{other.id}". '
                        "You have to remove (or rename) that container to be able to reuse that name."
                    )
            old = container.name
            container.name = new_name
            self._save(container)
        self.events.publish(
            "container", "rename", container.id, **self._event_attributes(container, oldName=f"/{old}")
        )

    def prune(self, keep: Callable[[Container], bool]) -> tuple[list[str], int]:
        removed, reclaimed = [], 0
        for container in self.list():
            if container.running or container.state.status in (RESTARTING, REMOVING) or keep(container):
                continue
            reclaimed += _tree_size(self.path(container) / "upper")
            self.remove(container.id)
            removed.append(container.id)
        return removed, reclaimed

    # -- daemon restart ------------------------------------------------------------------------

    def recover(self) -> None:
        """After kapald (re)starts: reattach to containers whose conmon lives, finish the others."""
        for container in self.list():
            status = container.state.status
            if status in (RUNNING, PAUSED):
                if _is_conmon(container.state.conmon_pid, container.id) and self.watcher.watch(
                    container.state.conmon_pid, container.id
                ):
                    for listener in self.listeners:
                        listener.started(container)
                    self._watch_log(container)
                    continue
                self._on_monitor_exit(container.id)
            elif status == RESTARTING:
                container.state.status = EXITED
                self._save(container)
            elif status == REMOVING:
                self.remove(container.id, force=True)
        for container in self.list():
            if container.state.status == EXITED and _restarts_with_the_daemon(container):
                container.manually_stopped = False
                try:
                    self._start(container)
                except KapalError as error:
                    log.warning("restarting %s after daemon start failed: %s", container.short_id, error)

    def usage(self, container: Container) -> int:
        return _tree_size(self.path(container) / "upper")

    def close(self) -> None:
        self.watcher.stop()
        self.log_rotator.stop()
        if self._janitor_pool is not None:
            self._janitor_pool.shutdown(wait=True)


class _NotModified(KapalError):
    """The container already is in the state asked for (HTTP 304)."""

    http_status = 304


NotModified = _NotModified


def _restarts_with_the_daemon(container: Container) -> bool:
    """Docker's rule at daemon start: ``always`` even after a manual stop, ``unless-stopped``
    unless stopped by hand, ``on-failure`` after a failure with retries left; never a container
    that was never started."""
    if container.state.started_at == model.ZERO_TIME:
        return False
    policy = container.host_config.get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    if name == "always":
        return True
    if name == "unless-stopped":
        return not container.manually_stopped
    if name == "on-failure":
        limit = int(policy.get("MaximumRetryCount") or 0)
        return container.state.exit_code != 0 and (limit == 0 or container.restart_count < limit)
    return False


def _merged_config(image_config: dict[str, Any], body: dict[str, Any], image_name: str) -> dict[str, Any]:
    """The container's Config as inspect shows it: the request, with the image's defaults filled in."""
    config = {key: value for key, value in body.items() if key not in ("HostConfig", "NetworkingConfig")}
    env = list(image_config.get("Env") or [])
    for item in body.get("Env") or []:
        key = item.partition("=")[0]
        env = [e for e in env if e.partition("=")[0] != key] + [item]
    config["Env"] = env or None
    if "Entrypoint" not in body or body.get("Entrypoint") is None:
        config["Entrypoint"] = image_config.get("Entrypoint")
        if not body.get("Cmd"):
            config["Cmd"] = image_config.get("Cmd")
    for key in ("WorkingDir", "User", "StopSignal"):
        if not body.get(key) and image_config.get(key):
            config[key] = image_config[key]
    labels = dict(image_config.get("Labels") or {})
    labels.update(body.get("Labels") or {})
    config["Labels"] = labels
    volumes = dict(image_config.get("Volumes") or {})
    volumes.update(body.get("Volumes") or {})
    config["Volumes"] = volumes or None
    exposed = dict(image_config.get("ExposedPorts") or {})
    exposed.update(body.get("ExposedPorts") or {})
    if exposed:
        config["ExposedPorts"] = exposed
    if image_config.get("Healthcheck") and not body.get("Healthcheck"):
        config["Healthcheck"] = image_config["Healthcheck"]
    config["Image"] = image_name
    return config


def _add_init(spec: dict[str, Any]) -> None:
    """``--init``: tini as PID 1, bind-mounted where Docker puts its docker-init."""
    tini = shutil.which("tini-static") or shutil.which("docker-init")
    if tini is None:
        raise InvalidArgument("--init needs tini-static on the host (apt-get install tini)")
    spec["mounts"].append(
        {
            "destination": "/sbin/docker-init",
            "type": "bind",
            "source": tini,
            "options": ["rbind", "ro", "rprivate"],
        }
    )
    spec["process"]["args"] = ["/sbin/docker-init", "--", *spec["process"]["args"]]


def _log_limits(container: Container) -> tuple[int | None, int]:
    """json-file's ``max-size`` and ``max-file`` (1 unless rotation is asked for)."""
    options = (container.host_config.get("LogConfig") or {}).get("Config") or {}
    value, files = options.get("max-size"), options.get("max-file") or "1"
    try:
        max_file = int(files)
    except ValueError:
        raise InvalidArgument(f"invalid value for max-file: {files!r}") from None
    if max_file < 1:
        raise InvalidArgument("max-file cannot be less than 1")
    if not value:
        if max_file > 1:
            raise InvalidArgument("max-file can only be used with max-size")
        return None, 1
    from kapal.units import from_human_size

    try:
        return from_human_size(value), max_file
    except ValueError as error:
        raise InvalidArgument(f"invalid max-size {value!r}: {error}") from None


def _logs_enabled(container: Container) -> bool:
    return (container.host_config.get("LogConfig") or {}).get("Type", "json-file") != "none"


def _write_json(path: Path, value: Any) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _is_conmon(pid: int, container_id: str) -> bool:
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"conmon" in cmdline and container_id.encode() in cmdline


def _is_container_init(pid: int, conmon_pid: int) -> bool:
    """Whether *pid* still is the container's first process (a child of its conmon)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return int(fields[1]) == conmon_pid


def _tree_size(path: Path) -> int:
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total
