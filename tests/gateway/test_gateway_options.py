"""The options of ``serve_gateway`` / ``open_gateway``, declared once in
``GatewayOptions`` with their defaults in ``GATEWAY_DEFAULTS``."""

from __future__ import annotations

import argparse

import attrs
import pytest
import trio

from agentwire import open_gateway, serve_gateway
from agentwire._gateway import GatewayConfig
from agentwire._gateway._command import add_gateway_command
from agentwire._gateway._serve import GATEWAY_DEFAULTS, GatewayOptions


def test_every_option_has_a_default_and_every_hub_setting_is_an_option() -> None:
    assert set(GATEWAY_DEFAULTS) == GatewayOptions.__optional_keys__
    assert {field.name for field in attrs.fields(GatewayConfig)} <= set(GATEWAY_DEFAULTS)


def test_the_command_line_defaults_are_the_options_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_gateway_command(parser.add_subparsers())
    args = parser.parse_args(["gateway"])
    for name in ("max_message_size", "rpc_timeout", "grace_period", "startup_grace"):
        assert getattr(args, name) == GATEWAY_DEFAULTS[name]
    assert args.registration_grace == GATEWAY_DEFAULTS["registration_grace"]
    assert args.keepalive_interval == GATEWAY_DEFAULTS["keepalive_interval"]
    assert args.handshake_timeout == GATEWAY_DEFAULTS["handshake_timeout"]
    assert args.cluster_lease == GATEWAY_DEFAULTS["cluster_lease"]


async def test_options_given_reach_the_gateway_and_the_others_keep_their_defaults() -> None:
    async with open_gateway("127.0.0.1:0", queue_size=7, grace_period=0.5) as gateway:
        assert gateway.config == attrs.evolve(GatewayConfig(), queue_size=7)
        assert gateway.grace_period == 0.5
    async with open_gateway() as gateway:
        assert gateway.config == GatewayConfig()
        assert gateway.grace_period == GATEWAY_DEFAULTS["grace_period"]


async def test_an_unknown_option_is_a_type_error_naming_it() -> None:
    with trio.fail_after(10), pytest.raises(TypeError, match=r"serve_gateway\(\) .* 'rpc_timeot'"):
        await serve_gateway("127.0.0.1:0", rpc_timeot=1.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"open_gateway\(\) .* 'queue'"):
        async with open_gateway(queue=3):  # type: ignore[call-arg]
            pass  # pragma: no cover
