"""The access guard's decisions, example by example (the state machine is in
test_guard_stateful.py)."""

from __future__ import annotations

import pytest

from agentwire._proto import agent_worker_pb2 as pb
from agentwire._security import (
    ANONYMOUS,
    AccessGuard,
    AuthenticationError,
    Credentials,
    NamePatterns,
    PermissionDeniedError,
    Principal,
    Rights,
)

ALICE = Principal(
    "alice",
    Rights(
        register=NamePatterns(["orders", "orders.*"]),
        publish=NamePatterns(["order-events"]),
        subscribe=NamePatterns(["order-events", "billing.*"]),
        call=NamePatterns(["billing"]),
    ),
)
MALLORY = Principal("mallory", Rights(register=NamePatterns(["*"])))


class _Fixed:
    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal

    def authenticate(self, credentials: Credentials) -> Principal:
        if self.principal is None:
            raise AuthenticationError("no")
        return self.principal


def _sub(topic: str, agent: str, *, prefix: bool = False) -> pb.Subscription:
    if prefix:
        return pb.Subscription(
            id="s",
            typePrefixSubscription=pb.TypePrefixSubscription(
                topic_type_prefix=topic, agent_type=agent
            ),
        )
    return pb.Subscription(
        id="s", typeSubscription=pb.TypeSubscription(topic_type=topic, agent_type=agent)
    )


def test_without_an_authenticator_everyone_is_anonymous_and_nothing_is_recorded() -> None:
    guard = AccessGuard()
    assert guard.authenticate(Credentials({})) is ANONYMOUS
    guard.claim(ANONYMOUS, "c1")
    assert guard.owner_of("c1") is None
    assert guard.may_see(ANONYMOUS, "someone-elses")
    assert "with client c9" in guard.registration_conflict(ANONYMOUS, "t", "c9")


def test_refused_authentication_is_counted() -> None:
    guard = AccessGuard(_Fixed(None))
    with pytest.raises(AuthenticationError):
        guard.authenticate(Credentials({}))
    assert guard.statistics().unauthenticated == 1


def test_a_client_id_belongs_to_the_first_principal_that_used_it() -> None:
    known = {"c1"}
    guard = AccessGuard(_Fixed(ALICE), is_known=known.__contains__)
    guard.check_client(ALICE, "c1")
    guard.claim(ALICE, "c1")
    guard.check_client(ALICE, "c1")  # its own reconnect is fine
    with pytest.raises(PermissionDeniedError, match="'mallory' may not use this client-id") as info:
        guard.check_client(MALLORY, "c1")
    assert "c1" not in str(info.value)
    assert guard.statistics().denials == 1
    known.clear()
    guard.check_client(MALLORY, "c1")  # free again once the router forgot it
    assert guard.owner_of("c1") is None


def test_registering_needs_the_register_right() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.check_register(ALICE, "orders.eu")
    with pytest.raises(
        PermissionDeniedError, match=r"'alice' may not register agent type 'billing'"
    ):
        guard.check_register(ALICE, "billing")


def test_a_subscription_needs_an_own_agent_type_and_the_subscribe_right() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.check_subscription(ALICE, _sub("order-events", "orders"))
    guard.check_subscription(ALICE, _sub("billing.eu.", "orders", prefix=True))
    guard.check_subscription(ALICE, _sub("orders.eu:", "orders.eu", prefix=True))  # direct
    with pytest.raises(PermissionDeniedError, match="may not subscribe agent type 'hr'"):
        guard.check_subscription(ALICE, _sub("order-events", "hr"))
    with pytest.raises(PermissionDeniedError, match="may not subscribe to topic type 'payroll'"):
        guard.check_subscription(ALICE, _sub("payroll", "orders"))
    with pytest.raises(PermissionDeniedError, match="starting with 'order'"):
        guard.check_subscription(ALICE, _sub("order", "orders", prefix=True))


def test_publish_and_call_rights_are_checked_per_message_and_refusals_counted() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.claim(ALICE, "alice-1")
    assert guard.refuse_event("alice-1", "order-events") is None
    assert guard.refuse_event("alice-1", "payroll") == (
        "principal 'alice' may not publish to topic type 'payroll' "
        "(its 'publish' right allows: order-events)"
    )
    assert guard.refuse_request("alice-1", "billing") is None
    assert "'alice' may not call agent type 'hr'" in str(guard.refuse_request("alice-1", "hr"))
    assert guard.refuse_control("alice-1", "agentid=billing/k") is None
    assert "may not call agent type 'hr'" in str(guard.refuse_control("alice-1", "agentid=hr/k"))
    assert guard.refuse_control("alice-1", "clientid=whoever") is None
    assert guard.statistics().denials == 3


