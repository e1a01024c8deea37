"""The one door to the transport's fast paths (``_h2fast``, ``_fdio``).

Each connection asks :func:`use_fast_paths` once, when it is made: the fast
paths are used only if :data:`ENABLED`, the installed h2 and trio are in the
minor series they were checked against, and they have the internals relied
on. Otherwise the connection uses public APIs only (h2's ``send_data`` and
``data_to_send``, the stream's ``send_all`` / ``receive_some``): slower, same
behaviour. The transport tests run the whole suite both ways.
"""

from __future__ import annotations

import h2
import h2.connection
import trio

from . import _fdio, _h2fast

ENABLED = True
"""Set to False to make new connections use the public-API paths only."""


def _series(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def in_checked_series(installed: str, checked: str) -> bool:
    """``installed`` has the major and minor version of ``checked`` (4.4.x for 4.4.1)."""
    return _series(installed) == _series(checked)


def versions_checked() -> bool:
    """The installed h2 and trio are the series the fast paths were checked against."""
    return in_checked_series(h2.__version__, _h2fast.CHECKED_VERSION) and in_checked_series(
        trio.__version__, _fdio.CHECKED_VERSION
    )


def use_fast_paths(conn: h2.connection.H2Connection) -> bool:
    """Whether a new connection (with this h2 state machine) takes the fast paths."""
    return ENABLED and versions_checked() and _h2fast.supported(conn) and _fdio.supported()
