"""The ``agentwire`` command: ``--version``, and ``agentwire demo`` end to end."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import agentwire
from agentwire._cli import main


def test_demo_command_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentwire", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gateway listening on 127.0.0.1:")
    assert "rpc alpha -> beta  greeter/1: 'hello ada, from greeter/1'" in lines
    assert "rpc beta -> alpha  counter/1: total is 42" in lines
    assert any("failed remotely: ValueError: cannot add a negative amount" in x for x in lines)
    assert sum(x.startswith("publish news -> listener_") for x in lines) == 4
    assert any("(protobuf, from greeter/1)" in x for x in lines)
    assert any(x.startswith("throughput: 2000 RPCs") for x in lines)
    assert lines[-1] == "done"


def test_version_option_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"agentwire {agentwire.__version__}\n"
    assert importlib.metadata.version("trio-agentwire") == agentwire.__version__


def test_demo_help_describes_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "an agentwire gateway and two workers" in text
    assert "pip install 'trio-agentwire[demo]'" in text


def test_demo_without_betterproto2_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "betterproto2", None)  # as if not installed
    for name in list(sys.modules):  # the demo and the generated code it imports, unloaded
        if name == "agentwire._demo" or name.startswith("agentwire._examples"):
            monkeypatch.delitem(sys.modules, name)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "betterproto2 is not installed" in err
    assert "pip install 'trio-agentwire[demo]'" in err
