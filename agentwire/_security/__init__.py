"""Gateway security: TLS contexts, authentication, and access decisions."""

from ._access_file import AccessFile, AccessFileAuthenticator, AccessFileError, parse_access_file
from ._auth import (
    AUTHORIZATION_KEY,
    LOOPBACK,
    AuthenticationError,
    Authenticator,
    CertificateAuthenticator,
    Credentials,
    TokenTable,
    bearer_metadata,
    certificate_names,
    is_loopback_host,
)
from ._guard import AccessGuard, GuardStatistics
from ._rights import ANONYMOUS, NamePatterns, PermissionDeniedError, Principal, Rights
from ._tls import TLSConfigError, client_ssl_context, server_ssl_context, split_secure_address

__all__ = [
    "ANONYMOUS",
    "AUTHORIZATION_KEY",
    "LOOPBACK",
    "AccessFile",
    "AccessFileAuthenticator",
    "AccessFileError",
    "AccessGuard",
    "AuthenticationError",
    "Authenticator",
    "CertificateAuthenticator",
    "Credentials",
    "GuardStatistics",
    "NamePatterns",
    "PermissionDeniedError",
    "Principal",
    "Rights",
    "TLSConfigError",
    "TokenTable",
    "bearer_metadata",
    "certificate_names",
    "client_ssl_context",
    "is_loopback_host",
    "parse_access_file",
    "server_ssl_context",
    "split_secure_address",
]
