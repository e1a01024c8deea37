"""``python -m benchmarks`` (what ``nox -s bench`` runs)."""

from __future__ import annotations

import sys

from ._harness import main

sys.exit(main())
