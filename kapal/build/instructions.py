"""A Dockerfile as typed instructions: what the parser makes and the builder runs.

This is the contract between `kapal.build.dockerfile` (text → these objects)
and `kapal.build.builder` (these objects → image). Words here are as written
in the Dockerfile, before variable substitution: the builder expands them step
by step with the environment of the moment (build args, then ENV), through
`Command.expand`, as Docker's dispatcher does. Which words an instruction
expands is the instruction's business, so it lives on each class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

#: Expands one word (variable substitution and quote removal as Docker's shell lexer does).
WordExpander = Callable[[str], str]


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str


def _expand_pairs(pairs: list[KeyValue], expand_word: WordExpander) -> list[KeyValue]:
    return [KeyValue(expand_word(pair.key), expand_word(pair.value)) for pair in pairs]


@dataclass(frozen=True)
class Heredoc:
    """`<<EOF` … `EOF`. `content` has `<<-`'s leading tabs already removed; `expand` is False
    when the delimiter was quoted (then no variable in it is substituted)."""

    name: str
    content: str
    expand: bool = True


@dataclass(frozen=True)
class Command:
    """One instruction. `line` is the 1-based line it starts on; `original` its text as written
    (continuations joined), used in `Step N/M : …` and in error messages."""

    keyword: str  # upper case: FROM, RUN, COPY, …
    line: int
    original: str

    def expand(self, expand_word: WordExpander) -> Command:
        """This command with its expandable words substituted; the default expands none."""
        return self


@dataclass(frozen=True)
class From(Command):
    image: str = ""  # "scratch", a reference, or an earlier stage's name; expanded with meta ARGs only
    stage_name: str | None = None  # `AS name`, lower-cased as Docker does
    platform: str | None = None  # --platform

    def expand(self, expand_word: WordExpander) -> From:
        return dataclasses.replace(
            self,
            image=expand_word(self.image),
            platform=expand_word(self.platform) if self.platform is not None else None,
        )


@dataclass(frozen=True)
class Mount:
    """One `RUN --mount=…`: its type (bind, cache, tmpfs, secret, ssh) and its other options as given."""

    type: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run(Command):
    args: list[str] = field(default_factory=list)  # exec form: the JSON array; shell form: [the text]
    shell_form: bool = True  # prepend SHELL (default ["/bin/sh", "-c"]) to args
    heredocs: list[Heredoc] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    # the --mount values as written: mounts using build args are parsed again once expanded
    # (kapal.build.dockerfile.parse_mount(spec, expand_word)), as Docker's dispatcher does
    mount_specs: list[str] = field(default_factory=list)
    network: str | None = None  # --network=default|none|host
    security: str | None = None  # --security=sandbox|insecure


@dataclass(frozen=True)
class Cmd(Command):
    args: list[str] = field(default_factory=list)
    shell_form: bool = True


@dataclass(frozen=True)
class Entrypoint(Command):
    args: list[str] = field(default_factory=list)
    shell_form: bool = True


@dataclass(frozen=True)
class Shell(Command):
    args: list[str] = field(default_factory=list)  # always the JSON form


@dataclass(frozen=True)
class Env(Command):
    pairs: list[KeyValue] = field(default_factory=list)  # `ENV a b` (legacy) is one pair

    def expand(self, expand_word: WordExpander) -> Env:
        return dataclasses.replace(self, pairs=_expand_pairs(self.pairs, expand_word))


@dataclass(frozen=True)
class Label(Command):
    pairs: list[KeyValue] = field(default_factory=list)

    def expand(self, expand_word: WordExpander) -> Label:
        return dataclasses.replace(self, pairs=_expand_pairs(self.pairs, expand_word))


@dataclass(frozen=True)
class ArgDef:
    name: str
    default: str | None = None  # None: no default given (`ARG name`)


@dataclass(frozen=True)
class Arg(Command):
    args: list[ArgDef] = field(default_factory=list)

    def expand(self, expand_word: WordExpander) -> Arg:
        return dataclasses.replace(
            self,
            args=[ArgDef(a.name, None if a.default is None else expand_word(a.default)) for a in self.args],
        )


@dataclass(frozen=True)
class Expose(Command):
    ports: list[str] = field(default_factory=list)  # "80", "53/udp", "8000-8010/tcp"

    def expand(self, expand_word: WordExpander) -> Expose:
        return dataclasses.replace(self, ports=[expand_word(p) for p in self.ports])


@dataclass(frozen=True)
class Workdir(Command):
    path: str = ""

    def expand(self, expand_word: WordExpander) -> Workdir:
        return dataclasses.replace(self, path=expand_word(self.path))


@dataclass(frozen=True)
class User(Command):
    user: str = ""

    def expand(self, expand_word: WordExpander) -> User:
        return dataclasses.replace(self, user=expand_word(self.user))


@dataclass(frozen=True)
class Volume(Command):
    paths: list[str] = field(default_factory=list)

    def expand(self, expand_word: WordExpander) -> Volume:
        return dataclasses.replace(self, paths=[expand_word(p) for p in self.paths])


@dataclass(frozen=True)
class StopSignal(Command):
    signal: str = ""

    def expand(self, expand_word: WordExpander) -> StopSignal:
        return dataclasses.replace(self, signal=expand_word(self.signal))


@dataclass(frozen=True)
class Healthcheck(Command):
    """`test` as in the image config: ["NONE"], ["CMD", arg…] or ["CMD-SHELL", text].
    Durations in nanoseconds; None where the flag was not given."""

    test: list[str] = field(default_factory=list)
    interval: int | None = None
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class Onbuild(Command):
    trigger: str = ""  # the instruction's text, e.g. "RUN echo hi"; parse it with parse_instruction


@dataclass(frozen=True)
class Maintainer(Command):
    name: str = ""

    def expand(self, expand_word: WordExpander) -> Maintainer:
        return dataclasses.replace(self, name=expand_word(self.name))


@dataclass(frozen=True)
class Copy(Command):
    """COPY and ADD (keyword tells which). `heredocs` are inline sources (`COPY <<EOF /dest`)."""

    sources: list[str] = field(default_factory=list)
    dest: str = ""
    heredocs: list[Heredoc] = field(default_factory=list)
    from_: str | None = None  # --from
    chown: str | None = None
    chmod: str | None = None
    link: bool = False
    parents: bool = False
    exclude: list[str] = field(default_factory=list)
    checksum: str | None = None  # ADD --checksum
    keep_git_dir: bool = False  # ADD --keep-git-dir
    unpack: bool | None = None  # ADD --unpack[=bool]; None: not given (archives from the context unpack)

    @property
    def is_add(self) -> bool:
        return self.keyword == "ADD"

    def expand(self, expand_word: WordExpander) -> Copy:
        def opt(value: str | None) -> str | None:
            return expand_word(value) if value is not None else None

        return dataclasses.replace(
            self,
            sources=[expand_word(s) for s in self.sources],
            dest=expand_word(self.dest),
            from_=opt(self.from_),
            chown=opt(self.chown),
            chmod=opt(self.chmod),
            exclude=[expand_word(e) for e in self.exclude],
            checksum=opt(self.checksum),
        )


@dataclass
class Stage:
    """One FROM and the commands up to the next. `index` counts stages from 0."""

    index: int
    base: From
    commands: list[Command] = field(default_factory=list)

    @property
    def name(self) -> str | None:
        return self.base.stage_name


@dataclass
class Dockerfile:
    """`meta_args`: the ARGs before the first FROM. `directives`: parser directives
    (syntax, escape, check) as given, keys lower-cased."""

    stages: list[Stage] = field(default_factory=list)
    meta_args: list[Arg] = field(default_factory=list)
    escape: str = "\\"
    directives: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def stage(self, name_or_index: str) -> Stage | None:
        """A stage by `AS` name (case-insensitive) or by index, as `--target` and `--from` name them."""
        lowered = name_or_index.lower()
        for stage in self.stages:
            if stage.name == lowered:
                return stage
        if name_or_index.isdigit() and int(name_or_index) < len(self.stages):
            return self.stages[int(name_or_index)]
        return None