def test_a_control_request_to_a_client_id_needs_a_client_id_of_the_same_principal() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.claim(ALICE, "alice-1")
    guard.claim(ALICE, "alice-2")
    guard.claim(MALLORY, "mallory-1")
    assert guard.refuse_control("alice-1", "clientid=alice-2", request=True) is None
    refused = guard.refuse_control("mallory-1", "clientid=alice-1", request=True)
    assert refused is not None
    assert "principal 'mallory' may not send a control request" in refused
    assert "'call' right" in refused
    assert "alice-1" not in refused  # names no other client's id
    # An answer (no respond_to) finds its requester whoever answers.
    assert guard.refuse_control("mallory-1", "clientid=alice-1") is None
    assert guard.statistics().denials == 1


def test_control_requests_to_client_ids_pass_with_authentication_off() -> None:
    assert AccessGuard().refuse_control("a", "clientid=b", request=True) is None


def test_no_caller_may_use_the_operator_client_ids() -> None:
    for guard in (AccessGuard(), AccessGuard(_Fixed(ALICE))):
        for client_id in ("agentwire-operator", "agentwire-operator/alice"):
            with pytest.raises(PermissionDeniedError, match="reserved for the gateway's own"):
                guard.check_client(ALICE, client_id)
        guard.check_client(ALICE, "agentwire-operators")  # only the name and its children


def test_an_operator_subscription_needs_subscribe_on_the_topic_and_call_on_the_agent() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.check_operator_subscription(ALICE, _sub("order-events", "billing"))
    guard.check_operator_subscription(ALICE, _sub("billing.x", "billing", prefix=True))
    with pytest.raises(PermissionDeniedError, match="'subscribe' right allows"):
        guard.check_operator_subscription(ALICE, _sub("payroll", "billing"))
    with pytest.raises(PermissionDeniedError, match="'call' right allows: billing"):
        guard.check_operator_subscription(ALICE, _sub("order-events", "orders"))
    # no exception for the agent type's own direct-message prefix: it is not the worker's
    with pytest.raises(PermissionDeniedError, match="starting with 'billing:'"):
        guard.check_operator_subscription(ALICE, _sub("billing:", "billing", prefix=True))


def test_a_refused_message_is_logged_once_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.claim(ALICE, "alice-1")
    with caplog.at_level("DEBUG", logger="agentwire.security"):
        for _ in range(3):
            guard.refuse_event("alice-1", "payroll")
    assert [r.levelname for r in caplog.records] == ["WARNING", "DEBUG", "DEBUG"]
    assert guard.statistics().denials == 3


def test_without_authentication_every_message_passes() -> None:
    guard = AccessGuard()
    assert guard.refuse_event("anyone", "payroll") is None
    assert guard.refuse_request("anyone", "hr") is None


def test_a_registration_conflict_names_only_the_callers_own_client_ids() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.claim(ALICE, "alice-1")
    own = guard.registration_conflict(ALICE, "orders", "alice-1")
    assert own == "Agent type orders already registered with client alice-1."
    theirs = guard.registration_conflict(MALLORY, "orders", "alice-1")
    assert "alice-1" not in theirs
    assert "already registered" in theirs


def test_a_principal_sees_only_what_its_own_client_ids_recorded() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.claim(ALICE, "alice-1")
    guard.claim(MALLORY, "mallory-1")
    assert guard.may_see(ALICE, "alice-1")
    assert not guard.may_see(ALICE, "mallory-1")
    assert not guard.may_see(ALICE, None)
    assert guard.statistics().client_ids == 2
    assert guard.statistics().principals == 2


def test_a_new_claim_by_the_same_principal_refreshes_its_rights() -> None:
    guard = AccessGuard(_Fixed(ALICE))
    guard.claim(ALICE, "alice-1")
    assert guard.refuse_event("alice-1", "payroll") is not None
    reloaded = Principal("alice", Rights())
    guard.claim(reloaded, "alice-1")
    assert guard.refuse_event("alice-1", "payroll") is None


def test_client_ids_the_router_forgot_are_swept_so_the_table_stays_bounded() -> None:
    known: set[str] = set()
    guard = AccessGuard(_Fixed(ALICE), is_known=known.__contains__)
    for n in range(1000):
        client_id = f"c{n}"
        known.add(client_id)
        guard.claim(ALICE, client_id)
        known.discard(f"c{n - 3}")  # three clients alive at a time
        guard.check_invariants(peak_client_ids=4)
    assert len(guard._owners) <= 64
    assert guard.statistics().client_ids == 3
