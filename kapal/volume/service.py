"""The volume service: Docker's ``local`` volume driver and its volume store, in one place.

A volume is a directory, ``<data root>/volumes/<name>/_data`` (the volume
directory ``0701``, ``_data`` ``0755``, as dockerd makes them), and a row in the
metadata database with its driver, labels and options. Containers' mount points
live in the database too (``mount_points``): a volume some container names there
is *in use* — it cannot be removed and is not pruned — exactly as dockerd counts
a container's reference on a volume from its create to its removal.

The ``local`` driver's ``type``/``device``/``o`` options are honoured as dockerd
does: the device is mounted on ``_data`` (with mount(8), so ``o=bind`` and the
NFS/CIFS helpers work) when the first container using the volume starts, and
unmounted when the last one stops. The ``size`` option needs filesystem quotas,
which kapal does not manage; it is refused with dockerd's message for a host
without quota support.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kapal.errors import Conflict, InvalidArgument, KapalError, NotFound, StorageError
from kapal.events import EventBus
from kapal.metadata import Database

log = logging.getLogger("kapald")

DEFAULT_DRIVER = "local"
# dockerd labels the volumes it names itself; `volume prune` (without --all) removes only those.
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
NAME_RE = re.compile(f"^{NAME_CHARS}+$")
DATA_DIR = "_data"
_TRASH_PREFIX = ".trash-"
_VALID_OPTIONS = ("type", "o", "device", "size")
# An option that needs others beside it (the local driver's `mandatoryOpts`).
_REQUIRED_WITH = (("device", ("type",)), ("type", ("device",)), ("o", ("device", "type")))
LIST_FILTERS = {"dangling", "driver", "label", "name"}
PRUNE_FILTERS = {"label", "label!", "all"}

Filters = dict[str, list[str]]


@dataclass
class Volume:
    name: str
    driver: str
    mountpoint: Path  # the _data directory: what containers mount
    created: float
    labels: dict[str, str] | None = None
    options: dict[str, str] | None = None
    scope: str = "local"

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in (self.labels or {})

    @property
    def needs_mount(self) -> bool:
        """Whether a device is mounted on ``_data`` while the volume is used (``type``/``device``)."""
        options = self.options or {}
        return bool(options.get("type") or options.get("device"))

    @property
    def created_at(self) -> str:
        """RFC 3339 in the daemon's time zone, whole seconds: how dockerd prints ``CreatedAt``."""
        return rfc3339_seconds(self.created)


def rfc3339_seconds(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(timestamp)).astimezone()
    text = moment.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@dataclass
class MountPoint:
    """One mount of a container (Docker's ``MountPoint``), as recorded at container create.

    Binds keep their host ``source``; volumes their ``name`` (the volume's path
    is looked up when needed, so a record never holds a stale one); tmpfs mounts
    their converted options in ``tmpfs_data``.
    """

    type: str  # "bind", "volume" or "tmpfs"
    destination: str
    source: str = ""
    name: str = ""
    driver: str = ""
    mode: str = ""  # the mode the user gave (`-v a:/b:ro,z`); "z" for volumes without one
    rw: bool = True
    propagation: str = ""
    anonymous: bool = False  # no source was given: `rm -v` and `run --rm` remove the volume
    copy_data: bool = False  # populate the volume from the image at the container's first start
    create_source: bool = False  # a `-v` bind: a missing host directory is created, not an error
    non_recursive: bool = False
    subpath: str = ""
    tmpfs_data: str = ""
    volume_labels: dict[str, str] | None = None  # for the volume's creation (--mount volume-label)
    volume_options: dict[str, str] | None = None
    active: bool = False  # mounted for the container's current run

    def to_record(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, text: str) -> MountPoint:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def validate_name(name: str) -> None:
    """The local driver's rule: the name becomes a directory under the volumes root."""
    if len(name) == 1:
        raise InvalidArgument(
            f"create {name}: volume name is too short, names should be at least two alphanumeric characters"
        )
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, only '
            f'"{NAME_CHARS}" are allowed. If you intended to pass a host directory, use absolute path'
        )


def validate_options(name: str, options: dict[str, str] | None) -> None:
    """The local driver's ``validateOpts``, with its messages."""
    if not options:
        return
    for key in options:
        if key not in _VALID_OPTIONS:
            raise InvalidArgument(f'create {name}: invalid option: "{key}"')
    if "size" in options:
        raise InvalidArgument(f"create {name}: quota size requested but no quota support")
    for key, needed in _REQUIRED_WITH:
        if key in options:
            for other in needed:
                if other not in options:
                    raise InvalidArgument(f'create {name}: missing required option: "{other}"')


