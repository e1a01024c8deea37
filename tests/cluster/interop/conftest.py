"""A cluster with real AutoGen 0.7.5 workers: collected only by `nox -s interop`."""

from __future__ import annotations

import os

import pytest

if os.environ.get("AGENTWIRE_INTEROP") != "1":
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/cluster/interop/" in str(item.path):
            item.add_marker(pytest.mark.interop)
