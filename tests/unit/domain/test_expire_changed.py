"""``expire`` says whether it changed more than the watermark, and when it says no, the
state it left equals the stored one advanced alike: a sweep may skip writing it."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.domain import DomainConfig, Engine
from tests.unit.domain.builders import DAY, HOUR, Event, us
from tests.unit.domain.test_order_independence import CONFIGS, SCALE, event_logs


def _without_watermark(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "watermark_us"}


@st.composite
def histories(draw: st.DrawFn) -> tuple[DomainConfig, list[Event], list[int]]:
    config = draw(st.sampled_from(CONFIGS))
    log = draw(event_logs(config))
    # Watermarks to sweep at, after the log: an hour to weeks later, rising.
    gaps = draw(st.lists(st.sampled_from([HOUR, DAY // 2, DAY, 3 * DAY, 9 * DAY]), max_size=4))
    return config, log, gaps


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_expire_reports_exactly_whether_more_than_the_watermark_changed(
    history: tuple[DomainConfig, list[Event], list[int]],
) -> None:
    config, log, gaps = history
    engine = Engine(config)
    engine.feed(log, batch_size=3)
    engine.deliver_all()
    for name, processor in engine.processors.items():
        for stored in engine.states[name].values():
            raw = processor.state_to_dict(stored)  # what the table holds
            state, watermark = processor.state_from_dict(raw), stored.watermark_us
            for gap in gaps:
                watermark += us(gap)
                before = processor.state_to_dict(state)
                result = processor.expire(state, watermark)
                if result.state is None:  # a share with nothing left: deleted, a change
                    assert result.changed
                    break
                after = processor.state_to_dict(result.state)
                assert result.changed == (_without_watermark(after) != _without_watermark(before))
                if not result.changed:
                    # Not written: the table keeps ``raw``. Advanced to the same watermark,
                    # it must be this state, or a later step would see another history.
                    again = processor.expire(processor.state_from_dict(raw), watermark).state
                    assert again is not None and processor.state_to_dict(again) == after
                else:
                    raw = after  # written
                state = result.state
