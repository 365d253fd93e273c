"""The dispatcher: a parsed Dockerfile and a context become an image, step by step.

It follows Docker's legacy builder (what ``DOCKER_BUILDKIT=0 docker build``
talks to): each instruction is one step printed as ``Step N/M : …``; metadata
instructions change only the config (a history entry marked ``empty_layer``);
RUN, COPY, ADD and WORKDIR commit what they changed as a layer. Every step is
looked up in the cache first (see :mod:`kapal.build.cache`). Unlike the legacy
builder, stages the target does not need are skipped and independent stages
build at the same time, as BuildKit does; their output is still printed one
stage after the other.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import posixpath
import secrets
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kapal import reference
from kapal.build import instructions as ins
from kapal.build.cache import BuildCache, cache_key
from kapal.build.context import DIR, FILE, BuildContext, Entry
from kapal.build.copy import (
    RootfsTree,
    Source,
    copy_sources,
    parse_chmod,
    parse_chown,
    resolve_sources,
    scoped_path,
)
from kapal.build.run import RunRequest
from kapal.build.snapshot import LayerRef, Snapshot
from kapal.content.lease import Lease
from kapal.errors import InvalidArgument, KapalError, NotFound
from kapal.image import manifest as mf
from kapal.image.store import Image
from kapal.runtime import rootfs as rootfs_mount
from kapal.runtime.spec import DEFAULT_PATH, replace_or_append_env

Emit = Callable[[dict[str, Any]], None]

PROXY_ARGS = frozenset(
    {
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    }
)
DEFAULT_SHELL = ["/bin/sh", "-c"]
_FS_KEYWORDS = ("RUN", "COPY", "ADD", "WORKDIR")


class BuildError(KapalError):
    """A step failed; the message is Docker's (e.g. a RUN's non-zero exit code)."""

    http_status = 400

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Cancellation:
    """A build's off switch: set when its client goes away (dockerd cancels the build's context).

    Steps check it before they start; a RUN under way registers how to kill its container.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._kills: dict[int, Callable[[], None]] = {}

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            kills = list(self._kills.values())
        for kill in kills:
            try:
                kill()
            except Exception:  # noqa: BLE001 - the others still go
                logging.getLogger("kapald").exception("cancelling a build step")

    def check(self) -> None:
        if self._event.is_set():
            raise BuildError("context canceled")

    @contextmanager
    def guard(self, kill: Callable[[], None]) -> Iterator[None]:
        """While the block runs, cancelling calls *kill* (at once if cancelled already)."""
        token = id(kill)
        with self._lock:
            self._kills[token] = kill
            cancelled = self._event.is_set()
        if cancelled:
            kill()
        try:
            yield
        finally:
            with self._lock:
                self._kills.pop(token, None)


