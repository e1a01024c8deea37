"""RFC 6902 JSON Patch, typed: the one place that imports ``jsonpatch``."""

from __future__ import annotations

from typing import Any

import jsonpatch  # type: ignore[import-untyped,unused-ignore]

__all__ = ["apply_patch", "make_patch"]


def make_patch(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch operations that turn *old* into *new*."""
    operations: list[dict[str, Any]] = jsonpatch.make_patch(old, new).patch
    return operations


def apply_patch(state: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """*state* with *operations* applied, as a new object (*state* is left alone)."""
    from ._log import StateError

    try:
        result = jsonpatch.apply_patch(state, operations, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise StateError(f"a stored delta does not apply to the state before it: {exc}") from None
    if not isinstance(result, dict):
        raise StateError("a stored delta replaced the state by something not a JSON object")
    return result
