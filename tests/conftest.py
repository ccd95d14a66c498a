"""Fixtures that start real coordinator and worker processes on 127.0.0.1 and always stop them.

Their output is printed at teardown: pytest shows it for a failing test only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qrt.local import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One coordinator node and one worker serving tests.actors, shared by a module's tests."""
    c = LocalCluster(nodes=1, base_dir=str(tmp_path_factory.mktemp("cluster")))
    try:
        c.start()
        c.start_worker(["tests.actors"], concurrency=4)
        c.wait_for_workers(1)
        yield c
    finally:
        c.stop()
        print(c.dump_logs())


@pytest.fixture
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of its own, for tests that kill things; the test starts what it needs."""
    c = LocalCluster(nodes=1, base_dir=str(tmp_path_factory.mktemp("fresh")))
    try:
        yield c
    finally:
        c.stop()
        print(c.dump_logs())
