"""The build service: ``POST /build`` and ``/build/prune`` without the HTTP.

It receives the context, finds and parses the Dockerfile, runs the build
(:mod:`kapal.build.builder`), registers and tags the image, and reports in
Docker's messages. Its working files live under ``<data root>/builder``; a
build's directory goes when the build ends, and start-up clears what a crash
left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kapal import reference
from kapal.build import instructions as ins
from kapal.build.builder import (
    Build,
    BuildError,
    BuildOptions,
    Cancellation,
    ContextArrival,
    StageOutput,
    State,
    short,
    unsupported_flag_error,
)
from kapal.build.cache import BuildCache
from kapal.build.context import BuildContext, clean, locate_dockerfile
from kapal.build.run import RunRequest, run_container
from kapal.errors import InvalidArgument, NotFound
from kapal.image import manifest as mf
from kapal.image.store import Image, familiar

log = logging.getLogger("kapald")
Emit = Callable[[dict[str, Any]], None]


@dataclass
class PreparedBuild:
    context: BuildContext
    dockerfile: Any
    options: BuildOptions
    workdir: Path
    cancellation: Cancellation
    early: EarlyBuild | None = None  # the build, when it started before the context was all in

    def discard(self) -> None:
        self.context.close()
        _remove_tree(self.workdir)


class HeldOutput:
    """The messages of a build that started before its response: held until the response starts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[dict[str, Any]] = []
        self._emit: Emit | None = None

    def __call__(self, message: dict[str, Any]) -> None:
        with self._lock:  # emitting under the lock keeps the order across threads
            if self._emit is None:
                self._held.append(message)
            else:
                self._emit(message)

    def attach(self, emit: Emit) -> None:
        with self._lock:
            for message in self._held:
                emit(message)
            self._held.clear()
            self._emit = emit


class EarlyBuild:
    """A build started on its Dockerfile while the rest of the context is still arriving.

    It runs on its own thread with its output held; when the context is in and its
    Dockerfile proves to be the one the build started on, the request goes on with it.
    Otherwise (a bad context, or a later entry of the same name) it is cancelled and
    waited for, and nothing it did is shown.
    """

    def __init__(self, service: BuildService, prepared: PreparedBuild, name: str, data: bytes) -> None:
        self.prepared = prepared
        self.name = name
        self.data = data
        self.arrival = ContextArrival()
        self.output = HeldOutput()
        self.result: concurrent.futures.Future[str] = concurrent.futures.Future()
        prepared.early = self

        def run() -> None:
            try:
                self.result.set_result(service.execute(prepared, self.output, self.arrival))
            except BaseException as error:  # noqa: BLE001 - handed to whoever waits for the result
                self.result.set_exception(error)

        threading.Thread(target=run, name="build-early", daemon=True).start()

    def abandon(self) -> None:
        self.prepared.cancellation.cancel()
        self.arrival.failed()
        concurrent.futures.wait([self.result])


