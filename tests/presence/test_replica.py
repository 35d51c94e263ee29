"""Sans-IO replica behaviours (Phoenix ``replica_test.exs``, ``shard_test.exs`` and
``shard_replication_test.exs`` ported), driven in virtual time by :class:`SimCluster`."""

from __future__ import annotations

import pytest

from presence import wire
from presence.config import PresenceConfig
from presence.replica import Replica
from presence.sim import SimCluster
from presence.state import Presence
from presence.transport.memory import LinkPolicy

pytestmark = pytest.mark.timeout(60)

CFG = PresenceConfig(heartbeat_s=0.1, down_s=0.5, purge_s=2.0, batch_s=0.005)


def cluster(names: str = "abc", **kw: object) -> SimCluster:
    sim = SimCluster(list(names), config=kw.pop("config", CFG), **kw)  # type: ignore[arg-type]
    sim.run(0.5)
    return sim


def conns(sim: SimCluster, name: str, key: str) -> list[str]:
    return sorted(p.conn for p in sim.list(name, key))


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"heartbeat_s": 0}, "heartbeat_s"),
        ({"heartbeat_s": 1.0, "down_s": 2.0}, "down_s"),
        ({"down_s": 3.0, "purge_s": 3.0}, "purge_s"),
        ({"batch_s": 0.5}, "batch_s"),
        ({"sync_wait_s": -1.0}, "sync_wait_s"),
        ({"purge_s": float("nan")}, "purge_s"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PresenceConfig(**kwargs)  # type: ignore[arg-type]


def test_config_defaults() -> None:
    c = PresenceConfig()
    assert (c.heartbeat_s, c.down_s, c.purge_s, c.batch_s) == (0.25, 3.0, 60.0, 0.005)
    assert c.sync_wait == pytest.approx(0.6)
    assert c.down_s > 2 * c.heartbeat_s and c.purge_s > c.down_s


# ------------------------------------------------------ Phoenix replica_test


def test_new_replica_has_unique_incarnation_and_ref() -> None:
    sim = cluster("ab")
    sim.restart("a")
    refs = {r.rid for r in sim.replicas.values()}
    assert len(refs) == 2 and ("a", 1) not in refs


def test_heartbeat_from_unknown_replica_marks_it_up() -> None:
    r = Replica("r", 1, CFG)
    r.receive(wire.encode_heartbeat(("x", 7), {("x", 7): 0}), 0.0)
    assert r.peers[("x", 7)].status == "up"


def test_heartbeat_from_known_down_replica_marks_it_up() -> None:
    r = Replica("r", 1, CFG)
    r.receive(wire.encode_heartbeat(("x", 7), {("x", 7): 0}), 0.0)
    r.tick(0.6)
    assert r.peers[("x", 7)].status == "down"
    r.receive(wire.encode_heartbeat(("x", 7), {("x", 7): 0}), 0.7)
    assert r.peers[("x", 7)].status == "up"


def test_detect_down_with_temporarily_downed_replica() -> None:
    r = Replica("r", 1, CFG)
    r.receive(wire.encode_heartbeat(("x", 7), {}), 0.0)
    r.tick(0.4)
    assert r.peers[("x", 7)].status == "up"
    r.tick(0.51)
    assert r.peers[("x", 7)].status == "down"


def test_detect_down_with_permanently_downed_replica_removes_it() -> None:
    r = Replica("r", 1, CFG)
    r.receive(wire.encode_heartbeat(("x", 7), {}), 0.0)
    r.tick(2.01)
    assert ("x", 7) not in r.peers and r.state.is_purged(("x", 7))


def test_detect_down_with_up_replica() -> None:
    r = Replica("r", 1, CFG)
    for i in range(30):
        r.receive(wire.encode_heartbeat(("x", 7), {}), i * 0.1)
        r.tick(i * 0.1 + 0.05)
    assert r.peers[("x", 7)].status == "up"


# ------------------------------------------------------ Phoenix shard tests


def test_heartbeats_are_sent_every_period() -> None:
    sim = SimCluster(["a"], config=CFG)
    sim.run(1.0)
    assert 9 <= sim.replicas["a"].counters["heartbeats_sent"] <= 12


def test_gossip_from_unseen_node_triggers_nodeup_and_transfer_request() -> None:
    sim = cluster("ab")
    sim.net.partition(["a"], ["b"])
    sim.replicas["b"].track("node1", "p1")
    sim.run(0.05)
    assert sim.list("a", "node1") == []
    sim.net.heal()
    sim.run(0.3)
    assert conns(sim, "a", "node1") == ["p1"]
    assert sim.replicas["a"].counters["transfers_requested"] >= 1


def test_requests_for_transfer_collapse_to_one_dominant_peer() -> None:
    sim = cluster(["primary", "node1", "node2"])  # type: ignore[arg-type]
    sim.net.partition(["primary"], ["node1", "node2"])
    sim.replicas["node1"].track("node1", "p1")
    sim.replicas["node1"].track("node1.2", "p2")
    sim.replicas["node2"].track("node2", "p3")
    sim.run(0.2)  # node1 and node2 exchange deltas
    sim.net.heal()
    before = sim.replicas["primary"].counters["transfers_requested"]
    sim.run(0.25)
    assert sim.converged()
    assert sim.replicas["primary"].counters["transfers_requested"] - before == 1


def test_old_entries_are_purged_when_the_node_comes_back_with_new_incarnation() -> None:
    sim = cluster(["primary", "node1", "node2"])  # type: ignore[arg-type]
    sim.replicas["node1"].track("node1", "old-conn")
    sim.run(0.1)
    sim.kill("node1")
    sim.run(0.1)
    sim.add("node1").track("node1", "new-conn")
    sim.run(0.3)
    for n in ("primary", "node2"):
        assert conns(sim, n, "node1") == ["new-conn"]
        assert all(p.origin[1] != 2 for p in sim.replicas[n].state.entries_of(("node1", 2)))


def test_tempdowns_with_nodeups_of_new_incarnation_and_permdowns() -> None:
    sim = cluster("pab")
    sim.replicas["a"].track("a", "pa")
    sim.replicas["b"].track("b", "pb")
    sim.run(0.1)
    assert conns(sim, "p", "a") == ["pa"]
    # tempdown netsplit
    sim.net.isolate("a")
    sim.run(0.6)
    assert sim.list("p", "a") == []
    assert sim.replicas["p"].peers[sim.replicas["a"].rid].status == "down"
    sim.net.heal()
    sim.run(0.3)
    assert conns(sim, "p", "a") == ["pa"]
    # tempdown crash, then node up with a new incarnation
    sim.kill("a")
    sim.run(0.6)
    assert sim.list("p", "a") == []
    sim.add("a").track("a-back", "pa2")
    sim.run(0.3)
    assert conns(sim, "p", "a-back") == ["pa2"] and sim.list("p", "a") == []
    # tempdown again, then permdown
    sim.kill("a")
    sim.run(2.5)
    names = {r[0] for r in sim.replicas["p"].peers}
    assert names == {"b"}


def test_node_detects_and_locally_reports_join_and_leave() -> None:
    sim = cluster("ab")
    seen: list[tuple[str, str]] = []

    def on_diff(joins: list[Presence], leaves: list[Presence]) -> None:
        seen.extend(("join", p.key) for p in joins)
        seen.extend(("leave", p.key) for p in leaves)

    sim.replicas["b"].on_diff = on_diff
    sim.replicas["b"].track("me", "c0")  # local joins are reported too
    sim.replicas["a"].track("remote", "c1")
    sim.run(0.05)
    sim.replicas["a"].untrack("remote", "c1")
    sim.run(0.05)
    assert seen == [("join", "me"), ("join", "remote"), ("leave", "remote")]


def test_detects_nodedown_and_reports_leaves() -> None:
    sim = cluster("ab")
    left: list[str] = []
    sim.replicas["b"].on_diff = lambda j, lv: left.extend(p.key for p in lv)
    sim.replicas["a"].track("alice", "c")
    sim.run(0.05)
    sim.kill("a")
    sim.run(0.6)
    assert left == ["alice"]


def test_untrack_with_no_tracked_entry_is_a_noop() -> None:
    sim = cluster("ab")
    assert sim.replicas["a"].untrack("nobody", "c") is False
    assert not sim.replicas["a"].state.has_delta()


def test_untrack_one_entry() -> None:
    sim = cluster("ab")
    a = sim.replicas["a"]
    a.track("k", "c1")
    a.track("k", "c2")
    sim.run(0.05)
    a.untrack("k", "c1")
    sim.run(0.05)
    assert conns(sim, "b", "k") == ["c2"]


def test_untrack_from_all_keys() -> None:
    sim = cluster("ab")
    a = sim.replicas["a"]
    a.track("k1", "c")
    a.track("k2", "c")
    a.track("k3", "other")
    sim.run(0.05)
    assert a.untrack_conn("c") == 2
    sim.run(0.05)
    assert [p.key for p in sim.replicas["b"].state.list_all()] == ["k3"]


def test_updating_presence_sends_leave_and_join() -> None:
    sim = cluster("ab")
    diffs: list[tuple[list[Presence], list[Presence]]] = []
    sim.replicas["a"].track("k", "c", {"v": 1})
    sim.run(0.05)
    sim.replicas["b"].on_diff = lambda j, lv: diffs.append((j, lv))
    assert sim.replicas["a"].update("k", "c", {"v": 2}) is not None
    sim.run(0.05)
    assert [(p.meta["v"] for p in j) for j, _ in diffs] and diffs[0][0][0].meta == {"v": 2}
    assert diffs[0][1][0].meta == {"v": 1}


def test_updating_with_no_prior_presence() -> None:
    sim = cluster("a")
    assert sim.replicas["a"].update("k", "c", {"v": 1}) is None


def test_duplicate_tracking_is_idempotent() -> None:
    sim = cluster("ab")
    a = sim.replicas["a"]
    a.track("k", "c", {"v": 1})
    sim.run(0.05)
    sent = a.counters["deltas_sent"]
    a.track("k", "c", {"v": 1})
    sim.run(0.05)
    assert a.counters["deltas_sent"] == sent
    assert len(sim.list("b", "k")) == 1


def test_graceful_exit_purges_at_once() -> None:
    sim = cluster("ab")
    sim.replicas["a"].track("alice", "c")
    sim.run(0.05)
    a_rid = sim.replicas["a"].rid
    sim.stop("a")
    sim.run(0.02)  # far less than the down period
    b = sim.replicas["b"]
    assert b.list("alice") == [] and a_rid not in b.peers and b.state.is_purged(a_rid)
    assert b.counters["graceful_leaves"] == 1


def test_rolling_node_update_leaves_no_ghosts() -> None:
    sim = cluster("abcd")
    for n in "abcd":
        sim.replicas[n].track(f"user-{n}", f"conn-{n}-old")
    sim.run(0.1)
    for n in "abcd":
        sim.stop(n)
        sim.add(n).track(f"user-{n}", f"conn-{n}-new")
        sim.run(0.3)
    assert sim.converged()
    for n in "abcd":
        assert sorted(c for _, c, _ in sim.view(n)) == [f"conn-{x}-new" for x in "abcd"]


def test_crash_then_restart_leaves_no_ghost_on_third_party_relay() -> None:
    # c never hears the new incarnation of a directly before b relays old state
    sim = cluster("abc")
    sim.replicas["a"].track("alice", "old")
    sim.run(0.05)
    sim.kill("a")
    sim.add("a").track("alice", "new")
    sim.run(0.4)
    for n in "bc":
        assert conns(sim, n, "alice") == ["new"]


# ------------------------------------------------------------- our extras


def test_delta_is_broadcast_within_the_batch_window() -> None:
    sim = cluster("ab")
    t0 = sim.now
    sim.replicas["a"].track("k", "c")
    while not sim.list("b", "k"):
        assert sim.step()
    assert sim.now - t0 <= CFG.batch_s + 1e-9


def test_single_replica_is_synced_after_bounded_wait() -> None:
    sim = SimCluster(["solo"], config=CFG)
    sim.run(CFG.sync_wait - 0.01)
    assert not sim.replicas["solo"].synced
    sim.run(0.02)
    assert sim.replicas["solo"].synced


def test_joining_replica_syncs_only_after_merging_peers_state() -> None:
    sim = cluster("ab")
    for i in range(100):
        sim.replicas["a"].track(f"u{i}", "c")
    sim.run(0.1)
    sim.net.set_link("a", "c", LinkPolicy(delay=0.2))
    sim.net.set_link("b", "c", LinkPolicy(delay=0.2))
    c = sim.add("c")
    sim.run(0.15)
    assert not c.synced  # heard of nobody yet, bounded wait not over
    sim.run(0.25)
    # the wait is over but c has heard of a and b: not synced before their state is merged
    assert not c.synced and len(c.state.list_all()) < 100
    sim.run(0.6)
    assert c.synced and len(c.state.list_all()) == 100


def test_no_transfer_storm_on_join_with_lossy_links() -> None:
    sim = cluster("abcdef", seed=7, policy=LinkPolicy(loss=0.2, jitter=0.01))
    for n in "abcdef":
        for i in range(20):
            sim.replicas[n].track(f"{n}{i}", "c")
    sim.run(0.2)
    g = sim.add("g")
    max_outstanding = 0
    end = sim.now + 2.0
    while sim.now < end and sim.step():
        max_outstanding = max(max_outstanding, len(g._outstanding))
    assert max_outstanding <= 1
    assert g.counters["transfers_requested"] <= 10
    sim.net.default = LinkPolicy()
    sim.run(1.0)
    assert sim.converged()


def test_malformed_frames_are_dropped_and_counted() -> None:
    r = Replica("r", 1, CFG)
    for frame in [b"", b"\xc1", b"garbage", wire.encode_leave(("x", 1))[:-1]]:
        assert r.receive(frame, 0.0) == []
    r.receive(b"x" * (CFG.max_frame_bytes + 1), 0.0)
    assert r.dropped["oversized"] == 1
    assert sum(r.dropped.values()) == 5


def test_large_transfer_is_chunked_and_reassembled() -> None:
    cfg = PresenceConfig(heartbeat_s=0.1, down_s=0.5, purge_s=2.0, chunk_entries=100)
    sim = SimCluster(["a"], config=cfg)
    for i in range(1050):
        sim.replicas["a"].track(f"u{i}", "c")
    sim.run(0.3)
    b = sim.add("b")
    sim.run(0.5)
    assert len(b.state.list_all()) == 1050
    assert sim.replicas["a"].counters["deltas_sent"] >= 11  # the big delta was split too


def test_partition_and_heal_converge() -> None:
    sim = cluster("abcd", seed=3)
    sim.net.partition(["a", "b"], ["c", "d"])
    for n in "abcd":
        sim.replicas[n].track(f"user-{n}", "c1")
    sim.run(0.2)
    assert sim.converged(["a", "b"]) and sim.converged(["c", "d"])
    assert not sim.converged()
    sim.net.heal()
    sim.run(1.0)
    assert sim.converged() and len(sim.view("a")) == 4


def test_replica_purged_during_long_partition_comes_back_when_heard_directly() -> None:
    sim = cluster("ab")
    sim.replicas["a"].track("alice", "c")
    sim.run(0.05)
    sim.net.isolate("a")
    sim.run(2.5)  # longer than purge
    assert sim.list("b", "alice") == []
    sim.net.heal()
    sim.run(0.5)
    assert conns(sim, "b", "alice") == ["c"]
    assert sim.replicas["b"].counters["replica_returns"] == 1


def test_relayed_state_of_a_purged_replica_never_resurrects_it() -> None:
    sim = cluster("abc")
    sim.replicas["a"].track("alice", "c")
    sim.run(0.05)
    a_rid = sim.replicas["a"].rid
    sim.kill("a")
    # c purges a first (it is told directly), b still has a's entries
    sim.replicas["c"].state.purge(a_rid)
    sim.replicas["c"].peers.pop(a_rid, None)
    sim.net.partition(["b"], ["c"])
    sim.run(0.05)
    sim.net.heal()
    sim.run(0.4)
    assert sim.list("c", "alice") == []


def test_frames_for_another_replica_are_dropped() -> None:
    r = Replica("r", 1, CFG)
    frame = wire.encode_request(("x", 1), ("other", 1), 1, {})
    assert r.receive(frame, 0.0) == []
    assert r.dropped["misdirected"] == 1


def test_stopped_replica_is_inert() -> None:
    r = Replica("r", 1, CFG)
    outs = r.leave()
    assert outs and wire.decode(outs[-1].frame).type == wire.LEAVE
    assert r.tick(10.0) == [] and r.leave() == []
