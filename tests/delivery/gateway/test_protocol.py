"""The typed frames: client frames decoded, gateway frames and node frames encoded and decoded,
byte for byte as docs/protocol.md shows them."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from delivery.gateway import protocol as p

MID = "7f0c1e0a-1b2c-4d5e-8f90-a1b2c3d4e5f6"


def refused(data: str | bytes) -> p.FrameError:
    with pytest.raises(p.FrameError) as info:
        p.parse_client_frame(data)
    return info.value


# -- client frames ------------------------------------------------------------------------------


def test_hello_decodes_with_its_token() -> None:
    assert p.parse_client_frame('{"type":"hello","token":"t"}') == p.Hello("t")


def test_hello_without_a_token_decodes_to_none() -> None:
    assert p.parse_client_frame('{"type":"hello"}') == p.Hello(None)


def test_hello_with_a_token_not_a_string_is_refused() -> None:
    assert refused('{"type":"hello","token":1}').code == p.E_INVALID_FRAME


def test_ack_decodes_with_its_uuid() -> None:
    assert p.parse_client_frame(json.dumps({"type": "ack", "id": MID})) == p.Ack(
        MID, uuid.UUID(MID))


def test_ack_without_a_string_id_is_refused() -> None:
    err = refused('{"type":"ack","id":5}')
    assert (err.code, err.ref) == (p.E_INVALID_FRAME, "ack")


def test_ack_with_a_long_id_is_refused() -> None:
    assert refused(json.dumps({"type": "ack", "id": "x" * 65})).code == p.E_BAD_ID


def test_ack_with_an_id_not_a_uuid_is_refused() -> None:
    assert refused('{"type":"ack","id":"nope"}').code == p.E_BAD_ID


def test_ping_decodes() -> None:
    assert p.parse_client_frame('{"type":"ping","extra":[1]}') == p.Ping()


def test_binary_frames_are_refused() -> None:
    assert refused(b'{"type":"ping"}').code == p.E_BINARY


def test_deep_nesting_is_refused_before_parsing() -> None:
    assert refused('{"type":"ping","x":' + "[" * 40 + "]" * 40 + "}").code == p.E_INVALID_JSON


def test_invalid_json_is_refused() -> None:
    assert refused("{").code == p.E_INVALID_JSON


def test_a_frame_not_an_object_is_refused() -> None:
    assert refused("[1]").code == p.E_INVALID_FRAME


def test_a_frame_without_a_string_type_is_refused() -> None:
    assert refused('{"type":3}').code == p.E_INVALID_FRAME


def test_an_unknown_type_is_refused_with_its_name() -> None:
    err = refused('{"type":"dance"}')
    assert (err.code, err.ref) == (p.E_UNKNOWN_TYPE, "dance")


@pytest.mark.parametrize("frame", [p.Hello("tok"), p.Hello(None), p.Ack(MID, uuid.UUID(MID)),
                                   p.Ping(), p.Read("team-42", 17)])
def test_client_frames_round_trip(frame: p.ClientFrame) -> None:
    assert p.parse_client_frame(p.encode_client_frame(frame)) == frame


# -- gateway -> client --------------------------------------------------------------------------


def test_gateway_frames_keep_their_bytes() -> None:
    assert p.welcome_frame("gw1.ab", "bob") == (
        '{"type": "welcome", "conn": "gw1.ab", "user": "bob"}')
    assert p.PONG_FRAME == '{"type":"pong"}'
    assert p.error_frame("bad_id", "no", "ack") == (
        '{"type": "error", "code": "bad_id", "message": "no", "ref": "ack"}')


def test_message_frame_embeds_a_uuid_id_and_encodes_any_other() -> None:
    assert p.message_frame(MID, "alice", {"t": 1}, "now") == (
        '{"type":"message","id":"' + MID + '","from":"alice","body":{"t":1},"sent_at":"now"}')
    assert json.loads(p.message_frame('a"b', "alice", None, "now"))["id"] == 'a"b'


# -- node frames --------------------------------------------------------------------------------

DELIVER = p.Deliver(id=MID, user="bob", sender="alice", body={"text": "hi"},
                    sent_at="2024-06-01T09:59:58+00:00", seq=12, attempt=2,
                    conns=("gw1.a", "gw1.b"))


def test_deliver_encodes_as_routing_always_published_it() -> None:
    old: dict[str, Any] = {
        "type": "deliver", "id": MID, "user": "bob", "from": "alice", "body": {"text": "hi"},
        "sent_at": "2024-06-01T09:59:58+00:00", "seq": 12, "attempt": 2}
    old = {**old, "conns": ["gw1.a", "gw1.b"]}
    assert json.dumps(p.encode_deliver(DELIVER)) == json.dumps(old)


def test_deliver_round_trips() -> None:
    assert p.decode_node_frame(json.loads(json.dumps(p.encode_deliver(DELIVER)))) == DELIVER


def test_deliver_gives_the_message_frame_for_the_client() -> None:
    assert json.loads(DELIVER.message_frame()) == {
        "type": "message", "id": MID, "from": "alice", "body": {"text": "hi"},
        "sent_at": "2024-06-01T09:59:58+00:00"}


def test_deliver_with_missing_optional_fields_decodes_with_defaults() -> None:
    frame = p.decode_node_frame({"type": "deliver", "id": MID, "user": "bob", "attempt": 1})
    assert frame == p.Deliver(MID, "bob", "", None, "", None, 1, ())


@pytest.mark.parametrize("bad", [{"user": 1}, {"conns": "gw1.a"}, {"attempt": "1"},
                                 {"attempt": None}])
def test_a_malformed_deliver_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        p.decode_node_frame({**p.encode_deliver(DELIVER), **bad})


def test_a_deliver_without_an_id_is_refused() -> None:
    frame = p.encode_deliver(DELIVER)
    del frame["id"]
    with pytest.raises(KeyError):
        p.decode_node_frame(frame)


def test_owed_round_trips() -> None:
    assert p.owed_frame("bob") == {"type": "owed", "user": "bob"}
    assert p.decode_node_frame(p.owed_frame("bob")) == p.Owed("bob")


def test_an_unknown_node_frame_is_reported_with_its_type() -> None:
    assert p.decode_node_frame({"type": "gossip"}) == p.UnknownNodeFrame("gossip")
