"""The engine's event bus: what ``docker events`` shows.

Services publish from any thread; subscribers (the ``/events`` route) receive
through a callback that must not block. A ring buffer keeps recent events so
``--since`` can replay them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

Subscriber = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    type: str  # image, container, network, volume, daemon
    action: str  # tag, untag, delete, import, load, save, pull, ...
    actor_id: str
    attributes: dict[str, str] = field(default_factory=dict)
    time_nano: int = 0

    def to_json(self) -> dict[str, object]:
        """Docker's events message, with the deprecated top-level fields old clients read."""
        out: dict[str, object] = {}
        if self.type in ("image", "container"):
            out["status"] = self.action
            out["id"] = self.actor_id
            if "image" in self.attributes:
                out["from"] = self.attributes["image"]
        out.update(
            {
                "Type": self.type,
                "Action": self.action,
                "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
                "scope": "local",
                "time": self.time_nano // 1_000_000_000,
                "timeNano": self.time_nano,
            }
        )
        return out


class EventBus:
    def __init__(self, history: int = 1024) -> None:
        self._lock = threading.Lock()
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: list[Subscriber] = []

    def publish(self, type_: str, action: str, actor_id: str, **attributes: str) -> Event:
        event = Event(type_, action, actor_id, attributes, time.time_ns())
        with self._lock:
            self._history.append(event)
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber(event)
        return event

    def subscribe(self, subscriber: Subscriber, since_nano: int | None = None) -> list[Event]:
        """Register *subscriber*; returns the buffered events at or after *since_nano*."""
        with self._lock:
            self._subscribers.append(subscriber)
            if since_nano is None:
                return []
            return [event for event in self._history if event.time_nano >= since_nano]

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
