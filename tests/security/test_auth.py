"""Bearer tokens, certificate names, and the certificate authenticator."""

from __future__ import annotations

import pytest

from agentwire._security import (
    AuthenticationError,
    CertificateAuthenticator,
    Credentials,
    Principal,
    TokenTable,
    bearer_metadata,
    certificate_names,
    is_loopback_host,
)


def test_bearer_metadata_is_the_authorization_header() -> None:
    assert bearer_metadata("abc") == (("authorization", "Bearer abc"),)
    with pytest.raises(ValueError, match="line breaks"):
        bearer_metadata("abc\r\nx-evil: 1")


def test_a_token_table_finds_the_principal_of_each_token_and_nothing_else() -> None:
    a, b = Principal("a"), Principal("b")
    table = TokenTable.from_tokens({"tok-a": a, "tok-b": b})
    assert table.lookup("tok-a") is a
    assert table.lookup("tok-b") is b
    assert table.lookup("tok-") is None
    assert table.lookup("") is None


def test_certificate_names_lists_common_names_then_alternative_names() -> None:
    cert = {
        "subject": ((("organizationName", "acme"),), (("commonName", "worker-a"),)),
        "subjectAltName": (("DNS", "worker-a"), ("DNS", "a.example.org"), ("IP Address", "::1")),
    }
    assert certificate_names(cert) == ["worker-a", "a.example.org"]
    assert certificate_names(None) == []


def test_the_certificate_authenticator_names_the_principal_after_the_certificate() -> None:
    auth = CertificateAuthenticator()
    cert = {"subjectAltName": (("DNS", "b.example.org"),)}
    principal = auth.authenticate(Credentials({}, cert))
    assert principal.name == "b.example.org"
    assert principal.rights.register.everything
    with pytest.raises(AuthenticationError, match="client certificate"):
        auth.authenticate(Credentials({}, None))


def test_the_certificate_authenticator_lets_loopback_calls_in_without_a_certificate() -> None:
    assert CertificateAuthenticator().authenticate(Credentials({}, None, "127.0.0.1:9")).name == (
        "loopback"
    )
    with pytest.raises(AuthenticationError):
        CertificateAuthenticator().authenticate(Credentials({}, None, "10.0.0.1:9"))
    with pytest.raises(AuthenticationError):
        CertificateAuthenticator(loopback=None).authenticate(Credentials({}, None, "[::1]:9"))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("0.0.0.0", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_loopback_hosts_are_recognised(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
