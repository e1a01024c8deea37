"""Interop tests run real AutoGen 0.7.5 and only in `nox -s interop`.

That session installs ``autogen-ext[grpc]==0.7.5`` (which pins grpcio and
protobuf) next to agentwire and sets ``AGENTWIRE_INTEROP=1``. Elsewhere these
modules are not even collected, since they import AutoGen's packages; the
interop session fails loudly if AutoGen is missing.
"""

from __future__ import annotations

import os

import pytest

INTEROP = os.environ.get("AGENTWIRE_INTEROP") == "1"

if not INTEROP:
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/interop/" in str(item.path):
            item.add_marker(pytest.mark.interop)


if INTEROP:
    import autogen_core  # noqa: F401  (fail the session at once if AutoGen is missing)
    import autogen_ext.runtimes.grpc  # noqa: F401
