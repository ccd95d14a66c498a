"""`@actor`: a function that workers run and clients submit to, with its options."""

from __future__ import annotations

import contextvars
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

from . import defaults
from .protocol import check_packable

P = ParamSpec("P")
R = TypeVar("R")

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


class Actor(Generic[P, R]):
    """A handler with its options. Calling it runs it locally (for unit tests)."""

    def __init__(self, fn: Callable[P, R], name: str, retries: int, timeout: float, result_ttl: float) -> None:
        self.fn = fn
        self.name = name
        self.retries = retries
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<qrt.actor {self.name}>"

    def options(self) -> dict[str, Any]:
        """The options a worker registers with the coordinator (protocol.ACTOR_OPTION_TYPES)."""
        return {"retries": self.retries, "timeout": self.timeout, "result_ttl": self.result_ttl}

    def check_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError, naming the argument, unless the call fits the signature and msgpack."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"arguments do not fit {self.name}{self.signature}: {exc}") from None
        for name, value in bound.arguments.items():
            check_packable(value, f"argument {name!r} of {self.name}")


@overload
def actor(fn: Callable[P, R], /) -> Actor[P, R]: ...
@overload
def actor(*, name: str | None = None, retries: int = defaults.RETRIES, timeout: float = defaults.TASK_TIMEOUT,
          result_ttl: float = defaults.RESULT_TTL) -> Callable[[Callable[P, R]], Actor[P, R]]: ...


def actor(fn: Callable[P, R] | None = None, /, *, name: str | None = None, retries: int = defaults.RETRIES,
          timeout: float = defaults.TASK_TIMEOUT, result_ttl: float = defaults.RESULT_TTL) -> Any:
    """Declare a handler: ``@qrt.actor`` or ``@qrt.actor(name=..., retries=..., timeout=..., result_ttl=...)``.

    The name defaults to "<module>.<function>". `retries` (default 3) counts retries after the
    first attempt; `timeout` (default 60 s) bounds one attempt; `result_ttl` (default 600 s) is how
    long the result is kept, 0 keeping none.
    """
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be a non-negative int, not {retries!r}")
    for label, value in (("timeout", timeout), ("result_ttl", result_ttl)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{label} must be a non-negative number of seconds, not {value!r}")
    if timeout == 0:
        raise ValueError("timeout must be positive")

    def wrap(f: Callable[P, R]) -> Actor[P, R]:
        actor_name = name or f"{f.__module__}.{f.__qualname__}"
        if not actor_name or len(actor_name) > 200:
            raise ValueError("an actor name must be 1 to 200 characters")
        made = Actor(f, actor_name, retries, float(timeout), float(result_ttl))
        registry[actor_name] = made
        return made

    return wrap(fn) if fn is not None else wrap
