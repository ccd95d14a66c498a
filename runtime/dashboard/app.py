"""The dashboard's web application: Starlette routes, Jinja2 pages, server-sent events.

A client of the cluster like the CLI: it reads through `AsyncClient` (history from whichever node
answers, the live state from the leader) and acts through the same operator requests, so it keeps
no state of its own and may restart freely. Pages are rendered on the server; htmx swaps parts of
them, `qrt.js` follows server-sent events and draws uPlot charts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from .. import durations
from ..client import AsyncClient
from ..errors import QrtError, TaskNotFound
from ..protocol.history import STATES
from . import reads, shape, web
from .auth import SESSION_COOKIE, SESSION_DAYS, Auth, SignInThrottle, csrf_ok, csrf_token
from .jobs import Jobs

log = logging.getLogger("qrt.dashboard")

HERE = Path(__file__).resolve().parent  # (an editable install links the files: serve the real ones)
REFRESH = 2.0  # seconds between the overview's live updates
TAIL_EVERY = 0.5  # seconds between a live tail's looks for events

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Settings:
    read_only: bool = False
    auth: Auth | None = None
    # The Host header a request may carry (a page on another site that points its own name at
    # 127.0.0.1, DNS rebinding, would be served otherwise): loopback names and `--listen`'s host,
    # and a proxy's name (`--allowed-host`). Empty: any.
    allowed_hosts: list[str] = field(default_factory=list)


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "\u2013"  # an en dash: no value
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 120:
        return f"{value:.2f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _fmt_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def create_app(client: AsyncClient, settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    auth = settings.auth or Auth()
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    throttle = SignInThrottle()
    templates.env.filters.update(local=durations.local, secs=_fmt_seconds, pretty=_fmt_json,
                                 path=lambda value: quote(str(value), safe=""))
    jobs = Jobs(client)

    def render(request: Request, name: str, code: int = 200, **context: Any) -> Response:
        context.update(read_only=settings.read_only, who=request.state.who, signin=auth.required,
                       csrf=csrf_token(request))
        return templates.TemplateResponse(request, name, context, status_code=code)

    def page(handler: Handler) -> Handler:
        """A page: signed in (else to the sign-in form), the cluster's errors shown as such."""
        async def guarded(request: Request) -> Response:
            request.state.who = auth.who(request)
            if request.state.who is None:
                if request.url.path.startswith("/events/") or request.headers.get("hx-request"):
                    return PlainTextResponse("sign in first", status_code=401)
                here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/signin?next={quote(here, safe='')}", status_code=303)
            try:
                return await handler(request)
            except TaskNotFound as exc:
                return render(request, "error.html", 404, error=str(exc))
            except (QrtError, ValueError) as exc:  # a filter that does not read; the cluster not answering
                return render(request, "error.html", web.status_of(exc), error=f"{type(exc).__name__}: {exc}")
        return guarded

    def action(handler: Handler) -> Handler:
        """An action: as a page, and not read-only, and with the session's CSRF token; logged."""
        async def checked(request: Request) -> Response:
            if settings.read_only:
                return PlainTextResponse("this dashboard is read-only: it takes no action", status_code=403)
            if not await csrf_ok(request, auth):
                return PlainTextResponse("missing or wrong CSRF token: reload the page and try again",
                                         status_code=403)
            return await handler(request)
        return page(checked)

    def acted(request: Request, what: str) -> None:
        client_host = request.client.host if request.client else "?"
        log.info("action by %s from %s: %s", request.state.who, client_host, what)

    # -- overview -----------------------------------------------------------------------------

    async def overview(request: Request) -> Response:
        span = request.query_params.get("range", "1h")
        if span not in shape.RANGES:
            raise ValueError(f"range must be one of {', '.join(shape.RANGES)}")
        actor = request.query_params.get("actor") or None
        parts = await overview_parts(span)
        return render(request, "overview.html", range=span, ranges=list(shape.RANGES), actor=actor, **parts)

    cached: dict[str, tuple[float, dict[str, Any]]] = {}  # range -> (when read, its parts)

    async def overview_parts(span: str) -> dict[str, Any]:
        """What the overview shows over `span`: read at most once per REFRESH, however many pages
        (tabs, people) have it open."""
        hit = cached.get(span)
        if hit is not None and time.monotonic() - hit[0] < REFRESH:
            return hit[1]
        parts = await _read_overview(span)
        cached[span] = (time.monotonic(), parts)
        return parts

    async def _read_overview(span: str) -> dict[str, Any]:
        since = time.time() - shape.RANGES[span][0]
        status, by_actor, by_worker, rules = await asyncio.gather(
            client.status(), client.stats(since, by="actor"), client.stats(since, by="worker"), client.alerts())
        failure = {row["group"]: row for row in by_worker["rows"]}
        return {"status": status, "actors": by_actor["rows"], "workers_stats": failure,
                "alerts": shape.firing(rules)}

    async def overview_events(request: Request) -> Response:
        """The overview's live parts: its tables every REFRESH, its charts every range's own
        period (a day's or a week's minutes change slowly)."""
        span = request.query_params.get("range", "1h")
        if span not in shape.RANGES:
            span = "1h"
        actor = request.query_params.get("actor") or None

        async def stream() -> AsyncIterator[str]:
            charted = float("-inf")  # drawn first thing, then every range's period
            while not await request.is_disconnected():
                try:
                    parts = await overview_parts(span)
                    if time.monotonic() - charted >= shape.RANGES[span][1]:
                        charted = time.monotonic()
                        yield web.event("charts", json.dumps(await series(span, actor)))
                except QrtError as exc:
                    yield web.event("problem", f"the cluster does not answer: {exc}")
                else:
                    yield web.event("problem", "")
                    for name in ("cluster", "queues", "workers", "actors", "alerts"):
                        html = templates.get_template(f"_{name}.html").render(**parts)
                        yield web.event(name, html)
                await asyncio.sleep(REFRESH)
        return web.sse(stream())

    async def series(span: str, actor: str | None) -> dict[str, list[Any]]:
        until = time.time()
        since = until - shape.RANGES[span][0]
        rows = (await client.stats(since, until, by="minute", actor=actor))["rows"]
        return shape.chart_series(rows, since, until)

    async def chart_data(request: Request) -> Response:
        """The overview's chart series as JSON (its page draws them from its live stream)."""
        span = request.query_params.get("range", "1h")
        if span not in shape.RANGES:
            raise ValueError(f"range must be one of {', '.join(shape.RANGES)}")
        return JSONResponse(await series(span, request.query_params.get("actor") or None))

    # -- tasks --------------------------------------------------------------------------------

    async def tasks(request: Request) -> Response:
        query = shape.task_query(request.query_params)
        listed = await client.list_tasks(**query.filters, limit=query.limit, cursor=query.cursor)
        tail = request.query_params.get("tail") == "1"
        return render(request, "tasks.html", query=query, tasks=listed["tasks"], next=listed["next"], tail=tail,
                      states=STATES, page_sizes=shape.PAGE_SIZES)

    async def tail_events(request: Request) -> Response:
        query = shape.task_query(request.query_params)
        filters = {k: v for k, v in query.filters.items() if k not in ("since", "until")}

        async def stream() -> AsyncIterator[str]:
            row = templates.get_template("_event_row.html")
            cursor = 0  # 0: the first answer is the cursor of now
            while not await request.is_disconnected():
                try:
                    page = await client.task_events(cursor, **filters)
                except QrtError as exc:
                    yield web.event("problem", f"the cluster does not answer: {exc}")
                    await asyncio.sleep(REFRESH)
                    continue
                if not cursor:
                    yield web.event("ready", "")
                cursor = page["next"]
                for event in page["events"]:
                    yield web.event("row", row.render(e=event))
                if not page["events"]:
                    await asyncio.sleep(TAIL_EVERY)
        return web.sse(stream())

    async def task(request: Request) -> Response:
        task_id = request.path_params["id"]
        record, present = await reads.task_record(client, task_id)
        return render(request, "task.html", task=record, present=present,
                      attempts=shape.attempts(record.get("events") or []))

    async def task_replay(request: Request) -> Response:
        task_id = request.path_params["id"]
        record, present = await reads.task_record(client, task_id)
        state = (present or record)["state"]
        if state == "dead":
            await client.dlq_replay([task_id])
            acted(request, f"replayed dead letter {task_id}")
            return RedirectResponse(f"/tasks/{quote(task_id, safe='')}", status_code=303)
        if state in ("queued", "delayed", "running"):
            raise ValueError(f"task {task_id} is {state}: it has not ended, nothing to replay")
        handle = await client.submit_again(task_id)
        acted(request, f"submitted {task_id} again as {handle.id}")
        return RedirectResponse(f"/tasks/{quote(handle.id, safe='')}", status_code=303)

    async def task_cancel(request: Request) -> Response:
        task_id = request.path_params["id"]
        cancelled = await client.cancel(task_id)
        acted(request, f"cancel {task_id}: {'cancelled' if cancelled else 'nothing to cancel'}")
        return RedirectResponse(f"/tasks/{quote(task_id, safe='')}", status_code=303)

    # -- dead letters -------------------------------------------------------------------------

    async def dead(request: Request) -> Response:
        groups = await client.dead_groups()
        return render(request, "dead.html", groups=groups["groups"], total=groups["total"], jobs=jobs.shown())

    async def dead_jobs(request: Request) -> Response:
        return render(request, "_jobs.html", jobs=jobs.shown())

    async def dead_confirm(request: Request) -> Response:
        what, chosen = await reads.dead_selection(client, dict(request.query_params))
        action_name = request.query_params.get("action", "")
        if action_name not in ("replay", "purge"):
            raise ValueError("action must be replay or purge")
        return render(request, "confirm.html", action=action_name, what=what, count=len(chosen),
                      fingerprint=request.query_params.get("fingerprint", ""), id=request.query_params.get("id", ""))

    async def dead_act(request: Request) -> Response:
        form = dict(await request.form())
        action_name = str(form.get("action", ""))
        if action_name not in ("replay", "purge"):
            raise ValueError("action must be replay or purge")
        what, chosen = await reads.dead_selection(client, {k: str(v) for k, v in form.items()})
        if not chosen:
            raise ValueError(f"no dead letter left in {what}")
        if str(len(chosen)) != str(form.get("count")):
            raise ValueError(f"{what} now holds {len(chosen)} dead letters, not the {form.get('count')} you "
                             "confirmed: confirm again")
        if jobs.running(action_name, what) is not None:
            raise ValueError(f"a {action_name} of {what} is already under way")
        actors = sorted({t["actor"] for t in chosen})
        job = jobs.start(action_name, what, request.state.who, [t["id"] for t in chosen], actors)
        acted(request, f"{action_name} of {len(chosen)} dead letters ({what}) as job {job.id} (confirmed "
                       f"{form.get('count')})")
        return RedirectResponse("/dead", status_code=303)

    # -- actors -------------------------------------------------------------------------------

    async def actors(request: Request) -> Response:
        limits, status, cron = await asyncio.gather(client.limits(), client.status(), client.cron_list())
        names = sorted(set(limits) | set(status.get("queues", {})))
        return render(request, "actors.html", names=names, limits=limits, queues=status.get("queues", {}),
                      cron=cron, now=time.time(), limit_text=shape.limit_text)

    async def actor_act(request: Request) -> Response:
        name, verb = request.path_params["name"], request.path_params["verb"]
        form = await request.form()
        if verb == "pause":
            await client.pause(name)
        elif verb == "resume":
            await client.resume(name)
        elif verb == "reset":
            await client.reset_limits(name)
        elif verb == "limits":
            rate = str(form.get("rate") or "").strip() or None
            concurrency_text = str(form.get("concurrency") or "").strip()
            concurrency = int(concurrency_text) if concurrency_text else None
            if rate is None and concurrency is None:
                raise ValueError("give a rate (such as 10/s) or a concurrency, or both")
            await client.set_limits(name, rate=rate, concurrency=concurrency)
            verb = f"limits rate={rate} concurrency={concurrency}"
        else:
            return PlainTextResponse(f"no action {verb!r}", status_code=404)
        acted(request, f"{verb} {name}")
        return RedirectResponse("/actors", status_code=303)

    # -- signing in ---------------------------------------------------------------------------

    async def signin_form(request: Request) -> Response:
        request.state.who = auth.who(request)
        if not auth.required:
            return RedirectResponse(web.local_path(request.query_params.get("next")), status_code=303)
        return render(request, "signin.html", next=web.local_path(request.query_params.get("next")), failed=False)

    async def signin(request: Request) -> Response:
        request.state.who = None
        form = await request.form()
        name, secret = str(form.get("name", "")).strip()[:64], str(form.get("secret", ""))
        target = web.local_path(str(form.get("next", "")))
        if not auth.required:
            return RedirectResponse(target, status_code=303)
        client_host = request.client.host if request.client else "?"
        if throttle.blocked(client_host):
            return PlainTextResponse("too many failed sign-ins from this address: try again in a minute",
                                     status_code=429)
        if not name or not auth.accepts(secret):
            throttle.failed(client_host)
            log.warning("sign-in refused for %r from %s", name, client_host)
            return render(request, "signin.html", 401, next=target, failed=True)
        request.session.clear()
        request.session["who"] = name
        log.info("%r signed in from %s", name, client_host)
        return RedirectResponse(target, status_code=303)

    async def signout(request: Request) -> Response:
        if not await csrf_ok(request, auth):
            return PlainTextResponse("missing or wrong CSRF token", status_code=403)
        request.session.clear()
        return RedirectResponse("/signin", status_code=303)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await jobs.close()

    routes = [
        Route("/", page(overview)),
        Route("/charts", page(chart_data)),
        Route("/events/overview", page(overview_events)),
        Route("/tasks", page(tasks)),
        Route("/events/tail", page(tail_events)),
        # (ids and actor names may hold "/": their links encode it, and these routes take it)
        Route("/tasks/{id:path}/replay", action(task_replay), methods=["POST"]),
        Route("/tasks/{id:path}/cancel", action(task_cancel), methods=["POST"]),
        Route("/tasks/{id:path}", page(task)),
        Route("/dead", page(dead)),
        Route("/dead/jobs", page(dead_jobs)),
        Route("/dead/confirm", page(dead_confirm)),
        Route("/dead/act", action(dead_act), methods=["POST"]),
        Route("/actors", page(actors)),
        Route("/actors/{name:path}/{verb}", action(actor_act), methods=["POST"]),
        Route("/signin", signin_form),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(web.ServerTiming),
                  *([Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)]
                    if settings.allowed_hosts else []),
                  Middleware(SessionMiddleware, secret_key=auth.session_key(), session_cookie=SESSION_COOKIE,
                             max_age=SESSION_DAYS * 86400, same_site="strict", https_only=False)]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.jobs = jobs
    return app
