"""The capacity model's arithmetic against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from delivery.simulation.capacity import (
    Costs,
    Deployment,
    WireSizes,
    batch_wait_ms,
    batched_frames,
    choose_shards,
    estimate,
    mm1_wait_ms,
    wire_sizes,
)

SIZES = WireSizes(hb_base=10.0, hb_origin=20.0, delta_base=50.0, delta_event=30.0)
COSTS = Costs(wire=SIZES, entry_bytes=245.0)


def test_batching_poisson_events() -> None:
    # 100 events/s, 5 ms windows (e·b = 0.5): p = exp(-0.5) of the windows stay empty; a busy
    # period sends 1/p frames in 1/e + b/p seconds
    p = math.exp(-0.5)
    assert batched_frames(100.0, 0.005) == pytest.approx(100.0 / (p + 0.5))
    assert batched_frames(100.0, 0.0) == 100.0
    assert 100.0 / 1.5 < batched_frames(100.0, 0.005) < 100.0  # more than trailing windows
    assert batched_frames(1e6, 0.005) == pytest.approx(200.0)  # at most one frame per window
    # the events that open a busy period (p / (p + 0.5) of them) are sent at once
    opener = p / (p + 0.5)
    assert batch_wait_ms(100.0, 0.005, opener - 0.01) == 0.0
    assert batch_wait_ms(100.0, 0.005, 0.99) == pytest.approx(5.0 * (0.99 - opener) / (1 - opener))
    assert batch_wait_ms(100.0, 0.005, 1.0) == pytest.approx(5.0)


def test_mm1_wait_quantiles() -> None:
    # lambda 100/s at 50 % busy: mu 200/s; P(W > t) = 0.5 exp(-100 t)
    assert mm1_wait_ms(100.0, 0.5, 0.99) == pytest.approx(1000.0 * math.log(50.0) / 100.0)
    assert mm1_wait_ms(100.0, 0.5, 0.5) == 0.0
    assert mm1_wait_ms(100.0, 1.0, 0.5) == math.inf


def test_shared_design_by_hand() -> None:
    # 6,000 users reconnecting once a minute: 200 events/s, 100 per gateway
    d = Deployment(6000, gateways=2, workers=2, churn_per_min=1.0)
    e = estimate(d, COSTS)
    f_g = 100.0 / (math.exp(-0.5) + 0.5)  # delta frames per gateway (leading-edge batching)
    m = 100.0 / f_g  # events per frame
    hb_bytes = 10.0 + 20.0 * 4  # a vector of the 4 replicas
    assert e.design == "shared"
    for r in (e.gateway, e.worker):
        assert r.frames_in == pytest.approx(4 * 4 + 2 * f_g)
        assert r.bytes_in == pytest.approx(16 * hb_bytes + 2 * f_g * (50.0 + 30.0 * m))
        assert r.memory_bytes == pytest.approx(6000 * 245.0)
    assert e.gateway.frames_out == pytest.approx(4 + f_g)
    assert e.gateway.bytes_out == pytest.approx(4 * hb_bytes + f_g * (50.0 + 30.0 * m))
    assert (e.worker.frames_out, e.worker.bytes_out) == (4.0, 4 * hb_bytes)
    assert e.deliveries_per_s == pytest.approx(4 * (16 + 2 * f_g))
    assert e.messages_lost == 0


def test_sharded_design_by_hand() -> None:
    # 4,000 users, 2 shards served by 2 workers each; 133.3 events/s, 33.3 per gateway-shard
    d = Deployment(4000, gateways=2, workers=4, churn_per_min=1.0, shards=2, redis_nodes=2)
    e = estimate(d, COSTS)
    e_gs = (2 * 4000 / 60) / 4
    f_gs = e_gs / (math.exp(-e_gs * 0.005) + e_gs * 0.005)
    m = e_gs / f_gs
    gw_shard = 2 * (4 * (10 + 20) + f_gs * (50 + 30 * m))  # two gateways: own-counter hb + deltas
    wk_shard = 2 * 4 * (10 + 20 * 4)  # two workers, clocks of 2 gateways + 2 workers
    assert e.design == "sharded"
    assert e.worker.frames_in == pytest.approx(2 * (4 + f_gs) + 2 * 4)
    assert e.worker.bytes_in == pytest.approx(gw_shard + wk_shard)
    assert e.worker.memory_bytes == pytest.approx(2000 * 245.0)
    assert (e.worker.frames_out, e.worker.bytes_out) == (4.0, 4 * 90.0)
    assert e.gateway.frames_in == 0.0  # gateways only write
    assert e.gateway.frames_out == pytest.approx(2 * (4 + f_gs))
    assert e.gateway.memory_bytes == pytest.approx(2000 * 245.0)  # its own connections
    assert e.publishes_per_s == pytest.approx(2 * (2 * (4 + f_gs) + 8))
    assert e.deliveries_per_s == pytest.approx(2 * e.publishes_per_s)


def test_issue_targets_at_ten_million_users_on_a_thousand_nodes() -> None:
    u, g, w = 10**7, 500, 500
    s = choose_shards(u, w)
    sharded = estimate(Deployment(u, g, w, shards=s, redis_nodes=s // 10))
    assert sharded.worker.bytes_in <= 1e6
    assert sharded.worker.memory_bytes <= 500e6
    assert sharded.worker.convergence_p99_ms <= 100.0
    assert sharded.limits == ()
    shared = estimate(Deployment(u, g, w))
    assert shared.worker.memory_bytes > 1.5e9 and shared.worker.bytes_in > 50e6
    assert shared.worker.convergence_p99_ms == math.inf
    assert shared.limits


def test_choose_shards() -> None:
    assert choose_shards(10**5, 5) == 1  # small deployments stay unsharded
    assert choose_shards(10**7, 500) == 100  # 10^5 users a shard
    assert choose_shards(10**6, 500) == 63  # at most 8 workers a shard
    assert choose_shards(10**7, 10) == 5  # at least 2 workers a shard


def test_deployment_is_validated() -> None:
    with pytest.raises(ValueError):
        Deployment(10, 1, 1, shards=4)  # shards without a worker
    with pytest.raises(ValueError):
        Deployment(0, 1, 1)


def test_default_wire_sizes_are_the_encoders() -> None:
    """The model's defaults (used when the encoder is not measured) follow the wire format."""
    measured, default = wire_sizes(), WireSizes()
    for n in (8, 100, 1000):
        assert default.heartbeat(n) == pytest.approx(measured.heartbeat(n), rel=0.05)
        assert default.delta(n) == pytest.approx(measured.delta(n), rel=0.05)


def test_wire_sizes_match_the_encoder() -> None:
    from presence import wire

    ws = wire_sizes()
    inc = 1_764_000_000_000_000
    clock = {(f"{i:06d}", inc + i): 100_000 + i for i in range(37)}
    size = len(wire.encode_heartbeat(("nnnnnn", inc), clock))
    assert size == pytest.approx(ws.heartbeat(37), rel=0.01)


def test_capacity_command(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from delivery.simulation.capacity_cli import main

    assert main(["--users", "1000000", "--gateways", "50", "--workers", "50", "--shards",
                 "auto", "--json"]) == 0
    [est] = json.loads(capsys.readouterr().out)
    assert est["design"] == "sharded" and est["deployment"]["shards"] == 10
    assert est["messages_lost"] == 0
    assert main(["--table"]) == 0
    table = capsys.readouterr().out
    assert table.count("\n") > 10 and "over budget" in table
    assert main(["--users", "10", "--workers", "1", "--shards", "4"]) == 2
