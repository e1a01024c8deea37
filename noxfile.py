"""Development tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s proto``, ``nox -s interop``,
``nox -s bench``."""

from __future__ import annotations

import os
import pathlib

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

ROOT = pathlib.Path(__file__).resolve().parent
# protoc (grpcio-tools), betterproto2-compiler and the ruff it formats with, pinned:
# `nox -s proto` output must not depend on the day the venv was built.
PROTO_TOOLS = ROOT / "proto" / "tools.txt"
AUTOGEN = "autogen-ext[grpc]==0.7.5"


def _protoc_python(session: nox.Session) -> str:
    """A python with proto/tools.txt, in a venv of its own (grpcio-tools pins protobuf<5).

    Rebuilt when proto/tools.txt changes (the venv keeps a copy of what it holds).
    """
    venv = ROOT / ".nox" / "_protoc"
    python = venv / "bin" / "python"
    installed = venv / "tools.txt"
    wanted = PROTO_TOOLS.read_text()
    if not installed.exists() or installed.read_text() != wanted:
        session.run("python", "-m", "venv", "--clear", str(venv), external=True)
        session.run(
            str(python), "-m", "pip", "install", "-q", "-r", str(PROTO_TOOLS), external=True
        )
        installed.write_text(wanted)
    return str(python)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (everything but the AutoGen interop tests)."""
    session.install("-e", ".[test]")
    env = {"AGENTWIRE_PROTOC_PYTHON": _protoc_python(session)}
    session.run("pytest", "-m", "not interop", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and mypy --strict."""
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate agentwire/_proto, agentwire/_examples and tests/examples_pb2 from proto/."""
    python = _protoc_python(session)
    session.run(python, "proto/generate.py", external=True)


@nox.session
def interop(session: nox.Session) -> None:
    """Interop tests against real AutoGen 0.7.5 (it pins grpcio and protobuf)."""
    # One resolution, so that the test extra (grpcio-health-checking) is held to AutoGen's pins.
    session.install(AUTOGEN, "-e", ".[test]")
    session.run("pytest", "-m", "interop", *session.posargs, env={"AGENTWIRE_INTEROP": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: agentwire against AutoGen 0.7.5, side by side."""
    # demo: betterproto2, for the payload workload's dataclasses
    # cluster: coredis, for the stateful and cluster workloads
    session.install("-e", ".[demo,cluster]")
    # trustme: certificates for grpc_tls; grpcio: the ceiling workload's plain gRPC
    session.install("rich", "matplotlib", "trustme", "grpcio")
    # AutoGen runs in an interpreter of its own (it pins grpcio and protobuf): the one named by
    # $AGENTWIRE_AUTOGEN_PYTHON if set, else a venv built here once.
    python = os.environ.get("AGENTWIRE_AUTOGEN_PYTHON", "")
    if not python:
        autogen_venv = ROOT / ".nox" / "_autogen_bench"
        python = str(autogen_venv / "bin" / "python")
        if not pathlib.Path(python).exists():
            session.run("python", "-m", "venv", str(autogen_venv), external=True)
            session.run(python, "-m", "pip", "install", "-q", AUTOGEN, external=True)
    env = {"AGENTWIRE_AUTOGEN_PYTHON": python, "PYTHONHASHSEED": "0"}
    # e.g. `nox -s bench -- --quick`, `nox -s bench -- --only grpc`
    session.run("python", "-m", "benchmarks", *session.posargs, env=env)


if os.environ.get("CI"):
    nox.options.error_on_missing_interpreters = True
