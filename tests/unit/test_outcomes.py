"""Every outcome a worker builds is one the coordinator accepts, whatever the handler raised."""

from __future__ import annotations

import math
from typing import Any

import pytest

from qrt import protocol
from qrt.errors import Retry
from qrt.worker import outcomes


def accepted_by_the_coordinator(outcome: protocol.Outcome) -> protocol.Outcome:
    frame = protocol.Done([outcome], 1).encode()
    done = protocol.parse_request(protocol.decode(frame))
    assert isinstance(done, protocol.Done)
    return done.outcomes[0]


@pytest.mark.parametrize(("delay", "sent"), [
    (30, 30.0), (0, 0.0), (None, None),
    (-1, 0.0),  # "as soon as possible"
    (math.inf, None), (math.nan, None), ("5", None), (object(), None),  # not a delay: the usual backoff
])
def test_a_retry_delay_is_always_one_the_coordinator_accepts(delay: Any, sent: float | None) -> None:
    # A negative or infinite delay made a `done` the coordinator refused whole: resent forever, and
    # the outcomes batched with it never committed.
    outcome = accepted_by_the_coordinator(outcomes.of_exception("t1", 1, Retry(delay=delay)))
    assert (outcome.error_type, outcome.retry_delay) == ("Retry", sent)


def test_a_result_nested_past_the_limit_fails_the_task_instead_of_wedging_its_report() -> None:
    value: list[Any] = []
    for _ in range(1019):
        value = [value]
    outcome = accepted_by_the_coordinator(outcomes.ok("t1", 1, value))
    assert (outcome.ok, outcome.error_type, outcome.retryable) == (False, "ResultTooDeep", False)
    assert "nested deeper than 64 levels" in outcome.message
