"""The quick checks of the hottest messages accept only what the full field-by-field read accepts,
and read it the same: they are a shortcut, never a second set of rules."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt import protocol as P
from qrt.protocol import ProtocolError

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.binary(max_size=2),
                    st.sampled_from(["t1", "x" * 200, "x" * 201, "", "succeeded", "failed", "pending", "nope"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=2),
                                                       st.dictionaries(st.one_of(st.text(max_size=2), st.integers()),
                                                                       inner, max_size=2)), max_leaves=4)


def near(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Maps near a valid one: each field kept, dropped or replaced by any value, plus maybe another."""
    fields = {name: mostly(value) for name, value in valid.items()}  # most fields valid: near the edge
    fields["other"] = st.one_of(st.just(DROP), values)
    return st.fixed_dictionaries(fields).map(lambda m: {k: v for k, v in m.items() if v is not DROP})


DROP = object()


def mostly(value: Any) -> st.SearchStrategy[Any]:
    """`value` seven times in ten, else any value, or the field left out."""
    return st.integers(0, 9).flatmap(lambda i: st.just(value) if i < 7 else values if i < 9 else st.just(DROP))


def agrees(quick: Any, read: Any) -> None:
    if quick is None:
        return  # left to the full read, whatever it says
    try:
        full = read()
    except ProtocolError as exc:
        raise AssertionError(f"the quick check accepted what the full read refuses: {exc.message}") from None
    assert quick == full


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(near({"id": "t1", "actor": "app.add", "args": [1], "kwargs": {"b": 2}, "attempt": 1, "timeout": 60.0,
             "term": 1, "trace": {"traceparent": "00-ab-cd-01"}}))
def test_a_run_task_quick_check_is_a_shortcut(raw: dict[str, Any]) -> None:
    agrees(P.RunTask.quick(raw), lambda: P.RunTask.read(raw, "tasks[0]"))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(near({"id": "t1", "attempt": 1, "ok": True, "value": 3}))
def test_an_outcome_quick_check_is_a_shortcut(raw: dict[str, Any]) -> None:
    agrees(P.Outcome.quick(raw), lambda: P.Outcome.read(raw, "outcomes[0]"))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(near({"id": "t1", "actor": "app.add", "args": [1], "kwargs": {"b": 2}, "trace": {"traceparent": "00-ab-cd-01"}}))
def test_an_envelope_quick_check_is_a_shortcut(raw: dict[str, Any]) -> None:
    agrees(P.Envelope.quick(raw), lambda: P.Envelope.read(raw, "tasks[0]"))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(near({"rid": 7, "id": "t1", "state": "succeeded", "actor": "app.add", "attempt": 1, "value": 3,
             "submitted_at": 1.0, "started_at": 2.0, "finished_at": 3.0}))
def test_a_result_quick_check_is_a_shortcut(raw: dict[str, Any]) -> None:
    agrees(P.Result.quick(raw), lambda: P.Result.read(raw))


def test_the_quick_checks_take_the_common_messages() -> None:
    # Else they would be dead weight: the messages the hot path carries must take the shortcut.
    task = P.RunTask("t1", "app.add", [1, 2], {"x": 1}, 1, 60.0, 1)
    assert P.RunTask.quick(task.to_wire()) == task
    outcome = P.Outcome("t1", 1, True, {"v": 3})
    assert P.Outcome.quick(outcome.to_wire()) == outcome
    envelope = P.Envelope("t1", "app.add", [1], {"b": 2})
    assert P.Envelope.quick(envelope.to_wire()) == envelope
    traced = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "a=1"}
    assert P.Envelope.quick(P.Envelope("t1", "app.add", [], {}, trace=traced).to_wire()) is not None
    assert P.RunTask.quick(P.RunTask("t1", "app.add", [], {}, 1, 60.0, 1, trace=traced).to_wire()) is not None
    result = P.Result(7, "t1", "succeeded", "app.add", 1, 3, None, 1.0, 2.0, 3.0)
    assert P.Result.quick(P.decode(result.encode())) == result
