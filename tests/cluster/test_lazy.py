"""Without ``cluster=`` nothing of the cluster (nor coredis) is imported."""

from __future__ import annotations

import subprocess
import sys

GATEWAY_PROGRAM = """
import sys, trio, agentwire

async def main() -> None:
    async with agentwire.open_gateway("127.0.0.1:0") as gateway:
        async with agentwire.open_worker(gateway.address) as worker:
            await worker.add_subscription(agentwire.TypeSubscription("t", "a"))

trio.run(main)
print(*sorted(name for name in sys.modules if name.split(".")[0] == "coredis"
              or name.startswith("agentwire._cluster")))
"""


def test_a_gateway_without_a_cluster_imports_neither_coredis_nor_the_cluster() -> None:
    result = subprocess.run(
        [sys.executable, "-c", GATEWAY_PROGRAM], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_importing_agentwire_imports_no_coredis() -> None:
    code = "import sys, agentwire; agentwire.open_gateway; print('coredis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
