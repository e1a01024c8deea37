"""``agentwire gateway``: run a gateway until SIGINT or SIGTERM.

Prints exactly one line to stdout once listening --
``agentwire gateway listening on HOST:PORT`` -- and flushes it, so a parent
process can wait for it (with ``--metrics-address``, a second one follows:
``agentwire gateway metrics on http://HOST:PORT/metrics``; with
``--http-address``, then ``agentwire gateway events on http://HOST:PORT/``). Logs go to stderr.
On SIGINT/SIGTERM it shuts down gracefully (``--grace-period``) and exits 0.
An invalid ``--address``, or one it cannot listen on (port in use, unknown
host), is reported in one line on stderr with exit status 2, as are
contradictory security options and unreadable or mismatched TLS or access
files. SIGHUP re-reads the access file (``--auth-tokens``) without dropping
connections.
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from typing import Any

import trio

from .._address import InvalidAddressError, parse_address
from .._errors import AgentwireError
from .._security._command import (
    GatewaySecurity,
    SecuritySetupError,
    add_security_arguments,
    reload_on_sighup,
    security_from_arguments,
)
from ._serve import (
    GATEWAY_DEFAULTS,
    Gateway,
    GatewayOptions,
    load_cluster,
    load_http_ingress,
    load_metrics_server,
    load_webhooks,
    serve_gateway,
)

__all__ = ["add_gateway_command"]

logger = logging.getLogger("agentwire.gateway")

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _seconds(value: str) -> float:
    seconds = float(value)
    if not seconds >= 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0 disables it)")
    return seconds


def _timeout(value: str) -> float | None:
    seconds = _seconds(value)
    return None if seconds == 0 else seconds


def add_gateway_command(subparsers: Any) -> None:
    """Add the ``gateway`` subcommand to the ``agentwire`` parser."""
    parser = subparsers.add_parser(
        "gateway",
        help="run an AutoGen-compatible gateway (host) for workers",
        description="Run an agentwire gateway: AutoGen 0.7.5 workers and agentwire "
        "workers connect to it. Prints one line with the address once listening; "
        "stops gracefully on SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--address",
        default="127.0.0.1:50051",
        help="HOST:PORT to listen on (localhost:PORT, [::1]:PORT; port 0 picks one) "
        "[default: %(default)s]",
    )
    parser.add_argument(
        "--log-level", default="warning", choices=_LOG_LEVELS, help="[default: %(default)s]"
    )
    parser.add_argument(
        "--max-message-size",
        type=int,
        default=GATEWAY_DEFAULTS["max_message_size"],
        help="largest message in bytes [default: %(default)s, as grpc-core]",
    )
    parser.add_argument(
        "--rpc-timeout",
        type=_timeout,
        default=GATEWAY_DEFAULTS["rpc_timeout"],
        help="seconds before an unanswered RPC is failed; 0 = never [default: %(default)s]",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=GATEWAY_DEFAULTS["grace_period"],
        help="seconds calls may take to finish on shutdown [default: %(default)s]",
    )
    parser.add_argument(
        "--startup-grace",
        type=_seconds,
        default=GATEWAY_DEFAULTS["startup_grace"],
        help="seconds after the start during which requests and events for workers "
        "that have not re-registered yet are held; 0 = off [default: %(default)s]",
    )
    parser.add_argument(
        "--registration-grace",
        type=_timeout,
        default=GATEWAY_DEFAULTS["registration_grace"],
        help="seconds the agent types and subscriptions of a client without a channel "
        "are kept; 0 = forever [default: %(default)s]",
    )
    parser.add_argument(
        "--keepalive-interval",
        type=_timeout,
        default=GATEWAY_DEFAULTS["keepalive_interval"],
        help="seconds of silence after which a worker's connection is pinged; "
        "0 = never [default: %(default)s]",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=_seconds,
        default=GATEWAY_DEFAULTS["keepalive_timeout"],
        help="seconds a pinged worker has to answer before it is disconnected and "
        "its callers are answered [default: %(default)s]",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=_timeout,
        default=GATEWAY_DEFAULTS["handshake_timeout"],
        help="seconds a new connection has to finish its TLS and HTTP/2 handshakes "
        "before it is closed; 0 = no bound [default: %(default)s]",
    )
    parser.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        default=None,
        help="also serve Prometheus metrics at http://HOST:PORT/metrics (needs the "
        "metrics extra: pip install 'trio-agentwire[metrics]') [default: off]",
    )
    parser.add_argument(
        "--http-address",
        metavar="HOST:PORT",
        default=None,
        help="also accept CloudEvents over HTTP at http://HOST:PORT/ and publish them (needs "
        "the http extra: pip install 'trio-agentwire[http]') [default: off]",
    )
    parser.add_argument(
        "--webhook",
        metavar="TOPIC_TYPE=URL",
        action="append",
        default=[],
        help="POST every event of TOPIC_TYPE to URL as a CloudEvent, with retries (needs "
        "the http extra); may be repeated [default: none]",
    )
    add_security_arguments(parser)
    parser.add_argument(
        "--shared-agent-types",
        nargs="?",
        const="hash",
        default=None,
        choices=("hash", "least-loaded"),
        metavar="STRATEGY",
        help="let several workers register one agent type; each agent (type/key) is "
        "placed on one of them by STRATEGY: hash (rendezvous, the default) or "
        "least-loaded [default: off, one worker per type as AutoGen]",
    )
    parser.add_argument(
        "--state-store",
        metavar="STORE",
        type=_state_store,
        default=None,
        help="keep the state of workers' StatefulAgents registered without a store: "
        "memory, sqlite:PATH or a redis:// / rediss:// URL (the cluster extra) [default: none]",
    )
    parser.add_argument(
        "--cluster",
        metavar="redis://HOST:PORT/DB",
        default=None,
        help="be one gateway of a cluster sharing this Redis 7: workers connected to any of "
        "them reach every agent type and subscriber of all (needs the cluster extra: pip "
        "install 'trio-agentwire[cluster]') [default: off]",
    )
    parser.add_argument(
        "--cluster-lease",
        type=_seconds,
        default=GATEWAY_DEFAULTS["cluster_lease"],
        metavar="SECONDS",
        help="a gateway of the cluster silent this long is dropped by the others, its "
        "agent types and subscriptions with it, its callers answered with errors; it "
        "renews every fifth of it [default: %(default)s]",
    )
    parser.set_defaults(handler=run_gateway_command)


def _state_store(value: str) -> str:
    from ..state._stores import state_store_spec

    try:
        return state_store_spec(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


EXIT_BAD_ADDRESS = 2
"""Exit status for an address that is invalid or cannot be listened on."""


def run_gateway_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        parse_address(args.address)
    except InvalidAddressError as exc:
        print(f"agentwire gateway: invalid --address: {exc}", file=sys.stderr)
        return EXIT_BAD_ADDRESS
    try:
        security = security_from_arguments(args)
    except SecuritySetupError as exc:
        print(f"agentwire gateway: {exc}", file=sys.stderr)
        return EXIT_BAD_ADDRESS
    if args.state_store is not None and security.authenticator is not None:
        print(
            "agentwire gateway: --state-store does not work with authentication yet",
            file=sys.stderr,
        )
        return EXIT_BAD_ADDRESS
    listeners = (
        ("--metrics-address", args.metrics_address, load_metrics_server),
        ("--http-address", args.http_address, load_http_ingress),
    )
    for flag, address, load in listeners:
        if address is None:
            continue
        try:
            load(address)
        except InvalidAddressError as exc:
            print(f"agentwire gateway: invalid {flag}: {exc}", file=sys.stderr)
            return EXIT_BAD_ADDRESS
        except AgentwireError as exc:
            print(f"agentwire gateway: {exc}", file=sys.stderr)
            return EXIT_BAD_ADDRESS
    if args.cluster is not None:
        try:
            load_cluster(args.cluster, args.cluster_lease, None)
            if args.shared_agent_types is not None:
                raise AgentwireError("--cluster and --shared-agent-types cannot be combined yet")
        except AgentwireError as exc:
            print(f"agentwire gateway: {exc}", file=sys.stderr)
            return EXIT_BAD_ADDRESS
    try:
        webhooks = load_webhooks(args.webhook)
    except AgentwireError as exc:
        print(f"agentwire gateway: {exc}", file=sys.stderr)
        return EXIT_BAD_ADDRESS
    failure: OSError | None = None
    try:
        trio.run(_run, args, security, webhooks)
    except* OSError as group:
        failure = _first_leaf(group)
    if failure is not None:
        reason = failure.strerror or str(failure)
        print(f"agentwire gateway: cannot listen on {args.address}: {reason}", file=sys.stderr)
        return EXIT_BAD_ADDRESS
    return 0


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    """The first exception of *group* that is not itself a group (nurseries nest)."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _gateway_options(
    args: argparse.Namespace, security: GatewaySecurity, webhooks: list[Any]
) -> GatewayOptions:
    """The options of :func:`serve_gateway` the command line gives."""
    return {
        "max_message_size": args.max_message_size,
        "rpc_timeout": args.rpc_timeout,
        "grace_period": args.grace_period,
        "startup_grace": args.startup_grace,
        "registration_grace": args.registration_grace,
        "keepalive_interval": args.keepalive_interval,
        "keepalive_timeout": args.keepalive_timeout,
        "handshake_timeout": args.handshake_timeout,
        "ssl_context": security.ssl_context,
        "authenticator": security.authenticator,
        "plaintext_address": security.plaintext_address,
        "metrics_address": args.metrics_address,
        "placement": args.shared_agent_types,
        "http_address": args.http_address,
        "webhooks": webhooks,
        "cluster": args.cluster,
        "cluster_lease": args.cluster_lease,
        "state_store": args.state_store,
    }


async def _run(args: argparse.Namespace, security: GatewaySecurity, webhooks: list[Any]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            reloading = trio.CancelScope()

            async def reload(*, task_status: trio.TaskStatus[None]) -> None:
                with reloading:
                    await reload_on_sighup(security.authenticator, task_status=task_status)

            await nursery.start(reload)
            options = _gateway_options(args, security, webhooks)
            gateway: Gateway = await nursery.start(
                functools.partial(serve_gateway, args.address, **options)
            )
            if gateway.plaintext_address is not None:
                logger.info("plaintext loopback listener on %s", gateway.plaintext_address)
            print(f"agentwire gateway listening on {gateway.address}", flush=True)
            if gateway.metrics_address is not None:
                url = f"http://{gateway.metrics_address}/metrics"
                print(f"agentwire gateway metrics on {url}", flush=True)
            if gateway.http_address is not None:
                print(f"agentwire gateway events on http://{gateway.http_address}/", flush=True)
            if gateway.cluster is not None:
                print(f"agentwire gateway in the cluster as {gateway.cluster.id}", flush=True)
            async for signum in signals:
                logger.info("received %s; shutting down", signal.Signals(signum).name)
                break
            await gateway.shutdown()
            reloading.cancel()
