"""``kapal``: Docker's command line, talking to kapald.

Start-up time is a feature: only the module of the command being run is
imported, and the HTTP client is a few dozen lines over a plain socket.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

USAGE = """\
Usage:  kapal [OPTIONS] COMMAND

A container engine that speaks Docker's language

Common Commands:
  run         Create and run a new container from an image
  exec        Execute a command in a running container
  ps          List containers
  pull        Download an image from a registry
  push        Upload an image to a registry
  images      List images
  version     Show the kapal version information
  info        Display system-wide information

Management Commands:
  builder     Manage builds
  container   Manage containers
  image       Manage images
  network     Manage networks
  system      Manage kapal
  volume      Manage volumes

Commands:
  build       Build an image from a Dockerfile
  attach      Attach local standard input, output, and error streams to a running container
  commit      Create a new image from a container's changes
  cp          Copy files/folders between a container and the local filesystem
  create      Create a new container
  diff        Inspect changes to files or directories on a container's filesystem
  events      Get real time events from the server
  export      Export a container's filesystem as a tar archive
  history     Show the history of an image
  import      Import the contents from a tarball to create a filesystem image
  inspect     Return low-level information on objects
  kill        Kill one or more running containers
  load        Load an image from a tar archive or STDIN
  login       Authenticate to a registry
  logout      Log out from a registry
  logs        Fetch the logs of a container
  pause       Pause all processes within one or more containers
  port        List port mappings or a specific mapping for the container
  rename      Rename a container
  restart     Restart one or more containers
  rm          Remove one or more containers
  rmi         Remove one or more images
  save        Save one or more images to a tar archive (streamed to STDOUT by default)
  start       Start one or more stopped containers
  stats       Display a live stream of container(s) resource usage statistics
  stop        Stop one or more running containers
  tag         Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
  top         Display the running processes of a container
  unpause     Unpause all processes within one or more containers
  update      Update configuration of one or more containers
  wait        Block until one or more containers stop, then print their exit codes

