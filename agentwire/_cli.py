"""The ``agentwire`` command: ``agentwire gateway`` and ``agentwire demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._gateway._command import add_gateway_command
from ._runtime._worker_demo import add_demo_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentwire", description="A trio-native agent runtime (AutoGen wire protocol)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_gateway_command(commands)
    add_demo_command(commands)
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
