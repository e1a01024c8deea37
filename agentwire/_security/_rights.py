"""Principals and what they may do: value types, no I/O.

A :class:`Principal` is who a worker is (named by a token or a client
certificate); its :class:`Rights` say which agent types it may register (and
so serve), which topic types it may publish to and subscribe its agents to,
and which agent types it may call. Each right is a list of patterns: a name
(``"orders"``), a prefix ending in ``*`` (``"orders.*"`` matches every name
starting with ``orders.``), or ``"*"`` (everything).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .._errors import PermissionDeniedError

__all__ = [
    "ANONYMOUS",
    "NamePatterns",
    "PermissionDeniedError",
    "Principal",
    "Rights",
]


def _patterns(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("patterns must be a list of strings, not one string")
    patterns = tuple(value)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"a pattern must be a non-empty string, got {pattern!r}")
        if "*" in pattern[:-1]:
            raise ValueError(
                f"pattern {pattern!r}: '*' may only end a pattern ('orders.*') or stand alone"
            )
    return patterns


@attrs.frozen(slots=True)
class NamePatterns:
    """A set of names and name prefixes (see the module docstring)."""

    patterns: tuple[str, ...] = attrs.field(converter=_patterns, default=())
    _exact: frozenset[str] = attrs.field(init=False, eq=False, repr=False)
    _prefixes: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    everything: bool = attrs.field(init=False, eq=False, repr=False)
    """Whether every name matches (``"*"``): callers skip the check."""

    def __attrs_post_init__(self) -> None:
        exact = frozenset(p for p in self.patterns if not p.endswith("*"))
        prefixes = tuple(p[:-1] for p in self.patterns if p.endswith("*"))
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_prefixes", prefixes)
        object.__setattr__(self, "everything", "" in prefixes)

    def allows(self, name: str) -> bool:
        """Whether *name* matches one of the patterns."""
        return name in self._exact or any(name.startswith(p) for p in self._prefixes)

    def allows_prefix(self, prefix: str) -> bool:
        """Whether every name starting with *prefix* matches (a prefix subscription)."""
        return any(prefix.startswith(p) for p in self._prefixes)

    def __str__(self) -> str:
        return ", ".join(self.patterns) if self.patterns else "nothing"


EVERYTHING = NamePatterns(("*",))


@attrs.frozen(slots=True)
class Rights:
    """What a principal may do. The default allows everything."""

    register: NamePatterns = EVERYTHING
    """Agent types it may register, and so serve."""
    publish: NamePatterns = EVERYTHING
    """Topic types it may publish to."""
    subscribe: NamePatterns = EVERYTHING
    """Topic types its agents may subscribe to (prefix subscriptions need a prefix right)."""
    call: NamePatterns = EVERYTHING
    """Agent types it may send RPCs to."""


@attrs.frozen(slots=True)
class Principal:
    """An authenticated identity and its rights. ``name`` appears in errors and logs."""

    name: str
    rights: Rights = Rights()

    def __str__(self) -> str:
        return self.name


ANONYMOUS = Principal("anonymous")
"""The principal of every client when authentication is off: it may do everything."""
