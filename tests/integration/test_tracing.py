"""Traces (issue 12, item 5): one trace per task across the client (this process, the SDK's
in-memory exporter), the leader and the worker (real processes exporting OTLP over HTTP to a
receiver this test runs on 127.0.0.1)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
pytest.importorskip("opentelemetry.proto", reason="the otel extra is not installed")

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from qrt import Client
from qrt.errors import TaskFailed, TaskNotFound
from qrt.local import LocalCluster, wait_until
from tests import actors
from tests.conftest import serving


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP receiver: every span exported to it, as {name, trace, span, parent, service,
    attributes, status}."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Receive)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def named(self, prefix: str) -> list[dict[str, Any]]:
        return [s for s in list(self.spans) if s["name"].startswith(prefix)]


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource in request.resource_spans:
            service = next(a.value.string_value for a in resource.resource.attributes if a.key == "service.name")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.server.spans.append({
                        "name": span.name, "trace": span.trace_id.hex(), "span": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(), "service": service, "status": span.status.code,
                        "attributes": {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in span.attributes},
                    })
        body = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _history(client: Client, task_id: str) -> dict[str, Any] | None:
    try:
        return client.task_history(task_id)
    except TaskNotFound:
        return None  # not written yet


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()



def test_one_trace_crosses_client_leader_and_worker(tmp_path: Path, collector: Collector,
                                                     spans: InMemorySpanExporter) -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp_proto_http", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    c = LocalCluster(nodes=1, base_dir=str(tmp_path), env=env)
    with serving(c, workers=0, concurrency=1):
        c.env["QRT_COORDINATORS"] = ",".join(c.urls)  # for the handler that submits
        c.start_worker(["tests.actors"], concurrency=2)
        c.wait_for_workers(1)
        tracer = trace.get_tracer("test")
        with c.client() as client, tracer.start_as_current_span("web request") as request:
            ok = client.submit(actors.add, 1, 2)
            failing = client.submit(actors.not_retryable)
            parent = client.submit(actors.submit_add, 5)
            assert ok.result(timeout=20) == 3
            with pytest.raises(TaskFailed, match="NonRetryable"):
                failing.result(timeout=20)
            child_id = parent.result(timeout=20)
            assert client.task(child_id).result(timeout=20) == 6
            described = client.describe(ok.id)
            recorded = wait_until(lambda: _history(client, ok.id), 10, 0.1, "the task in the history")

        trace_id = format(request.get_span_context().trace_id, "032x")
        assert described is not None and described["trace_id"] == trace_id == recorded["trace_id"]
        submits = {s.attributes["qrt.task_id"]: s for s in spans.get_finished_spans()
                   if s.name.startswith("submit ")}
        assert set(submits) == {ok.id, failing.id, parent.id}
        for span in submits.values():  # children of the caller's span: one trace
            assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
            assert span.kind == trace.SpanKind.PRODUCER

        def spans_of(task_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
            queue = [s for s in collector.named("queue ") if s["attributes"]["qrt.task_id"] == task_id]
            run = [s for s in collector.named("run ") if s["attributes"]["qrt.task_id"] == task_id]
            return (queue[0], run[0]) if queue and run else None

        for handle, status in ((ok, 1), (failing, 2), (parent, 1)):  # STATUS_CODE_OK 1, ERROR 2
            queue, run = wait_until(lambda h=handle: spans_of(h.id), 15, 0.1, f"the spans of {handle.id}")
            submit_span = format(submits[handle.id].context.span_id, "016x")
            assert (queue["trace"], queue["parent"], queue["service"]) == (trace_id, submit_span, "qrt-coordinator")
            assert (run["trace"], run["parent"], run["service"]) == (trace_id, queue["span"], "qrt-worker")
            assert queue["attributes"]["qrt.attempt"] == run["attributes"]["qrt.attempt"] == 1
            assert queue["attributes"]["qrt.worker"] == run["attributes"]["qrt.worker"]
            assert run["status"] == status
        # The task submitted inside a handler joins its parent's trace, under the parent's run.
        _, parent_run = spans_of(parent.id)  # type: ignore[misc]
        child_queue, child_run = wait_until(lambda: spans_of(child_id), 15, 0.1, "the child task's spans")
        child_submit = next(s for s in collector.named("submit ") if s["attributes"]["qrt.task_id"] == child_id)
        assert (child_submit["parent"], child_submit["service"]) == (parent_run["span"], "qrt-worker")
        assert child_queue["parent"] == child_submit["span"] and child_run["parent"] == child_queue["span"]
        assert child_submit["trace"] == child_queue["trace"] == child_run["trace"] == trace_id
        assert child_run["status"] == 1


def test_untraced_tasks_carry_no_context(tmp_path: Path, collector: Collector) -> None:
    """Without a provider in the client, a task carries nothing and no process exports a span."""
    env = {"OTEL_TRACES_EXPORTER": "otlp_proto_http", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.endpoint,
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
    c = LocalCluster(nodes=1, base_dir=str(tmp_path), env=env)
    with serving(c, workers=1, concurrency=1), c.client() as client:
        handle = client.submit(actors.add, 1, 2)
        assert handle.result(timeout=20) == 3
        assert client.describe(handle.id)["trace_id"] is None
    assert collector.spans == []  # the processes exported on the way out (tracing.shutdown)
