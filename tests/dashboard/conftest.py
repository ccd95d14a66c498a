"""A real cluster, real workers and a real `qrt dashboard` process, for the dashboard's tests."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest

from qrt.local import LocalCluster, free_port, wait_until
from tests.conftest import serving


@dataclass
class Dashboard:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    cookies: CookieJar = field(default_factory=CookieJar)

    def request(self, path: str, data: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        """(status, body, headers) of a GET, or a form POST with `data`; redirects are not followed."""
        from urllib.parse import urlencode
        body = urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {})
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)
        try:
            with opener.open(request, timeout=10) as reply:
                return reply.status, reply.read().decode(), dict(reply.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def start_dashboard(cluster: LocalCluster, base: Path, *extra: str, prefix: list[str] | None = None,
                    host: str = "127.0.0.1", wait: bool = True) -> Dashboard:
    port = free_port()
    log = base / f"dashboard-{port}.log"
    args = [*(prefix or []), sys.executable, "-m", "qrt.cli", "dashboard", "--listen", f"{host}:{port}", *extra]
    for url in cluster.urls:
        args += ["--coordinator", url]
    for option, path in cluster.curve_keys("client").items():
        args += [f"--{option.replace('_', '-')}", path]
    proc = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    dash = Dashboard(f"http://{host}:{port}", proc, log)
    if wait:
        try:
            wait_until(lambda: _answers(dash), 20, 0.1, "the dashboard answering")
        except BaseException:
            dash.stop()
            print(log.read_text())
            raise
    return dash


def _answers(dash: Dashboard) -> bool:
    if dash.proc.poll() is not None:
        raise RuntimeError(f"the dashboard exited ({dash.proc.returncode}): {dash.log.read_text()[-2000:]}")
    try:
        return dash.request("/signin")[0] in (200, 303)  # the form, or (no sign-in needed) on to "/"
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with serving(LocalCluster(nodes=1, base_dir=str(tmp_path_factory.mktemp("dash"))), workers=1,
                 concurrency=4) as c:
        yield c


@pytest.fixture(scope="module")
def dashboard(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    dash = start_dashboard(cluster, tmp_path_factory.mktemp("dashboard"))
    try:
        yield dash
    finally:
        dash.stop()
        print(dash.log.read_text())
