import pytest

from delivery.validation import InvalidMessage, message_id_for, validate_send

OK = {"max_body_bytes": 100, "default_ttl_s": 60.0}


def test_valid_request_gets_a_stable_id_from_client_msg_id() -> None:
    a = validate_send("alice", "bob", {"t": "hi"}, "c1", **OK)
    b = validate_send("alice", "bob", {"t": "other"}, "c1", **OK)
    assert a.message_id == b.message_id == message_id_for("alice", "c1")
    assert validate_send("alice", "bob", "x", "c1", 5, **OK).ttl_s == 5.0
    assert validate_send("alice", "bob", "x", None, **OK).client_msg_id is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("", "bob", "x"), "sender"),
        (("   ", "bob", "x"), "sender"),
        ((3, "bob", "x"), "sender"),
        (("a" * 129, "bob", "x"), "sender"),
        (("alice", None, "x"), "recipient"),
        (("alice", "bob", {1, 2}), "body"),
        (("alice", "bob", float("nan")), "body"),
        (("alice", "bob", "x" * 200), "body"),
        (("alice", "bob", "x", ""), "client_msg_id"),
        (("alice", "bob", "x", None, -1), "ttl_s"),
        (("alice", "bob", "x", None, "10"), "ttl_s"),
        (("alice", "bob", "x", None, True), "ttl_s"),
    ],
)
def test_invalid_input_names_the_field(args: tuple[object, ...], field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        validate_send(*args, **OK)
    assert info.value.field == field
    assert field in str(info.value)
