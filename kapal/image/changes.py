"""``--change`` for ``import`` (and later ``commit``): Dockerfile instructions applied to a config.

Only the instructions Docker allows there: CMD, ENTRYPOINT, ENV, EXPOSE,
LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from kapal.errors import InvalidArgument

ALLOWED = (
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "LABEL",
    "ONBUILD",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)


def _exec_or_shell(args: str) -> list[str]:
    stripped = args.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
    return ["/bin/sh", "-c", stripped]


def _pairs(instruction: str, args: str) -> list[tuple[str, str]]:
    """``k=v k2="v 2"`` pairs, or the legacy ``k v with spaces`` form."""
    try:
        words = shlex.split(args)
    except ValueError as error:
        raise InvalidArgument(f"{instruction}: {error}") from None
    if not words:
        raise InvalidArgument(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        if len(words) < 2:
            raise InvalidArgument(f"{instruction} must have two arguments")
        return [(words[0], args.strip()[len(words[0]) :].strip())]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidArgument(
                f"{instruction}: syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        pairs.append((key, value))
    return pairs


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Apply *changes* to a container config (the ``config`` member of an image config)."""
    for change in changes:
        instruction, _, args = change.strip().partition(" ")
        instruction = instruction.upper()
        args = args.strip()
        if instruction not in ALLOWED:
            raise InvalidArgument(f"{instruction or change!r} is not a valid change command")
        if instruction in ("CMD", "ENTRYPOINT"):
            config["Cmd" if instruction == "CMD" else "Entrypoint"] = _exec_or_shell(args)
        elif instruction == "ENV":
            env = [item for item in config.get("Env") or []]
            for key, value in _pairs("ENV", args):
                env = [item for item in env if item.partition("=")[0] != key] + [f"{key}={value}"]
            config["Env"] = env
        elif instruction == "LABEL":
            labels = dict(config.get("Labels") or {})
            labels.update(_pairs("LABEL", args))
            config["Labels"] = labels
        elif instruction == "EXPOSE":
            ports = dict(config.get("ExposedPorts") or {})
            for port in args.split():
                ports[port if "/" in port else f"{port}/tcp"] = {}
            config["ExposedPorts"] = ports
        elif instruction == "VOLUME":
            volumes = dict(config.get("Volumes") or {})
            paths = _exec_or_shell(args) if args.startswith("[") else args.split()
            if paths[:2] == ["/bin/sh", "-c"]:
                paths = paths[2].split()
            for path in paths:
                volumes[path] = {}
            config["Volumes"] = volumes
        elif instruction == "ONBUILD":
            config["OnBuild"] = [*(config.get("OnBuild") or []), args]
        elif instruction == "WORKDIR":
            config["WorkingDir"] = args
        elif instruction == "USER":
            config["User"] = args
        elif instruction == "STOPSIGNAL":
            config["StopSignal"] = args
    return config
