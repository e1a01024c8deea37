"""The health table's invariants (H1-H4), checked after every step of random operations."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agentwire._observability._health import SERVER, HealthStatus, HealthTable

SERVICES = st.sampled_from([SERVER, "agents.AgentRpc", "other.Service"])
STORED = st.sampled_from([HealthStatus.SERVING, HealthStatus.NOT_SERVING])


class HealthMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = HealthTable()
        self.model: dict[str, HealthStatus] = {SERVER: HealthStatus.SERVING}
        self.shutting_down = False
        self.changes = 0

    @rule(service=SERVICES, status=STORED)
    def set(self, service: str, status: HealthStatus) -> None:
        wanted = HealthStatus.NOT_SERVING if self.shutting_down else status
        expect_change = self.model.get(service) is not wanted
        assert self.table.set(service, status) is expect_change
        if expect_change:
            self.model[service] = wanted
            self.changes += 1

    @rule()
    def begin_shutdown(self) -> None:
        assert self.table.begin_shutdown() is not self.shutting_down
        if not self.shutting_down:
            self.shutting_down = True
            self.model = dict.fromkeys(self.model, HealthStatus.NOT_SERVING)
            self.changes += 1

    @rule(service=SERVICES)
    def read(self, service: str) -> None:
        assert self.table.status(service) is self.model.get(service)

    @invariant()
    def invariants_hold(self) -> None:
        self.table.check_invariants()
        assert self.table.services() == self.model
        assert self.table.version == self.changes  # H3


TestHealthTable = HealthMachine.TestCase


@pytest.mark.parametrize("status", [HealthStatus.UNKNOWN, HealthStatus.SERVICE_UNKNOWN])
def test_only_serving_and_not_serving_are_stored(status: HealthStatus) -> None:
    table = HealthTable()
    with pytest.raises(ValueError, match="SERVING or NOT_SERVING"):
        table.set("x", status)
    assert table.status("x") is None
    assert table.version == 0


def test_initial_services_do_not_count_as_changes() -> None:
    table = HealthTable({"agents.AgentRpc": HealthStatus.SERVING})
    assert table.services() == {
        SERVER: HealthStatus.SERVING,
        "agents.AgentRpc": HealthStatus.SERVING,
    }
    assert table.version == 0
