"""Agents handle a batch taken from a backlog in parts of bounded input size
(pipeline/worker/checkpoint.py, ``split_batch``)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from pipeline.worker.checkpoint import split_batch


@given(st.lists(st.integers(min_value=0, max_value=50)), st.integers(min_value=1, max_value=120))
def test_parts_keep_the_batch_in_order_and_stay_within_the_bound(
    sizes: list[int], max_bytes: int
) -> None:
    batch = list(enumerate(sizes))  # distinct items, so order is checkable
    parts = split_batch(batch, max_bytes, lambda item: item[1])
    assert [item for part in parts for item in part] == batch
    assert all(parts)
    for part in parts:
        assert len(part) == 1 or sum(n for _, n in part) <= max_bytes
    # No needless cut: each part would have overflowed with the next part's first item.
    for part, following in pairwise(parts):
        assert sum(n for _, n in part) + following[0][1] > max_bytes


def test_a_batch_within_the_bound_is_one_part_and_an_oversized_item_stands_alone() -> None:
    batch = [b"aa", b"bbb"]
    assert split_batch(batch, 5, len) == [batch]
    assert split_batch([b"a", b"x" * 10, b"b", b"c"], 5, len) == [[b"a"], [b"x" * 10], [b"b", b"c"]]
    assert split_batch([], 5, len) == []