Global Options:
  -D, --debug          Enable debug mode
  -H, --host string    Daemon socket to connect to (default $KAPAL_HOST, $DOCKER_HOST,
                       or unix:///run/kapal/kapal.sock)
  -v, --version        Print version information and quit

Run 'kapal COMMAND --help' for more information on a command.
"""

_CONTAINERS = "kapal.cli.commands.containers"
_IMAGES = "kapal.cli.commands.images"
_SYSTEM = "kapal.cli.commands.system"
_NETWORKS = "kapal.cli.commands.networks"
_VOLUMES = "kapal.cli.commands.volumes"
_REGISTRY = "kapal.cli.commands.registry"
_FILES = "kapal.cli.commands.container_files"
_BUILD = "kapal.cli.commands.build"
_PRUNE = "kapal.cli.commands.prune"
_FILE_VERBS = ["cp", "diff", "commit", "export", "top", "stats", "update"]

# command -> (module, function); "image" and "system" are groups of subcommands.
_CONTAINER_VERBS = [
    "run",
    "create",
    "start",
    "stop",
    "restart",
    "kill",
    "rm",
    "ps",
    "logs",
    "wait",
    "attach",
    "pause",
    "unpause",
    "rename",
]
COMMANDS: dict[str, tuple[str, str]] = {
    **{verb: (_CONTAINERS, verb) for verb in _CONTAINER_VERBS},
    "exec": (_CONTAINERS, "exec_"),
    **{verb: (_FILES, verb) for verb in _FILE_VERBS},
    "version": (_SYSTEM, "version"),
    "info": (_SYSTEM, "info"),
    "events": (_SYSTEM, "events"),
    "images": (_IMAGES, "images"),
    "tag": (_IMAGES, "tag"),
    "rmi": (_IMAGES, "rmi"),
    "history": (_IMAGES, "history"),
    "load": (_IMAGES, "load"),
    "save": (_IMAGES, "save"),
    "import": (_IMAGES, "import_"),
    "inspect": (_IMAGES, "inspect"),
    "port": (_NETWORKS, "port"),
    "build": (_BUILD, "build"),
    **{verb: (_REGISTRY, verb) for verb in ("pull", "push", "login", "logout")},
}
GROUPS: dict[str, dict[str, tuple[str, str]]] = {
    "container": {
        **{verb: (_CONTAINERS, verb) for verb in _CONTAINER_VERBS},
        "ls": (_CONTAINERS, "ps"),
        "list": (_CONTAINERS, "ps"),
        "remove": (_CONTAINERS, "rm"),
        "inspect": (_CONTAINERS, "inspect"),
        "prune": (_PRUNE, "containers"),
        "exec": (_CONTAINERS, "exec_"),
        "port": (_NETWORKS, "port"),
        **{verb: (_FILES, verb) for verb in _FILE_VERBS},
    },
    "image": {
        "ls": (_IMAGES, "images"),
        "list": (_IMAGES, "images"),
        "inspect": (_IMAGES, "image_inspect"),
        "rm": (_IMAGES, "rmi"),
        "remove": (_IMAGES, "rmi"),
        "tag": (_IMAGES, "tag"),
        "history": (_IMAGES, "history"),
        "load": (_IMAGES, "load"),
        "save": (_IMAGES, "save"),
        "import": (_IMAGES, "import_"),
        "prune": (_PRUNE, "images"),
        "build": (_BUILD, "build"),
        "pull": (_REGISTRY, "pull"),
        "push": (_REGISTRY, "push"),
    },
    "builder": {
        "build": (_BUILD, "build"),
        "prune": (_PRUNE, "build_cache"),
    },
    "network": {
        "create": (_NETWORKS, "create"),
        "ls": (_NETWORKS, "ls"),
        "list": (_NETWORKS, "ls"),
        "inspect": (_NETWORKS, "inspect"),
        "rm": (_NETWORKS, "rm"),
        "remove": (_NETWORKS, "rm"),
        "prune": (_PRUNE, "networks"),
        "connect": (_NETWORKS, "connect"),
        "disconnect": (_NETWORKS, "disconnect"),
    },
    "volume": {
        "create": (_VOLUMES, "create"),
        "ls": (_VOLUMES, "ls"),
        "list": (_VOLUMES, "ls"),
        "inspect": (_VOLUMES, "inspect"),
        "rm": (_VOLUMES, "rm"),
        "remove": (_VOLUMES, "rm"),
        "prune": (_PRUNE, "volumes"),
    },
    "system": {
        "df": (_SYSTEM, "df"),
        "events": (_SYSTEM, "events"),
        "info": (_SYSTEM, "info"),
        "prune": (_PRUNE, "system"),
    },
}


def _group_usage(group: str) -> str:
    names = "\n".join(f"  {name}" for name in GROUPS[group])
    return f"Usage:  kapal {group} COMMAND\n\nCommands:\n{names}\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    host = None
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag in ("-H", "--host"):
            if not args:
                print("flag needs an argument: --host", file=sys.stderr)
                return 125
            host = args.pop(0)
        elif flag.startswith("--host="):
            host = flag.partition("=")[2]
        elif flag in ("-D", "--debug", "-l", "--log-level"):
            if flag in ("-l", "--log-level") and args:
                args.pop(0)
        elif flag in ("-v", "--version"):
            from kapal import __version__

            print(f"kapal version {__version__}")
            return 0
        elif flag in ("-h", "--help"):
            print(USAGE, end="")
            return 0
        else:
            print(f"unknown flag: {flag}\nSee 'kapal --help'.", file=sys.stderr)
            return 125
    if not args:
        print(USAGE, end="")
        return 0
    command = args.pop(0)
    prog = f"kapal {command}"
    if command in GROUPS:
        if not args or args[0] in ("-h", "--help"):
            print(_group_usage(command), end="")
            return 0
        sub = args.pop(0)
        target = GROUPS[command].get(sub)
        prog = f"kapal {command} {sub}"
        if target is None:
            print(
                f"kapal: '{command} {sub}' is not a kapal command.\nSee 'kapal {command} --help'",
                file=sys.stderr,
            )
            return 1
    else:
        target = COMMANDS.get(command)
        if target is None:
            print(f"kapal: '{command}' is not a kapal command.\nSee 'kapal --help'", file=sys.stderr)
            return 1
    from kapal.cli import common

    module = __import__(target[0], fromlist=[target[1]])  # importlib's import costs start-up time
    return common.run(getattr(module, target[1]), prog, args, host)


def entry() -> NoReturn:
    """The ``kapal`` program: main, then an exit without the interpreter's teardown.

    Tearing down modules and collecting garbage costs a ``kapal run`` about 5 ms that
    nothing needs: output is flushed and exit handlers run here, then the process ends.
    """
    import atexit
    import os

    status = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a closed pipe or stream: nothing more to say
            pass
    os._exit(status)


if __name__ == "__main__":
    entry()
