"""The engine: every service of one data root, wired together.

The daemon owns one Engine; tests may build one directly. Nothing here speaks
HTTP.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kapal.build.cache import BuildCache
from kapal.container.exec import ExecService
from kapal.container.health import HealthMonitor
from kapal.container.service import ContainerService, RuntimeOptions
from kapal.content.lease import LeaseRegistry
from kapal.content.store import ContentStore
from kapal.errors import Conflict
from kapal.events import EventBus
from kapal.image.layers import LayerStore
from kapal.image.store import ImageStore
from kapal.metadata import Database
from kapal.network.service import NetworkOptions, NetworkService
from kapal.volume.service import VolumeService

if TYPE_CHECKING:
    from kapal.distribution.service import Distribution

log = logging.getLogger("kapald")


class Engine:
    def __init__(
        self,
        data_root: str | os.PathLike,
        exec_root: str | os.PathLike | None = None,
        runtime_options: RuntimeOptions | None = None,
        network_options: NetworkOptions | None = None,
    ) -> None:
        self.root = Path(data_root)
        self.exec_root = Path(exec_root) if exec_root else self.root / "exec"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o710)
        self._lock_fd = os.open(self.root / "kapal.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise Conflict(f"data root {self.root} is in use by another kapald") from None
        self.id = self._engine_id()
        self.db = Database(self.root / "kapal.db")
        self.leases = LeaseRegistry()
        self.content = ContentStore(self.root / "content", self.leases)
        self.layers = LayerStore(self.root / "layers", self.db, self.leases)
        self.events = EventBus()
        self.images = ImageStore(self.db, self.content, self.layers, self.events)
        # The build cache's layers and blobs are GC roots from the start, builder in use or not.
        self.build_cache = BuildCache(self.db)
        self.images.extra_layer_roots = lambda: self.build_cache.roots()[0]  # type: ignore[method-assign]
        self.images.extra_blob_roots = lambda: self.build_cache.roots()[1]  # type: ignore[method-assign]
        self._runtime_options = runtime_options or RuntimeOptions()
        self._network_options = network_options or NetworkOptions()
        self._containers: ContainerService | None = None
        self._execs: ExecService | None = None
        self._networks: NetworkService | None = None
        self._volumes: VolumeService | None = None
        self._builder: Any = None
        self.registry_options: Any = None  # kapal.distribution.client.RegistryOptions, set by the daemon
        self._distribution: Any = None

    @property
    def containers(self) -> ContainerService:
        """The container service, started on first use (image-only tools never need a runtime)."""
        if self._containers is None:
            self._containers = ContainerService(
                self.root,
                self.exec_root,
                self.db,
                self.images,
                self.layers,
                self.events,
                self._runtime_options,
            )
            self._containers.network = self.networks
            self.networks.containers = self._containers
            self._containers.volumes = self.volumes
        return self._containers

    @property
    def volumes(self) -> VolumeService:
        """Volumes, and the mount points of the containers that reference them."""
        if self._volumes is None:
            self._volumes = VolumeService(self.root, self.db, self.events)
        return self._volumes

    @property
    def networks(self) -> NetworkService:
        """Networks and published ports; the host's network is untouched until a container needs it."""
        if self._networks is None:
            self._networks = NetworkService(self.db, self._network_options, self.events)
        return self._networks

    @property
    def builder(self) -> Any:
        """The image builder (kapal.build.service.BuildService), made on first use."""
        if self._builder is None:
            from kapal.build.service import BuildService

            self._builder = BuildService(self)
        return self._builder

    @property
    def distribution(self) -> Distribution:
        """Pull, push and login; aiohttp is loaded only when a registry is first used."""
        if self._distribution is None:
            from kapal.distribution.service import Distribution

            self._distribution = Distribution(self.images, self.db, self.registry_options)
        return self._distribution

    async def close_distribution(self) -> None:
        """Close the registry client's connections (from the event loop they belong to)."""
        if self._distribution is not None:
            await self._distribution.close()

    @property
    def execs(self) -> ExecService:
        if self._execs is None:
            self._execs = ExecService(self.containers)
            self.containers.listeners.append(HealthMonitor(self.containers, self._execs))
        return self._execs

    def _engine_id(self) -> str:
        path = self.root / "engine-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            engine_id = str(uuid.uuid4())
            tmp = path.with_suffix(".tmp")
            tmp.write_text(engine_id)
            os.replace(tmp, path)
            return engine_id

    def recover(self) -> None:
        """Clear what a crash left half-done, and pick up the containers that kept running."""
        self.execs  # noqa: B018 - wires the health monitor before containers are picked up
        self.networks.recover()  # adopt bridges and rules of containers that outlived the last daemon
        self.containers.recover()
        self.builder  # noqa: B018 - clears what an interrupted build left (mounts, work dirs)
        running = [c for c in self.containers.list() if c.running]
        self.networks.drop_stale({c.id for c in running})
        self.networks.resume(running)
        ingests = self.content.remove_abandoned_ingests()
        self.layers.remove_abandoned()
        blobs, layers = self.images.collect_garbage()
        if ingests or blobs or layers:
            log.info(
                "recovered: %d abandoned ingests, %d unreferenced blobs, %d unreferenced layers removed",
                ingests,
                len(blobs),
                len(layers),
            )

    def close(self) -> None:
        if self._containers is not None:
            self._containers.close()
        if self._networks is not None:
            self._networks.close()
        self.db.close()
        os.close(self._lock_fd)
