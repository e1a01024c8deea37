"""One registered agent type: how the runtime gets its agents (a factory, or instances)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["Registration"]


class Registration:
    """How to get the agents of one registered type: a factory, or registered instances."""

    __slots__ = ("expected_class", "factory", "instance_class", "two_args")

    def __init__(
        self,
        factory: Callable[..., Any] | None,
        expected_class: type | None,
        instance_class: type | None = None,
    ) -> None:
        self.factory = factory
        self.expected_class = expected_class
        self.instance_class = instance_class  # set for instance-registered types
        self.two_args = False
        if factory is not None:
            try:
                params = inspect.signature(factory).parameters
            except (TypeError, ValueError):  # pragma: no cover - builtins
                params = {}  # type: ignore[assignment]
            required = [
                p
                for p in params.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if len(required) == 2:
                warnings.warn(
                    "agent factories taking (runtime, agent_id) are deprecated: take no "
                    "arguments and use AgentInstantiationContext",
                    DeprecationWarning,
                    stacklevel=4,
                )
                self.two_args = True
            elif required:
                raise ValueError("an agent factory must take no arguments")
