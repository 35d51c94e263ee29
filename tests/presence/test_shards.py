"""The shard function and shard lists (pure): stable, in range, spread; channel names."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence.shards import MAX_SHARDS, direct_channel, parse_shards, shard_channel, shard_of
from tests.presence.presence_helpers import PROPS


@PROPS
@given(st.text(max_size=64), st.integers(min_value=1, max_value=MAX_SHARDS))
def test_a_key_has_one_shard_in_range_and_always_the_same(key: str, shards: int) -> None:
    s = shard_of(key, shards)
    assert 0 <= s < shards
    assert shard_of(key, shards) == s  # no salt: every process agrees


@PROPS
@given(st.text(max_size=64), st.integers(min_value=1, max_value=512))
def test_doubling_s_keeps_each_key_in_s_or_s_plus_the_old_count(key: str, shards: int) -> None:
    # what makes "split every shard in two" a valid way to change S (docs/scaling.md)
    assert shard_of(key, 2 * shards) in (shard_of(key, shards), shard_of(key, shards) + shards)


def test_the_shard_is_crc32_mod_s_so_other_languages_can_compute_it() -> None:
    assert shard_of("alice", 4) == zlib.crc32(b"alice") % 4
    assert [shard_of(k, 4) for k in ("alice", "bob", "carol", "dave")] == [
        zlib.crc32(k.encode()) % 4 for k in ("alice", "bob", "carol", "dave")]
    assert shard_of("anyone", 1) == 0


def test_users_spread_evenly_over_shards() -> None:
    counts = Counter(shard_of(f"user-{i}", 8) for i in range(80_000))
    assert set(counts) == set(range(8))
    assert max(counts.values()) < 1.05 * min(counts.values())


def test_unsharded_channels_are_the_ones_before_sharding() -> None:
    assert shard_channel("p", 0, 1) == "p:presence"
    assert direct_channel("p", 0, 1, "gw-a") == "p:presence:gw-a"


def test_sharded_channels_carry_a_cluster_hash_tag_per_shard() -> None:
    assert shard_channel("p", 3, 4) == "p:presence:{s3}"
    assert direct_channel("p", 3, 4, "worker.w1") == "p:presence:{s3}:worker.w1"
    assert len({shard_channel("p", s, 16) for s in range(16)}) == 16


@pytest.mark.parametrize(("text", "shards", "want"), [
    ("", 4, (0, 1, 2, 3)),
    ("0,2", 4, (0, 2)),
    (" 2 , 0 ,2", 4, (0, 2)),
    ("1-3", 4, (1, 2, 3)),
    ("0,2-3", 8, (0, 2, 3)),
    ([3, 1], 4, (1, 3)),
])
def test_served_shards_parse(text: str | list[int], shards: int, want: tuple[int, ...]) -> None:
    assert parse_shards(text, shards) == want


@pytest.mark.parametrize(("text", "shards", "match"), [
    ("4", 4, "out of range"),
    ("-1", 4, "not a shard"),
    ("a", 4, "not a shard"),
    ("3-1", 4, "empty shard range"),
    ("0", 0, "shards"),
    ("0", MAX_SHARDS + 1, "shards"),
])
def test_bad_shard_lists_are_refused_naming_the_item(text: str, shards: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_shards(text, shards)
