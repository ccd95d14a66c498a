"""The wire protocol (docs/protocol.md): the codec, every message typed both ways, validation.

Sans-I/O, like h11: bytes in, typed messages out, and back; nothing here touches a socket.
`parse_request` reads what a coordinator receives, `parse_for_worker` what a worker receives and
`parse_reply` what a client receives: each checks every field and raises `ProtocolError` with a
code, the field's path and a message naming it, which a coordinator answers as an `Error`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ..errors import ProtocolError
from .codec import VERSION, ErrorCode, decode, encode, request_id
from .history import (
    HISTORY_REQUESTS,
    Answer,
    DeadGroups,
    Describe,
    HistoryJournal,
    Stats,
    TaskEvents,
    TaskShow,
    TasksList,
)
from .messages import (
    MAX_IDS_PER_WAIT,
    AlertsList,
    Cancel,
    CronAdd,
    CronList,
    CronRemove,
    DlqList,
    DlqPurge,
    DlqReplay,
    DlqShow,
    Envelope,
    LimitsReset,
    LimitsSet,
    LimitsShow,
    Message,
    QueuePause,
    QueuePurge,
    Request,
    Status,
    Submit,
    Wait,
    WaitAny,
)
from .replies import (
    Accepted,
    Counted,
    CronEntries,
    DlqEntry,
    DlqPage,
    Error,
    LimitsReply,
    Redirect,
    Reply,
    Result,
    StatusReply,
)
from .validate import KEY_VALUE_TYPES, MAX_ID_CHARS, check_packable
from .work import (
    ACTOR_OPTION_TYPES,
    Ack,
    ActorSpec,
    Bye,
    CancelRun,
    Credit,
    Done,
    Drain,
    Hb,
    Heartbeat,
    Hello,
    Outcome,
    Run,
    RunTask,
    Welcome,
)

OperatorRequest = LimitsSet | LimitsReset | QueuePause | QueuePurge | CronAdd | CronRemove
HistoryRequest = TasksList | TaskEvents | TaskShow | Stats | Describe | HistoryJournal | DeadGroups  # any node answers
ClientRequest = (Submit | Wait | WaitAny | Cancel | Status | DlqList | DlqShow | DlqReplay | DlqPurge | LimitsShow
                 | OperatorRequest | CronList | AlertsList | HistoryRequest)
WorkerMessage = Hello | Heartbeat | Done | Credit | Drain | Bye
ToWorker = Welcome | Hb | Run | Ack | CancelRun | Redirect | Error

_TO_COORDINATOR: dict[str, Any] = {cls.TYPE: cls for cls in (
    Submit, Wait, WaitAny, Cancel, Status, DlqList, DlqShow, DlqReplay, DlqPurge, LimitsShow, LimitsSet, LimitsReset,
    QueuePause, QueuePurge, CronAdd, CronRemove, CronList, AlertsList, *HISTORY_REQUESTS, Hello, Heartbeat, Done,
    Credit, Drain, Bye)}
_TO_WORKER: dict[str, Any] = {cls.TYPE: cls for cls in (Welcome, Hb, Run, Ack, CancelRun, Redirect, Error)}

R = TypeVar("R", bound=Reply)


def _read(table: dict[str, Any], message: dict[str, Any]) -> Any:
    cls = table.get(message["t"])
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {message['t']!r}", request_id(message))
    try:
        return cls.from_wire(message)
    except ProtocolError as exc:
        exc.rid = request_id(message)
        raise


def parse_request(message: dict[str, Any]) -> ClientRequest | WorkerMessage:
    """A decoded map a coordinator received, as its typed message."""
    parsed: ClientRequest | WorkerMessage = _read(_TO_COORDINATOR, message)
    return parsed


def parse_for_worker(message: dict[str, Any]) -> ToWorker:
    """A decoded map a worker received, as its typed message."""
    parsed: ToWorker = _read(_TO_WORKER, message)
    return parsed


def parse_reply(message: dict[str, Any], expected: type[R]) -> R | Redirect | Error:
    """A decoded map a client received for a request answered by an `expected` reply."""
    kind = message["t"]
    if kind == Redirect.TYPE:
        return Redirect.from_wire(message)
    if kind == Error.TYPE:
        return Error.from_wire(message)
    if kind != expected.TYPE:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"expected a {expected.TYPE!r} reply, got {kind!r}",
                            request_id(message))
    return expected.from_wire(message)


__all__ = [
    "ACTOR_OPTION_TYPES",
    "HISTORY_REQUESTS",
    "KEY_VALUE_TYPES",
    "MAX_IDS_PER_WAIT",
    "MAX_ID_CHARS",
    "VERSION",
    "Accepted",
    "Ack",
    "ActorSpec",
    "AlertsList",
    "Answer",
    "Bye",
    "Cancel",
    "CancelRun",
    "ClientRequest",
    "Counted",
    "Credit",
    "CronAdd",
    "CronEntries",
    "CronList",
    "CronRemove",
    "DeadGroups",
    "Describe",
    "DlqEntry",
    "DlqList",
    "DlqPage",
    "DlqPurge",
    "DlqReplay",
    "DlqShow",
    "Done",
    "Drain",
    "Envelope",
    "Error",
    "ErrorCode",
    "Hb",
    "Heartbeat",
    "Hello",
    "HistoryJournal",
    "HistoryRequest",
    "LimitsReply",
    "LimitsReset",
    "LimitsSet",
    "LimitsShow",
    "Message",
    "OperatorRequest",
    "Outcome",
    "ProtocolError",
    "QueuePause",
    "QueuePurge",
    "Redirect",
    "Reply",
    "Request",
    "Result",
    "Run",
    "RunTask",
    "Stats",
    "Status",
    "StatusReply",
    "Submit",
    "TaskEvents",
    "TaskShow",
    "TasksList",
    "ToWorker",
    "Wait",
    "WaitAny",
    "Welcome",
    "WorkerMessage",
    "check_packable",
    "decode",
    "encode",
    "parse_for_worker",
    "parse_reply",
    "parse_request",
    "request_id",
]
