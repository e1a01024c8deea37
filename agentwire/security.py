"""Securing a gateway: TLS contexts, authenticators, principals and rights.

``agentwire.open_gateway(..., ssl_context=server_ssl_context(...),
authenticator=AccessFileAuthenticator("access.toml"))`` and
``agentwire.open_worker("grpcs://host:port", token=...)``; the README's
"Security" section describes the access file and the trust model.
"""

from __future__ import annotations

from ._errors import GatewayRefusedError
from ._security import (
    ANONYMOUS,
    LOOPBACK,
    AccessFileAuthenticator,
    AccessFileError,
    AuthenticationError,
    Authenticator,
    CertificateAuthenticator,
    Credentials,
    GuardStatistics,
    NamePatterns,
    PermissionDeniedError,
    Principal,
    Rights,
    TLSConfigError,
    bearer_metadata,
    certificate_names,
    client_ssl_context,
    parse_access_file,
    server_ssl_context,
)
from ._security._loopback import PlaintextListenerError

__all__ = [
    "ANONYMOUS",
    "LOOPBACK",
    "AccessFileAuthenticator",
    "AccessFileError",
    "AuthenticationError",
    "Authenticator",
    "CertificateAuthenticator",
    "Credentials",
    "GatewayRefusedError",
    "GuardStatistics",
    "NamePatterns",
    "PermissionDeniedError",
    "PlaintextListenerError",
    "Principal",
    "Rights",
    "TLSConfigError",
    "bearer_metadata",
    "certificate_names",
    "client_ssl_context",
    "parse_access_file",
    "server_ssl_context",
]
