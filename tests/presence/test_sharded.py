"""ShardedPresence: gateways write every shard, workers replicate only the shards they serve and
hear only those shards' replicas — over in-process networks, over Redis with classic and
sharded pub/sub (SPUBLISH/SSUBSCRIBE), and over a real 3-node Redis Cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from presence import MemoryNetwork, PresenceConfig, redis_transport
from presence.sharded import NotServed, ShardedPresence
from presence.shards import shard_of
from tests.presence.presence_helpers import REDIS_URL, prefix
from tests.support import redis_cluster

pytestmark = pytest.mark.timeout(120)

CFG = PresenceConfig(heartbeat_s=0.05, down_s=0.5, purge_s=2.0, batch_s=0.005)
S = 4


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def users_by_shard(n: int = 40) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {s: [] for s in range(S)}
    for i in range(n):
        u = f"user-{i}"
        out[shard_of(u, S)].append(u)
    assert all(out.values())
    return out


Factory = Callable[[int, str, bool], Any]  # (shard, replica name, listen) -> Transport


def memory_factory() -> Factory:
    nets = {s: MemoryNetwork() for s in range(S)}
    return lambda shard, name, listen: nets[shard].transport(name, listen=listen)


def redis_factory(url: str, *, sharded: bool = False, cluster: bool = False) -> Factory:
    p = prefix()
    return lambda shard, name, listen: redis_transport(
        url, p, name, shard=shard, shards=S, listen=listen, sharded=sharded, cluster=cluster)


@pytest.fixture
def made() -> Iterator[list[ShardedPresence]]:
    out: list[ShardedPresence] = []
    yield out
    for p in out:
        p.stop(graceful=False)


def start(made: list[ShardedPresence], factory: Factory, name: str, *, served: Any = None,
          writer: bool = False) -> ShardedPresence:
    p = ShardedPresence.build(name, lambda s, n: factory(s, n, not writer), shards=S,
                              served=served, config=CFG, writer=writer)
    made.append(p)
    p.start()
    return p


def check_sharding(made: list[ShardedPresence], factory: Factory) -> None:
    """Two gateways, a worker serving shards 0 and 2, one serving 1 and 3."""
    gws = [start(made, factory, f"gw-{i}", writer=True) for i in range(2)]
    w02 = start(made, factory, "worker.a", served=(0, 2))
    w13 = start(made, factory, "worker.b", served=(1, 3))
    by_shard = users_by_shard()
    for users in by_shard.values():
        for i, u in enumerate(users):
            gws[i % 2].track(u, f"c-{u}", {"device": "ios"})
    assert w02.wait_synced(10) and w13.wait_synced(10)

    def sees_its_shards(w: ShardedPresence) -> bool:
        return all(len(w.list(u)) == 1 for s in w.served for u in by_shard[s])

    assert wait_for(lambda: sees_its_shards(w02) and sees_its_shards(w13))
    # each worker holds its shards' users only, and refuses to answer for the others
    assert {p.key for p in w02.list_all()} == {u for s in (0, 2) for u in by_shard[s]}
    assert {p.key for p in w13.list_all()} == {u for s in (1, 3) for u in by_shard[s]}
    other = by_shard[1][0]
    assert not w02.serves(other) and not w02.synced_for(other)
    with pytest.raises(NotServed):
        w02.list(other)
    # gateways hold their own connections only, and heard no worker
    assert len(gws[0].list_all()) + len(gws[1].list_all()) == 40
    for gw in gws:
        assert gw.stats()["replicas_up"] == []
    # membership is per shard: a worker's shard-0 replica knows the two gateways, not worker.b
    st = w02.stats()["shards"]["0"]
    assert {r.split(":")[0] for r in st["replicas_up"]} == {"gw-0", "gw-1"}
    # a leave reaches the worker of that shard only
    u = by_shard[2][0]
    for gw in gws:
        gw.untrack(u, f"c-{u}")  # only the gateway that holds it has anything to untrack
    assert wait_for(lambda: w02.list(u) == [])


def test_sharded_presence_in_process(made: list[ShardedPresence]) -> None:
    check_sharding(made, memory_factory())


def test_sharded_presence_over_redis_classic_pubsub(made: list[ShardedPresence]) -> None:
    check_sharding(made, redis_factory(REDIS_URL))


def test_sharded_presence_over_redis_sharded_pubsub(made: list[ShardedPresence]) -> None:
    check_sharding(made, redis_factory(REDIS_URL, sharded=True))


def test_a_worker_joining_a_shard_later_syncs_from_the_gateways(
        made: list[ShardedPresence]) -> None:
    factory = redis_factory(REDIS_URL)
    gw = start(made, factory, "gw-0", writer=True)
    by_shard = users_by_shard()
    for u in by_shard[3]:
        gw.track(u, f"c-{u}")
    time.sleep(0.2)  # let the gateway publish before anyone listens (the late joiner's case)
    late = start(made, factory, "worker.late", served=(3,))
    assert late.wait_synced(10)
    # synced means it holds what the gateway had when it joined: no waiting needed
    assert all(len(late.list(u)) == 1 for u in by_shard[3])


@pytest.mark.skipif(not redis_cluster.available(), reason="redis-server/redis-cli not installed")
def test_sharded_presence_over_a_real_redis_cluster(made: list[ShardedPresence]) -> None:
    with redis_cluster.redis_cluster(3) as ports:
        url = f"redis://127.0.0.1:{ports[0]}/0"
        try:
            check_sharding(made, redis_factory(url, cluster=True))
            # the shards' channels are spread over the cluster's nodes (hash tags {s<n>})
            from redis.cluster import RedisCluster

            rc = RedisCluster.from_url(url)
            owners = {rc.get_node_from_key(f"x:presence:{{s{s}}}").port for s in range(S)}
            rc.close()
            assert len(owners) >= 2
        finally:
            for p in made:
                p.stop(graceful=False)
            made.clear()
