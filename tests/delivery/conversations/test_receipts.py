"""Receipt coalescing (pure): bounded receipts per message, the last one says all."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from delivery.conversations import receipts

M = uuid.UUID(int=7)


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A group size and the sizes of the ack batches that deliver it (in order)."""
    of = draw(st.integers(1, 600))
    sizes: list[int] = []
    left = of
    while left:
        n = draw(st.integers(1, left))
        sizes.append(n)
        left -= n
    return of, sizes


@given(batches())
def test_a_large_group_costs_its_sender_at_most_five_receipts_and_the_last_says_all(
        case: tuple[int, list[int]]) -> None:
    of, sizes = case
    made: list[receipts.Receipt] = []
    count = 0
    for n in sizes:
        made += receipts.counted(M, "c", 1, "alice", receipts.DELIVERED, count, count + n, of)
        count += n
    assert len(made) <= len(receipts.milestones(of)) <= 5
    assert made[-1].payload["count"] == of  # the final milestone is always reached
    assert made[0].payload["count"] >= 1
    counts = [r.payload["count"] for r in made]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert len({r.id for r in made}) == len(made)  # distinct ids: none overwrites another
    assert {r.to for r in made} == {"alice"}


@given(st.integers(1, 10_000))
def test_milestones_are_increasing_and_end_at_the_whole_group(of: int) -> None:
    marks = receipts.milestones(of)
    assert marks[0] == 1 and marks[-1] == of and list(marks) == sorted(set(marks))


def test_small_groups_get_one_receipt_per_recipient() -> None:
    assert not receipts.coalesced(receipts.RECEIPT_SINGLE_MAX)
    assert receipts.coalesced(receipts.RECEIPT_SINGLE_MAX + 1)
    a = receipts.single(M, "c", 3, "alice", receipts.DELIVERED, "bob")
    assert a == receipts.single(M, "c", 3, "alice", receipts.DELIVERED, "bob")  # idempotent
    assert a.id != receipts.single(M, "c", 3, "alice", receipts.READ, "bob").id
    assert a.payload == {"message": str(M), "conversation": "c", "seq": 3,
                         "status": "delivered", "user": "bob"}
