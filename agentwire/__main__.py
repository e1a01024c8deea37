"""``python -m agentwire`` runs the ``agentwire`` command."""

import sys

from ._cli import main

sys.exit(main())
