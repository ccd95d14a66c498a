"""`--log-format json`: one JSON object per line, and a line about a task names it, its actor and
attempt as fields (issue 12, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

from qrt.local import LocalCluster, wait_until
from tests import actors
from tests.conftest import serving


def test_json_logs_name_the_task_actor_and_attempt(tmp_path: Path) -> None:
    c = LocalCluster(nodes=1, base_dir=str(tmp_path), node_args=["--log-format", "json"])
    with serving(c, workers=0, concurrency=1):
        c.start_worker(["tests.actors"], concurrency=2, extra=["--log-format", "json"])
        c.wait_for_workers(1)
        with c.client() as client:
            handle = client.submit(actors.fail_until, 2)  # fails once, then succeeds
            assert handle.result(timeout=20) == 2

        def retry_line() -> dict[str, object] | None:
            lines = [json.loads(line) for line in c.log("node0.log").splitlines() if line.strip()]
            return next((line for line in lines if "retry in" in str(line["message"])), None)
        line = wait_until(retry_line, 10, 0.1, "the coordinator's line about the retry")
        assert (line["task_id"], line["actor"], line["attempt"]) == (handle.id, "tests.actors.fail_until", 1)
        assert line["level"] == "info" and line["logger"] == "qrt.coordinator" and isinstance(line["ts"], float)
        for line_text in c.log("worker0.log").splitlines():
            assert isinstance(json.loads(line_text), dict)
