"""The access file: tokens and certificates to principals, with rights; one
clear line naming the entry for every mistake, never the token."""

from __future__ import annotations

import hashlib
import pathlib

import pytest

from agentwire._security import (
    AccessFileAuthenticator,
    AccessFileError,
    AuthenticationError,
    Credentials,
    bearer_metadata,
    parse_access_file,
)

TOKEN_A = "token-of-orders-0123456789"
TOKEN_B = "token-of-billing-0123456789"

GOOD = f"""
[principals.orders]
token = "{TOKEN_A}"
register = ["orders", "orders.*"]
publish = ["order-events"]
subscribe = ["order-events", "billing.*"]

[principals.billing]
token_sha256 = "{hashlib.sha256(TOKEN_B.encode()).hexdigest()}"
certificate = "billing.example.org"
register = ["billing"]
call = ["orders"]
"""


def _creds(
    token: str | None = None, cert_cn: str | None = None, peer: str = "192.0.2.7:4000"
) -> Credentials:
    metadata = dict(bearer_metadata(token)) if token else {}
    cert = {"subject": ((("commonName", cert_cn),),)} if cert_cn else None
    return Credentials(metadata, cert, peer)


def test_rights_come_from_the_file_and_call_defaults_to_everything() -> None:
    access = parse_access_file(GOOD)
    orders, billing = access.principals
    assert orders.name == "orders"
    assert orders.rights.register.allows("orders.eu")
    assert not orders.rights.register.allows("billing")
    assert orders.rights.subscribe.allows_prefix("billing.x")
    assert not orders.rights.subscribe.allows_prefix("order")
    assert orders.rights.call.everything
    assert not billing.rights.publish.allows("anything")  # left out: nothing
    assert billing.rights.call.allows("orders")
    assert not billing.rights.call.allows("hr")


def test_a_plain_token_and_a_hashed_token_both_authenticate(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "access.toml"
    path.write_text(GOOD)
    auth = AccessFileAuthenticator(path)
    assert auth.authenticate(_creds(TOKEN_A)).name == "orders"
    assert auth.authenticate(_creds(TOKEN_B)).name == "billing"


def test_a_certificate_name_authenticates_its_principal(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "access.toml"
    path.write_text(GOOD)
    auth = AccessFileAuthenticator(path)
    assert auth.authenticate(_creds(cert_cn="billing.example.org")).name == "billing"
    with pytest.raises(AuthenticationError, match=r"certificate \(stranger\) is not in"):
        auth.authenticate(_creds(cert_cn="stranger"))


def test_a_wrong_token_is_refused_without_echoing_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "access.toml"
    path.write_text(GOOD)
    auth = AccessFileAuthenticator(path)
    wrong = "guessed-token-0123456789"
    with pytest.raises(AuthenticationError) as info:
        auth.authenticate(_creds(wrong))
    assert wrong not in str(info.value)
    with pytest.raises(AuthenticationError, match="credentials required"):
        auth.authenticate(_creds())
    with pytest.raises(AuthenticationError, match="must be 'Bearer <token>'"):
        auth.authenticate(Credentials({"authorization": f"Basic {TOKEN_A}"}))


def test_reload_applies_a_new_file_and_keeps_the_old_one_when_broken(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "access.toml"
    path.write_text(GOOD)
    auth = AccessFileAuthenticator(path)
    path.write_text(GOOD.replace(TOKEN_A, "rotated-token-0123456789"))
    auth.reload()
    with pytest.raises(AuthenticationError):
        auth.authenticate(_creds(TOKEN_A))
    assert auth.authenticate(_creds("rotated-token-0123456789")).name == "orders"
    path.write_text("[principals.orders\n")
    with pytest.raises(AccessFileError, match="not valid TOML"):
        auth.reload()
    assert auth.authenticate(_creds("rotated-token-0123456789")).name == "orders"


def test_the_loopback_principal_is_who_calls_from_this_machine_without_credentials() -> None:
    access = GOOD + '[principals.local]\nloopback = true\nregister = ["legacy"]\n'
    path_free = parse_access_file(access)
    assert path_free.loopback is not None
    assert path_free.loopback.rights.register.allows("legacy")


def test_only_a_loopback_peer_without_credentials_is_the_loopback_principal(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "access.toml"
    path.write_text(GOOD + "[principals.local]\nloopback = true\n")
    auth = AccessFileAuthenticator(path)
    assert auth.authenticate(_creds(peer="127.0.0.1:5000")).name == "local"
    assert auth.authenticate(_creds(peer="[::1]:5000")).name == "local"
    assert auth.authenticate(_creds(TOKEN_A, peer="127.0.0.1:5000")).name == "orders"
    with pytest.raises(AuthenticationError, match="credentials required"):
        auth.authenticate(_creds(peer="192.0.2.7:5000"))
    with pytest.raises(AuthenticationError, match="not in the gateway's access file"):
        auth.authenticate(_creds(cert_cn="stranger", peer="127.0.0.1:5000"))


def test_without_a_loopback_principal_loopback_calls_need_credentials(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "access.toml"
    path.write_text(GOOD)
    with pytest.raises(AuthenticationError, match="credentials required"):
        AccessFileAuthenticator(path).authenticate(_creds(peer="127.0.0.1:5000"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[principals.a\n", r"access\.toml: not valid TOML: .*line 1"),
        ("[users.a]\n", r"unknown top-level key 'users'"),
        ('[principals.a]\ntoken = "short"\n', r"\[principals\.a\]: 'token' must be .* 16"),
        (
            f'[principals.a]\ntoken = "{TOKEN_A}"\nregster = ["x"]\n',
            r"\[principals\.a\]: unknown key 'regster'",
        ),
        (
            f'[principals.a]\ntoken = "{TOKEN_A}"\nregister = "orders"\n',
            r"\[principals\.a\]: 'register' must be a list of strings",
        ),
        (
            f'[principals.a]\ntoken = "{TOKEN_A}"\npublish = ["a*b"]\n',
            r"\[principals\.a\]: 'publish': pattern 'a\*b'",
        ),
        ('[principals.a]\nregister = ["x"]\n', r"\[principals\.a\]: give a 'token'"),
        ('[principals.a]\ntoken_sha256 = "abc"\n', r"'token_sha256' must be 64 hexadecimal"),
        ('[principals.a]\nloopback = "yes"\n', r"\[principals\.a\]: 'loopback' must be true"),
        (
            "[principals.a]\nloopback = true\n[principals.b]\nloopback = true\n",
            r"\[principals\.b\]: only one principal may be 'loopback' \(\[principals\.a\]",
        ),
        (
            f'[principals.a]\ntoken = "{TOKEN_A}"\n[principals.b]\ntoken = "{TOKEN_A}"\n',
            r"\[principals\.b\] has the same token as \[principals\.a\]",
        ),
        (
            '[principals.a]\ncertificate = "x"\n[principals.b]\ncertificate = "x"\n',
            r"\[principals\.b\] names the same certificate as \[principals\.a\]",
        ),
    ],
)
def test_a_mistake_is_one_line_naming_the_file_and_entry(text: str, message: str) -> None:
    with pytest.raises(AccessFileError, match=message) as info:
        parse_access_file(text, "access.toml")
    assert str(info.value).startswith("access.toml")
    assert "\n" not in str(info.value)
    assert TOKEN_A not in str(info.value)


def test_an_unreadable_file_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(AccessFileError, match=r"cannot read the access file .*missing\.toml"):
        AccessFileAuthenticator(tmp_path / "missing.toml")
