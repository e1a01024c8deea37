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

__all__ = ["apply_patch", "extends", "make_patch"]


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def make_patch(
    old: dict[str, Any],
    new: dict[str, Any],
    changed: dict[str, Any] | None = None,
    old_texts: dict[str, str] | None = None,
    new_texts: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The JSON Patch operations that turn *old* into *new*.

    A caller that knows them passes the members of *new* that differ from
    *old* (*changed*) and the compact JSON texts of both objects' members:
    nothing is then encoded again.
    """
    if old_texts is None:
        old_texts = {key: _text(value) for key, value in old.items()}
    if new_texts is None:
        new_texts = {key: _text(value) for key, value in new.items()}
    if changed is None:
        changed = {key: new[key] for key, text in new_texts.items() if old_texts.get(key) != text}
    operations: list[dict[str, Any]] = [
        {"op": "remove", "path": "/" + _pointer(key)} for key in old if key not in new
    ]
    for key, value in changed.items():
        path = "/" + _pointer(key)
        if key not in old:
            operations.append({"op": "add", "path": path, "value": value})
            continue
        before = old[key]
        if (
            isinstance(before, list)
            and isinstance(value, list)
            and len(value) > len(before)
            and extends(old_texts[key], new_texts[key])
        ):
            operations.extend(
                {"op": "add", "path": f"{path}/{index}", "value": value[index]}
                for index in range(len(before), len(value))
            )
            continue
        for operation in jsonpatch.make_patch({key: before}, {key: value}).patch:
            operations.append(operation)
    return operations


def extends(before: str, after: str) -> bool:
    """Whether the list whose compact JSON is *after* starts with the items of *before*'s.

    Compact JSON writes a list as ``[a,b]``: a list with more items after
    those is ``[a,b,`` and more, and an item's text never contains a comma
    outside a string or a nested value that would end it there early.
    """
    if before == "[]":
        return True
    return after.startswith(before[:-1]) and after[len(before) - 1] == ","


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