class ContextArrival:
    """The context of a build that started before all of it arrived.

    A build starts as soon as its Dockerfile is in, while the rest of the request body is
    still being read: FROM, RUN and the metadata steps need nothing else. What does need
    the context (COPY and ADD from it, RUN --mount from it) and registering the image wait
    here until it is all in, ``.dockerignore`` applied; if it never is, they fail.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._failed = False

    def arrived(self) -> None:
        self._event.set()

    def failed(self) -> None:
        self._failed = True
        self._event.set()

    def wait(self) -> None:
        self._event.wait()
        if self._failed:
            raise BuildError("context canceled")


@dataclass
class BuildOptions:
    tags: list[str] = field(default_factory=list)  # full references
    dockerfile: str = "Dockerfile"
    build_args: dict[str, str | None] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    no_cache: bool = False
    pull: bool = False
    rm: bool = True
    force_rm: bool = False
    quiet: bool = False
    network: str = ""
    platform: str = ""
    cache_from: list[str] = field(default_factory=list)
    secrets: dict[str, bytes] = field(default_factory=dict)
    registry_config: str = ""  # X-Registry-Config: credentials for the images FROM pulls


@dataclass
class State:
    """An image being built: its whole config and its layers (bottom first)."""

    config: dict[str, Any]
    layers: list[LayerRef]
    id: str  # the config's digest: the image ID this state would have

    @property
    def run_config(self) -> dict[str, Any]:
        return self.config.setdefault("config", {})

    @classmethod
    def of(cls, config: dict[str, Any], layers: list[LayerRef]) -> State:
        return cls(config, layers, "sha256:" + hashlib.sha256(mf.canonical_json(config)).hexdigest())


def short(image_id: str) -> str:
    return image_id.partition(":")[2][:12]


def _rfc3339(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


# -- output ---------------------------------------------------------------------------------------


class StageOutput:
    """Messages of stages built in parallel, sent in stage order.

    The stage being shown streams live; a later stage's messages wait until
    every stage before it has finished.
    """

    def __init__(self, emit: Emit, quiet: bool) -> None:
        self._emit = emit
        self._quiet = quiet
        self._lock = threading.Lock()
        self._order: list[int] = []
        self._buffers: dict[int, list[dict[str, Any]]] = {}
        self._done: set[int] = set()
        self._current = 0

    def set_order(self, order: list[int]) -> None:
        self._order = order

    def stream(self, stage: int, text: str) -> None:
        if not self._quiet and text:
            self.message(stage, {"stream": text})

    def message(self, stage: int, message: dict[str, Any]) -> None:
        with self._lock:
            if self._current < len(self._order) and self._order[self._current] == stage:
                self._emit(message)
            else:
                self._buffers.setdefault(stage, []).append(message)

    def finish(self, stage: int) -> None:
        with self._lock:
            self._done.add(stage)
            while self._current < len(self._order) and self._order[self._current] in self._done:
                self._current += 1
                if self._current < len(self._order):
                    for message in self._buffers.pop(self._order[self._current], []):
                        self._emit(message)

    def direct(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._emit(message)


# -- the build ------------------------------------------------------------------------------------


class Build:
    """One build: a Dockerfile, its context and options, against the engine's stores."""

    def __init__(
        self,
        service: Any,  # kapal.build.service.BuildService
        dockerfile: ins.Dockerfile,
        context: BuildContext,
        options: BuildOptions,
        workdir: Path,
        lease: Lease,
        emit: Emit,
        cancellation: Cancellation | None = None,
        arrival: ContextArrival | None = None,
    ) -> None:
        self.service = service
        self.cancellation = cancellation or Cancellation()
        self.engine = service.engine
        self.cache: BuildCache = service.cache
        self.dockerfile = dockerfile
        self._context = context
        self._arrival = arrival
        self.options = options
        self.workdir = workdir
        self.lease = lease
        self.output = StageOutput(emit, options.quiet)
        self.platform = mf.parse_platform(options.platform) if options.platform else mf.host_platform()
        self.consumed: set[str] = set()
        self._consumed_lock = threading.Lock()
        self._stage_futures: dict[int, Future[State]] = {}
        self._mount_counter = 0
        self._cache_sources: list[State] | None = None
        self._counter_lock = threading.Lock()
        epoch = options.build_args.get("SOURCE_DATE_EPOCH")
        try:
            self.source_date_epoch = int(epoch) if epoch not in (None, "") else None
        except ValueError:
            raise InvalidArgument(f"invalid SOURCE_DATE_EPOCH {epoch!r}: want seconds since 1970") from None
        self.meta_args = self._meta_args()

    @property
    def context(self) -> BuildContext:
        """The whole context (waiting for the rest of it when the build started early)."""
        if self._arrival is not None:
            self._arrival.wait()
        return self._context

    # -- planning ---------------------------------------------------------------------------

    def _platform_args(self) -> dict[str, str]:
        host = mf.host_platform()
        target = self.platform

        def label(p: dict[str, str]) -> str:
            return "/".join(p[k] for k in ("os", "architecture", "variant") if p.get(k))

        return {
            "TARGETPLATFORM": label(target),
            "TARGETOS": target["os"],
            "TARGETARCH": target["architecture"],
            "TARGETVARIANT": target.get("variant", ""),
            "BUILDPLATFORM": label(host),
            "BUILDOS": host["os"],
            "BUILDARCH": host["architecture"],
            "BUILDVARIANT": host.get("variant", ""),
        }

    def _meta_args(self) -> dict[str, str | None]:
        """The args before the first FROM (plus the platform args), with their values."""
        values: dict[str, str | None] = dict(self._platform_args())
        lex = self.service.shell_lex(self.dockerfile.escape)
        for arg in self.dockerfile.meta_args:
            for definition in arg.args:
                default = definition.default
                if default is not None:
                    env = {k: v for k, v in values.items() if v is not None}
                    default = lex.process_word(default, env)
                given = self.options.build_args.get(definition.name)
                if definition.name in self.options.build_args and given is not None:
                    values[definition.name] = given
                    self._consume(definition.name)
                else:
                    values[definition.name] = default
        return values

    def _consume(self, name: str) -> None:
        with self._consumed_lock:
            self.consumed.add(name)

    def _expand_meta(self, word: str) -> str:
        lex = self.service.shell_lex(self.dockerfile.escape)
        return lex.process_word(word, {k: v for k, v in self.meta_args.items() if v is not None})

    def _stage_ref(self, name: str, before: int) -> int | None:
        """The index of the stage *name* names (by AS name or index) among the first *before*."""
        stage = self.dockerfile.stage(name)
        if stage is not None and stage.index < before:
            return stage.index
        return None

    def _dependencies(self, stage: ins.Stage) -> set[int]:
        deps: set[int] = set()
        base = self._stage_ref(self._expand_meta(stage.base.image), stage.index)
        if base is not None:
            deps.add(base)
        for command in stage.commands:
            names: list[str] = []
            if isinstance(command, ins.Copy) and command.from_:
                names.append(command.from_)
            if isinstance(command, ins.Run):
                names += [m.options["from"] for m in command.mounts if m.options.get("from")]
            for name in names:
                try:
                    name = self._expand_meta(name)
                except KapalError:
                    pass
                index = self._stage_ref(name, stage.index)
                if index is not None:
                    deps.add(index)
        return deps

    def _plan(self) -> tuple[int, list[int]]:
        stages = self.dockerfile.stages
        if not stages:
            raise InvalidArgument("the Dockerfile has no FROM instruction (file with no instructions)")
        if self.options.target:
            target = self.dockerfile.stage(self.options.target)
            if target is None:
                raise InvalidArgument(f"failed to reach build target {self.options.target} in Dockerfile")
        else:
            target = stages[-1]
        needed: set[int] = set()
        pending = [target.index]
        while pending:
            index = pending.pop()
            if index in needed:
                continue
            needed.add(index)
            pending.extend(self._dependencies(stages[index]))
        return target.index, sorted(needed)

    # -- running ----------------------------------------------------------------------------

    def run(self) -> State:
        target, needed = self._plan()
        order = needed
        self.output.set_order(order)
        steps = {index: 1 + len(self.dockerfile.stages[index].commands) for index in order}
        if self.options.labels:
            steps[target] += 1
        total = sum(steps.values())
        first: dict[int, int] = {}
        number = 1
        for index in order:
            first[index] = number
            number += steps[index]
        deps = {index: self._dependencies(self.dockerfile.stages[index]) for index in order}
        workers = max(1, min(len(order), 4))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="build-stage") as pool:
            futures: dict[int, Future[State]] = {}
            for index in order:
                futures[index] = pool.submit(
                    self._build_stage_after, index, deps[index], first[index], total, target
                )
            self._stage_futures = futures
            try:
                result = futures[target].result()
                for future in futures.values():
                    future.result()
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
        unused = sorted(
            name
            for name in self.options.build_args
            if name not in self.consumed and name not in PROXY_ARGS and name != "SOURCE_DATE_EPOCH"
        )
        if unused and not self.options.quiet:
            self.output.direct(
                {"stream": f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed\n"}
            )
        return result

    def _build_stage_after(self, index: int, deps: set[int], first: int, total: int, target: int) -> State:
        try:
            for dep in deps:
                self._stage_futures_wait(dep)
            return StageBuilder(
                self, self.dockerfile.stages[index], first, total, index == target
            ).build_stage()
        finally:
            self.output.finish(index)

    def _stage_futures_wait(self, index: int) -> State:
        while index not in self._stage_futures:
            time.sleep(0.001)
        return self._stage_futures[index].result()

    def stage_state(self, index: int) -> State:
        return self._stage_futures_wait(index)

    def mount_point(self, label: str) -> Path:
        with self._counter_lock:
            self._mount_counter += 1
            number = self._mount_counter
        return self.workdir / f"{label}-{number}"

    # -- --cache-from -----------------------------------------------------------------------

    def cache_sources(self) -> list[State]:
        """The ``--cache-from`` images present here (a missing one is skipped, as dockerd does)."""
        with self._counter_lock:
            if self._cache_sources is None:
                sources = []
                for name in self.options.cache_from:
                    try:
                        sources.append(self.state_of_image(self.engine.images.get(name)))
                    except KapalError:
                        continue
                self._cache_sources = sources
            return self._cache_sources

    def from_cache_sources(
        self, parent: State, created_by: str
    ) -> tuple[LayerRef | None, dict[str, Any]] | None:
        """A step of a ``--cache-from`` image that continues *parent* with *created_by*, as dockerd's
        image cache matches one: the parent's history and layers are the image's first ones, and
        the image's next history entry was made by the same command. Returns (layer, history entry)."""
        if not self.options.cache_from:
            return None
        history = parent.config.get("history") or []
        depth = len(parent.layers)
        for source in self.cache_sources():
            theirs = source.config.get("history") or []
            if len(theirs) <= len(history):
                continue
            if [h.get("created_by") for h in theirs[: len(history)]] != [
                h.get("created_by") for h in history
            ]:
                continue
            if [layer.diff_id for layer in source.layers[:depth]] != [
                layer.diff_id for layer in parent.layers
            ]:
                continue
            entry = theirs[len(history)]
            if entry.get("created_by") != created_by:
                continue
            if entry.get("empty_layer"):
                return None, entry
            if len(source.layers) <= depth:
                continue
            return source.layers[depth], entry
        return None

    # -- images -----------------------------------------------------------------------------

    def image_state(self, name: str, platform: str | None) -> State:
        """The state of an image by name, pulled when missing (or always, with ``pull``)."""
        images = self.engine.images
        image: Image | None = None
        if not self.options.pull:
            try:
                image = images.get(name)
            except NotFound:
                image = None
        if image is None:
            image = self.service.pull(
                name, platform or self.options.platform or None, self.options, self.output, self.cancellation
            )
        return self.state_of_image(image)

    def state_of_image(self, image: Image) -> State:
        images = self.engine.images
        manifest = mf.Manifest.parse(images.content.read_bytes(image.manifest_digest))
        layers = []
        for (diff_id, blob), descriptor in zip(image.layers, manifest.layers):
            self.lease.add(diff_id)
            self.lease.add(blob)
            layers.append(LayerRef(diff_id, blob, descriptor.size, descriptor.media_type))
        return State(copy.deepcopy(image.config), layers, image.id)

    def lowers(self, state: State) -> list[str]:
        return [str(self.engine.layers.path(layer.diff_id)) for layer in reversed(state.layers)]

    def snapshot(self, state: State, label: str) -> Snapshot:
        return Snapshot(
            self.engine.layers,
            self.engine.content,
            self.lowers(state),
            self.mount_point(label),
            self.workdir / "empty",
        )

    @contextmanager
    def mounted(self, state: State) -> Iterator[str]:
        """A read-only view of a state's filesystem (COPY --from, RUN --mount from=)."""
        target = self.mount_point("from")
        lowers = self.lowers(state)
        target.mkdir(parents=True, exist_ok=True)
        if not lowers:
            yield str(target)
            return
        if len(lowers) == 1:
            mount_bind_ro(lowers[0], target)
        else:
            mount_lower_only(lowers, target)
        try:
            yield str(target)
        finally:
            rootfs_mount.unmount(target)


def mount_lower_only(lowers: list[str], target: Path) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    options = f"lowerdir={':'.join(lowers)}"
    if libc.mount(b"overlay", str(target).encode(), b"overlay", 1, options.encode()) != 0:
        raise InvalidArgument(f"mounting an image read-only: {os.strerror(ctypes.get_errno())}")


def mount_bind_ro(source: str, target: Path) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_bind, ms_rdonly, ms_remount = 4096, 1, 32
    if libc.mount(source.encode(), str(target).encode(), None, ms_bind, None) != 0:
        raise InvalidArgument(f"mounting a layer read-only: {os.strerror(ctypes.get_errno())}")
    libc.mount(None, str(target).encode(), None, ms_bind | ms_remount | ms_rdonly, None)


# -- one stage ------------------------------------------------------------------------------------


class HeredocTree:
    """``COPY <<EOF /dest``: inline files as a source tree."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self._root = Entry("", DIR, 0o755)

    def lookup(self, name: str) -> Entry | None:
        if not name:
            return self._root
        data = self.files.get(name)
        if data is None:
            return None
        return Entry(name, FILE, 0o644, size=len(data), mtime=time.time())

    def children(self, name: str) -> list[str]:
        return sorted(self.files) if not name else []

    def copy_to(self, entry: Entry, fd: int) -> None:
        view = memoryview(self.files[entry.name])
        while view:
            view = view[os.write(fd, view) :]


class StageBuilder:
    def __init__(self, build: Build, stage: ins.Stage, first_step: int, total: int, is_target: bool) -> None:
        self.build = build
        self.stage = stage
        self.step = first_step
        self.total = total
        self.is_target = is_target
        self.index = stage.index
        self.args: dict[str, str | None] = {}  # ARGs declared in this stage
        self.cmd_set = False
        self.cached = True
        self.lex = build.service.shell_lex(build.dockerfile.escape)
        self.state: State | None = None

    # -- helpers ----------------------------------------------------------------------------

    def out(self, text: str) -> None:
        self.build.output.stream(self.index, text)

    def env_map(self) -> dict[str, str]:
        """What words expand with: the declared args, overridden by ENV."""
        values = {k: v for k, v in self.args.items() if v is not None}
        for item in self.config.get("Env") or []:
            key, _, value = item.partition("=")
            values[key] = value
        return values

    def expand(self, word: str) -> str:
        return self.lex.process_word(word, self.env_map())

    @property
    def config(self) -> dict[str, Any]:
        assert self.state is not None
        return self.state.run_config

    def build_args_in_use(self) -> list[str]:
        """``k=v`` of the declared args a RUN sees (not shadowed by ENV), sorted: the ``|N`` of history."""
        env_keys = {item.partition("=")[0] for item in self.config.get("Env") or []}
        pairs = {k: v for k, v in self.args.items() if v is not None and k not in env_keys}
        return [f"{k}={v}" for k, v in sorted(pairs.items())]

    def proxy_args(self) -> list[str]:
        """The proxy variables given as build args and not declared: RUN sees them, yet they are in
        neither the history nor the cache key (as in Docker: a proxy is the host's business)."""
        given = self.build.options.build_args
        return [
            f"{name}={given[name]}"
            for name in sorted(PROXY_ARGS)
            if given.get(name) is not None and name not in self.args
        ]

    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    def now(self) -> str:
        epoch = self.build.source_date_epoch
        return _rfc3339(epoch if epoch is not None else time.time())

    def new_state(
        self,
        config: dict[str, Any],
        created_by: str,
        layer: LayerRef | None,
        author: str | None = None,
        history: dict[str, Any] | None = None,
    ) -> State:
        """The state after a step: *config*, one more history entry, and the step's layer if any.

        *history* is the entry of a ``--cache-from`` image whose step this one reuses.
        """
        assert self.state is not None
        whole = copy.deepcopy(self.state.config)
        whole["config"] = config
        if author:
            whole["author"] = author
        if history is not None:
            entry = dict(history)
            created = str(entry.get("created") or self.now())
        else:
            created = self.now()
            entry = {"created": created, "created_by": created_by}
            if whole.get("author"):
                entry["author"] = whole["author"]
            if layer is None:
                entry["empty_layer"] = True
        whole["created"] = created
        layers = list(self.state.layers)
        rootfs = whole.setdefault("rootfs", {"type": "layers", "diff_ids": []})
        rootfs["diff_ids"] = list(rootfs.get("diff_ids") or [])
        if layer is not None:
            layers.append(layer)
            rootfs["diff_ids"].append(layer.diff_id)
        whole["history"] = [*(whole.get("history") or []), entry]
        for stale in ("container", "container_config", "docker_version", "id", "parent"):
            whole.pop(stale, None)
        return State.of(whole, layers)

    def step_header(self, command: ins.Command) -> None:
        self.out(f"Step {self.step}/{self.total} : {command.original}\n")
        self.step += 1

    # -- the stage --------------------------------------------------------------------------

    def build_stage(self) -> State:
        self.step_header(self.stage.base)
        self.dispatch_from(self.stage.base)
        self.out(f" ---> {short(self.state.id)}\n")  # type: ignore[union-attr]
        commands = list(self.stage.commands)
        if self.is_target and self.build.options.labels:
            pairs = [ins.KeyValue(k, v) for k, v in sorted(self.build.options.labels.items())]
            text = " ".join(f'"{k}"="{v}"' for k, v in sorted(self.build.options.labels.items()))
            commands.append(ins.Label("LABEL", 0, f"LABEL {text}", pairs=pairs))
        for command in commands:
            self.build.cancellation.check()
            self.step_header(command)
            self.dispatch(command, trigger=False)
            self.out(f" ---> {short(self.state.id)}\n")  # type: ignore[union-attr]
        assert self.state is not None
        return self.state

    def dispatch_from(self, command: ins.From) -> None:
        name = self.build._expand_meta(command.image)
        platform = self.build._expand_meta(command.platform) if command.platform else None
        if not name:
            raise InvalidArgument(f"base name ({command.image}) should not be blank")
        stage_index = self.build._stage_ref(name, self.index)
        if stage_index is not None:
            base = self.build.stage_state(stage_index)
            self.state = State(copy.deepcopy(base.config), list(base.layers), base.id)
        elif name.lower() == "scratch":
            config = {
                "architecture": self.build.platform["architecture"],
                "os": self.build.platform["os"],
                "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }
            if self.build.platform.get("variant"):
                config["variant"] = self.build.platform["variant"]
            self.state = State.of(config, [])
        else:
            try:
                reference.parse(name)
            except InvalidArgument:
                raise InvalidArgument(
                    f"invalid reference format: repository name ({name}) must be lowercase"
                ) from None
            self.state = self.build.image_state(name, platform)
        triggers = list(self.config.get("OnBuild") or [])
        if triggers:
            self.config["OnBuild"] = None
            self.state = State.of(self.state.config, self.state.layers)
            plural = "s" if len(triggers) > 1 else ""
            self.out(f"# Executing {len(triggers)} build trigger{plural}\n")
            for text in triggers:
                trigger = self.build.service.parse_instruction(text, self.build.dockerfile.escape)
                if trigger.keyword in ("ONBUILD", "FROM", "MAINTAINER"):
                    raise InvalidArgument(f"{trigger.keyword} isn't allowed as an ONBUILD trigger")
                self.dispatch(trigger, trigger=True)

    # -- dispatch ---------------------------------------------------------------------------

    def dispatch(self, command: ins.Command, trigger: bool) -> None:
        keyword = command.keyword
        if isinstance(command, ins.Arg):
            self.dispatch_arg(command)
            return
        expanded = command.expand(self.expand) if not isinstance(command, ins.Run) else command
        handler = getattr(self, f"do_{keyword.lower()}", None)
        if handler is None:
            raise InvalidArgument(f"unknown instruction: {keyword}")
        handler(expanded)

    def cached_step(
        self,
        key_parts: list[Any],
        execute: Callable[[], State],
        created_by: str,
        config_after: Callable[[], dict[str, Any]],
        author: str | None = None,
    ) -> None:
        """Look the step up in the cache (or the ``--cache-from`` images), else execute it and
        remember the result. *config_after* is the run config the step leaves (for a reused step)."""
        assert self.state is not None
        options = self.build.options
        epoch = self.build.source_date_epoch
        key = cache_key(self.state.id, *key_parts, epoch)
        if not options.no_cache and self.cached:
            record = self.build.cache.get(key)
            if record is not None and all(
                self.build.engine.layers.get(layer.diff_id) is not None
                and self.build.engine.content.exists(layer.blob)
                for layer in record.layers
            ):
                for layer in record.layers:
                    self.build.lease.add(layer.diff_id)
                    self.build.lease.add(layer.blob)
                self.state = State.of(record.config, record.layers)
                self.out(" ---> Using cache\n")
                return
            reused = self.build.from_cache_sources(self.state, created_by)
            if reused is not None:
                layer, entry = reused
                self.state = self.new_state(config_after(), created_by, layer, author, history=entry)
                self.build.cache.put(key, self.state.config, self.state.layers, layer.size if layer else 0)
                self.out(" ---> Using cache\n")
                return
        self.cached = False
        state = execute()
        added = state.layers[-1] if len(state.layers) > len(self.state.layers) else None
        self.build.cache.put(key, state.config, state.layers, added.size if added else 0)
        self.state = state

    def metadata(
        self,
        command: ins.Command,
        change: Callable[[dict[str, Any]], None],
        resolved: list[str] | None = None,
    ) -> None:
        """A step that only changes the config: ``#(nop)`` in history, no layer."""
        created_by = f"/bin/sh -c #(nop)  {command_text(command, resolved)}"

        def config_after() -> dict[str, Any]:
            config = copy.deepcopy(self.config)
            change(config)
            return config

        def execute() -> State:
            return self.new_state(config_after(), created_by, None)

        self.cached_step(
            [command.keyword, created_by, command_repr(command)], execute, created_by, config_after
        )

    # metadata instructions

    def do_env(self, command: ins.Env) -> None:
        def change(config: dict[str, Any]) -> None:
            config["Env"] = replace_or_append_env(
                config.get("Env") or [], [f"{p.key}={p.value}" for p in command.pairs]
            )

        self.metadata(command, change)

    def do_label(self, command: ins.Label) -> None:
        def change(config: dict[str, Any]) -> None:
            labels = dict(config.get("Labels") or {})
            for pair in command.pairs:
                labels[pair.key] = pair.value
            config["Labels"] = labels

        self.metadata(command, change)

    def do_maintainer(self, command: ins.Maintainer) -> None:
        created_by = f"/bin/sh -c #(nop)  MAINTAINER {command.name}"

        def config_after() -> dict[str, Any]:
            return copy.deepcopy(self.config)

        def execute() -> State:
            return self.new_state(config_after(), created_by, None, command.name)

        self.cached_step(["MAINTAINER", created_by], execute, created_by, config_after, command.name)

    def do_expose(self, command: ins.Expose) -> None:
        ports = expand_ports(command.ports)

        def change(config: dict[str, Any]) -> None:
            exposed = dict(config.get("ExposedPorts") or {})
            for port in ports:
                exposed[port] = {}
            config["ExposedPorts"] = exposed

        self.metadata(command, change)

    def do_user(self, command: ins.User) -> None:
        self.metadata(command, lambda config: config.__setitem__("User", command.user))

    def do_volume(self, command: ins.Volume) -> None:
        for path in command.paths:
            if not path.strip():
                raise InvalidArgument("VOLUME specified can not be an empty string")

        def change(config: dict[str, Any]) -> None:
            volumes = dict(config.get("Volumes") or {})
            for path in command.paths:
                volumes[path] = {}
            config["Volumes"] = volumes

        self.metadata(command, change)

    def do_stopsignal(self, command: ins.StopSignal) -> None:
        from kapal.container.service import parse_signal

        parse_signal(command.signal)
        self.metadata(command, lambda config: config.__setitem__("StopSignal", command.signal))

    def do_healthcheck(self, command: ins.Healthcheck) -> None:
        check: dict[str, Any] = {"Test": list(command.test)}
        for key, value in (
            ("Interval", command.interval),
            ("Timeout", command.timeout),
            ("StartPeriod", command.start_period),
            ("StartInterval", command.start_interval),
            ("Retries", command.retries),
        ):
            if value is not None:
                check[key] = value
        self.metadata(command, lambda config: config.__setitem__("Healthcheck", check))

    def do_shell(self, command: ins.Shell) -> None:
        if not command.args:
            raise InvalidArgument("SHELL requires at least one argument")
        self.metadata(command, lambda config: config.__setitem__("Shell", list(command.args)))

    def do_cmd(self, command: ins.Cmd) -> None:
        args = [*self.shell(), *command.args] if command.shell_form else list(command.args)

        def change(config: dict[str, Any]) -> None:
            config["Cmd"] = args

        self.metadata(command, change, args)
        self.cmd_set = True

    def do_entrypoint(self, command: ins.Entrypoint) -> None:
        if command.shell_form:
            args = [*self.shell(), *command.args] if command.args and command.args[0] else None
        else:
            args = list(command.args)
        cmd_set = self.cmd_set

        def change(config: dict[str, Any]) -> None:
            config["Entrypoint"] = args
            if not cmd_set:
                config["Cmd"] = None

        self.metadata(command, change, args or [])

    def do_onbuild(self, command: ins.Onbuild) -> None:
        keyword = command.trigger.split(None, 1)[0].upper() if command.trigger.strip() else ""
        if keyword == "ONBUILD":
            raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if keyword in ("FROM", "MAINTAINER"):
            raise InvalidArgument(f"{keyword} isn't allowed as an ONBUILD trigger")

        def change(config: dict[str, Any]) -> None:
            config["OnBuild"] = [*(config.get("OnBuild") or []), command.trigger]

        self.metadata(command, change)

    def dispatch_arg(self, command: ins.Arg) -> None:
        given = self.build.options.build_args
        for definition in command.args:
            name = definition.name
            value: str | None
            if name in given and given[name] is not None:
                value = given[name]
            elif definition.default is not None:
                value = self.expand(definition.default)
            elif name in self.build.meta_args:
                value = self.build.meta_args[name]
            else:
                value = None
            self.args[name] = value
            self.build._consume(name)
        text = " ".join(f"{d.name}={d.default}" if d.default is not None else d.name for d in command.args)
        created_by = f"/bin/sh -c #(nop)  ARG {text}"

        def config_after() -> dict[str, Any]:
            return copy.deepcopy(self.config)

        def execute() -> State:
            return self.new_state(config_after(), created_by, None)

        self.cached_step(["ARG", created_by], execute, created_by, config_after)

    # filesystem instructions

    def do_workdir(self, command: ins.Workdir) -> None:
        path = command.path
        if not path.startswith("/"):
            path = posixpath.join(self.config.get("WorkingDir") or "/", path)
        path = posixpath.normpath(path)
        if path.startswith("//"):
            path = path[1:]
        created_by = f"/bin/sh -c #(nop) WORKDIR {path}"

        def config_after() -> dict[str, Any]:
            config = copy.deepcopy(self.config)
            config["WorkingDir"] = path
            return config

        def execute() -> State:
            assert self.state is not None
            config = config_after()
            snapshot = self.build.snapshot(self.state, "workdir")
            try:
                root = str(snapshot.mount())
                host = scoped_path(root, path)
                if not os.path.isdir(host):
                    os.makedirs(host, 0o755, exist_ok=True)
                layer = snapshot.commit(self.build.lease, self.build.source_date_epoch)
            except BaseException:
                snapshot.discard()
                raise
            return self.new_state(config, created_by, layer)

        self.cached_step(["WORKDIR", path], execute, created_by, config_after)

    def do_run(self, command: ins.Run) -> None:
        shell = self.shell()
        if command.shell_form:
            text = command.args[0] if command.args else ""
            if command.heredocs:
                text = heredoc_script(text, command.heredocs)
            args = [*shell, text]
        else:
            args = list(command.args)
        if not args:
            raise InvalidArgument("RUN requires at least one argument")
        build_args = self.build_args_in_use()
        prefix = f"|{len(build_args)} {' '.join(build_args)} " if build_args else ""
        created_by = prefix + " ".join(args)
        # RUN --network=default is the build's network (networkmode), as in BuildKit
        network = command.network if command.network not in (None, "", "default") else ""
        network = network or self.build.options.network or ""
        run_mounts = command.mounts
        if getattr(command, "mount_specs", None):
            from kapal.build.dockerfile import parse_mount

            run_mounts = [parse_mount(spec, self.expand) for spec in command.mount_specs]
        mounts = [dataclasses.asdict(m) for m in run_mounts]

        def execute() -> State:
            assert self.state is not None
            config = copy.deepcopy(self.config)
            snapshot = self.build.snapshot(self.state, "run")
            try:
                root = snapshot.mount()
                with self.run_mounts(run_mounts, str(root)) as oci_mounts:
                    env = replace_or_append_env([*self.proxy_args(), *build_args], config.get("Env") or [])
                    request = RunRequest(
                        args=args,
                        env=env,
                        user=str(config.get("User") or ""),
                        workdir=str(config.get("WorkingDir") or ""),
                        network=network,
                        mounts=oci_mounts,
                    )
                    container_id = secrets.token_hex(32)
                    self.out(f" ---> Running in {container_id[:12]}\n")
                    container_id, code = self.build.service.run(
                        self.build.workdir / f"bundle-{container_id[:12]}",
                        root,
                        request,
                        self.run_output,
                        container_id,
                        self.build.cancellation,
                    )
                    self.build.cancellation.check()
                    self.out(f" ---> Removed intermediate container {container_id[:12]}\n")
                if code != 0:
                    raise BuildError(f"The command '{' '.join(args)}' returned a non-zero code: {code}", code)
                snapshot.unmount()
                snapshot.drop_runtime_entries()
                self.drop_mount_points(snapshot)
                layer = snapshot.commit(self.build.lease, self.build.source_date_epoch)
            except BaseException:
                snapshot.discard()
                raise
            return self.new_state(config, created_by, layer)

        self.cached_step(
            ["RUN", args, build_args, network, mounts],
            execute,
            created_by,
            lambda: copy.deepcopy(self.config),
        )

    def run_output(self, chunk: bytes) -> None:
        self.out(chunk.decode("utf-8", "replace"))

    @contextmanager
    def run_mounts(self, mounts: list[ins.Mount], root: str) -> Iterator[list[dict[str, Any]]]:
        """``RUN --mount``: cache, bind, tmpfs and secret mounts as OCI mounts."""
        self._created_targets: list[str] = []
        oci: list[dict[str, Any]] = []
        cleanups: list[Callable[[], None]] = []
        try:
            for mount in mounts:
                options = dict(mount.options)
                target = options.get("target") or options.get("dst") or options.get("destination") or ""
                if mount.type == "secret":
                    secret_id = options.get("id") or posixpath.basename(target)
                    target = target or f"/run/secrets/{secret_id}"
                if not target:
                    raise InvalidArgument(f"RUN --mount=type={mount.type}: a target is required")
                if not target.startswith("/"):
                    target = posixpath.join(self.config.get("WorkingDir") or "/", target)
                if not os.path.lexists(scoped_path(root, target)):
                    self._created_targets.append(target)
                readonly = options.get("readonly", "true" if mount.type == "bind" else "false") in (
                    "",
                    "true",
                )
                if mount.type == "cache":
                    cache_id = options.get("id") or target
                    directory = self.build.service.cache_mount_dir(cache_id)
                    if ("mode" in options or "uid" in options or "gid" in options) and not any(
                        directory.iterdir()
                    ):
                        os.chown(directory, int(options.get("uid", 0)), int(options.get("gid", 0)))
                        os.chmod(directory, int(options.get("mode", "755"), 8))
                    oci.append(_bind(str(directory), target, readonly))
                elif mount.type == "tmpfs":
                    tmpfs_options = ["nosuid", "nodev"]
                    if options.get("size"):
                        tmpfs_options.append(f"size={options['size']}")
                    oci.append(
                        {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": tmpfs_options}
                    )
                elif mount.type == "bind":
                    source = options.get("source") or options.get("src") or ""
                    path, cleanup = self.bind_source(options.get("from"), source)
                    cleanups.append(cleanup)
                    oci.append(_bind(path, target, readonly))
                elif mount.type == "secret":
                    secret_id = options.get("id") or posixpath.basename(target)
                    data = self.build.options.secrets.get(secret_id)
                    if data is None:
                        if options.get("required") in ("", "true"):
                            raise InvalidArgument(f"secret {secret_id} not found")
                        continue
                    secret_dir = self.build.mount_point("secret")
                    secret_dir.mkdir(parents=True, exist_ok=True)
                    secret_file = secret_dir / "secret"
                    secret_file.write_bytes(data)
                    os.chmod(secret_file, int(options.get("mode", "400"), 8))
                    os.chown(secret_file, int(options.get("uid", 0)), int(options.get("gid", 0)))
                    cleanups.append(lambda d=secret_dir: shutil.rmtree(d, ignore_errors=True))
                    oci.append(_bind(str(secret_file), target, True))
                elif mount.type == "ssh":
                    raise InvalidArgument("RUN --mount=type=ssh is not supported by this builder")
                else:
                    raise InvalidArgument(f"unsupported mount type {mount.type!r}")
            yield oci
        finally:
            for cleanup in reversed(cleanups):
                cleanup()

    def drop_mount_points(self, snapshot: Snapshot) -> None:
        """Mount points the runtime created for RUN --mount are not part of the layer."""
        for target in sorted(getattr(self, "_created_targets", []), key=len, reverse=True):
            path = str(snapshot.upper) + posixpath.normpath(target)
            while path != str(snapshot.upper):
                try:
                    if os.path.isdir(path) and not os.path.islink(path):
                        os.rmdir(path)
                    elif os.path.isfile(path) and os.path.getsize(path) == 0:
                        os.unlink(path)
                    else:
                        break
                except OSError:
                    break
                path = os.path.dirname(path)

    def bind_source(self, from_: str | None, source: str) -> tuple[str, Callable[[], None]]:
        """The host path a ``--mount=type=bind`` names: in the context, a stage or an image."""
        if not from_:
            directory = self.build.mount_point("bind")
            directory.mkdir(parents=True)
            name = source.strip("/")
            context = self.build.context
            found = resolve_sources(context, [name or "."], "RUN --mount", True)[0]
            if found.entry.kind == DIR:
                copy_sources(context, [found], "/", "/", str(directory), None, None, "RUN")
                return str(directory), lambda: shutil.rmtree(directory, ignore_errors=True)
            copy_sources(context, [found], "/", "/", str(directory), None, None, "RUN")
            return str(directory / posixpath.basename(found.name)), lambda: shutil.rmtree(
                directory, ignore_errors=True
            )
        state = self.source_state(from_)
        manager = self.build.mounted(state)
        root = manager.__enter__()
        return scoped_path(root, source or "/"), lambda: manager.__exit__(None, None, None)

    def source_state(self, name: str) -> State:
        index = self.build._stage_ref(name, self.index)
        if index is not None:
            return self.build.stage_state(index)
        return self.build.image_state(name, None)

    def do_copy(self, command: ins.Copy) -> None:
        keyword = command.keyword
        owner_spec = command.chown
        chmod = parse_chmod(command.chmod)
        dest = command.dest
        workdir = self.config.get("WorkingDir") or "/"
        if command.is_add and command.from_:
            raise InvalidArgument("ADD does not support the --from option")
        if command.exclude or command.parents:
            raise InvalidArgument(unsupported_flag_error(command))
        sources = list(command.sources)
        urls = [s for s in sources if command.is_add and _is_url(s)]
        local = [s for s in sources if s not in urls]
        if command.checksum and (not urls or len(sources) != 1):
            raise InvalidArgument("ADD --checksum only works with an HTTP(S) source")
        trees: list[tuple[Any, list[Source], bool]] = []
        key_sources: list[Any] = []
        from_state: State | None = None
        if command.from_:
            from_state = self.source_state(command.from_)
            key_sources.append(["from", from_state.id, local])
        elif local:
            found = resolve_sources(self.build.context, local, keyword, True)
            trees.append((self.build.context, found, True))
            key_sources += [[s.original, s.name, self.build.context.checksum(s.name)] for s in found]
        downloads: list[tuple[str, Path]] = []
        for url in urls:
            path = self.build.mount_point("download")
            digest = download(url, path, command.checksum)
            downloads.append((url, path))
            key_sources.append(["url", url, digest])
        heredoc_files = {}
        for heredoc in command.heredocs:
            heredoc_files[heredoc.name] = heredoc.content.encode()
        if heredoc_files:
            key_sources.append(
                ["heredoc", sorted((k, hashlib.sha256(v).hexdigest()) for k, v in heredoc_files.items())]
            )
        count = sum(len(found) for _, found, _ in trees) + len(urls) + len(heredoc_files)
        parts = [keyword, dest, workdir, owner_spec, command.chmod, key_sources]
        created_by = f"/bin/sh -c #(nop) {keyword} " + " ".join(
            [*(str(p[-1]) for p in key_sources), "in", dest]
        )

        def execute() -> State:
            assert self.state is not None
            snapshot = self.build.snapshot(self.state, "copy")
            try:
                root = str(snapshot.mount())
                owner = parse_chown(root, owner_spec)
                total = count
                upper = str(snapshot.upper)
                if from_state is not None:
                    with self.build.mounted(from_state) as source_root:
                        tree = RootfsTree(source_root)
                        found = resolve_sources(tree, local, keyword, False)
                        total += len(found)
                        copy_sources(tree, found, dest, workdir, root, owner, chmod, keyword, upper=upper)
                for tree, found, is_context in trees:
                    copy_sources(
                        tree,
                        found,
                        dest,
                        workdir,
                        root,
                        owner,
                        chmod,
                        keyword,
                        unpack_archives=command.is_add and is_context and command.unpack is not False,
                        upper=upper,
                    )
                for url, path in downloads:
                    self.place_download(url, path, dest, total, workdir, root, owner, chmod)
                if heredoc_files:
                    tree = HeredocTree(heredoc_files)
                    found = [Source(name, tree.lookup(name), name) for name in sorted(heredoc_files)]  # type: ignore[misc]
                    copy_sources(tree, found, dest, workdir, root, owner, chmod, keyword)
                layer = snapshot.commit(self.build.lease, self.build.source_date_epoch)
            except BaseException:
                snapshot.discard()
                raise
            finally:
                for _, path in downloads:
                    shutil.rmtree(path, ignore_errors=True)
            return self.new_state(copy.deepcopy(self.config), created_by, layer)

        try:
            self.cached_step(parts, execute, created_by, lambda: copy.deepcopy(self.config))
        finally:
            for _, path in downloads:
                shutil.rmtree(path, ignore_errors=True)

    do_add = do_copy

    def place_download(
        self,
        url: str,
        path: Path,
        dest: str,
        total: int,
        workdir: str,
        root: str,
        owner: Any,
        chmod: int | None,
    ) -> None:
        from kapal.build.copy import Writer

        name = posixpath.basename(urllib.parse.urlparse(url).path)
        dest_is_dir = dest.endswith("/") or total > 1
        if not dest.startswith("/"):
            dest = posixpath.join(workdir, dest)
        writer = Writer(root, owner, chmod)
        if dest_is_dir or os.path.isdir(scoped_path(root, dest)):
            if not name:
                raise InvalidArgument(f"cannot determine filename from url: {url}")
            parent = writer.mkdirs(dest)
            target = os.path.join(parent, name)
        else:
            parent = writer.mkdirs(posixpath.dirname(dest.rstrip("/")) or "/")
            target = os.path.join(parent, posixpath.basename(dest.rstrip("/")))
        file = path / "data"
        st = os.stat(file)
        entry = Entry(
            name,
            FILE,
            chmod if chmod is not None else 0o600,
            size=st.st_size,
            mtime=st.st_mtime,
            path=str(file),
        )
        writer.write(RootfsTree(str(path)), entry, target)


def unsupported_flag_error(command: ins.Copy) -> str:
    """dockerd's legacy builder parses without the labs flags: ``--exclude`` and ``--parents`` are
    unknown flags there (BuildKit only, behind ``# syntax=docker/dockerfile:1-labs``)."""
    flag = "--exclude" if command.exclude else "--parents"
    return f"dockerfile parse error on line {command.line}: unknown flag: {flag}"


def _bind(source: str, target: str, readonly: bool) -> dict[str, Any]:
    options = ["rbind", "rprivate"] + (["ro"] if readonly else [])
    return {"destination": target, "type": "bind", "source": source, "options": options}


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def download(url: str, directory: Path, checksum: str | None) -> str:
    """ADD's URL source: fetched into ``directory/data``; returns its sha256 (checked against --checksum)."""
    import email.utils
    import urllib.request

    directory.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    target = directory / "data"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                hasher.update(chunk)
                out.write(chunk)
            modified = response.headers.get("Last-Modified")
    except OSError as error:
        raise BuildError(f"failed to GET {url}: {error}") from None
    digest = "sha256:" + hasher.hexdigest()
    if checksum:
        if not checksum.startswith("sha256:"):
            raise InvalidArgument(f"unsupported digest algorithm in --checksum {checksum!r} (want sha256:…)")
        if checksum != digest:
            raise BuildError(f"digest mismatch {digest}: {checksum}")
    if modified:
        try:
            stamp = email.utils.parsedate_to_datetime(modified).timestamp()
            os.utime(target, (stamp, stamp))
        except (TypeError, ValueError):
            pass
    return digest


def heredoc_script(text: str, heredocs: list[ins.Heredoc]) -> str:
    """A shell-form RUN with heredocs: the script alone when the command is just ``<<EOF``, else the
    command with its here-documents for the shell to read (as BuildKit runs them)."""
    stripped = text.strip()
    if (
        len(heredocs) == 1
        and stripped.lstrip("<-").strip("'\"") == heredocs[0].name
        and stripped.startswith("<<")
    ):
        return heredocs[0].content
    parts = [text]
    for heredoc in heredocs:
        content = (
            heredoc.content
            if heredoc.content.endswith("\n") or not heredoc.content
            else heredoc.content + "\n"
        )
        parts.append(f"{content}{heredoc.name}")
    return "\n".join(parts)


def expand_ports(ports: list[str]) -> list[str]:
    """EXPOSE's ports as the config keys them: ``80/tcp``; ranges become each port."""
    result = []
    for port in ports:
        number, _, proto = port.partition("/")
        proto = (proto or "tcp").lower()
        if proto not in ("tcp", "udp", "sctp"):
            raise InvalidArgument(f"invalid proto: {proto}")
        low, _, high = number.partition("-")
        try:
            start = int(low)
            end = int(high) if high else start
        except ValueError:
            raise InvalidArgument(f"invalid containerPort: {number}") from None
        if not 0 < start <= end <= 65535:
            raise InvalidArgument(f"invalid port range: {number}")
        result += [f"{p}/{proto}" for p in range(start, end + 1)]
    return result


def _go_quoted(values: list[str]) -> str:
    """Go's ``%q`` of a string slice, as the legacy builder writes CMD and ENTRYPOINT in history."""
    return "[" + " ".join(json.dumps(value, ensure_ascii=False) for value in values) + "]"


def command_text(command: ins.Command, resolved: list[str] | None = None) -> str:
    """The instruction as the legacy builder's history records it (after expansion)."""
    if isinstance(command, ins.Env | ins.Label):
        pairs = " ".join(f"{p.key}={p.value}" for p in command.pairs)
        return f"{command.keyword} {pairs}"
    if isinstance(command, ins.Cmd | ins.Entrypoint):
        return f"{command.keyword} {_go_quoted(resolved if resolved is not None else command.args)}"
    if isinstance(command, ins.Shell):
        return f"SHELL [{' '.join(command.args)}]"
    if isinstance(command, ins.Expose):
        return f"EXPOSE {' '.join(expand_ports(command.ports))}"
    if isinstance(command, ins.Volume):
        return f"VOLUME [{' '.join(command.paths)}]"
    if isinstance(command, ins.User):
        return f"USER {command.user}"
    if isinstance(command, ins.StopSignal):
        return f"STOPSIGNAL {command.signal}"
    if isinstance(command, ins.Onbuild):
        return f"ONBUILD {command.trigger}"
    if isinstance(command, ins.Healthcheck):
        return f"HEALTHCHECK {command.original.split(None, 1)[1] if ' ' in command.original else ''}"
    return command.original


def command_repr(command: ins.Command) -> str:
    """The whole expanded instruction, for the cache key (its line and spelling left out)."""
    return repr(dataclasses.replace(command, line=0, original=""))
