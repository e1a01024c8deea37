"""TLS contexts from PEM files: what works, and one clear line for what does not."""

from __future__ import annotations

import pathlib
import ssl

import pytest
import trio

from agentwire._security import (
    TLSConfigError,
    client_ssl_context,
    server_ssl_context,
    split_secure_address,
)

from .conftest import Pki


def test_a_server_context_speaks_tls12_or_newer_without_client_certificates(pki: Pki) -> None:
    context = server_ssl_context(pki.server_cert, pki.server_key)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE


def test_a_client_ca_makes_client_certificates_required(pki: Pki) -> None:
    context = server_ssl_context(pki.server_cert, pki.server_key, client_ca=pki.ca_file)
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_a_missing_certificate_file_is_named(pki: Pki, tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSConfigError, match=r"cannot read the server certificate .*nope\.pem"):
        server_ssl_context(missing, pki.server_key)


def test_a_file_that_is_not_pem_is_named(pki: Pki, tmp_path: pathlib.Path) -> None:
    garbage = tmp_path / "key.pem"
    garbage.write_text("not a key\n")
    with pytest.raises(TLSConfigError, match=r"server key .*key\.pem is not a PEM file"):
        server_ssl_context(pki.server_cert, garbage)


def test_a_key_of_another_certificate_is_reported_as_a_mismatch(pki: Pki) -> None:
    with pytest.raises(TLSConfigError, match=r"does not belong to the certificate"):
        server_ssl_context(pki.server_cert, pki.client_key)


def test_a_broken_pem_certificate_is_reported(pki: Pki, tmp_path: pathlib.Path) -> None:
    broken = tmp_path / "cert.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TLSConfigError, match=r"cannot load the server certificate .*cert\.pem"):
        server_ssl_context(broken, pki.server_key)


def test_an_unreadable_client_ca_is_named(pki: Pki, tmp_path: pathlib.Path) -> None:
    with pytest.raises(TLSConfigError, match=r"client CA file .*ca\.pem"):
        server_ssl_context(pki.server_cert, pki.server_key, client_ca=tmp_path / "ca.pem")


def test_a_client_key_without_its_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(TLSConfigError, match="without its certificate"):
        client_ssl_context(ca=pki.ca_file, key=pki.client_key)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("grpcs://gw.example.org:443", ("gw.example.org:443", True)),
        ("HTTPS://gw:443/", ("gw:443", True)),
        ("grpc://127.0.0.1:50051", ("127.0.0.1:50051", False)),
        ("http://[::1]:1", ("[::1]:1", False)),
        ("localhost:50051", ("localhost:50051", None)),
    ],
)
def test_a_scheme_says_whether_the_address_wants_tls(
    address: str, expected: tuple[str, bool | None]
) -> None:
    assert split_secure_address(address) == expected


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> trio.SSLStream[object]:
    left, right = trio.testing.memory_stream_pair()
    server_side = trio.SSLStream(left, server, server_side=True)
    client_side = trio.SSLStream(right, client, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side.do_handshake)
        nursery.start_soon(client_side.do_handshake)
    return server_side  # type: ignore[return-value]


async def test_the_contexts_agree_on_h2_and_the_server_sees_the_client_certificate(
    pki: Pki,
) -> None:
    server = server_ssl_context(pki.server_cert, pki.server_key, client_ca=pki.ca_file)
    client = client_ssl_context(ca=pki.ca_file, cert=pki.client_cert, key=pki.client_key)
    server_side = await _handshake(server, client)
    assert server_side.selected_alpn_protocol() == "h2"
    subject = server_side.getpeercert()["subject"]
    assert (("commonName", "worker-a"),) in subject


async def test_a_client_trusting_another_ca_fails_the_handshake(pki: Pki) -> None:
    server = server_ssl_context(pki.server_cert, pki.server_key)
    client = client_ssl_context(ca=pki.other_ca_file)
    broken = pytest.RaisesExc(trio.BrokenResourceError)
    with pytest.RaisesGroup(broken, allow_unwrapped=True, flatten_subgroups=True):
        await _handshake(server, client)
