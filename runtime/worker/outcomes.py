"""How an attempt ended, as the `protocol.Outcome` that `done` reports: the one place they are made.

The runner (threads and the loop), the process-isolated children and the session all build them
here, so that every outcome fits a frame whatever the handler returned or raised.
"""

from __future__ import annotations

import math
import traceback
from typing import Any

import msgpack

from .. import defaults
from ..errors import NonRetryable, Retry
from ..protocol import Outcome, check_packable
from ..protocol.validate import within_nesting

# A result must fit in a `done` frame with room to spare for the rest of the frame.
MAX_RESULT_BYTES = defaults.MAX_FRAME_BYTES - 64 * 1024
# An error's message and traceback are cut to this many characters each (a traceback keeps its end,
# where the exception is): errors must fit in a frame whatever the handler raised.
MAX_ERROR_TEXT = 32 * 1024


def ok(task_id: str, attempt: int, value: Any) -> Outcome:
    """The handler returned `value`; a failure instead when it cannot be sent back."""
    if not within_nesting(value):  # before packing: msgpack gives up at ~1,000 levels with RecursionError
        message = f"the result is nested deeper than {defaults.MAX_NESTING} levels; flatten it"
        return error(task_id, attempt, "ResultTooDeep", message, retryable=False)
    try:
        size = len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        try:
            check_packable(value, "the result")
            message = "the result is not a msgpack value"
        except TypeError as exc:  # names the offending part
            message = str(exc)
        return error(task_id, attempt, "UnpackableResult", message, retryable=False)
    if size > MAX_RESULT_BYTES:
        message = f"the result packs to {size} bytes, over the limit of {MAX_RESULT_BYTES}; store it elsewhere"
        return error(task_id, attempt, "ResultTooLarge", message, retryable=False)
    return Outcome(task_id, attempt, True, value)


def error(task_id: str, attempt: int, error_type: str, message: str, tb: str = "",
          retryable: bool = True, retry_delay: Any = None) -> Outcome:
    return Outcome(task_id, attempt, False, None, error_type[:200], message[:MAX_ERROR_TEXT], tb[-MAX_ERROR_TEXT:],
                   _delay(retry_delay), retryable)


def _delay(value: Any) -> float | None:
    """`Retry(delay=...)` as the protocol takes it: seconds >= 0, or None for the usual backoff. A
    delay that is no number of seconds (inf, nan, a string) gets the backoff; a negative one, none."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def of_exception(task_id: str, attempt: int, exc: Exception) -> Outcome:
    """The handler raised `exc`: in a worker's thread or loop, or in a child process."""
    if isinstance(exc, Retry):
        return error(task_id, attempt, "Retry", str(exc), retry_delay=exc.delay)
    tb = "".join(traceback.format_exception(exc))
    if isinstance(exc, NonRetryable):
        return error(task_id, attempt, "NonRetryable", str(exc), tb, retryable=False)
    return error(task_id, attempt, type(exc).__name__, str(exc), tb)


def timed_out(actor: str, task_id: str, attempt: int, timeout: float) -> Outcome:
    return error(task_id, attempt, "timeout", f"{actor} ran longer than its timeout of {timeout} s")


def overran(actor: str, task_id: str, attempt: int, timeout: float, ran: float) -> Outcome:
    """A sync handler's thread ran past its timeout and was waited for (a thread cannot be stopped)."""
    return error(task_id, attempt, "timeout", f"{actor} ran longer than its timeout of {timeout} s: its thread "
                                              f"overran and returned after {ran:.1f} s")


def cancelled(task_id: str, attempt: int) -> Outcome:
    """Cancelled at the leader's request while it ran."""
    return error(task_id, attempt, "cancelled", "cancelled while running")


def unknown_actor(task_id: str, attempt: int, actor: str) -> Outcome:
    """A `run` for an actor this worker does not serve (the leader sends only those announced)."""
    return error(task_id, attempt, "UnknownActor", f"actor {actor!r} is not registered by this worker",
                 retryable=False)
