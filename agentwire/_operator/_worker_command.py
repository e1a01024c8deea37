"""``agentwire worker --gateway HOST:PORT module:function``: a worker from a module path.

The named function is ``async def setup(runtime) -> None``: it registers the
worker's agents (and subscriptions) on the :class:`~agentwire.WorkerRuntime`
and returns. The worker then serves them, reconnecting when the gateway goes
away, until SIGINT or SIGTERM, and exits 0. Once *setup* has returned it
prints one line to stdout, ``agentwire worker ready (connected to HOST:PORT)``,
and flushes it, so a parent process can wait for it. Logs go to stderr.
``--gateway A,B`` (a comma-separated list, also in ``$AGENTWIRE_GATEWAY``)
names several gateways of a cluster: the worker connects to the first that
answers and, when it loses it, to the next (``open_worker`` with a sequence).

A ``module:function`` that cannot be imported or is not an async function is
one line on stderr and exit status 2, as are bad TLS or address options. An
exception from *setup* is logged with its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

import trio

from .._address import InvalidAddressError
from .._errors import AgentwireError
from .._gateway._command import _LOG_LEVELS
from .._security._tls import TLSConfigError
from ._commands import EXIT_FAILED, EXIT_USAGE, CommandError, _ssl_context

__all__ = ["add_worker_command", "load_setup"]

logger = logging.getLogger("agentwire.worker")


def add_worker_command(subparsers: Any) -> None:
    """Add the ``worker`` subcommand to the ``agentwire`` parser."""
    from ._commands import add_client_arguments

    parser = subparsers.add_parser(
        "worker",
        help="run a worker whose agents a Python function registers",
        description="Run an agentwire worker connected to a gateway. MODULE:FUNCTION names "
        "`async def setup(runtime) -> None`, which registers the worker's agents. Prints one "
        "line once set up; reconnects; stops on SIGINT/SIGTERM (exit 0). --gateway A,B "
        "(comma-separated) names several gateways of a cluster: the worker connects to the "
        "first that answers and moves on to the next when it loses its gateway.",
    )
    parser.add_argument("setup", metavar="MODULE:FUNCTION", help="e.g. myapp.agents:setup")
    add_client_arguments(parser)
    parser.add_argument(
        "--log-level", default="warning", choices=_LOG_LEVELS, help="[default: %(default)s]"
    )
    parser.set_defaults(handler=run_worker_command)


def load_setup(spec: str) -> Callable[[Any], Any]:
    """The async function *spec* (``module:function``) names; CommandError otherwise."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise CommandError(f"{spec!r} is not MODULE:FUNCTION (e.g. myapp.agents:setup)", EXIT_USAGE)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"cannot import {module_name!r}: {exc}", EXIT_USAGE) from None
    target: Any = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no {name!r}", EXIT_USAGE) from None
    if not inspect.iscoroutinefunction(target):
        raise CommandError(
            f"{spec} must be an async function `async def {name}(runtime) -> None`", EXIT_USAGE
        )
    setup: Callable[[Any], Any] = target
    return setup


def run_worker_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if "" not in sys.path:  # `agentwire worker app:setup` finds ./app.py, as `python -m` would
        sys.path.insert(0, "")
    try:
        setup = load_setup(args.setup)
        context = _ssl_context(args)
        trio.run(_run, args, setup, context)
    except CommandError as exc:
        print(f"agentwire worker: {exc}", file=sys.stderr)
        return exc.status
    except (InvalidAddressError, TLSConfigError) as exc:
        print(f"agentwire worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AgentwireError as exc:
        print(f"agentwire worker: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0


async def _run(args: argparse.Namespace, setup: Callable[[Any], Any], context: Any) -> None:
    from .._worker import open_worker

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        addresses = [address.strip() for address in args.gateway.split(",")]
        async with open_worker(
            addresses[0] if len(addresses) == 1 else addresses,
            ssl_context=context,
            token=args.token,
            connect_timeout=args.timeout,
        ) as runtime:
            await setup(runtime)
            print(f"agentwire worker ready (connected to {args.gateway})", flush=True)
            async for signum in signals:
                logger.info("received %s; stopping", signal.Signals(signum).name)
                break
