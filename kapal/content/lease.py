"""Leases: what protects content that is being written from the garbage collector.

Between the moment a blob or layer lands on disk and the moment a database row
refers to it, nothing refers to it; a concurrent GC would see garbage. An
operation therefore holds a lease on everything it creates until its rows are
committed (containerd's model, kept in memory: leases belong to this daemon
process, and after a crash nothing is mid-write any more).

The GC holds ``collecting`` while it marks and sweeps; releasing a lease waits
for it, so a lease can never end between GC's mark and its sweep.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class Lease:
    def __init__(self, registry: LeaseRegistry, lease_id: int) -> None:
        self._registry = registry
        self.id = lease_id
        self.held: set[str] = set()

    def add(self, key: str) -> str:
        """Protect *key* (a blob digest or a layer key) for the life of the lease."""
        with self._registry.state:
            if key not in self.held:
                self.held.add(key)
                self._registry.counts[key] += 1
        return key


class LeaseRegistry:
    def __init__(self) -> None:
        self.state = threading.Lock()
        self.collecting = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._ids = itertools.count(1)

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        lease = Lease(self, next(self._ids))
        try:
            yield lease
        finally:
            with self.collecting, self.state:
                for key in lease.held:
                    self.counts[key] -= 1
                    if self.counts[key] <= 0:
                        del self.counts[key]

    def held(self, key: str) -> bool:
        with self.state:
            return key in self.counts
