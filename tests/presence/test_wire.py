"""Wire format: round trips, limits, hostile input, and the msgpack-vs-JSON measurement."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence import wire
from presence.replica import Replica
from presence.state import EMPTY_META, DeltaPart, Event, SlicePart, State
from tests.presence.presence_helpers import PROPS

R = ("node-1", 1_700_000_000_000_000)
V = wire.VERSION


def _delta(part: list[object]) -> bytes:
    return msgpack.packb(["pz", V, 2, "a", 1, [part]])


def test_heartbeat_roundtrip() -> None:
    clock = {R: 5, ("b", 2): 0}
    m = wire.decode(wire.encode_heartbeat(R, clock))
    assert (m.type, m.sender, m.clock) == (wire.HB, R, clock)


def test_delta_and_ack_roundtrip() -> None:
    s = State(R)
    s.track("alice", "c1", {"device": "ios", "n": 3})
    s.track("bob", "c2")
    s.untrack("bob", "c2")
    d = s.take_delta()
    assert d is not None
    m = wire.decode(wire.encode_delta(R, [d]))
    assert m.parts == [d]
    parts = s.extract({})
    m = wire.decode(wire.encode_ack(R, ("b", 1), 9, parts, 0, 1))
    assert (m.type, m.to, m.req_id, m.parts) == (wire.ACK, ("b", 1), 9, parts)
    m = wire.decode(wire.encode_request(R, ("b", 1), 3, {R: 1}))
    assert (m.type, m.to, m.req_id, m.clock) == (wire.REQ, ("b", 1), 3, {R: 1})
    assert wire.decode(wire.encode_leave(R)).type == wire.LEAVE


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        (b"", "foreign"),
        (b"\xc1", "foreign"),
        (msgpack.packb({"type": "hello"}), "foreign"),
        (msgpack.packb(["xx", 1, 1, "a", 1, []]), "foreign"),
        (msgpack.packb(["pz", 99, 1, "a", 1, []]), "version"),
        (msgpack.packb(["pz", 1, 1, "a", 1, []]), "version"),  # version 1: row-format parts
        (msgpack.packb(["pz", V, 42, "a", 1]), "malformed"),
        (msgpack.packb(["pz", V, 1, "a", -1, []]), "malformed"),
        (msgpack.packb(["pz", V, 1, "a", 1, [["a", 1]]]), "malformed"),
        (msgpack.packb(["pz", V, 2, "a", 1, [[0, "a", 1, 5, 3, [], [], [], [], 0]]]), "malformed"),
        # a dot outside (start, end]
        (_delta([0, "a", 1, 0, 3, [9], ["k"], ["c"], [{}], 0]), "malformed"),
        # dots not increasing
        (_delta([0, "a", 1, 0, 3, [2, 1], ["k", "l"], ["c", "c"], [{}], 0]), "malformed"),
        # columns of different lengths
        (_delta([0, "a", 1, 0, 3, [1, 2], ["k"], ["c", "c"], [{}], 0]), "malformed"),
        # a meta index out of the table, negative, or of the wrong type
        (_delta([0, "a", 1, 0, 3, [1], ["k"], ["c"], [{}], 1]), "malformed"),
        (_delta([0, "a", 1, 0, 3, [1], ["k"], ["c"], [{}], [-1]]), "malformed"),
        (_delta([0, "a", 1, 0, 3, [1], ["k"], ["c"], [{}], [0, 0]]), "malformed"),
        (_delta([0, "a", 1, 0, 3, [1], ["k"], ["c"], [{}], "0"]), "malformed"),
        # a key that is not a str, a meta that is not a map, a map with a non-str key
        (_delta([0, "a", 1, 0, 3, [1], [7], ["c"], [{}], 0]), "malformed"),
        (_delta([0, "a", 1, 0, 3, [1], ["k"], ["c"], [[1]], 0]), "malformed"),
        (_delta([1, "a", 1, 3, ["k"], ["c"], [{1: 2}], 0]), "malformed"),
        # nil (an untrack) is only allowed in a delta, not in a slice
        (_delta([1, "a", 1, 3, ["k"], ["c"], [None], 0]), "malformed"),
        (msgpack.packb(["pz", V, 4, "a", 1, "b", 1, 1, [], 3, 2]), "malformed"),
    ],
)
def test_bad_frames_raise_wire_error_with_kind(frame: bytes, kind: str) -> None:
    with pytest.raises(wire.WireError) as e:
        wire.decode(frame)
    assert e.value.kind == kind


def test_oversized_frame() -> None:
    with pytest.raises(wire.WireError) as e:
        wire.decode(b"\x00" * 2048, max_bytes=1024)
    assert e.value.kind == "oversized"


@PROPS
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_out_of_the_replica(data: bytes) -> None:
    r = Replica("r", 1)
    r.receive(data, 0.0)
    r.tick(0.1)


@PROPS
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.text(max_size=5)
        | st.binary(max_size=5),
        lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=30,
    )
)
def test_random_msgpack_structures_never_raise_out_of_the_replica(obj: object) -> None:
    r = Replica("r", 1)
    for frame in (msgpack.packb(obj), msgpack.packb(["pz", V, 2, "x", 1, obj])):
        r.receive(frame, 0.0)
    assert r.list("anything") == []


def test_msgpack_is_more_compact_than_json() -> None:
    s = State(R)
    for i in range(1000):
        s.track(f"user-{i:06d}", f"conn-{i:08x}", {"device": "ios"})
    parts = s.extract({})
    mp = wire.encode_ack(R, ("b", 1), 1, parts)
    js = json.dumps(msgpack.unpackb(mp)).encode()
    assert len(mp) < len(js)


def test_delta_part_events_must_be_in_dot_order() -> None:
    d = DeltaPart(R, 0, 2, (Event(2, "a", "c", {}), Event(1, "b", "c", {})))
    with pytest.raises(wire.WireError):
        wire.decode(wire.encode_delta(R, [d]))


def test_slice_meta_empty_is_shared() -> None:
    m = wire.decode(wire.encode_delta(R, [SlicePart(R, 1, (("k", "c", {}),))]))
    part = m.parts[0]
    assert isinstance(part, SlicePart)
    assert part.entries[0][2] is EMPTY_META


def test_empty_meta_is_read_only_and_packs_natively() -> None:
    assert EMPTY_META == {} and msgpack.packb(EMPTY_META) == b"\x80"
    for mutate in (
        lambda m: m.__setitem__("k", 1),
        lambda m: m.update(k=1),
        lambda m: m.setdefault("k", 1),
        lambda m: m.clear(),
    ):
        with pytest.raises(TypeError):
            mutate(EMPTY_META)
    assert EMPTY_META == {}
