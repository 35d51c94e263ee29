"""The routing policy: one named test per branch of ``decide`` and property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delivery.routing.policy import (
    Conn,
    Dispatch,
    Expire,
    Keep,
    MarkPending,
    MessageView,
    NackBack,
    Nothing,
    PolicyConfig,
    PresenceView,
    Push,
    Redirect,
    Trigger,
    Wait,
    decide,
    decide_reroute,
)
from delivery.vocabulary import IN_FLIGHT, State

CFG = PolicyConfig()
NOW = 1000.0
A1 = Conn("gw-a", "c1")
A2 = Conn("gw-a", "c2")
B1 = Conn("gw-b", "c3")


def msg(state: str = "accepted", attempts: int = 0, ttl: float = 60.0) -> MessageView:
    return MessageView(state, attempts, NOW + ttl)


def pres(*conns: Conn, synced: bool = True) -> PresenceView:
    return PresenceView(synced, list(conns))


# ---------------------------------------------------------------- config


def test_config_rejects_bad_values() -> None:
    for kw in ({"ack_timeout_s": 0}, {"max_attempts": 0}, {"retry_backoff_s": -1},
               {"offline_grace_s": -0.1}, {"not_synced_wait_s": 0}):
        with pytest.raises(ValueError):
            PolicyConfig(**kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- one test per branch


@pytest.mark.parametrize("state", ["delivered", "pushed", "pending", "expired"])
def test_settled_message_needs_nothing(state: str) -> None:
    d = decide(msg(state), pres(A1), Trigger.DEADLINE, NOW, CFG)
    assert isinstance(d, Nothing)
    assert state in d.reason


def test_expired_ttl_expires_even_with_connections() -> None:
    assert isinstance(decide(msg(ttl=0.0), pres(A1), Trigger.NEW, NOW, CFG), Expire)
    assert isinstance(decide(msg(ttl=-5.0), pres(), Trigger.NACK, NOW, CFG), Expire)


def test_not_synced_replica_waits_instead_of_pushing() -> None:
    d = decide(msg(), pres(synced=False), Trigger.NEW, NOW, CFG)
    assert d == Wait(NOW + CFG.not_synced_wait_s, "presence replica not synced")


def test_online_recipient_is_dispatched_with_ack_deadline() -> None:
    d = decide(msg(), pres(A1), Trigger.NEW, NOW, CFG)
    assert d == Dispatch((A1,), NOW + CFG.ack_timeout_s)


def test_dispatch_goes_to_every_connection_sorted() -> None:
    d = decide(msg(), pres(B1, A2, A1, A1), Trigger.NEW, NOW, CFG)
    assert isinstance(d, Dispatch)
    assert d.targets == (A1, A2, B1)


def test_nacked_connections_are_excluded() -> None:
    d = decide(msg("dispatched", 1), pres(A1, A2), Trigger.NACK, NOW, CFG, dead_conns={"c1"})
    assert d == Dispatch((A2,), NOW + CFG.ack_timeout_s)


def test_attempts_used_up_fall_back_to_push() -> None:
    d = decide(msg("dispatched", CFG.max_attempts), pres(A1), Trigger.DEADLINE, NOW, CFG)
    assert isinstance(d, Push)


def test_attempts_used_up_without_push_mark_pending() -> None:
    cfg = PolicyConfig(push_enabled=False)
    d = decide(msg("dispatched", cfg.max_attempts), pres(A1), Trigger.DEADLINE, NOW, cfg)
    assert isinstance(d, MarkPending)


def test_new_message_for_offline_recipient_waits_for_grace() -> None:
    d = decide(msg(), pres(), Trigger.NEW, NOW, CFG)
    assert d == Wait(NOW + CFG.offline_grace_s, "recipient looks offline")


def test_new_message_without_grace_pushes_at_once() -> None:
    d = decide(msg(), pres(), Trigger.NEW, NOW, PolicyConfig(offline_grace_s=0))
    assert isinstance(d, Push)


def test_nack_with_only_dead_connections_waits_for_presence() -> None:
    # The seed's race: the gateway says pid_1 is gone, presence still shows only pid_1.
    d = decide(msg("dispatched", 1), pres(A1), Trigger.NACK, NOW, CFG, dead_conns={"c1"})
    assert d == Wait(NOW + CFG.retry_backoff_s, "only dead connections known")


def test_nack_without_backoff_pushes() -> None:
    cfg = PolicyConfig(retry_backoff_s=0)
    d = decide(msg("dispatched", 1), pres(A1), Trigger.NACK, NOW, cfg, dead_conns={"c1"})
    assert isinstance(d, Push)


@pytest.mark.parametrize("trigger", [Trigger.RECHECK, Trigger.DEADLINE])
def test_recheck_or_deadline_with_nobody_online_pushes(trigger: Trigger) -> None:
    assert isinstance(decide(msg("dispatched", 1), pres(), trigger, NOW, CFG), Push)


def test_offline_without_push_marks_pending() -> None:
    cfg = PolicyConfig(push_enabled=False, offline_grace_s=0)
    d = decide(msg(), pres(), Trigger.NEW, NOW, cfg)
    assert isinstance(d, MarkPending)
    assert "push not configured" in d.reason


def test_new_message_for_offline_recipient_asks_the_last_node_first() -> None:
    # Presence lists nobody, but the user was on gw-a a moment ago: that gateway redirects the
    # frame to the user's live connection there (a reconnect not replicated yet), or nacks.
    d = decide(msg(), PresenceView(True, [], last=A1), Trigger.NEW, NOW, CFG)
    assert d == Dispatch((A1,), NOW + CFG.ack_timeout_s)


def test_last_node_already_asked_is_not_asked_again() -> None:
    d = decide(msg(), PresenceView(True, [], last=A1), Trigger.NEW, NOW, CFG, dead_conns={"c1"})
    assert d == Wait(NOW + CFG.offline_grace_s, "recipient looks offline")


def test_nack_from_the_last_node_pushes_at_once() -> None:
    d = decide(msg("dispatched", 1), PresenceView(True, [], last=A1), Trigger.NACK, NOW, CFG,
               dead_conns={"c1"})
    assert d == Push("recipient offline (last node asked)")


def test_nack_while_presence_still_lists_the_connection_waits_for_the_reconnect() -> None:
    d = decide(msg("dispatched", 1), PresenceView(True, [A1], last=A1), Trigger.NACK, NOW, CFG,
               dead_conns={"c1"})
    assert d == Wait(NOW + CFG.retry_backoff_s, "only dead connections known")


@pytest.mark.parametrize("trigger", [Trigger.RECHECK, Trigger.DEADLINE])
def test_offline_recipient_last_node_asked_before_pushing(trigger: Trigger) -> None:
    d = decide(msg("dispatched", 1), PresenceView(True, [], last=B1), trigger, NOW, CFG)
    assert d == Dispatch((B1,), NOW + CFG.ack_timeout_s)


def test_probe_disabled_keeps_the_grace_and_the_push() -> None:
    cfg = PolicyConfig(probe_last_node=False)
    off = PresenceView(True, [], last=A1)
    assert decide(msg(), off, Trigger.NEW, NOW, cfg) == Wait(
        NOW + cfg.offline_grace_s, "recipient looks offline")
    assert isinstance(decide(msg("dispatched", 1), off, Trigger.RECHECK, NOW, cfg), Push)
    d = decide(msg("dispatched", 1), off, Trigger.NACK, NOW, cfg, dead_conns={"c1"})
    assert isinstance(d, Wait)


def test_recheck_finds_the_reconnected_user() -> None:
    d = decide(msg("dispatched", 1), pres(A2), Trigger.RECHECK, NOW, CFG, dead_conns={"c1"})
    assert d == Dispatch((A2,), NOW + CFG.ack_timeout_s)


# ---------------------------------------------------------------- properties

STATES = [s.value for s in State]
conns_st = st.lists(
    st.builds(Conn, st.sampled_from(["gw-a", "gw-b", "gw-c"]),
              st.sampled_from([f"c{i}" for i in range(6)])),
    max_size=6,
)
configs = st.builds(
    PolicyConfig,
    ack_timeout_s=st.floats(0.01, 10),
    max_attempts=st.integers(1, 5),
    retry_backoff_s=st.sampled_from([0.0, 0.2, 1.0]),
    offline_grace_s=st.sampled_from([0.0, 0.25]),
    not_synced_wait_s=st.floats(0.01, 1),
    push_enabled=st.booleans(),
    probe_last_node=st.booleans(),
)
cases = st.tuples(
    st.sampled_from(STATES),
    st.integers(0, 6),
    st.floats(-10, 100),  # ttl left
    st.booleans(),
    conns_st,
    st.sampled_from(list(Trigger)),
    configs,
    st.sets(st.sampled_from([f"c{i}" for i in range(6)]), max_size=6),
    st.none() | st.builds(Conn, st.sampled_from(["gw-a", "gw-b"]),
                          st.sampled_from([f"c{i}" for i in range(6)])),
)


def run_case(case: tuple) -> tuple:  # type: ignore[type-arg]
    state, attempts, ttl, synced, conns, trigger, cfg, dead, last = case
    m = MessageView(state, attempts, NOW + ttl)
    p = PresenceView(synced, conns, last)
    return m, p, decide(m, p, trigger, NOW, cfg, dead)


@settings(max_examples=400, deadline=None)
@given(cases)
def test_settled_states_always_nothing(case: tuple) -> None:  # type: ignore[type-arg]
    m, _, d = run_case(case)
    if m.state not in IN_FLIGHT:
        assert isinstance(d, Nothing)
    else:
        assert not isinstance(d, Nothing)


@settings(max_examples=400, deadline=None)
@given(cases)
def test_in_flight_past_ttl_always_expires(case: tuple) -> None:  # type: ignore[type-arg]
    m, _, d = run_case(case)
    if m.state in IN_FLIGHT and m.expires_at <= NOW:
        assert isinstance(d, Expire)
    if isinstance(d, Expire):
        assert m.expires_at <= NOW


@settings(max_examples=400, deadline=None)
@given(cases)
def test_not_synced_always_waits(case: tuple) -> None:  # type: ignore[type-arg]
    m, p, d = run_case(case)
    if m.state in IN_FLIGHT and m.expires_at > NOW and not p.synced:
        assert isinstance(d, Wait)
        assert d.until > NOW


@settings(max_examples=500, deadline=None)
@given(cases)
def test_dispatch_targets_are_exactly_the_live_connections(case: tuple) -> None:  # type: ignore[type-arg]
    _state, attempts, _ttl, _synced, conns, trigger, cfg, dead, last = case
    m, p, d = run_case(case)
    if isinstance(d, Dispatch):
        live = {c for c in conns if c.conn not in dead}
        if live:
            assert set(d.targets) == live
            assert list(d.targets) == sorted(live, key=lambda c: (c.node, c.conn))
        else:  # nobody listed: only the node that last held the user is asked
            assert cfg.probe_last_node and d.targets == (last,)
        assert not any(c.conn in dead for c in d.targets)  # never a nacked connection
        assert attempts < cfg.max_attempts  # never beyond the attempt budget
        assert d.ack_deadline == NOW + cfg.ack_timeout_s
        # deterministic: the same facts in another order give the same decision
        again = decide(m, PresenceView(p.synced, list(reversed(conns)), last), trigger, NOW,
                       cfg, set(dead))
        assert again == d


@settings(max_examples=400, deadline=None)
@given(cases)
def test_never_dispatch_once_attempts_used_up(case: tuple) -> None:  # type: ignore[type-arg]
    _, attempts, _, _, _, _, cfg, _, _ = case
    _, _, d = run_case(case)
    if attempts >= cfg.max_attempts:
        assert not isinstance(d, Dispatch)


@settings(max_examples=400, deadline=None)
@given(cases)
def test_push_disabled_never_pushes(case: tuple) -> None:  # type: ignore[type-arg]
    _, _, _, _, _, _, cfg, _, _ = case
    _, _, d = run_case(case)
    if not cfg.push_enabled:
        assert not isinstance(d, Push)
    else:
        assert not isinstance(d, MarkPending)


@settings(max_examples=300, deadline=None)
@given(configs, st.floats(1, 100), st.booleans())
def test_new_with_no_connections(cfg: PolicyConfig, ttl: float, all_dead: bool) -> None:
    conns = [A1] if all_dead else []
    dead = {"c1"} if all_dead else set()
    d = decide(MessageView("accepted", 0, NOW + ttl), PresenceView(True, conns), Trigger.NEW,
               NOW, cfg, dead)
    if cfg.offline_grace_s > 0:
        assert d == Wait(NOW + cfg.offline_grace_s, "recipient looks offline")
    elif cfg.push_enabled:
        assert isinstance(d, Push)
    else:
        assert isinstance(d, MarkPending)


@settings(max_examples=300, deadline=None)
@given(cases)
def test_waits_are_in_the_future_and_not_attempts(case: tuple) -> None:  # type: ignore[type-arg]
    _, _, d = run_case(case)
    if isinstance(d, Wait):
        assert d.until > NOW
        assert d.reason


def test_recheck_with_only_dead_connections_waits_inside_the_reconnect_window() -> None:
    cfg = PolicyConfig(retry_backoff_s=0.2, reconnect_window_s=1.0)
    msg = MessageView("dispatched", 1, 1000.0, created_at=10.0)
    stale = PresenceView(True, [Conn("gw-a", "c1")])
    inside = decide(msg, stale, Trigger.RECHECK, 10.5, cfg, {"c1"})
    assert isinstance(inside, Wait) and inside.until == 10.7
    assert isinstance(decide(msg, stale, Trigger.RECHECK, 11.5, cfg, {"c1"}), Push)
    # Without a nacked connection a re-check is the offline grace's: push at once.
    assert isinstance(decide(msg, PresenceView(True, []), Trigger.RECHECK, 10.5, cfg), Push)
    # No creation time known: the window cannot apply.
    old = MessageView("dispatched", 1, 1000.0)
    assert isinstance(decide(old, stale, Trigger.RECHECK, 10.5, cfg, {"c1"}), Push)


# ---------------------------------------------------------------- bounded work per message


def test_dispatch_is_capped_at_max_targets_whatever_the_connections() -> None:
    cfg = PolicyConfig(max_targets=3)
    conns = [Conn("gw-a", f"c{i:02d}") for i in range(20)]
    d = decide(msg(), pres(*conns), Trigger.NEW, NOW, cfg)
    assert isinstance(d, Dispatch)
    assert d.targets == tuple(conns[:3])  # sorted, deterministic


def test_config_rejects_zero_max_targets() -> None:
    with pytest.raises(ValueError):
        PolicyConfig(max_targets=0)


def test_reroute_keeps_a_frame_another_connection_holds() -> None:
    # The N=20 case: the closing connection's siblings already have the frame.
    assert decide_reroute(0, {"c2", "c3"}, ["c4"], max_redirects=2) == Keep()


def test_reroute_redirects_to_connections_without_the_frame() -> None:
    assert decide_reroute(0, set(), ["c4", "c5"], max_redirects=2) == Redirect(("c4", "c5"))


def test_reroute_nacks_when_no_other_connection_is_on_the_node() -> None:
    assert isinstance(decide_reroute(0, set(), [], max_redirects=2), NackBack)


def test_reroute_nacks_once_the_redirect_budget_is_spent() -> None:
    assert isinstance(decide_reroute(2, set(), ["c4"], max_redirects=2), NackBack)
    assert isinstance(decide_reroute(0, set(), ["c4"], max_redirects=0), NackBack)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10), st.sets(st.text(min_size=1, max_size=3), max_size=5),
       st.lists(st.text(min_size=1, max_size=3), max_size=5, unique=True), st.integers(0, 5))
def test_reroute_never_exceeds_the_redirect_budget(
    hops: int, holders: set[str], free: list[str], max_redirects: int,
) -> None:
    d = decide_reroute(hops, holders, free, max_redirects)
    if isinstance(d, Redirect):
        assert hops < max_redirects and not holders and list(d.targets) == free
