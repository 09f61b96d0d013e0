"""The worker's bounded cache of parsed states (pipeline/worker/state.py)."""

from __future__ import annotations

from pipeline.worker.state import MISSING, StateCache


def test_the_least_recently_written_state_is_dropped_first() -> None:
    cache = StateCache(max_keys=2)
    cache.put(b"a", {"n": 1})
    cache.put(b"b", {"n": 2})
    cache.put(b"a", {"n": 3})  # a is now the most recent
    cache.put(b"c", {"n": 4})
    assert cache.trim() == 1
    assert cache.take(b"b") is MISSING
    assert cache.take(b"a") == {"n": 3}
    assert cache.take(b"c") == {"n": 4}


def test_trim_within_the_bound_drops_nothing() -> None:
    cache = StateCache(max_keys=3)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key)
    assert cache.trim() == 0
    assert [cache.take(k) for k in (b"a", b"b", b"c")] == [b"a", b"b", b"c"]


def test_a_deleted_key_leaves_the_cache() -> None:
    cache = StateCache(max_keys=2)
    cache.put(b"a", {"n": 1})
    cache.put(b"a", None)
    assert cache.take(b"a") is MISSING
    assert len(cache.states) == 0


def test_many_batches_keep_the_cache_at_its_bound() -> None:
    cache = StateCache(max_keys=10)
    for batch in range(50):
        for i in range(7):
            cache.put(b"%d" % (batch * 3 + i), batch)
        cache.trim()
        assert len(cache.states) <= 10
    # The last batch's keys are all there: they were written last.
    assert all(cache.take(b"%d" % (49 * 3 + i)) == 49 for i in range(7))
