"""Alert conditions on the pure state machine (alerts/evaluate.py)."""

from __future__ import annotations

from qrt import defaults
from qrt.alerts.evaluate import evaluate
from qrt.alerts.rules import parse

from .statehelp import Driver


def test_a_lease_past_its_timeout_and_the_grace_is_stuck() -> None:
    rules = parse({"rule": [{"name": "stuck", "stuck_lease": True}]}).rules
    d = Driver()
    d.submit("t1")
    d.dispatch()
    grace = defaults.TASK_TIMEOUT + defaults.LEASE_TIMEOUT
    assert evaluate(rules, d.machine, d.now + grace - 1, set(), None, {}) == []
    (found,) = evaluate(rules, d.machine, d.now + grace + 1, set(), None, {})
    assert (found.rule, found.actor, found.value) == ("stuck", "a", 1.0)