class BuildService:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.root = Path(engine.root) / "builder"
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "cache-mounts").mkdir(exist_ok=True)
        for stale in (self.root / "builds").glob("*") if (self.root / "builds").is_dir() else []:
            _remove_tree(stale)
        (self.root / "builds").mkdir(exist_ok=True)
        self.cache: BuildCache = engine.build_cache
        self.loop: asyncio.AbstractEventLoop | None = None  # the daemon's, for pulls

    # -- what the builder asks of the engine ------------------------------------------------

    def shell_lex(self, escape: str) -> Any:
        from kapal.build.shell import ShellLex

        return ShellLex(escape)

    def parse_instruction(self, text: str, escape: str) -> Any:
        from kapal.build.dockerfile import parse_instruction

        return parse_instruction(text, escape=escape)

    def run(
        self,
        bundle: Path,
        rootfs: Path,
        request: RunRequest,
        output: Callable[[bytes], None],
        container_id: str | None = None,
        cancellation: Cancellation | None = None,
    ) -> tuple[str, int]:
        containers = self.engine.containers
        runtime = containers.runtime(None)
        return run_container(
            runtime,
            containers.host,
            containers.cgroup_layout,
            bundle,
            rootfs,
            request,
            output,
            container_id,
            networks=self.engine.networks,
            cancellation=cancellation,
        )

    def cache_mount_dir(self, cache_id: str) -> Path:
        directory = self.root / "cache-mounts" / hashlib.sha256(cache_id.encode()).hexdigest()[:32]
        directory.mkdir(exist_ok=True)
        return directory

    def pull(
        self,
        name: str,
        platform: str | None,
        options: BuildOptions,
        output: StageOutput,
        cancellation: Cancellation | None = None,
    ) -> Image:
        """An image the build needs and does not have, through the engine's registry client.

        The pull runs on the daemon's event loop (where the registry sessions live); its
        progress messages go into the build's stream, as dockerd's legacy builder shows them.
        """
        ref = reference.parse(name)
        distribution = getattr(type(self.engine), "distribution", None)
        if distribution is None or self.loop is None:
            raise NotFound(
                f"pull access denied for {ref.familiar_repository}, repository does not exist or may require "
                "'docker login'"
            )
        from kapal.distribution.credentials import auth_key, decode_config_header

        credentials = decode_config_header(options.registry_config)
        chosen = credentials.get(auth_key(ref.domain))
        if chosen is None:
            from kapal.distribution.credentials import Credentials

            chosen = Credentials()

        def emit(message: dict[str, Any]) -> None:
            output.direct(message)

        future = asyncio.run_coroutine_threadsafe(
            self.engine.distribution.pull(str(ref), "", chosen, emit, platform), self.loop
        )
        with (cancellation or Cancellation()).guard(future.cancel):
            try:
                future.result()
            except concurrent.futures.CancelledError:
                raise BuildError("context canceled") from None
        return self.engine.images.get(str(ref))

    # -- a build ----------------------------------------------------------------------------

    def prepare(self, body: BinaryIO, options: BuildOptions) -> PreparedBuild:
        """Receive the context and read the Dockerfile: what fails here fails the request itself.

        The build itself starts as soon as the Dockerfile has arrived (see :class:`EarlyBuild`).
        """
        from kapal.build.dockerfile import parse_dockerfile

        for tag in options.tags:
            try:
                reference.parse(tag)
            except InvalidArgument as error:
                raise InvalidArgument(f"invalid tag {tag!r}: {error}") from None
        workdir = Path(tempfile.mkdtemp(prefix="build-", dir=self.root / "builds"))
        wanted = clean(options.dockerfile or "Dockerfile")
        early: EarlyBuild | None = None

        def on_file(context: BuildContext, name: str, data: bytes) -> None:
            nonlocal early
            if early is not None or name != wanted:
                return
            try:
                dockerfile = parse_dockerfile(data, posixpath_base(name))
                _refuse_labs_flags(dockerfile)
            except Exception:  # noqa: BLE001 - reported once the whole context is in
                return
            prepared = PreparedBuild(context, dockerfile, options, workdir, Cancellation())
            early = EarlyBuild(self, prepared, name, data)

        context: BuildContext | None = None
        try:
            context = BuildContext.receive(body, workdir, on_file)
            name, data = locate_dockerfile(context, options.dockerfile)
            self._apply_dockerignore(context, name)
            if early is not None and (early.name, early.data) == (name, data):
                early.arrival.arrived()
                return early.prepared
            if early is not None:  # a later entry of the same name won: start over
                early.abandon()
                early = None
                _remove_tree(workdir, keep=context.spool_path)
            dockerfile = parse_dockerfile(data, posixpath_base(name))
            _refuse_labs_flags(dockerfile)
        except BaseException:
            if early is not None:
                early.abandon()
                context = early.prepared.context
            if context is not None:
                context.close()
            _remove_tree(workdir)
            raise
        return PreparedBuild(context, dockerfile, options, workdir, Cancellation())

    def run_build(self, prepared: PreparedBuild, emit: Emit) -> str:
        """Run a prepared build (or go on with the one already running); returns the image ID."""
        try:
            if prepared.early is not None:
                prepared.early.output.attach(emit)
                return prepared.early.result.result()
            return self.execute(prepared, emit)
        finally:
            prepared.discard()

    def abandon(self, prepared: PreparedBuild) -> None:
        """A prepared build whose client went away before it ran: stopped, its files removed."""
        if prepared.early is not None:
            prepared.early.abandon()
        prepared.discard()

    def execute(self, prepared: PreparedBuild, emit: Emit, arrival: ContextArrival | None = None) -> str:
        """Build, register and tag the image. Messages go to *emit*.

        With *arrival*, the context may still be arriving: the image is registered only once
        it is all in, so a request that fails on its context tags nothing.
        """
        options = prepared.options
        for warning in getattr(prepared.dockerfile, "warnings", []) or []:
            if not options.quiet:
                emit({"stream": f"[Warning] {warning}\n"})
        with self.engine.content.leases.lease() as lease:
            build = Build(
                self,
                prepared.dockerfile,
                prepared.context,
                options,
                prepared.workdir,
                lease,
                emit,
                prepared.cancellation,
                arrival,
            )
            state = build.run()
            if arrival is not None:
                arrival.wait()
            image = self._register(state, options, lease)
        emit({"aux": {"ID": image.id}})
        if options.quiet:
            emit({"stream": f"{image.id}\n"})
        else:
            emit({"stream": f"Successfully built {short(image.id)}\n"})
            for tag in options.tags:
                emit({"stream": f"Successfully tagged {familiar(str(reference.parse(tag)))}\n"})
        return image.id

    def build(self, body: BinaryIO, options: BuildOptions, emit: Emit) -> str:
        return self.run_build(self.prepare(body, options), emit)

    def _apply_dockerignore(self, context: BuildContext, dockerfile_name: str) -> None:
        from kapal.build.dockerignore import IgnoreMatcher, read_ignore_patterns

        patterns_text = context.read_file(f"{dockerfile_name}.dockerignore")
        if patterns_text is None:
            patterns_text = context.read_file(".dockerignore")
        if patterns_text is None:
            return
        patterns = read_ignore_patterns(patterns_text)
        if not patterns:
            return
        matcher = IgnoreMatcher(patterns)
        context.exclude(matcher.matches)

    def _register(self, state: State, options: BuildOptions, lease: Any) -> Image:
        images = self.engine.images
        tags = [str(reference.parse(tag)) for tag in options.tags]
        try:
            existing = images.get_by_id(state.id)
        except NotFound:
            existing = None
        if existing is None:
            config_bytes = mf.canonical_json(state.config)
            config_digest = images.content.put_bytes(config_bytes, lease=lease)
            if config_digest != state.id:
                raise InvalidArgument("internal error: the image config does not hash to its state ID")
            layers = [mf.Descriptor(layer.media_type, layer.blob, layer.size) for layer in state.layers]
            manifest_digest = images.content.put_bytes(
                mf.build_manifest(config_digest, len(config_bytes), layers), lease=lease
            )
            image, _ = images.register(manifest_digest, lease, tags)
        else:
            image = existing
            for tag in tags:
                ref = reference.parse(tag)
                images.tag(image.id, ref.repository, ref.tag)
        for tag in tags:
            images.events.publish("image", "tag", image.id, name=familiar(tag))
        return images.get_by_id(image.id)

    # -- prune ------------------------------------------------------------------------------

    def prune(self, all_entries: bool = True, keep_storage: int = 0) -> tuple[list[str], int]:
        """Drop cache records (oldest use first) and sweep what they held; returns (IDs, bytes)."""
        entries = self.cache.entries()
        entries.sort(key=lambda e: e["last_used"])
        total = sum(e["size"] for e in entries)
        removed: list[str] = []
        reclaimed = 0
        for entry in entries:
            if keep_storage and total - reclaimed <= keep_storage:
                break
            removed.append(entry["key"])
            reclaimed += entry["size"]
        self.cache.remove(removed)
        shutil.rmtree(self.root / "cache-mounts", ignore_errors=True)
        (self.root / "cache-mounts").mkdir(exist_ok=True)
        self.engine.images.collect_garbage()
        return [key.partition(":")[2][:25] for key in removed], reclaimed


def _refuse_labs_flags(dockerfile: Any) -> None:
    """What the legacy builder refuses while parsing, refused before the build starts as there."""
    for stage in dockerfile.stages:
        for command in stage.commands:
            if isinstance(command, ins.Copy) and (command.exclude or command.parents):
                raise InvalidArgument(unsupported_flag_error(command))


def posixpath_base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _remove_tree(path: Path, keep: Path | None = None) -> None:
    """A build directory (all of it but *keep*): unmount what a crash left mounted in it, remove it."""
    from kapal.runtime import rootfs

    if not path.is_dir():
        return
    for child in path.iterdir():
        if rootfs.is_mounted(child):
            rootfs.unmount(child)
    if keep is None:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        if child != keep:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