def tree_size(path: Path | str) -> int:
    """Bytes in the files under *path*, each hard-linked inode once (dockerd's ``directory.Size``)."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if info.st_nlink > 1:
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    continue
                seen.add(key)
            total += info.st_size
    return total


_libc = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def mount_table() -> list[tuple[str, list[str]]]:
    """Every mount of the daemon's namespace: (mount point, optional fields like ``shared:1``).

    Read from /proc/self/mountinfo: ``os.path.ismount`` cannot see a bind
    mount whose source is on the same filesystem, and missing one would let a
    volume's removal delete through it into the bound host directory.
    """
    table = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            fields = line.split()
            point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            table.append((point, fields[6 : fields.index("-")]))
    return table


def mounts_under(path: Path | str) -> list[str]:
    """Mount points at or below *path*, deepest first."""
    real = os.path.realpath(path)
    prefix = real.rstrip("/") + "/"
    found = {point for point, _ in mount_table() if point == real or point.startswith(prefix)}
    return sorted(found, key=len, reverse=True)


def unmount_all(path: Path | str) -> None:
    """Unmount everything at or below *path* (stacked mounts included); detach what is busy."""
    for _ in range(64):
        mounted = mounts_under(path)
        if not mounted:
            return
        for point in mounted:
            if _libc.umount2(point.encode(), 0) != 0:
                _libc.umount2(point.encode(), _MNT_DETACH)
    raise StorageError(f"{path} is still mounted")


def _go_regex_search(pattern: str, text: str) -> bool | None:
    """``regexp.MatchString``: ``None`` when *pattern* does not compile (the filter value is skipped)."""
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return None


def _labels_match(labels: dict[str, str] | None, wanted: Iterable[str]) -> bool:
    """Every ``key`` or ``key=value`` given holds (dockerd's ``MatchKVList``)."""
    labels = labels or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _bool_filter(filters: Filters, key: str) -> bool | None:
    values = filters.get(key) or []
    if not values:
        return None
    value = values[-1].strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise InvalidArgument(f"invalid filter '{key}={values[-1]}'")


def _check_filter_keys(filters: Filters, allowed: set[str]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidArgument(f"invalid filter '{key}'")


class VolumeService:
    """Volumes of one data root, and the mount points that reference them."""

    def __init__(self, root: Path, db: Database, events: EventBus) -> None:
        self.dir = Path(root) / "volumes"
        self.dir.mkdir(parents=True, exist_ok=True)
        # As dockerd: others may traverse to a volume's _data (a remapped root must) but not list.
        os.chmod(self.dir, 0o701)
        self.db = db
        self.events = events
        self._lock = threading.RLock()
        self._prune_running = False
        self._content_locks: dict[str, threading.Lock] = {}
        self._volumes: dict[str, Volume] = {}
        # Container IDs referencing a volume. Recorded mount points answer it; the engine may
        # replace this (it is how dockerd's volume store asks for references).
        self.users: Callable[[str], list[str]] = self._referencing_containers
        for row in db.query("SELECT name, driver, labels, options, created FROM volumes"):
            volume = Volume(
                name=row["name"],
                driver=row["driver"],
                mountpoint=self.dir / row["name"] / DATA_DIR,
                created=row["created"],
                labels=json.loads(row["labels"]) if row["labels"] is not None else None,
                options=json.loads(row["options"]) if row["options"] is not None else None,
            )
            self._volumes[volume.name] = volume
        self._recover()

    def _recover(self) -> None:
        """Finish what a crash interrupted: half-removed volumes, mount points of vanished containers."""
        for entry in os.scandir(self.dir):
            trash = entry.name.startswith(_TRASH_PREFIX) and entry.is_dir(follow_symlinks=False)
            if trash and not mounts_under(entry.path):
                shutil.rmtree(entry.path, ignore_errors=True)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM mount_points WHERE container_id NOT IN (SELECT id FROM containers)")

    # -- volumes -------------------------------------------------------------------------------

    def create(
        self,
        name: str | None,
        driver: str | None = DEFAULT_DRIVER,
        labels: dict[str, str] | None = None,
        options: dict[str, str] | None = None,
    ) -> Volume:
        """Create a volume, or return the one of that name (dockerd's create is idempotent).

        A volume without a name is anonymous: it gets a random 64-hex name and
        the ``com.docker.volume.anonymous`` label, which ``volume prune`` looks for.
        """
        driver = driver or DEFAULT_DRIVER
        if not name:
            name = secrets.token_hex(32)
            labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
        if driver != DEFAULT_DRIVER:
            raise NotFound(
                f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found'
            )
        validate_name(name)
        options = {str(k): str(v) for k, v in options.items()} if options is not None else None
        labels = {str(k): str(v) for k, v in labels.items()} if labels is not None else None
        validate_options(name, options)
        with self._lock:
            existing = self._volumes.get(name)
            if existing is not None:
                return existing
            volume = Volume(
                name=name,
                driver=driver,
                mountpoint=self.dir / name / DATA_DIR,
                created=time.time(),
                labels=labels,
                options=options,
            )
            self._make_directories(volume)
            try:
                with self.db.transaction() as conn:
                    conn.execute(
                        "INSERT INTO volumes (name, driver, labels, options, created) VALUES (?, ?, ?, ?, ?)",
                        (
                            name,
                            driver,
                            json.dumps(labels) if labels is not None else None,
                            json.dumps(options) if options is not None else None,
                            volume.created,
                        ),
                    )
            except BaseException:
                shutil.rmtree(self.dir / name, ignore_errors=True)
                raise
            self._volumes[name] = volume
        self.events.publish("volume", "create", name, driver=driver)
        return volume

    def _make_directories(self, volume: Volume) -> None:
        try:
            # chmod after mkdir: the daemon's umask must not decide a volume's permissions.
            volume.mountpoint.parent.mkdir(exist_ok=True)
            os.chmod(volume.mountpoint.parent, 0o701)
            volume.mountpoint.mkdir(exist_ok=True)
            os.chmod(volume.mountpoint, 0o755)
        except OSError as error:
            shutil.rmtree(volume.mountpoint.parent, ignore_errors=True)
            raise StorageError(
                f"create {volume.name}: error while creating volume path '{volume.mountpoint}': "
                f"{error.strerror}"
            ) from None

    def get(self, name: str) -> Volume:
        with self._lock:
            volume = self._volumes.get(name)
        if volume is None:
            raise NotFound(f"get {name}: no such volume")
        return volume

    def path(self, name: str) -> Path:
        return self.get(name).mountpoint

    def list(self, filters: Filters | None = None) -> list[Volume]:
        """Volumes matching ``dangling``, ``driver``, ``label`` and ``name`` (a regular expression)."""
        filters = filters or {}
        _check_filter_keys(filters, LIST_FILTERS)
        dangling = _bool_filter(filters, "dangling")
        with self._lock:
            volumes = list(self._volumes.values())
        out = []
        for volume in volumes:
            if filters.get("driver") and volume.driver not in filters["driver"]:
                continue
            if "name" in filters and not any(
                value == volume.name or _go_regex_search(value, volume.name) for value in filters["name"]
            ):
                continue
            if not self._labels_pass(volume, filters):
                continue
            if dangling is not None and bool(self.users(volume.name)) == dangling:
                continue
            out.append(volume)
        return sorted(out, key=lambda v: v.name)

    @staticmethod
    def _labels_pass(volume: Volume, filters: Filters) -> bool:
        if filters.get("label") and not _labels_match(volume.labels, filters["label"]):
            return False
        return not (filters.get("label!") and _labels_match(volume.labels, filters["label!"]))

    def remove(self, name: str, force: bool = False) -> None:
        """Remove a volume and its data; refused while a container references it.

        ``force`` makes a missing volume no error and drops the record even if
        the data cannot be deleted (dockerd's purge-on-error); it never removes
        a volume in use.
        """
        with self._lock:
            volume = self._volumes.get(name)
            if volume is None:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            users = self.users(name)
            if users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            trash = self._detach_directory(volume, force)
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM volumes WHERE name = ?", (name,))
            del self._volumes[name]
            self._content_locks.pop(name, None)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        self.events.publish("volume", "destroy", name, driver=volume.driver)

    def _detach_directory(self, volume: Volume, force: bool) -> Path | None:
        """Move a volume's directory aside (to delete it outside the lock); ``None`` if there is none.

        Whatever is mounted in it (a device on ``_data``) is unmounted first:
        deleting through a mount would delete what it holds — a bind-mounted
        host directory, say.
        """
        directory = volume.mountpoint.parent
        try:
            unmount_all(directory)
            trash = self.dir / f"{_TRASH_PREFIX}{volume.name}-{secrets.token_hex(4)}"
            os.rename(directory, trash)
            return trash
        except FileNotFoundError:
            return None
        except (OSError, KapalError) as error:
            if force:
                log.warning("removing volume %s: %s; forgetting it anyway", volume.name, error)
                return None
            if isinstance(error, KapalError):
                raise
            raise StorageError(
                f"remove {volume.name}: error removing volume path '{directory}': {error.strerror}"
            ) from None

    def prune(self, filters: Filters | None = None) -> tuple[list[str], int]:
        """Remove unused local volumes: anonymous ones only, unless the ``all`` filter is true.

        Volumes with driver options are skipped as dockerd skips them: their
        data is not on this disk, so removing them reclaims nothing.
        """
        filters = dict(filters or {})
        _check_filter_keys(filters, PRUNE_FILTERS)
        all_values = filters.pop("all", [])
        if len(all_values) > 1:
            raise InvalidArgument(f"invalid filter 'all={all_values}': only one value is expected")
        prune_all = False
        if all_values:
            value = all_values[0].strip().lower()
            if value not in ("1", "t", "true", "0", "f", "false"):
                raise InvalidArgument(
                    f"invalid filter 'all': strconv.ParseBool: parsing \"{all_values[0]}\": invalid syntax"
                )
            prune_all = value in ("1", "t", "true")
        if not prune_all:
            filters["label"] = [*filters.get("label", []), ANONYMOUS_LABEL]
        with self._lock:
            if self._prune_running:
                raise Conflict("a prune operation is already running")
            self._prune_running = True
        try:
            removed: list[str] = []
            reclaimed = 0
            for volume in self.list_all():
                local = volume.driver == DEFAULT_DRIVER and not volume.options
                if not local or not self._labels_pass(volume, filters):
                    continue
                if self.users(volume.name):
                    continue
                size = tree_size(volume.mountpoint)
                try:
                    self.remove(volume.name)
                except (Conflict, NotFound):
                    continue  # put to use (or removed) since it was looked at
                except KapalError as error:
                    log.warning("pruning volume %s: %s", volume.name, error)
                    continue
                removed.append(volume.name)
                reclaimed += size
        finally:
            with self._lock:
                self._prune_running = False
        self._content_locks: dict[str, threading.Lock] = {}
        self.events.publish("volume", "prune", "", reclaimed=str(reclaimed))
        return removed, reclaimed

    def list_all(self) -> list[Volume]:
        with self._lock:
            return sorted(self._volumes.values(), key=lambda v: v.name)

    def usage(self, name: str) -> int:
        """Bytes the volume holds; -1 when it cannot be told (as ``system df`` shows it)."""
        volume = self.get(name)
        if not volume.mountpoint.is_dir():
            return -1
        return tree_size(volume.mountpoint)

    def _referencing_containers(self, name: str) -> list[str]:
        rows = self.db.query(
            "SELECT DISTINCT container_id FROM mount_points WHERE name = ? ORDER BY container_id", (name,)
        )
        return [row["container_id"] for row in rows]

    def content_lock(self, name: str) -> threading.Lock:
        """A lock for filling one volume: two containers starting at once copy the image in once."""
        with self._lock:
            return self._content_locks.setdefault(name, threading.Lock())

    # -- mount points --------------------------------------------------------------------------

    def record_mounts(self, container_id: str, points: list[MountPoint]) -> list[MountPoint]:
        """Create the volumes *points* name (and anonymous ones) and record the container's mounts.

        One lock around creating and recording: a volume cannot be removed
        between being created for a container and being referenced by it.
        """
        with self._lock:
            for point in points:
                if point.type != "volume":
                    continue
                volume = self.create(
                    point.name or None,
                    point.driver or DEFAULT_DRIVER,
                    point.volume_labels,
                    point.volume_options,
                )
                point.name = volume.name
                point.driver = volume.driver
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM mount_points WHERE container_id = ?", (container_id,))
                conn.executemany(
                    "INSERT INTO mount_points (container_id, destination, name, record) VALUES (?, ?, ?, ?)",
                    [(container_id, p.destination, p.name, p.to_record()) for p in points],
                )
        return points

    def mount_points(self, container_id: str) -> list[MountPoint]:
        rows = self.db.query(
            "SELECT record FROM mount_points WHERE container_id = ? ORDER BY destination", (container_id,)
        )
        return [MountPoint.from_record(row["record"]) for row in rows]

    def save_mount_point(self, container_id: str, point: MountPoint) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE mount_points SET record = ? WHERE container_id = ? AND destination = ?",
                (point.to_record(), container_id, point.destination),
            )

    def mount(self, container_id: str) -> list[MountPoint]:
        """Mount the container's volumes for a run: devices mounted, points marked active, events sent.

        A recorded volume that is gone (its data directory deleted by hand) is
        made again rather than failing the start.
        """
        points = self.mount_points(container_id)
        with self._lock:
            for point in points:
                if point.type != "volume":
                    continue
                volume = self._volumes.get(point.name) or self.create(
                    point.name, point.driver, {ANONYMOUS_LABEL: ""} if point.anonymous else None
                )
                if not volume.mountpoint.is_dir():
                    self._make_directories(volume)
                if volume.needs_mount:
                    self._mount_device(volume)
                point.active = True
                self.save_mount_point(container_id, point)
        for point in points:
            if point.type == "volume":
                self.events.publish(
                    "volume",
                    "mount",
                    point.name,
                    driver=point.driver,
                    container=container_id,
                    destination=point.destination,
                    **{"read/write": "true" if point.rw else "false"},
                    propagation=point.propagation,
                )
        return points

    def unmount(self, container_id: str) -> None:
        """The container's run ended: its volumes are released, devices unmounted when unused."""
        released = []
        with self._lock:
            for point in self.mount_points(container_id):
                if point.type != "volume" or not point.active:
                    continue
                point.active = False
                self.save_mount_point(container_id, point)
                released.append(point)
                volume = self._volumes.get(point.name)
                if volume is not None and volume.needs_mount and not self._active_users(point.name):
                    try:
                        unmount_all(volume.mountpoint)
                    except KapalError as error:
                        log.warning("unmounting volume %s: %s", point.name, error)
        for point in released:
            self.events.publish("volume", "unmount", point.name, driver=point.driver, container=container_id)

    def release(self, container_id: str, remove_anonymous: bool = False) -> None:
        """The container is removed: forget its mount points, and with *remove_anonymous* the
        anonymous volumes no other container uses (``docker rm -v``, ``run --rm``)."""
        self.unmount(container_id)
        with self._lock:
            points = self.mount_points(container_id)
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM mount_points WHERE container_id = ?", (container_id,))
        if not remove_anonymous:
            return
        for point in points:
            if point.type != "volume" or not point.anonymous or not point.name:
                continue
            try:
                self.remove(point.name)
            except (Conflict, NotFound):
                pass  # another container uses it: that is not an error (as dockerd)
            except KapalError as error:
                log.warning("removing volume %s of container %s: %s", point.name, container_id[:12], error)

    def _active_users(self, name: str) -> list[str]:
        return [
            row["container_id"]
            for row in self.db.query("SELECT container_id, record FROM mount_points WHERE name = ?", (name,))
            if MountPoint.from_record(row["record"]).active
        ]

    def _mount_device(self, volume: Volume) -> None:
        """Mount the volume's ``device`` on its ``_data`` (once, however many containers use it)."""
        if os.path.realpath(volume.mountpoint) in mounts_under(volume.mountpoint):
            return
        options = volume.options or {}
        args = ["mount", "-t", options.get("type") or "none"]
        if options.get("o"):
            args += ["-o", options["o"]]
        args += [options.get("device") or "", str(volume.mountpoint)]
        try:
            result = subprocess.run(args, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise StorageError(f"error while mounting volume '{volume.mountpoint}': {error}") from None
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            for option in options.get("o", "").split(","):
                key, _, value = option.partition("=")
                if key == "password" and value:  # as dockerd: never echo a CIFS password
                    message = message.replace(value, "********")
            raise StorageError(
                f"error while mounting volume '{volume.mountpoint}': failed to mount local volume: {message}"
            )


def volume_is_empty(path: Path) -> bool:
    """Whether a volume's directory holds nothing (dockerd copies image content only into those)."""
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except FileNotFoundError:
        return True
