"""The leader's and the worker's spans from a task's trace context (runtime/tracing.py), in this
process with the SDK's in-memory exporter."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qrt import tracing
from qrt.protocol import Outcome, RunTask

TRACE = "0af7651916cd43dd8448eb211c80319c"
SAMPLED = {"traceparent": f"00-{TRACE}-b7ad6b7169203331-01"}
UNSAMPLED = {"traceparent": f"00-{TRACE}-b7ad6b7169203331-00"}



def run(carrier: dict[str, str] | None) -> RunTask:
    task = RunTask("t1", "mail.send", [], {}, 2, 60.0, 3, trace=dict(carrier) if carrier else None)
    task.queued_at = 1_700_000_000.0
    return task


def test_the_sampled_flag_is_read_from_the_traceparent() -> None:
    assert tracing.sampled(SAMPLED) and not tracing.sampled(UNSAMPLED)
    assert not tracing.sampled({}) and not tracing.sampled({"traceparent": "garbage-zz"})


def test_a_sampled_task_gets_a_queue_span_then_a_run_span_under_it(spans: InMemorySpanExporter) -> None:
    task = run(SAMPLED)
    tracing.queue_spans([task], "w1")
    assert task.trace is not None and task.trace["traceparent"] != SAMPLED["traceparent"]
    started = tracing.run_started(task, "w1")
    assert trace.get_current_span().get_span_context().trace_id == int(TRACE, 16)  # what the handler sees
    tracing.run_ended(started, Outcome("t1", 2, False, error_type="ValueError", message="bad"))
    queue, ran = spans.get_finished_spans()
    assert (queue.name, ran.name) == ("queue mail.send", "run mail.send")
    assert queue.parent is not None and format(queue.parent.span_id, "016x") == "b7ad6b7169203331"
    assert ran.parent is not None and ran.parent.span_id == queue.context.span_id
    assert queue.start_time == 1_700_000_000 * 10**9 and queue.attributes["qrt.worker"] == "w1"
    assert ran.status.status_code == trace.StatusCode.ERROR and ran.attributes["qrt.attempt"] == 2
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached after the run


def test_an_unsampled_task_makes_no_span_and_passes_its_context_on(spans: InMemorySpanExporter) -> None:
    task = run(UNSAMPLED)
    tracing.queue_spans([task], "w1")
    assert task.trace == UNSAMPLED
    started = tracing.run_started(task, "w1")
    assert trace.get_current_span().get_span_context().trace_id == int(TRACE, 16)
    tracing.run_ended(started, Outcome("t1", 2, True))
    assert spans.get_finished_spans() == ()
    assert tracing.run_started(run(None), "w1") is None


def test_a_submit_carries_its_context_only_when_sampled(spans: InMemorySpanExporter) -> None:
    from qrt.protocol import Envelope

    sampled_env = [Envelope("t1", "a", [], {}), Envelope("t2", "a", [], {})]
    with tracing.submit_span(sampled_env):
        pass
    assert sampled_env[0].trace is not None and sampled_env[0].trace == sampled_env[1].trace
    assert tracing.sampled(sampled_env[0].trace)
    (submit,) = spans.get_finished_spans()
    assert submit.name == "submit a" and submit.attributes["messaging.batch.message_count"] == 2
    dropped = [Envelope("t3", "a", [], {})]
    unsampled_parent = trace.NonRecordingSpan(trace.SpanContext(int(TRACE, 16), 1, False))
    with trace.use_span(unsampled_parent), tracing.submit_span(dropped):  # (the default sampler: parent-based)
        pass
    assert dropped[0].trace is None  # carries nothing, as an untraced task
