"""RFC 6902 JSON Patch, typed: the one place that imports ``jsonpatch``.

``make_patch`` compares an object's members by their JSON text (exact, and at
C speed: ``1``, ``1.0`` and ``true`` differ, as JSON says), leaves equal ones
alone, writes a list that only grew at its end as ``add`` operations for the
new items, and lets ``jsonpatch`` diff what is left.
"""

from __future__ import annotations

import json
from typing import Any

import jsonpatch  # type: ignore[import-untyped,unused-ignore]

__all__ = ["apply_patch", "make_patch"]


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def make_patch(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch operations that turn *old* into *new*."""
    operations: list[dict[str, Any]] = [
        {"op": "remove", "path": "/" + _pointer(key)} for key in old if key not in new
    ]
    for key, value in new.items():
        path = "/" + _pointer(key)
        if key not in old:
            operations.append({"op": "add", "path": path, "value": value})
            continue
        before = old[key]
        if _text(before) == _text(value):
            continue
        if (
            isinstance(before, list)
            and isinstance(value, list)
            and len(value) > len(before)
            and _text(value[: len(before)]) == _text(before)
        ):
            operations.extend(
                {"op": "add", "path": f"{path}/{index}", "value": value[index]}
                for index in range(len(before), len(value))
            )
            continue
        for operation in jsonpatch.make_patch({key: before}, {key: value}).patch:
            operations.append(operation)
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
