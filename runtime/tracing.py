"""OpenTelemetry traces: one trace per task, across the client, the leader and the worker.

Active where `opentelemetry` is installed (`pip install 'qrt[otel]'`) and a tracer provider is
configured: in your own program by your own setup (the client and an embedded worker use the
global provider); in `qrt coordinator` and `qrt worker` by the standard variables, read by
`configure`: OTEL_TRACES_EXPORTER (`otlp_proto_http`, `console`, or any installed exporter),
OTEL_SERVICE_NAME, and the exporter's own (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, ...).

The spans of a task, each the child of the one before:
    submit <actor>   client (producer): the submit request, until it is accepted (committed)
    queue <actor>    leader: from when the task was due to its lease (attributes: attempt, worker)
    run <actor>      worker (consumer): one attempt of the handler; status error when it failed
The context travels as a W3C trace context map: in the envelope's `trace` (kept with the task in
the replicated state, so a new leader still has it) and in each `run`. A task submitted inside a
handler joins its parent's trace. Sampling is decided at the submit (the provider's sampler, e.g.
OTEL_TRACES_SAMPLER=parentbased_traceidratio): a task whose trace is not sampled carries nothing,
as an untraced one, and costs one check per hop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocol import Envelope, Outcome, RunTask

try:
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the `otel` extra is not installed: tracing is off
    trace = None  # type: ignore[assignment]

log = logging.getLogger("qrt.tracing")

TRACER = "qrt"


def active() -> bool:
    """Whether spans are recorded: opentelemetry is installed and a real provider is set."""
    if trace is None:
        return False
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def configure(service: str) -> bool:
    """In `qrt coordinator` and `qrt worker`: a provider exporting with OTEL_TRACES_EXPORTER, if set
    (else nothing: tracing stays off). Whether tracing is on."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not name or name == "none":
        return False
    try:
        from importlib.metadata import entry_points

        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER is set but opentelemetry is not installed (pip install 'qrt[otel]'): "
                    "no traces")
        return False
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        known = sorted(e.name for e in entry_points(group="opentelemetry_traces_exporter"))
        log.warning("OTEL_TRACES_EXPORTER=%s names no installed exporter (installed: %s): no traces", name,
                    ", ".join(known) or "none")
        return False
    exporter = next(iter(found)).load()()
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.info("traces: exported with %s as %s", name, resource.attributes[SERVICE_NAME])
    return True


def shutdown() -> None:
    """Export what is buffered (a process that exits would lose its last spans)."""
    if active():
        provider: Any = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


def _carrier(context: Any) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


@contextmanager
def submit_span(envelopes: list[Envelope]) -> Iterator[None]:
    """A submit request's span, its context given to each of its envelopes when sampled. A trace
    the sampler dropped is not carried at all: its tasks cost what untraced ones do (carrying it
    cost 11 % of 1-node throughput at 1 % sampling, measured), and a task such a handler submits
    starts a trace of its own."""
    if not envelopes or not active():
        yield
        return
    actors = {e.actor for e in envelopes}
    name = f"submit {next(iter(actors))}" if len(actors) == 1 else "submit"
    attributes: dict[str, Any] = {"messaging.system": "qrt", "messaging.batch.message_count": len(envelopes)}
    if len(envelopes) == 1:
        attributes["qrt.task_id"] = envelopes[0].id
    with trace.get_tracer(TRACER).start_as_current_span(name, kind=SpanKind.PRODUCER,
                                                        attributes=attributes) as span:
        if span.get_span_context().trace_flags.sampled:  # else nothing downstream would record it
            carrier = _carrier(None)
            for envelope in envelopes:
                envelope.trace = carrier
        yield


def sampled(carrier: dict[str, str]) -> bool:
    """Whether the trace context's sampled flag is set (W3C: version-traceid-parentid-flags): a
    trace its root did not sample records nothing, so its spans are not even made (a few µs each,
    on the leader's event loop) and its context passes on as it came."""
    flags = carrier.get("traceparent", "")[-2:]
    try:
        return bool(int(flags, 16) & 1)
    except ValueError:
        return False


def queue_spans(tasks: list[RunTask], worker: str) -> None:
    """On the leader, as it sends `run`s: each sampled task's wait in the queue, as a span from when
    it was due to now, and the run's context becomes that span's."""
    if not active():
        return
    tracer = trace.get_tracer(TRACER)
    for task in tasks:
        if task.trace and sampled(task.trace):
            span = tracer.start_span(f"queue {task.actor}", context=propagate.extract(task.trace),
                                     start_time=int(task.queued_at * 1e9), attributes={
                                         "qrt.task_id": task.id, "qrt.actor": task.actor, "qrt.attempt": task.attempt,
                                         "qrt.worker": worker})
            span.end()
            task.trace = _carrier(trace.set_span_in_context(span))


def run_started(task: RunTask, worker: str) -> Any:
    """Begin the span of one attempt on the worker, current until `run_ended` (so a task the
    handler submits joins the trace). None when the task is untraced."""
    if not task.trace or not active():
        return None
    if not sampled(task.trace):  # no span; its context still reaches what the handler submits
        return None, context.attach(propagate.extract(task.trace))
    span = trace.get_tracer(TRACER).start_span(
        f"run {task.actor}", context=propagate.extract(task.trace), kind=SpanKind.CONSUMER, attributes={
            "qrt.task_id": task.id, "qrt.actor": task.actor, "qrt.attempt": task.attempt, "qrt.worker": worker})
    return span, context.attach(trace.set_span_in_context(span))


def run_ended(started: Any, outcome: Outcome | None) -> None:
    """End what `run_started` began, marked with how the attempt ended (None: it was cancelled)."""
    if started is None:
        return
    span, token = started
    context.detach(token)
    if span is None:
        return
    if outcome is None:
        span.set_status(Status(StatusCode.ERROR, "cancelled"))
    elif outcome.ok:
        span.set_status(Status(StatusCode.OK))
    else:
        span.set_attribute("error.type", outcome.error_type)
        span.set_status(Status(StatusCode.ERROR, f"{outcome.error_type}: {outcome.message}"[:1000]))
    span.end()
