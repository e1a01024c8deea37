"""``host:port`` addresses, parsed and checked in one place (gateway and worker).

:func:`parse_address` accepts ``HOST:PORT`` and ``[IPV6]:PORT``: the host must
be non-empty and the port a decimal number from 0 to 65535 (0: the system
picks a free port). Anything else
raises :class:`InvalidAddressError`, a ``ValueError``, naming what is wrong.
Whether the host resolves is left to the socket layer.
"""

from __future__ import annotations

from ._errors import AgentwireError

__all__ = ["MAX_PORT", "InvalidAddressError", "parse_address"]

MAX_PORT = 65535


class InvalidAddressError(AgentwireError, ValueError):
    """An address is not ``host:port`` with a port from 0 to 65535."""


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into ``(host, port)``, checking both."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise InvalidAddressError(f"address {text!r} has no port: expected HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidAddressError(
            f"address {text!r}: write an IPv6 host in brackets, e.g. [::1]:{port_text}"
        )
    if not host:
        raise InvalidAddressError(f"address {text!r} has no host: expected HOST:PORT")
    if not port_text.isascii() or not port_text.isdigit():
        raise InvalidAddressError(
            f"address {text!r}: port {port_text!r} is not a number from 0 to {MAX_PORT}"
        )
    port = int(port_text)
    if port > MAX_PORT:
        raise InvalidAddressError(
            f"address {text!r}: port {port} is out of range (0 to {MAX_PORT})"
        )
    return host, port
