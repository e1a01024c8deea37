"""One registered agent type: how the runtime gets its agents (a factory, or instances)."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from types import CoroutineType
from typing import Any

from .._agents import Agent, AgentRuntime, BaseAgent
from .._agents._base import _instantiation
from .._ids import AgentId

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

    async def create(self, runtime: AgentRuntime, agent_id: AgentId) -> Agent:
        """Make and bind the agent *agent_id* with the factory (a factory-registered type)."""
        factory = self.factory
        assert factory is not None
        token = _instantiation.set((runtime, agent_id))  # AgentInstantiationContext
        try:
            agent = factory(runtime, agent_id) if self.two_args else factory()
            if agent.__class__ is CoroutineType or (
                not isinstance(agent, BaseAgent) and inspect.isawaitable(agent)
            ):
                agent = await agent
        finally:
            _instantiation.reset(token)
        expected = self.expected_class
        if expected is not None and not isinstance(agent, expected):
            raise ValueError(
                f"the factory of {agent_id.type!r} made a {agent.__class__.__name__}, "
                f"expected a {expected.__name__}"
            )
        await agent.bind_id_and_runtime(agent_id, runtime)
        bound: Agent = agent
        return bound
