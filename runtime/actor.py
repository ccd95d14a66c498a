"""`@actor`: a function that workers run and clients submit to, with its options."""

from __future__ import annotations

import contextvars
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from . import defaults
from .protocol import KEY_VALUE_TYPES, check_packable
from .state.limits import parse_rate

P = ParamSpec("P")
R = TypeVar("R")

@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most N starts in any window of the period, across the cluster: ``RateLimit("100/m")``.

    With `key`, one such budget per value of the handler's argument named `key` (e.g. a tenant).
    """

    rate: str
    key: str | None = None

    def to_wire(self) -> list[Any]:
        n, period = parse_rate(self.rate)
        return [n, period, self.key]


@dataclass(frozen=True, slots=True)
class Concurrency:
    """At most `limit` tasks running at once, across the cluster; with `key`, per argument value."""

    limit: int
    key: str | None = None

    def to_wire(self) -> list[Any]:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 1:
            raise ValueError(f"a concurrency limit must be a positive int, not {self.limit!r}")
        return [self.limit, self.key]


RateLimitSpec = str | RateLimit | list[str | RateLimit] | None
ConcurrencySpec = int | Concurrency | list[int | Concurrency] | None


# Every actor defined in this process, by name: the one global registry (STYLE.md).
registry: dict[str, Actor[Any, Any]] = {}


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What a running handler knows about itself (`qrt.current_task()`)."""

    id: str
    actor: str
    attempt: int  # 1 on the first delivery; a handler runs at least once, so make it idempotent


_current: contextvars.ContextVar[TaskInfo | None] = contextvars.ContextVar("qrt_current_task", default=None)


