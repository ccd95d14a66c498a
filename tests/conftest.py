"""Fixtures that start real coordinator and worker processes on 127.0.0.1 and always stop them.

Their output is printed at teardown: pytest shows it for a failing test only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from qrt.local import LocalCluster


@contextmanager
def serving_cluster(base_dir: Path, workers: int, concurrency: int) -> Iterator[LocalCluster]:
    """One coordinator node and `workers` workers serving tests.actors, connected; always stopped."""
    with serving(LocalCluster(nodes=1, base_dir=str(base_dir)), workers, concurrency) as c:
        yield c


@contextmanager
def serving(c: LocalCluster, workers: int, concurrency: int) -> Iterator[LocalCluster]:
    """`c` started, with `workers` workers serving tests.actors, connected; always stopped."""
    try:
        c.start()
        for _ in range(workers):
            c.start_worker(["tests.actors"], concurrency=concurrency)
        c.wait_for_workers(workers)
        yield c
    finally:
        c.stop()
        print(c.dump_logs())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One coordinator node and one worker serving tests.actors, shared by a module's tests."""
    with serving_cluster(tmp_path_factory.mktemp("cluster"), workers=1, concurrency=4) as c:
        yield c


@pytest.fixture
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of its own, for tests that kill things; the test starts what it needs."""
    c = LocalCluster(nodes=1, base_dir=str(tmp_path_factory.mktemp("fresh")))
    try:
        yield c
    finally:
        c.stop()
        print(c.dump_logs())


@pytest.fixture
def spans() -> Iterator[Any]:
    """This process's global OpenTelemetry tracer provider, recording to the SDK's in-memory
    exporter (yielded); unset after, as the OpenTelemetry project's own tests reset it."""
    pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.util._once import Once

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
        trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
