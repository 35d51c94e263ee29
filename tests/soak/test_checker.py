"""The soak's verdict from observations (pure)."""

from __future__ import annotations

from bench.soak.checker import Given, Shown, Window, check, recovery_by_kind

USERS = frozenset({"a", "b"})


def given(**ids: tuple[str, float]) -> dict[str, Given]:
    return {m: Given(u, t) for m, (u, t) in ids.items()}


def test_everything_shown_once_and_delivered_is_ok() -> None:
    g = given(m1=("a", 1.0), m2=("b", 2.0))
    shown = [Shown("m1", "a", 1.1, 0), Shown("m2", "b", 2.1, 1)]
    v = check(g, shown, {"m1": "delivered", "m2": "delivered"}, USERS, [], bound_s=30)
    assert v.ok and v.messages == 2 and v.states == {"delivered": 2}


def test_pending_for_a_connected_user_is_lost_and_not_final() -> None:
    g = given(m1=("a", 1.0))
    v = check(g, [], {"m1": "pending"}, USERS, [], bound_s=30)
    assert [d["id"] for d in v.lost] == ["m1"]
    assert [d["id"] for d in v.not_final] == ["m1"]


def test_pushed_for_a_user_not_connected_is_final_and_not_lost() -> None:
    g = given(m1=("a", 1.0))
    v = check(g, [], {"m1": "pushed"}, frozenset({"b"}), [], bound_s=30)
    assert v.ok


def test_never_stored_is_lost() -> None:
    v = check(given(m1=("a", 1.0)), [], {"m1": None}, USERS, [], bound_s=30)
    assert v.lost[0]["state"] == "not stored" and not v.ok


def test_shown_on_another_users_client_does_not_count() -> None:
    v = check(given(m1=("a", 1.0)), [Shown("m1", "b", 1.2, 0)], {"m1": "delivered"}, USERS, [],
              bound_s=30)
    assert len(v.lost) == 1


def test_shown_twice_tells_restarts_apart() -> None:
    g = given(m1=("a", 1.0), m2=("a", 1.0))
    shown = [Shown("m1", "a", 1.1, 0), Shown("m1", "a", 5.0, 3),
             Shown("m2", "a", 1.1, 0), Shown("m2", "a", 1.2, 0)]
    v = check(g, shown, {"m1": "delivered", "m2": "delivered"}, USERS, [], bound_s=30)
    twice = {d["id"]: d["across_client_restarts"] for d in v.shown_twice}
    assert twice == {"m1": True, "m2": False}


def test_loss_and_recovery_are_attributed_to_the_fault_they_follow() -> None:
    windows = [Window(0, "kill_worker", 10.0, 12.0), Window(1, "redis_cut", 20.0, 23.0)]
    g = given(before=("a", 5.0), slow=("a", 11.0), fine=("b", 15.0), gone=("b", 21.0))
    shown = [Shown("before", "a", 5.1, 0), Shown("slow", "a", 16.0, 0),
             Shown("fine", "b", 15.1, 0)]
    states = {"before": "delivered", "slow": "delivered", "fine": "delivered", "gone": "pushed"}
    v = check(g, shown, states, USERS, windows, bound_s=3.0)
    first, second = v.faults
    assert first.recovery_s == 4.0 and first.lost_count == 0 and first.late == 1
    assert second.recovery_s is None and second.lost_count == 1
    assert second.lost[0]["fault"] == "1:redis_cut"
    kinds = recovery_by_kind(v.faults)
    assert kinds["kill_worker"]["recovery_s"] == {"p50": 4.0, "p99": 4.0, "max": 4.0}
    assert kinds["redis_cut"]["lost"] == 1 and kinds["redis_cut"]["unrecovered"] == 1


def test_a_skipped_fault_is_counted_as_skipped() -> None:
    windows = [Window(0, "pg_restart", 1.0, 1.0, skipped="no private PostgreSQL")]
    v = check({}, [], {}, USERS, windows, bound_s=30)
    k = recovery_by_kind(v.faults)["pg_restart"]
    assert k["count"] == 0 and k["skipped"] == 1 and k["skip_reason"] == "no private PostgreSQL"


def test_a_message_given_just_before_a_fault_is_the_faults() -> None:
    windows = [Window(0, "kill_worker", 10.0, 12.0), Window(1, "db_outage", 20.0, 23.0)]
    g = given(early=("a", 19.5), late=("a", 18.0))
    v = check(g, [], {"early": None, "late": None}, USERS, windows, bound_s=30)
    assert {d["id"]: d["fault"] for d in v.lost} == {"early": "1:db_outage",
                                                    "late": "0:kill_worker"}
