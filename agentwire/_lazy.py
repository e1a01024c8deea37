"""Modules loaded on first use, so that ``import agentwire`` stays cheap.

An in-process program never touches the wire: it should not pay for protobuf, h2 or the
gateway. :func:`lazy_module` gives a module object that runs the module's code on its first
attribute access (the standard library's ``importlib.util.LazyLoader``); from then on it is
the ordinary module, so attribute access costs nothing more than usual. Use it for a module
only some code paths need, where an ``import`` inside the function would be paid on every
call; type checkers should see the real import under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import importlib.util
import sys
import types

__all__ = ["lazy_module"]


def lazy_module(name: str) -> types.ModuleType:
    """The module *name* (absolute), imported now if loaded already, else on first use."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module
