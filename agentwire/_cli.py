"""The ``agentwire`` command: ``gateway``, ``worker``, ``call``, ``publish``,
``subscriptions``, ``status`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from . import __version__
from ._gateway._command import add_gateway_command
from ._operator._commands import add_commands as add_operator_commands
from ._operator._worker_command import add_worker_command

DEMO_NEEDS = (
    "the demo publishes a betterproto2 message, and betterproto2 is not installed: "
    "pip install 'trio-agentwire[demo]'"
)


def _demo_command(args: argparse.Namespace) -> int:
    try:
        from ._demo import run_demo
    except ModuleNotFoundError as exc:
        if exc.name != "betterproto2":
            raise
        print(f"agentwire demo: {DEMO_NEEDS}", file=sys.stderr)
        return 2
    trio.run(run_demo, print)
    return 0


def _add_demo_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="run a gateway and two workers on loopback: RPCs, a publish, a throughput figure",
        description="Run, in one trio program on 127.0.0.1, an agentwire gateway and two "
        "workers: alpha (JSON payloads) and beta (protobuf payloads). It makes RPCs across "
        "the workers in both directions, shows a handler's exception arriving as "
        "RemoteError, publishes a JSON and a protobuf event that both workers' listeners "
        "receive, times 2000 RPCs from alpha to beta, and exits 0. Needs betterproto2: "
        "pip install 'trio-agentwire[demo]'.",
    )
    parser.set_defaults(handler=_demo_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentwire", description="A trio-native agent runtime (AutoGen wire protocol)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_gateway_command(commands)
    add_worker_command(commands)
    add_operator_commands(commands)
    _add_demo_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # pragma: no cover - argparse enforces a command
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