def current_task() -> TaskInfo:
    """The task the calling handler is running; a RuntimeError outside a worker's handler."""
    info = _current.get()
    if info is None:
        raise RuntimeError("qrt.current_task() is only available inside a handler run by a qrt worker")
    return info


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the cluster fires an actor by itself (`cron=`), and what it does with missed times."""

    cron: str | None = None  # 5 fields, or 6 with seconds first
    tz: str = "UTC"
    missed: str = "run"  # a delayed task or cron time missed while no leader ran: "run" or "skip"


class Actor(Generic[P, R]):
    """A handler with its options. Calling it runs it locally (for unit tests)."""

    def __init__(self, fn: Callable[P, R], name: str, retries: int, timeout: float, result_ttl: float,
                 rate_limits: list[list[Any]] | None = None, concurrency: list[list[Any]] | None = None,
                 schedule: Schedule | None = None, isolation: str = "thread",
                 max_tasks_per_child: int | None = None, weights: dict[Any, int] | None = None) -> None:
        self.fn = fn
        self.name = name
        self.retries = retries
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.rate_limits = rate_limits or []
        self.concurrency = concurrency or []
        self.schedule = schedule or Schedule()
        self.isolation = isolation
        self.max_tasks_per_child = max_tasks_per_child
        self.weights = dict(weights or {})
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        # The arguments whose values key a limit: the client puts them in the envelope's `keys`.
        self.key_names = sorted({spec[-1] for spec in self.rate_limits + self.concurrency if spec[-1]})
        for key in self.key_names:
            if key not in self.signature.parameters:
                raise ValueError(f"actor {name!r}: a limit is keyed by {key!r}, which is not an argument of "
                                 f"{fn.__qualname__}{self.signature}")
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<qrt.actor {self.name}>"

    def options(self) -> dict[str, Any]:
        """The options a worker registers with the coordinator (protocol.ACTOR_OPTION_TYPES)."""
        options: dict[str, Any] = {"retries": self.retries, "timeout": self.timeout, "result_ttl": self.result_ttl,
                                   "rate_limits": self.rate_limits, "concurrency": self.concurrency,
                                   "missed": self.schedule.missed,
                                   "weights": [[value, n] for value, n in self.weights.items()]}
        if self.schedule.cron:
            options["cron"], options["tz"] = self.schedule.cron, self.schedule.tz
        return options

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Raise TypeError, naming the argument, unless the call fits the signature and msgpack.

        Returns the values of the limits' key arguments (the envelope's `keys`).
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"arguments do not fit {self.name}{self.signature}: {exc}") from None
        for name, value in bound.arguments.items():
            check_packable(value, f"argument {name!r} of {self.name}")
        if not self.key_names:
            return {}
        bound.apply_defaults()
        keys = {name: bound.arguments.get(name) for name in self.key_names}
        for name, value in keys.items():
            if not isinstance(value, KEY_VALUE_TYPES):
                raise TypeError(f"argument {name!r} of {self.name} keys a limit, so it must be a scalar "
                                f"(str, int, float, bool, bytes or None), not {type(value).__name__}")
        return keys


def _as_list(spec: Any) -> list[Any]:
    if spec is None:
        return []
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


def _rate_limits(spec: RateLimitSpec) -> list[list[Any]]:
    return [(RateLimit(item) if isinstance(item, str) else item).to_wire() for item in _as_list(spec)]


def _concurrency(spec: ConcurrencySpec) -> list[list[Any]]:
    out = []
    for item in _as_list(spec):
        if isinstance(item, bool) or not isinstance(item, (int, Concurrency)):
            raise ValueError(f"concurrency must be an int or qrt.Concurrency, not {item!r}")
        out.append((Concurrency(item) if isinstance(item, int) else item).to_wire())
    return out


def _check_schedule(cron: str | None, tz: str, missed: str) -> Schedule:
    from .cron_expr import CronExpr

    if missed not in ("run", "skip"):
        raise ValueError(f"missed must be 'run' or 'skip', not {missed!r}")
    if cron is not None:
        CronExpr.parse(cron, tz)  # raises ValueError naming the problem
    return Schedule(cron, tz, missed)


@overload
def actor(fn: Callable[P, R], /) -> Actor[P, R]: ...
@overload
def actor(*, name: str | None = None, retries: int = defaults.RETRIES, timeout: float = defaults.TASK_TIMEOUT,
          result_ttl: float = defaults.RESULT_TTL, rate_limit: RateLimitSpec = None,
          concurrency: ConcurrencySpec = None, cron: str | None = None, tz: str = "UTC", missed: str = "run",
          isolation: str = "thread", max_tasks_per_child: int | None = None,
          weights: dict[Any, int] | None = None) -> Callable[[Callable[P, R]], Actor[P, R]]: ...


def actor(fn: Callable[P, R] | None = None, /, *, name: str | None = None, retries: int = defaults.RETRIES,
          timeout: float = defaults.TASK_TIMEOUT, result_ttl: float = defaults.RESULT_TTL,
          rate_limit: RateLimitSpec = None, concurrency: ConcurrencySpec = None, cron: str | None = None,
          tz: str = "UTC", missed: str = "run", isolation: str = "thread",
          max_tasks_per_child: int | None = None, weights: dict[Any, int] | None = None) -> Any:
    """Declare a handler: ``@qrt.actor`` or ``@qrt.actor(name=..., retries=..., timeout=..., ...)``.

    The name defaults to "<module>.<function>". `retries` (default 3) counts retries after the
    first attempt; `timeout` (default 60 s) bounds one attempt; `result_ttl` (default 600 s) is how
    long the result is kept, 0 keeping none. `rate_limit` ("5/s", a `qrt.RateLimit`, or a list)
    and `concurrency` (an int, a `qrt.Concurrency`, or a list) are global, across all workers.
    `cron` ("*/5 * * * *", or 6 fields with seconds first) in time zone `tz` has the cluster fire
    the actor (with no arguments) once per scheduled time; `missed` ("run" or "skip") says what
    happens to a delayed task or cron time that fell due while no leader ran. `isolation="process"`
    runs a sync handler in a supervised subprocess that is killed at its timeout, replaced after
    `max_tasks_per_child` tasks. `weights` ({key value: n}) gives the tasks of a key value n tasks
    per round-robin turn (default 1 each).
    """
    for value, n in (weights or {}).items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"the weight of {value!r} must be a positive int, not {n!r}")
        if not isinstance(value, (str, int, float, bool, bytes)):
            raise ValueError(f"a weighted key value must be a scalar, not {type(value).__name__}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, not {retries!r}")
    for label, value in (("timeout", timeout), ("result_ttl", result_ttl)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{label} must be a non-negative number of seconds, not {value!r}")
    if timeout == 0:
        raise ValueError("timeout must be positive")
    schedule = _check_schedule(cron, tz, missed)
    if isolation not in ("thread", "process"):
        raise ValueError(f"isolation must be 'thread' or 'process', not {isolation!r}")
    if max_tasks_per_child is not None and (isolation != "process" or not isinstance(max_tasks_per_child, int)
                                            or isinstance(max_tasks_per_child, bool) or max_tasks_per_child < 1):
        raise ValueError("max_tasks_per_child must be a positive int, with isolation='process'")

    def wrap(f: Callable[P, R]) -> Actor[P, R]:
        actor_name = name or f"{f.__module__}.{f.__qualname__}"
        if not actor_name or len(actor_name) > 200:
            raise ValueError("an actor name must be 1 to 200 characters")
        if isolation == "process" and inspect.iscoroutinefunction(f):
            raise ValueError(f"actor {actor_name!r}: isolation='process' is for sync handlers; an async one "
                             "is cancelled at its timeout already")
        made = Actor(f, actor_name, retries, float(timeout), float(result_ttl),
                     _rate_limits(rate_limit), _concurrency(concurrency), schedule, isolation,
                     max_tasks_per_child, weights)
        registry[actor_name] = made
        return made

    return wrap(fn) if fn is not None else wrap
