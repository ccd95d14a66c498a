"""The dashboard in a real browser (issue 13): headless Chromium (Debian's package, through
playwright's `executable_path`) against a real cluster, real workers and `qrt dashboard`.

Skipped, saying why, where Debian's chromium is not installed (`make test` installs it with
apt-get where it can). QRT_SCREENSHOT_DIR=docs/screenshots keeps the README's screenshots
(`make screenshots`)."""

from __future__ import annotations

import datetime
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qrt.local import LocalCluster, wait_until
from tests import actors

from .conftest import Dashboard

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (`make test` installs "
                                                          "it with apt-get where it can): no browser to test in")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")

WAIT_MS = 20_000  # for what the live page shows after the history has it
sync_api.expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, dashboard: Dashboard) -> Iterator[Any]:
    context = browser.new_context(base_url=dashboard.url, viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        yield page
    finally:
        context.close()
    assert errors == [], errors  # the page's scripts ran without an error


@pytest.fixture(scope="module")
def workload(cluster: LocalCluster) -> dict[str, Any]:
    """A known workload, run to its end: 12 tasks that succeed, 3 that fail for good."""
    started = time.time()
    with cluster.client() as client:
        ok = client.submit_many(actors.add, [(i, 1) for i in range(12)])
        dead = [client.submit(actors.always_fails, f"card {i} declined") for i in range(3)]
        client.results(ok, timeout=30)
        wait_until(lambda: all(client.describe(h.id)["state"] == "dead" for h in dead), 30, 0.1, "3 dead letters")
        wait_until(lambda: len(client.list_tasks(state="dead", actor="tests.actors.always_fails")["tasks"]) == 3, 10,
                   0.1, "the dead letters in the history")
    return {"started": started, "ended": time.time(), "dead": sorted(h.id for h in dead)}


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("QRT_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=False)


def test_the_overview_shows_the_counts_of_a_known_workload(page: Any, cluster: LocalCluster,
                                                            workload: dict[str, Any], tmp_path: Path) -> None:
    page.goto("/")
    add = page.locator('#actor-stats tr[data-actor="tests.actors.add"]')
    fails = page.locator('#actor-stats tr[data-actor="tests.actors.always_fails"]')
    sync_api.expect(add.locator(".submitted")).to_have_text("12")
    sync_api.expect(add.locator(".succeeded")).to_have_text("12")
    sync_api.expect(fails.locator(".submitted")).to_have_text("3")
    sync_api.expect(fails.locator(".failed")).to_have_text("6")  # retries=1: two attempts each
    sync_api.expect(page.locator("#term")).not_to_have_text("")
    sync_api.expect(page.locator("#worker-table")).to_contain_text("4")  # free slots of 4
    sync_api.expect(page.locator("[data-charts]")).to_have_attribute("data-drawn", "61")  # 61 minutes
    assert page.locator("[data-chart=throughput] canvas").count() == 1
    screenshot(page, "overview", tmp_path)
    with cluster.client() as client:  # new work shows without reloading the page (server-sent events)
        client.results(client.submit_many(actors.add, [(i, 2) for i in range(3)]), timeout=30)
    sync_api.expect(add.locator(".submitted")).to_have_text("15")


def test_filtering_by_state_and_time_range_lists_exactly_the_failed_tasks(page: Any,
                                                                          workload: dict[str, Any]) -> None:
    page.goto("/tasks")
    page.select_option("select[name=state]", "dead")
    page.fill("input[name=from]", _iso(workload["started"] - 1))
    page.fill("input[name=until]", _iso(workload["ended"] + 60))
    page.click("#filters button[type=submit]")
    page.wait_for_url("**/tasks?*state=dead*")
    assert sorted(page.locator("#task-list tr.task").evaluate_all("rows => rows.map(r => r.dataset.id)")) == \
        workload["dead"]
    page.fill("input[name=from]", _iso(workload["started"] - 3600))
    page.fill("input[name=until]", _iso(workload["started"] - 1800))  # before the workload: none
    page.click("#filters button[type=submit]")
    sync_api.expect(page.locator("#no-tasks")).to_be_visible()


def test_a_failed_task_shows_its_traceback(page: Any, workload: dict[str, Any], tmp_path: Path) -> None:
    page.goto("/tasks?state=dead&actor=tests.actors.always_fails")
    page.click(f'#task-list tr[data-id="{workload["dead"][0]}"] a')
    sync_api.expect(page.locator("#task-state")).to_have_text("dead")
    sync_api.expect(page.locator("#traceback")).to_contain_text("Traceback (most recent call last)")
    sync_api.expect(page.locator("#error")).to_contain_text("declined")
    assert page.locator("#attempts tr").count() == 3  # a header and two attempts
    screenshot(page, "failed-task", tmp_path)


def test_replaying_a_dead_letter_group_runs_its_tasks_again(page: Any, cluster: LocalCluster,
                                                            workload: dict[str, Any]) -> None:
    with cluster.client() as client:
        # Retries twice then dead (3 attempts); replayed with fresh retries, its 4th attempt succeeds.
        handles = [client.submit(actors.fail_until, 4) for _ in range(3)]
        wait_until(lambda: all(client.describe(h.id)["state"] == "dead" for h in handles), 30, 0.1, "3 dead letters")
        wait_until(lambda: len(client.list_tasks(state="dead", actor="tests.actors.fail_until")["tasks"]) == 3, 10,
                   0.1, "the dead letters in the history")
        page.goto("/dead")
        group = page.locator("#groups tr.group", has_text="fail_until")
        sync_api.expect(group.locator(".count")).to_have_text("3")
        group.locator("a.button", has_text="replay").click()
        sync_api.expect(page.locator("h1")).to_have_text("Replay 3 dead letters?")
        page.click("#confirm")
        page.wait_for_url("**/dead")
        sync_api.expect(page.locator(".job .done").first).to_have_text("3")
        assert [client.task(h.id).result(timeout=30) for h in handles] == [4, 4, 4]


def test_pausing_an_actor_stops_its_starts(page: Any, cluster: LocalCluster) -> None:
    page.goto("/actors")
    section = page.locator('section.actor[data-actor="tests.actors.whoami"]')
    section.locator("button.pause").click()
    sync_api.expect(section.locator(".paused")).to_be_visible()
    with cluster.client() as client:
        handle = client.submit(actors.whoami)
        time.sleep(1.0)  # ok-sleep: a paused actor's task must not start in this while (a worker is free)
        assert client.describe(handle.id)["state"] == "queued"
        section.locator("button.pause").click()  # now "Resume"
        sync_api.expect(section.locator(".paused")).to_have_count(0)
        assert client.task(handle.id).result(timeout=20)["attempt"] == 1


def test_the_live_tail_shows_events_as_they_happen(page: Any, cluster: LocalCluster) -> None:
    page.goto("/tasks?tail=1&actor=tests.actors.add")
    sync_api.expect(page.locator("#tail")).to_have_attribute("data-ready", "1")  # its cursor: from now on
    with cluster.client() as client:
        handle = client.submit(actors.add, 40, 2)
        assert handle.result(timeout=20) == 42
    row = page.locator("#tail tbody tr.event-succeeded", has_text=handle.id)
    sync_api.expect(row).to_have_count(1)


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def test_purging_a_letter_ends_it_failed_and_the_failed_filter_lists_exactly_it(page: Any,
                                                                                workload: dict[str, Any]) -> None:
    victim = workload["dead"][1]
    page.goto(f"/tasks/{victim}")
    page.click("#purge")
    sync_api.expect(page.locator("h1")).to_have_text("Purge 1 dead letter?")
    page.click("#confirm")
    page.wait_for_url("**/dead")
    failed = f"/tasks?state=failed&from={_iso(workload['started'] - 1)}&until={_iso(time.time() + 60)}"

    def listed() -> list[str]:
        page.goto(failed)
        return sorted(page.locator("#task-list tr.task").evaluate_all("rows => rows.map(r => r.dataset.id)"))
    wait_until(lambda: listed() == [victim], 20, 0.2, "the purged letter listed as failed")
