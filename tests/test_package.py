"""The package surface: lazily loaded public names, and what an in-process program imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agentwire

WIRE_MODULES = ("h2", "grpclib", "google.protobuf", "agentwire._gateway", "agentwire._transport")

IN_PROCESS_PROGRAM = """
import dataclasses, sys, trio, agentwire as aw

@dataclasses.dataclass
class Greet:
    name: str

class Greeter(aw.RoutedAgent):
    def __init__(self) -> None:
        super().__init__("says hello")

    @aw.rpc
    async def greet(self, message: Greet, ctx: aw.MessageContext) -> str:
        return f"hello {message.name}"

async def main() -> None:
    async with aw.open_runtime() as runtime:
        await Greeter.register(runtime, "greeter", Greeter)
        await runtime.add_subscription(aw.TypeSubscription("hi", "greeter"))
        await runtime.publish_message(Greet("bo"), aw.TopicId("hi", "x"))
        print(await runtime.send_message(Greet("ada"), aw.AgentId("greeter", "1")))
        await runtime.stop_when_idle()

trio.run(main)
print(" ".join(name for name in sys.argv[1:] if name in sys.modules))
"""


def _run(code: str, *args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


def test_importing_agentwire_loads_no_wire_module() -> None:
    code = "import sys, agentwire; agentwire.open_runtime; print(*sorted(sys.modules))"
    loaded = set(_run(code)[0].split())
    assert "agentwire._runtime._local" in loaded
    assert loaded.isdisjoint(WIRE_MODULES)


def test_an_in_process_program_loads_no_wire_module() -> None:
    answer, loaded = _run(IN_PROCESS_PROGRAM, *WIRE_MODULES)
    assert answer == "hello ada"
    assert loaded == ""


def test_the_wire_is_loaded_when_a_wire_name_is_used() -> None:
    loaded = _run("import agentwire; agentwire.open_gateway; print('ok')")
    assert loaded == ["ok"]
    code = "import sys, agentwire; agentwire.open_worker; print(*sorted(sys.modules))"
    assert {"grpclib", "google.protobuf"} <= set(_run(code)[0].split())


def test_every_public_name_is_listed_and_resolves() -> None:
    assert set(agentwire.__all__) == {*agentwire._EXPORTS, "__version__"}
    for name in agentwire.__all__:
        value = getattr(agentwire, name)
        assert value is not None
        if name != "__version__":
            assert value is getattr(sys.modules[f"agentwire{agentwire._EXPORTS[name]}"], name)


def test_dir_shows_the_public_names_before_they_are_loaded() -> None:
    code = "import agentwire; print(*dir(agentwire))"
    assert set(agentwire.__all__) <= set(_run(code)[0].split())


def test_star_import_gives_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from agentwire import *", namespace)
    assert {"open_runtime", "open_worker", "open_gateway", "AgentId"} <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'open_nothing'"):
        agentwire.open_nothing  # type: ignore[attr-defined]  # noqa: B018


def test_a_loaded_name_becomes_a_plain_module_attribute() -> None:
    code = (
        "import agentwire; print('TopicId' in vars(agentwire)); agentwire.TopicId; "
        "print('TopicId' in vars(agentwire))"
    )
    assert _run(code) == ["False", "True"]
