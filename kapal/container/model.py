"""A container's record and its state machine.

States and their names are Docker's: created → running ⇄ paused, running →
exited (or restarting → running), any → removing → gone; dead when cleanup
failed. Transitions are checked in one place (``require``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from kapal.errors import Conflict, InvalidArgument

ZERO_TIME = "0001-01-01T00:00:00Z"
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")

CREATED, RUNNING, PAUSED, RESTARTING, REMOVING, EXITED, DEAD = (
    "created",
    "running",
    "paused",
    "restarting",
    "removing",
    "exited",
    "dead",
)


def now_rfc3339() -> str:
    moment = datetime.datetime.now(tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def parse_rfc3339(text: str) -> float:
    if not text or text.startswith("0001-"):
        return 0.0
    head, _, rest = text.replace("Z", "").partition(".")
    seconds = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC).timestamp()
    digits = "".join(ch for ch in rest if ch.isdigit())
    return seconds + (float(f"0.{digits}") if digits else 0.0)


def validate_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


@dataclass
class State:
    status: str = CREATED
    pid: int = 0
    conmon_pid: int = 0
    exit_code: int = 0
    error: str = ""
    oom_killed: bool = False
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    health: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Status": self.status,
            "Running": self.status in (RUNNING, PAUSED),
            "Paused": self.status == PAUSED,
            "Restarting": self.status == RESTARTING,
            "OOMKilled": self.oom_killed,
            "Dead": self.status == DEAD,
            "Pid": self.pid if self.status in (RUNNING, PAUSED) else 0,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at,
        }
        if self.health is not None:
            out["Health"] = self.health
        return out


@dataclass
class Container:
    id: str
    name: str
    image: str  # the name the user gave
    image_id: str
    created: str
    config: dict[str, Any]  # Docker's container Config, image defaults merged in
    host_config: dict[str, Any]
    args: list[str]
    runtime: str
    state: State = field(default_factory=State)
    restart_count: int = 0
    manually_stopped: bool = False
    exec_ids: list[str] = field(default_factory=list)
    network_settings: dict[str, Any] = field(default_factory=dict)
    # network name → its EndpointSettings config (NetworkID, Aliases, IPAMConfig, GwPriority), in the
    # order the container joins them: the NetworkMode network first (eth0), then connected ones.
    # None: a container recorded before kapal kept this (its NetworkMode network is its only one).
    endpoints_config: dict[str, dict[str, Any]] | None = None

    @property
    def running(self) -> bool:
        return self.state.status in (RUNNING, PAUSED)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def labels(self) -> dict[str, str]:
        return self.config.get("Labels") or {}

    def require(self, *allowed: str, action: str) -> None:
        """Refuse *action* unless the container is in one of *allowed* states (Docker's messages)."""
        if self.state.status in allowed:
            return
        status = self.state.status
        if status == PAUSED:
            raise Conflict(f"cannot {action} container {self.id}: container is paused, unpause it first")
        if status in (EXITED, CREATED, DEAD):
            raise Conflict(f"Container {self.id} is not running")
        if status == RESTARTING:
            raise Conflict(f"Container {self.id} is restarting, wait until the container is running")
        raise Conflict(f"cannot {action} container {self.id}: container is {status}")

    def status_text(self, now: float | None = None) -> str:
        """``docker ps``'s STATUS column."""
        from kapal.units import human_duration

        now = now or time.time()
        status = self.state.status
        if status in (RUNNING, PAUSED):
            text = f"Up {human_duration(now - parse_rfc3339(self.state.started_at))}"
            if status == PAUSED:
                text += " (Paused)"
            health = (self.state.health or {}).get("Status")
            if health and status == RUNNING:
                text += f" ({'health: starting' if health == 'starting' else health})"
            return text
        if status == RESTARTING:
            ago = human_duration(now - parse_rfc3339(self.state.finished_at))
            return f"Restarting ({self.state.exit_code}) {ago} ago"
        if status == REMOVING:
            return "Removal In Progress"
        if status == DEAD:
            return "Dead"
        if status == EXITED and self.state.finished_at != ZERO_TIME:
            ago = human_duration(now - parse_rfc3339(self.state.finished_at))
            return f"Exited ({self.state.exit_code}) {ago} ago"
        return "Created"

    def to_record(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, text: str) -> Container:
        data = json.loads(text)
        data["state"] = State(**data["state"])
        return cls(**data)
