"""Certificates made at test time (trustme): a CA, a server certificate for
localhost, and client certificates, as PEM files."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import ClassVar

import attrs
import pytest
import trustme

import agentwire as aw


@attrs.frozen
class Pki:
    ca_file: pathlib.Path
    server_cert: pathlib.Path
    server_key: pathlib.Path
    client_cert: pathlib.Path  # names "worker-a"
    client_key: pathlib.Path
    other_ca_file: pathlib.Path  # a CA that signed nothing here
    ca: trustme.CA


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = ca.issue_cert("worker-a", common_name="worker-a")
    paths = {name: root / f"{name}.pem" for name in ("ca", "scert", "skey", "ccert", "ckey", "oca")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["scert"]))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["scert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["skey"]))
    client.cert_chain_pems[0].write_to_path(str(paths["ccert"]))
    client.private_key_pem.write_to_path(str(paths["ckey"]))
    trustme.CA().cert_pem.write_to_path(str(paths["oca"]))
    return Pki(
        paths["ca"],
        paths["scert"],
        paths["skey"],
        paths["ccert"],
        paths["ckey"],
        paths["oca"],
        ca,
    )


@dataclasses.dataclass
class Shout:
    text: str


@dataclasses.dataclass
class Reply:
    text: str


class Shouter(aw.RoutedAgent):
    """Answers a Shout in capitals; records the Shouts published to it."""

    heard: ClassVar[list[str]] = []

    def __init__(self) -> None:
        super().__init__("shouts back")

    @aw.rpc
    async def shout(self, message: Shout, ctx: aw.MessageContext) -> Reply:
        return Reply(message.text.upper())

    @aw.event
    async def hear(self, message: Reply, ctx: aw.MessageContext) -> None:
        Shouter.heard.append(message.text)
