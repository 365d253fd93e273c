"""Compiled seccomp filters, reused: crun compiles the profile to BPF on every create (~15 ms).

crun writes the filter it compiled to ``<root>/<id>/seccomp.bpf``; kapald keeps that once per
distinct seccomp section (with the annotations that change how crun compiles it) and hands it to
the next create with the same section through crun's ``run.oci.seccomp_bpf_data`` annotation,
which crun loads as is instead of compiling. The spec keeps its ``seccomp`` section, so what
inspect shows and what runc would apply are unchanged; the filter is the very one crun compiled
from that section on this host (the key also names the crun binary, so an upgrade recompiles).
crun 1.8 has a cache of its own, but Debian's build never stores into it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from kapal.runtime.oci import OCIRuntime

ANNOTATION = "run.oci.seccomp_bpf_data"
MAX_ENTRIES = 32


class SeccompCache:
    def __init__(self) -> None:
        self._filters: OrderedDict[str, str] = OrderedDict()  # key -> base64 BPF
        self._lock = threading.Lock()

    @staticmethod
    def key(runtime: OCIRuntime, spec: dict[str, Any]) -> str | None:
        """What the compiled filter depends on; None where the cache does not apply."""
        seccomp = (spec.get("linux") or {}).get("seccomp")
        annotations = spec.get("annotations") or {}
        if not seccomp or os.path.basename(runtime.path) != "crun" or ANNOTATION in annotations:
            return None
        try:
            binary = os.stat(runtime.path)
        except OSError:
            return None
        material = json.dumps(
            [runtime.path, binary.st_mtime_ns, binary.st_size, seccomp, annotations], sort_keys=True
        )
        return hashlib.sha256(material.encode()).hexdigest()

    def annotate(self, runtime: OCIRuntime, spec: dict[str, Any]) -> str | None:
        """Add the compiled filter to *spec* if known; returns the key to ``learn`` it otherwise."""
        key = self.key(runtime, spec)
        if key is None:
            return None
        with self._lock:
            compiled = self._filters.get(key)
            if compiled is not None:
                self._filters.move_to_end(key)
        if compiled is None:
            return key
        spec.setdefault("annotations", {})[ANNOTATION] = compiled
        return None

    def learn(self, key: str, runtime: OCIRuntime, container_id: str) -> None:
        """Keep the filter crun compiled for *container_id* (just created) under *key*."""
        try:
            data = (Path(runtime.root) / container_id / "seccomp.bpf").read_bytes()
        except OSError:
            return
        if not data or len(data) % 8:  # whole sock_filter instructions, or nothing
            return
        with self._lock:
            self._filters[key] = base64.b64encode(data).decode()
            while len(self._filters) > MAX_ENTRIES:
                self._filters.popitem(last=False)
