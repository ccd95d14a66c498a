"""The wire protocol without a socket (h11's tests/test_io.py is the model): bytes in, typed
messages out, and back. Every message class survives the wire both ways; every field refused
gives the error code, the field's path as data (`ProtocolError.field`) and a message naming it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from qrt import defaults
from qrt import protocol as P
from qrt.protocol import ErrorCode, ProtocolError, decode, parse_for_worker, parse_reply, parse_request
from qrt.protocol.codec import RID_PEEK_BYTES, peek_rid

MISSING: Any = object()  # as a change: remove the field


def frame(message: dict[str, Any]) -> bytes:
    """A frame as a peer in another language might pack it: `v` first, then `message`."""
    packed: bytes = msgpack.packb({"v": 1, **message}, use_bin_type=True)
    return packed


def change(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for name, value in changes.items():
        if value is MISSING:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def refused(read: Callable[[], Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        read()
    return info.value


REQUESTS = (P.Submit, P.Wait, P.Cancel, P.Status, P.DlqList, P.DlqShow, P.DlqReplay, P.DlqPurge, P.LimitsShow,
            P.LimitsSet, P.LimitsReset, P.QueuePause, P.QueuePurge, P.CronAdd, P.CronRemove, P.CronList)
FROM_WORKER = (P.Hello, P.Heartbeat, P.Done, P.Credit, P.Drain, P.Bye)
TO_WORKER = (P.Welcome, P.Hb, P.Run, P.Ack, P.CancelRun)


def read(cls: type, message: dict[str, Any]) -> Any:
    """A decoded map, read as its receiver reads it: coordinator, worker or client."""
    if cls in REQUESTS or cls in FROM_WORKER:
        return parse_request(message)
    if cls in TO_WORKER:
        return parse_for_worker(message)
    if cls in (P.Redirect, P.Error):
        return parse_reply(message, P.Accepted)  # the answer to any request
    return parse_reply(message, cls)


# ---------------------------------------------------------------------------------------------
# Round trips: encode, decode, read back the same message


SUMMARY = {"id": "t1", "actor": "mail.send", "state": "failed", "attempt": 4, "args": [1], "kwargs": {"to": "a"},
           "error": {"type": "ConnectionError", "message": "smtp down", "traceback": "Traceback ..."},
           "submitted_at": 1718000000.12, "finished_at": 1718000021.4}
STATUS = {"node": "tcp://127.0.0.1:7700", "raft": "127.0.0.1:7701", "is_leader": True,
          "leader": "tcp://127.0.0.1:7700", "term": 1, "commit_index": 42, "last_applied": 42,
          "applied_batches": 41, "digest": "3f0c", "nodes": [], "workers": [], "queues": {}, "dead_letters": 0,
          "now": 1718000000.5}
ALL_OPTIONS = {"retries": 5, "timeout": 30.0, "result_ttl": 600, "max_worker_losses": 2,
               "rate_limits": [[100, 60.0, "tenant"], [1000, 60, None]], "concurrency": [[3, None], [1, "tenant"]],
               "cron": "*/15 * * * *", "tz": "Europe/Paris", "missed": "skip", "weights": [["acme", 3], [7, 2]]}

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ROUND_TRIPS: list[P.Message] = [
    # client -> coordinator
    P.Submit([P.Envelope("t1", "tasks.add", [1, 2], {})], rid=1),
    P.Submit([P.Envelope("t1", "tasks.add", [1, 2], {}, trace={"traceparent": TRACEPARENT})], rid=1),
    P.Submit([P.Envelope("t2", "mail.send", [b"\x00bin", None, 1.5, [True]], {"to": "a@example.com"},
                         keys={"tenant": "acme", "n": 1, "f": 1.0, "b": True, "x": b"\x01", "none": None},
                         delay=30.0, priority=-(2**63), eta=1718006400.0, expires_in=60.0, expires_at=1718010000.0,
                         idempotency_key="report-2024-06")], rid=2),
    P.Wait("t1", 5.0, rid=3),
    P.WaitAny(["t1", "t2"], 5.0, rid=30),
    P.Cancel("t1", rid=4),
    P.Status(local=True, rid=5),
    P.DlqList(10, rid=6),
    P.DlqShow("t1", rid=7),
    P.DlqReplay(["t1", "t2"], rid=8),
    P.DlqReplay(None, rid=9),
    P.DlqPurge(["t1"], rid=10),
    P.DlqPurge(None, rid=11),
    P.LimitsShow(rid=12),
    P.LimitsSet("mail.send", rate=(10, 1.0), concurrency=4, rid=13),
    P.LimitsSet("mail.send", rate=(500, 60.0), key="acme", rid=14),
    P.LimitsSet("mail.send", key=b"\x01", weight=3, rid=15),
    P.LimitsReset("mail.send", rid=16),
    P.QueuePause("reports.daily", True, rid=17),
    P.QueuePurge("reports.daily", rid=18),
    P.CronAdd("nightly", "reports.build", "0 2 * * mon-fri", "Europe/Paris", ["daily"], {"n": 1}, rid=19),
    P.CronRemove("nightly", rid=20),
    P.CronList(rid=21),
    P.AlertsList(rid=31),
    P.TasksList(rid=22),
    P.TasksList("mail.send", "dead", "host-1", ["tenant", "acme"], 1718000000.0, 1718003600.0, "SMTP", "a@b",
                limit=100, cursor=4294967296, rid=23),
    P.TaskEvents(actor="mail.send", after=12884901888, limit=10, rid=24),
    P.TaskShow("t1", rid=25),
    P.Stats(1718000000.0, None, "worker", rid=26),
    P.Stats(1718000000.0, 1718003600.0, rid=27),
    P.Describe("t1", rid=28),
    P.HistoryJournal(4294967295, 12884901888, rid=29),
    P.Stats(1718000000.0, None, "minute", "mail.send", rid=30),
    P.DeadGroups(50, rid=31),
    P.TasksList(state="dead", fingerprint="3f2a9c1b0d4e", rid=32),
    # coordinator -> client
    P.Accepted(1, ["t1", "t2"], now=1718000000.25),
    P.Accepted(1, ["t1"]),
    P.Result(3, "t1", "succeeded", "tasks.add", 1, None, None, 1718000000.1, 1718000000.2, 1718000000.3),
    P.Result(3, "t1", "succeeded", "tasks.add", 1, {"total": [3, b"\x00"]}),
    P.Result(3, "t2", "failed", "mail.send", 4, error=SUMMARY["error"], submitted_at=1718000000.12),  # type: ignore[arg-type]
    P.Result(3, "nope", "not_found"),
    P.Result(3, "t1", "pending"),
    P.Counted(4, 1),
    P.Counted(8, 2, ["t1", "t2"]),
    P.StatusReply(5, STATUS),
    P.DlqPage(6, 3, [SUMMARY], True),
    P.DlqEntry(7, SUMMARY),
    P.LimitsReply(12, {"mail.send": {"rate_limits": [[10, 1.0, None]], "concurrency": [], "override": {
        "rate": [10, 1.0], "key_rates": {"acme": [500, 60.0], 1: [5, 1.0], b"\x01": [1, 1.0]}}}}),
    P.CronEntries(21, [{"name": "nightly", "actor": "reports.build", "next_fire": 1718064000.0}]),
    P.Answer(22, {"tasks": [{"id": "t1", "state": "dead"}], "next": None}),
    P.Redirect("tcp://10.0.0.2:7700", rid=2),
    P.Redirect("tcp://10.0.0.2:7700"),
    P.Error("bad_field", "field 'tasks' is required", rid=7, field="tasks"),
    P.Error("not_hello", "say hello first: this leader does not know you"),
    # worker -> coordinator
    P.Hello("host-4242-1a2b3c4d", [P.ActorSpec("tasks.add", {}), P.ActorSpec("mail.send", ALL_OPTIONS)],
            slots=8, concurrency=8, running=[("t1", 2), ("t2", 1)]),
    P.Hello("w", [], slots=1, concurrency=1, acks_in_run=True),
    P.Heartbeat(),
    P.Heartbeat([("t1", 2), ("t2", 1)]),
    P.Heartbeat([], 42),
    P.Heartbeat([("t1", 2)], 43, free=7),
    P.Done([P.Outcome("t1", 1, True, value=[1, {"a": b"x"}]),
            P.Outcome("t2", 2, False, error_type="ConnectionError", message="smtp down", traceback="Traceback ...",
                      retry_delay=2.5, retryable=False)], credit=2),
    P.Done([P.Outcome("t3", 1, False, error_type="timeout", message="ran past 60 s")]),
    P.Credit(3),
    P.Drain(),
    P.Bye([("t1", 1)]),
    # coordinator -> worker
    P.Welcome("host-4242-1a2b3c4d", 1.0, 5.0, now=1718000000.5),
    P.Welcome("host-4242-1a2b3c4d", 1.0, 5.0),
    P.Hb(),
    P.Hb(42),
    P.Run([P.RunTask("t1", "tasks.add", [1, 2], {"x": None}, 1, 60.0, 3),
           P.RunTask("t2", "mail.send", [], {}, 2, 0.5, 3)]),
    P.Run([P.RunTask("t2", "mail.send", [], {}, 2, 0.5, 3)], acks=["t1", "t0"]),
    P.Run([P.RunTask("t1", "tasks.add", [1, 2], {}, 1, 60.0, 3,
                     trace={"traceparent": TRACEPARENT, "tracestate": "a=1"})]),
    P.Ack(["t1", "t2"]),
    P.Ack([], bye=True),
    P.CancelRun("t1"),
]


@pytest.mark.parametrize("message", ROUND_TRIPS, ids=lambda m: type(m).__name__)
def test_a_message_survives_the_wire(message: P.Message) -> None:
    decoded = decode(message.encode())
    assert decoded["v"] == 1 and decoded["t"] == message.TYPE
    assert type(message).from_wire(decoded) == message  # type: ignore[attr-defined]
    assert read(type(message), decoded) == message
    if isinstance(message, (P.Redirect, P.Error)):  # a worker reads them too
        assert parse_for_worker(decoded) == message


def message_classes() -> set[type]:
    return {c for c in vars(P).values() if isinstance(c, type) and issubclass(c, P.Message) and hasattr(c, "TYPE")}


def test_every_message_class_has_a_round_trip() -> None:
    assert {type(m) for m in ROUND_TRIPS} == message_classes()


def test_requests_write_rid_before_their_bulky_fields() -> None:
    """So a coordinator can name the request of a frame it cannot read whole (peek_rid)."""
    for message in ROUND_TRIPS:
        if isinstance(message, P.Request):
            assert list(message.to_wire())[:2] == ["t", "rid"], message


def test_a_nil_optional_field_reads_as_absent() -> None:
    envelope = {"id": "t1", "actor": "a", "eta": None, "expires_in": None, "expires_at": None,
                "idempotency_key": None}
    assert parse_request(decode(frame({"t": "submit", "rid": 1, "tasks": [envelope]}))) == \
        P.Submit([P.Envelope("t1", "a", [], {})], rid=1)
    limits = {"t": "limits_set", "rid": 1, "actor": "a", "rate": None, "key": None, "concurrency": 2, "weight": None}
    assert parse_request(decode(frame(limits))) == P.LimitsSet("a", concurrency=2, rid=1)


def test_ints_are_read_where_floats_are_shown() -> None:
    welcome = parse_for_worker(decode(frame({"t": "welcome", "worker_id": "w", "heartbeat_interval": 1,
                                             "lease_timeout": 5, "now": 1718000000})))
    assert welcome == P.Welcome("w", 1.0, 5.0, 1718000000)
    run = parse_for_worker(decode(frame({"t": "run", "tasks": [{"id": "t", "actor": "a", "attempt": 1,
                                                                 "timeout": 60}]})))
    assert isinstance(run, P.Run) and run.tasks[0].timeout == 60.0
    assert parse_request(decode(frame({"t": "wait", "rid": 1, "id": "t", "timeout": 5}))) == P.Wait("t", 5.0, rid=1)
    accepted = parse_reply(decode(frame({"t": "accepted", "rid": 1, "ids": ["t"], "now": 1718000000})), P.Accepted)
    assert accepted == P.Accepted(1, ["t"], 1718000000)


def test_unknown_fields_are_ignored() -> None:
    assert parse_request(decode(frame({"t": "cancel", "rid": 1, "id": "t", "reason": "later"}))) == \
        P.Cancel("t", rid=1)


# ---------------------------------------------------------------------------------------------
# Edge cases the protocol lets through (docs/protocol.md says what the coordinator does)


def test_an_empty_done_is_a_message() -> None:
    assert parse_request(decode(frame({"t": "done", "outcomes": [], "credit": 2}))) == P.Done([], 2)


def test_a_hello_may_list_a_lease_twice_and_offer_more_slots_than_its_concurrency() -> None:
    hello = parse_request(decode(frame({"t": "hello", "worker_id": "w", "actors": [], "slots": 9, "concurrency": 1,
                                        "running": [["t1", 1], ["t1", 1], ["unknown", 7]]})))
    assert hello == P.Hello("w", [], 9, 1, [("t1", 1), ("t1", 1), ("unknown", 7)])


def test_priority_is_a_signed_64_bit_int() -> None:
    for priority in (-(2**63), 2**63 - 1):
        submit = parse_request(decode(frame({"t": "submit", "rid": 1,
                                             "tasks": [{"id": "t", "actor": "a", "priority": priority}]})))
        assert isinstance(submit, P.Submit) and submit.tasks[0].priority == priority
    exc = refused(lambda: parse_request(decode(frame({"t": "submit", "rid": 1, "tasks": [
        {"id": "t", "actor": "a", "priority": 2**63}]}))))  # a msgpack uint64
    assert (exc.code, exc.field, exc.rid) == (ErrorCode.BAD_FIELD, "tasks[0].priority", 1)


def test_ids_are_counted_in_characters_but_a_worker_id_also_in_bytes() -> None:
    wide = "é" * 200  # 200 characters, 400 bytes of UTF-8
    assert parse_request(decode(frame({"t": "cancel", "rid": 1, "id": wide}))) == P.Cancel(wide, rid=1)

    def hello(worker_id: str) -> Any:
        return parse_request(decode(frame({"t": "hello", "worker_id": worker_id, "actors": [], "slots": 1,
                                           "concurrency": 1})))
    assert hello("é" * 127 + "x").worker_id == "é" * 127 + "x"  # 255 bytes: ZeroMQ's limit
    exc = refused(lambda: hello("é" * 128))  # 256 bytes
    assert (exc.code, exc.field) == (ErrorCode.BAD_FIELD, "worker_id")
    assert "field 'worker_id' must be at most 255 bytes" in exc.message
    assert refused(lambda: hello(wide)).field == "worker_id"


def test_a_wait_is_held_at_most_an_hour() -> None:
    wait = parse_request(decode(frame({"t": "wait", "rid": 1, "id": "t", "timeout": 10**9})))
    assert wait == P.Wait("t", P.messages.MAX_WAIT, rid=1)


# ---------------------------------------------------------------------------------------------
# Every field refused: code, path, message


ENVELOPE = {"id": "t1", "actor": "tasks.add"}
OUTCOME = {"id": "t1", "attempt": 1, "ok": False}
RUN_TASK = {"id": "t1", "actor": "tasks.add", "args": [], "kwargs": {}, "attempt": 1, "timeout": 60.0, "term": 1}
HELLO = {"t": "hello", "worker_id": "w-1", "actors": [{"name": "a", "options": {}}], "slots": 1, "concurrency": 1}
LIMITS_SET = {"t": "limits_set", "rid": 7, "actor": "a", "rate": [1, 1.0]}
CRON_ADD = {"t": "cron_add", "rid": 7, "name": "n", "actor": "a", "expr": "* * * * *"}
STATUS_OK = {"t": "ok", "rid": 7, **STATUS}
RESULT = {"t": "result", "rid": 7, "id": "t1", "state": "succeeded"}
WELCOME = {"t": "welcome", "worker_id": "w-1", "heartbeat_interval": 1.0, "lease_timeout": 5.0}
LONG = "x" * 201


def submit(**envelope: Any) -> dict[str, Any]:
    return {"t": "submit", "rid": 7, "tasks": [change(ENVELOPE, **envelope)]}


def options(**given: Any) -> dict[str, Any]:
    return change(HELLO, actors=[{"name": "a", "options": given}])


def done(**outcome: Any) -> dict[str, Any]:
    return {"t": "done", "outcomes": [change(OUTCOME, **outcome)], "credit": 0}


def run(**task: Any) -> dict[str, Any]:
    return {"t": "run", "tasks": [change(RUN_TASK, **task)]}


def bad(cls: type, message: dict[str, Any], field: str | None, says: str, named: bool = True) -> Any:
    """`message` read as a `cls` is refused as `bad_field` at `field`, the message holding `says`
    (and, when `named`, the words ``field '<path>'``)."""
    return pytest.param(cls, message, field, says, named, id=f"{cls.__name__}.{field}: {says}")


BAD_FIELDS = [
    # submit and the envelope
    bad(P.Submit, {"t": "submit", "rid": 7}, "tasks", "is required"),
    bad(P.Submit, {"t": "submit", "rid": 7, "tasks": []}, "tasks", "at least one task"),
    bad(P.Submit, {"t": "submit", "rid": 7, "tasks": {"id": "t"}}, "tasks", "must be array, not map"),
    bad(P.Submit, {"t": "submit", "rid": 7, "tasks": ["t1"]}, "tasks[0]", "must be a map"),
    bad(P.Submit, {"t": "submit", "tasks": [ENVELOPE]}, "rid", "is required"),
    bad(P.Submit, {"t": "submit", "rid": True, "tasks": [ENVELOPE]}, "rid", "must be int, not bool"),
    bad(P.Submit, submit(id=MISSING), "tasks[0].id", "is required"),
    bad(P.Submit, submit(id=""), "tasks[0].id", "1 to 200 characters"),
    bad(P.Submit, submit(id=LONG), "tasks[0].id", "1 to 200 characters"),
    bad(P.Submit, submit(id=b"t1"), "tasks[0].id", "must be str, not bin"),
    bad(P.Submit, submit(actor=5), "tasks[0].actor", "must be str, not int"),
    bad(P.Submit, submit(args=3), "tasks[0].args", "must be array, not int"),
    bad(P.Submit, submit(kwargs=[1]), "tasks[0].kwargs", "must be map, not array"),
    bad(P.Submit, submit(kwargs={1: "x"}), "tasks[0].kwargs", "must have str keys"),
    bad(P.Submit, submit(keys={"tenant": [1]}), "tasks[0].keys", "str names to scalars"),
    bad(P.Submit, submit(keys={1: "acme"}), "tasks[0].keys", "str names to scalars"),
    bad(P.Submit, submit(delay=-1), "tasks[0].delay", "must not be negative"),
    bad(P.Submit, submit(delay=True), "tasks[0].delay", "must be int or float, not bool"),
    bad(P.Submit, submit(delay=float("inf")), "tasks[0].delay", "must be a finite number"),
    bad(P.Submit, submit(delay=None), "tasks[0].delay", "must be int or float, not nil"),
    bad(P.Submit, submit(priority=1.5), "tasks[0].priority", "must be int, not float"),
    bad(P.Submit, submit(priority=2**63), "tasks[0].priority", "signed 64-bit int"),
    bad(P.Submit, submit(eta=-1.0), "tasks[0].eta", "must not be negative"),
    bad(P.Submit, submit(eta="soon"), "tasks[0].eta", "must be int or float, not str"),
    bad(P.Submit, submit(expires_in=-5), "tasks[0].expires_in", "must not be negative"),
    bad(P.Submit, submit(expires_at=float("nan")), "tasks[0].expires_at", "must be a finite number"),
    bad(P.Submit, submit(idempotency_key=5), "tasks[0].idempotency_key", "must be str, not int"),
    bad(P.Submit, submit(trace="00-ab"), "tasks[0].trace", "must be map, not str"),
    bad(P.Submit, submit(trace={"traceparent": 5}), "tasks[0].trace", "must map str names", named=False),
    bad(P.Submit, submit(trace={str(i): "" for i in range(9)}), "tasks[0].trace", "at most 8", named=False),
    # the other client requests
    bad(P.Wait, {"t": "wait", "rid": 7}, "id", "is required"),
    bad(P.Wait, {"t": "wait", "rid": 7, "id": "t", "timeout": -1}, "timeout", "must not be negative"),
    bad(P.Wait, {"t": "wait", "rid": 7, "id": "t", "timeout": "5"}, "timeout", "must be int or float, not str"),
    bad(P.Wait, {"t": "wait", "rid": "seven", "id": "t"}, "rid", "must be int, not str"),
    bad(P.Cancel, {"t": "cancel", "rid": 7, "id": LONG}, "id", "1 to 200 characters"),
    bad(P.Status, {"t": "status", "rid": 7, "local": 1}, "local", "must be bool, not int"),
    bad(P.Status, {"t": "status", "rid": 1.0}, "rid", "must be int, not float"),
    bad(P.DlqList, {"t": "dlq_list", "rid": 7, "limit": -1}, "limit", "must not be negative"),
    bad(P.DlqList, {"t": "dlq_list", "rid": 7, "limit": 1.5}, "limit", "must be int, not float"),
    bad(P.DlqShow, {"t": "dlq_show", "rid": 7, "id": 5}, "id", "must be str, not int"),
    bad(P.DlqReplay, {"t": "dlq_replay", "rid": 7}, "ids", "is required"),
    bad(P.DlqReplay, {"t": "dlq_replay", "rid": 7, "all": 1}, "ids", "is required"),  # only true means all
    bad(P.DlqReplay, {"t": "dlq_replay", "rid": 7, "ids": [1]}, "ids[0]", "must be str, not int"),
    bad(P.DlqPurge, {"t": "dlq_purge", "rid": 7, "ids": "t1"}, "ids", "must be array, not str"),
    bad(P.LimitsShow, {"t": "limits"}, "rid", "is required"),
    bad(P.LimitsSet, change(LIMITS_SET, actor=MISSING), "actor", "is required"),
    bad(P.LimitsSet, change(LIMITS_SET, rate=[0, 1.0]), "rate", "[n > 0, period seconds > 0]"),
    bad(P.LimitsSet, change(LIMITS_SET, rate=[1, 0]), "rate", "[n > 0, period seconds > 0]"),
    bad(P.LimitsSet, change(LIMITS_SET, rate=[1]), "rate", "[n > 0, period seconds > 0]"),
    bad(P.LimitsSet, change(LIMITS_SET, rate="5/s"), "rate", "must be array, not str"),
    bad(P.LimitsSet, change(LIMITS_SET, key=["acme"]), "key", "must be a scalar"),
    bad(P.LimitsSet, change(LIMITS_SET, rate=MISSING, key="acme"), "key", "needs 'rate' or 'weight'"),
    bad(P.LimitsSet, change(LIMITS_SET, key="acme", weight=0), "weight", "at least 1"),
    bad(P.LimitsSet, change(LIMITS_SET, weight=2), "weight", "needs 'key'"),
    bad(P.LimitsSet, change(LIMITS_SET, weight="2"), "weight", "must be int, not str"),
    bad(P.LimitsSet, change(LIMITS_SET, concurrency=0), "concurrency", "at least 1"),
    bad(P.LimitsSet, change(LIMITS_SET, concurrency=2.0), "concurrency", "must be int, not float"),
    # Not one field's fault: no path.
    bad(P.LimitsSet, change(LIMITS_SET, rate=MISSING), None, "give 'rate', 'concurrency' or 'weight'", named=False),
    bad(P.LimitsReset, {"t": "limits_reset", "rid": 7, "actor": ""}, "actor", "1 to 200 characters"),
    bad(P.QueuePause, {"t": "queue_pause", "rid": 7, "actor": "a"}, "paused", "is required"),
    bad(P.QueuePause, {"t": "queue_pause", "rid": 7, "actor": "a", "paused": 1}, "paused", "must be bool, not int"),
    bad(P.QueuePurge, {"t": "queue_purge", "rid": 7}, "actor", "is required"),
    bad(P.CronAdd, change(CRON_ADD, name=LONG), "name", "1 to 200 characters"),
    bad(P.CronAdd, change(CRON_ADD, actor=MISSING), "actor", "is required"),
    bad(P.CronAdd, change(CRON_ADD, expr=5), "expr", "must be str, not int"),
    bad(P.CronAdd, change(CRON_ADD, expr="61 * * * *"), "expr", "minute '61' is outside 0-59", named=False),
    bad(P.CronAdd, change(CRON_ADD, tz=5), "tz", "must be str, not int"),
    bad(P.CronAdd, change(CRON_ADD, tz="Mars/Base"), "tz", "unknown time zone 'Mars/Base'", named=False),
    bad(P.CronAdd, change(CRON_ADD, args={}), "args", "must be array, not map"),
    bad(P.CronAdd, change(CRON_ADD, kwargs={1: "x"}), "kwargs", "must have str keys"),
    bad(P.CronRemove, {"t": "cron_remove", "rid": 7, "name": b"n"}, "name", "must be str, not bin"),
    bad(P.WaitAny, {"t": "wait_any", "rid": 7, "ids": []}, "ids", "must hold 1 to 10000 ids"),
    # the task history
    bad(P.TasksList, {"t": "tasks_list", "rid": 7, "state": "finished"}, "state", "must be one of queued"),
    bad(P.TasksList, {"t": "tasks_list", "rid": 7, "key": ["tenant"]}, "key", "must be [name, value]"),
    bad(P.TasksList, {"t": "tasks_list", "rid": 7, "limit": 5000}, "limit", "must be 1 to 1000"),
    bad(P.TasksList, {"t": "tasks_list", "rid": 7, "since": "1h"}, "since", "must be int or float, not str"),
    bad(P.TaskShow, {"t": "task_show", "rid": 7}, "id", "is required"),
    bad(P.Stats, {"t": "stats", "rid": 7, "since": 0, "by": "tenant"}, "by", "must be one of actor"),
    bad(P.Stats, {"t": "stats", "rid": 7}, "since", "is required"),
    bad(P.Stats, {"t": "stats", "rid": 7, "since": 0, "by": "worker", "actor": "a"}, "actor", "narrows stats by actor"),
    bad(P.DeadGroups, {"t": "dead_groups", "rid": 7, "limit": 0}, "limit", "must be 1 to 1000"),
    bad(P.TasksList, {"t": "tasks_list", "rid": 7, "cursor": 2**63}, "cursor", "must be a cursor this node gave"),
    bad(P.TaskEvents, {"t": "task_events", "rid": 7, "after": -1}, "after", "must be a cursor this node gave"),
    bad(P.Describe, {"t": "describe", "rid": 7, "id": 5}, "id", "must be str, not int"),
    bad(P.HistoryJournal, {"t": "history_journal", "rid": 7, "after": 0}, "before", "is required"),
    bad(P.Answer, {"t": "ok"}, "rid", "is required"),
    bad(P.CronList, {"t": "cron_list", "rid": None}, "rid", "must be int, not nil"),
    bad(P.AlertsList, {"t": "alerts", "rid": "1"}, "rid", "must be int, not str"),
    # replies
    bad(P.Accepted, {"t": "accepted", "rid": 7}, "ids", "is required"),
    bad(P.Accepted, {"t": "accepted", "rid": 7, "ids": [1]}, "ids[0]", "must be str, not int"),
    bad(P.Accepted, {"t": "accepted", "rid": 7, "ids": [], "now": "noon"}, "now", "must be int or float, not str"),
    bad(P.Accepted, {"t": "accepted", "ids": []}, "rid", "is required"),
    bad(P.Result, change(RESULT, state="done"), "state", "must be one of succeeded"),
    bad(P.Result, change(RESULT, id=5), "id", "must be str, not int"),
    bad(P.Result, change(RESULT, actor=5), "actor", "must be str, not int"),
    bad(P.Result, change(RESULT, attempt="1"), "attempt", "must be int, not str"),
    bad(P.Result, change(RESULT, error="boom"), "error", "must be map, not str"),
    bad(P.Result, change(RESULT, error={"type": 5}), "error.type", "must be str, not int"),
    bad(P.Result, change(RESULT, submitted_at="x"), "submitted_at", "must be int or float, not str"),
    bad(P.Result, change(RESULT, started_at=[]), "started_at", "must be int or float, not array"),
    bad(P.Result, change(RESULT, finished_at=True), "finished_at", "must be int or float, not bool"),
    bad(P.Counted, {"t": "ok", "rid": 7}, "n", "is required"),
    bad(P.Counted, {"t": "ok", "rid": 7, "n": -1}, "n", "must not be negative"),
    bad(P.Counted, {"t": "ok", "rid": 7, "n": 1, "ids": [None]}, "ids[0]", "must be str, not nil"),
    *[bad(P.StatusReply, change(STATUS_OK, **{name: MISSING}), name, "is required") for name in P.StatusReply.REQUIRED],
    bad(P.StatusReply, change(STATUS_OK, is_leader=1), "is_leader", "must be bool, not int"),
    bad(P.StatusReply, change(STATUS_OK, now="noon"), "now", "must be int or float, not str"),
    bad(P.StatusReply, change(STATUS_OK, leader=5), "leader", "must be str, not int"),
    bad(P.DlqPage, {"t": "ok", "rid": 7, "total": "3", "entries": []}, "total", "must be int, not str"),
    bad(P.DlqPage, {"t": "ok", "rid": 7, "total": 1, "entries": [1]}, "entries", "must hold maps"),
    bad(P.DlqPage, {"t": "ok", "rid": 7, "total": 1, "entries": [], "arguments_truncated": 0},
        "arguments_truncated", "must be bool, not int"),
    bad(P.DlqEntry, {"t": "ok", "rid": 7, "entry": []}, "entry", "must be map, not array"),
    bad(P.LimitsReply, {"t": "ok", "rid": 7}, "actors", "is required"),
    bad(P.CronEntries, {"t": "ok", "rid": 7, "entries": {}}, "entries", "must be array, not map"),
    bad(P.Redirect, {"t": "redirect", "rid": 7}, "leader", "is required"),
    bad(P.Redirect, {"t": "redirect", "leader": "http://10.0.0.2:7700"}, "leader", "must be a tcp:// URL"),
    bad(P.Redirect, {"t": "redirect", "leader": "tcp://h:1", "rid": "7"}, "rid", "must be int, not str"),
    bad(P.Error, {"t": "error", "message": "x"}, "code", "is required"),
    bad(P.Error, {"t": "error", "code": "bad_field", "message": 5}, "message", "must be str, not int"),
    bad(P.Error, {"t": "error", "code": "bad_field", "rid": 1.5}, "rid", "must be int, not float"),
    bad(P.Error, {"t": "error", "code": "bad_field", "field": ["tasks", 0]}, "field", "must be str, not array"),
    # worker -> coordinator
    bad(P.Hello, change(HELLO, worker_id=MISSING), "worker_id", "is required"),
    bad(P.Hello, change(HELLO, worker_id=""), "worker_id", "1 to 200 characters"),
    bad(P.Hello, change(HELLO, worker_id="é" * 128), "worker_id", "at most 255 bytes of UTF-8"),
    bad(P.Hello, change(HELLO, actors=MISSING), "actors", "is required"),
    bad(P.Hello, change(HELLO, actors=["a"]), "actors[0]", "must be a map"),
    bad(P.Hello, change(HELLO, actors=[{"options": {}}]), "actors[0].name", "is required"),
    bad(P.Hello, change(HELLO, actors=[{"name": "a", "options": []}]), "actors[0].options", "must be map, not array"),
    bad(P.Hello, options(retires=1), "actors[0].options", "unknown option 'retires'"),
    bad(P.Hello, options(retries="3"), "actors[0].options.retries", "must be int, not str"),
    bad(P.Hello, options(retries=-1), "actors[0].options.retries", "must not be negative"),
    bad(P.Hello, options(timeout=0), "actors[0].options.timeout", "must be positive"),
    bad(P.Hello, options(timeout=-1.0), "actors[0].options.timeout", "must not be negative"),
    bad(P.Hello, options(result_ttl=-1), "actors[0].options.result_ttl", "must not be negative"),
    bad(P.Hello, options(max_worker_losses=1.5), "actors[0].options.max_worker_losses", "must be int, not float"),
    bad(P.Hello, options(rate_limits=[[0, 1.0, None]]), "actors[0].options.rate_limits[0]",
        "[n > 0, period > 0, key or nil]"),
    bad(P.Hello, options(rate_limits=[[1, 1.0, None], [1, 1.0, 5]]), "actors[0].options.rate_limits[1]",
        "[n > 0, period > 0, key or nil]"),
    bad(P.Hello, options(rate_limits={}), "actors[0].options.rate_limits", "must be array, not map"),
    bad(P.Hello, options(concurrency=[[0, None]]), "actors[0].options.concurrency[0]", "[n > 0, key or nil]"),
    bad(P.Hello, options(weights=[["acme", 0]]), "actors[0].options.weights[0]", "[key value, n >= 1]"),
    bad(P.Hello, options(weights=[[["acme"], 1]]), "actors[0].options.weights[0]", "[key value, n >= 1]"),
    bad(P.Hello, options(cron=5), "actors[0].options.cron", "must be str, not int"),
    bad(P.Hello, options(cron="61 * * * *"), "actors[0].options.cron", "actor 'a': cron expression '61 * * * *'",
        named=False),
    bad(P.Hello, options(cron="* * * * *", tz="Mars/Base"), "actors[0].options.tz",
        "actor 'a': unknown time zone 'Mars/Base'", named=False),
    bad(P.Hello, options(tz=5), "actors[0].options.tz", "must be str, not int"),
    bad(P.Hello, options(missed="later"), "actors[0].options.missed", "must be 'run' or 'skip'"),
    bad(P.Hello, change(HELLO, slots=-1), "slots", "must not be negative"),
    bad(P.Hello, change(HELLO, slots=MISSING), "slots", "is required"),
    bad(P.Hello, change(HELLO, concurrency="8"), "concurrency", "must be int, not str"),
    bad(P.Hello, change(HELLO, running=[["t1"]]), "running[0]", "must be [task id, attempt]"),
    bad(P.Hello, change(HELLO, running=[["t1", True]]), "running[0]", "must be [task id, attempt]"),
    bad(P.Hello, change(HELLO, running="t1"), "running", "must be array, not str"),
    bad(P.Done, {"t": "done"}, "outcomes", "is required"),
    bad(P.Done, {"t": "done", "outcomes": [1]}, "outcomes[0]", "must be a map"),
    bad(P.Done, done(id=MISSING), "outcomes[0].id", "is required"),
    bad(P.Done, done(attempt="1"), "outcomes[0].attempt", "must be int, not str"),
    bad(P.Done, done(ok=MISSING), "outcomes[0].ok", "is required"),
    bad(P.Done, done(ok=1), "outcomes[0].ok", "must be bool, not int"),
    bad(P.Done, done(error_type=5), "outcomes[0].error_type", "must be str, not int"),
    bad(P.Done, done(message=b"x"), "outcomes[0].message", "must be str, not bin"),
    bad(P.Done, done(traceback=[]), "outcomes[0].traceback", "must be str, not array"),
    bad(P.Done, done(retry_delay=-1), "outcomes[0].retry_delay", "must not be negative"),
    bad(P.Done, done(retryable="no"), "outcomes[0].retryable", "must be bool, not str"),
    bad(P.Done, change(done(), credit=-1), "credit", "must not be negative"),
    bad(P.Credit, {"t": "credit"}, "n", "is required"),
    bad(P.Credit, {"t": "credit", "n": -1}, "n", "must not be negative"),
    bad(P.Bye, {"t": "bye", "running": [["t1", "1"]]}, "running[0]", "must be [task id, attempt]"),
    # coordinator -> worker
    bad(P.Welcome, change(WELCOME, worker_id=5), "worker_id", "must be str, not int"),
    bad(P.Welcome, change(WELCOME, heartbeat_interval="1"), "heartbeat_interval", "must be int or float, not str"),
    bad(P.Welcome, change(WELCOME, lease_timeout=MISSING), "lease_timeout", "is required"),
    bad(P.Welcome, change(WELCOME, now="noon"), "now", "must be int or float, not str"),
    bad(P.Run, {"t": "run"}, "tasks", "is required"),
    bad(P.Run, {"t": "run", "tasks": [[]]}, "tasks[0]", "must be a map"),
    bad(P.Run, {"t": "run", "tasks": [], "acks": ["t1", 7]}, "acks[1]", "str"),
    bad(P.Hello, change(HELLO, acks_in_run=1), "acks_in_run", "must be bool, not int"),
    bad(P.Run, run(id=""), "tasks[0].id", "1 to 200 characters"),
    bad(P.Run, run(actor=MISSING), "tasks[0].actor", "is required"),
    bad(P.Run, run(args="x"), "tasks[0].args", "must be array, not str"),
    bad(P.Run, run(kwargs={b"k": 1}), "tasks[0].kwargs", "must have str keys"),
    bad(P.Run, run(attempt=1.0), "tasks[0].attempt", "must be int, not float"),
    bad(P.Run, run(timeout=0), "tasks[0].timeout", "must be positive"),
    bad(P.Run, run(timeout=MISSING), "tasks[0].timeout", "is required"),
    bad(P.Run, run(term="3"), "tasks[0].term", "must be int, not str"),
    bad(P.Run, run(trace={"traceparent": "x" * 513}), "tasks[0].trace", "512 at most", named=False),
    bad(P.Ack, {"t": "ack"}, "ids", "is required"),
    bad(P.Ack, {"t": "ack", "ids": [], "bye": 1}, "bye", "must be bool, not int"),
    bad(P.CancelRun, {"t": "cancel", "id": LONG}, "id", "1 to 200 characters"),
]


@pytest.mark.parametrize(("cls", "message", "field", "says", "named"), BAD_FIELDS)
def test_a_bad_field_is_refused_naming_it(cls: type, message: dict[str, Any], field: str | None, says: str,
                                         named: bool) -> None:
    exc = refused(lambda: read(cls, decode(frame(message))))
    assert exc.code == ErrorCode.BAD_FIELD
    assert exc.field == field
    assert says in exc.message, exc.message
    if named:
        assert f"field '{field}'" in exc.message, exc.message
    if cls in REQUESTS:  # the error reply can be matched to its request
        rid = message.get("rid")
        assert exc.rid == (rid if type(rid) is int else None)


def test_every_message_class_with_fields_has_its_fields_refused() -> None:
    refused_classes = {p.values[0] for p in BAD_FIELDS}
    assert refused_classes == message_classes() - {P.Heartbeat, P.Drain, P.Hb}  # no fields, or only optional ones


def test_a_bad_field_of_a_worker_message_has_no_rid() -> None:
    exc = refused(lambda: parse_request(decode(frame(done(ok=MISSING)))))
    assert (exc.code, exc.field, exc.rid) == (ErrorCode.BAD_FIELD, "outcomes[0].ok", None)


# ---------------------------------------------------------------------------------------------
# Framing: version, type, size, msgpack


@pytest.mark.parametrize(("message", "code"), [
    ({"t": "cancel", "rid": 7, "id": "t"}, ErrorCode.BAD_VERSION),  # no v
    ({"v": True, "t": "cancel", "rid": 7, "id": "t"}, ErrorCode.BAD_VERSION),
    ({"v": 1.0, "t": "cancel", "rid": 7, "id": "t"}, ErrorCode.BAD_VERSION),
    ({"v": 2, "t": "cancel", "rid": 7, "id": "t"}, ErrorCode.BAD_VERSION),
    ({"v": 1, "rid": 7, "id": "t"}, ErrorCode.UNKNOWN_TYPE),  # no t
    ({"v": 1, "t": 5, "rid": 7}, ErrorCode.UNKNOWN_TYPE),
    ({"v": 1, "t": b"cancel", "rid": 7}, ErrorCode.UNKNOWN_TYPE),
])
def test_version_and_type_are_checked_before_any_field_and_keep_the_rid(message: dict[str, Any], code: str) -> None:
    exc = refused(lambda: decode(msgpack.packb(message)))
    assert (exc.code, exc.rid, exc.field) == (code, 7, None)
    assert f"field '{'v' if code == ErrorCode.BAD_VERSION else 't'}'" in exc.message


def test_each_side_reads_only_the_messages_it_receives() -> None:
    exc = refused(lambda: parse_request(decode(frame({"t": "welcome", "rid": 7}))))
    assert (exc.code, exc.rid) == (ErrorCode.UNKNOWN_TYPE, 7) and "'welcome'" in exc.message
    assert refused(lambda: parse_for_worker(decode(frame({"t": "submit"})))).code == ErrorCode.UNKNOWN_TYPE
    # "cancel" is the client's request to a coordinator, and the coordinator's order to a worker.
    assert parse_request(decode(frame({"t": "cancel", "rid": 1, "id": "t"}))) == P.Cancel("t", rid=1)
    assert parse_for_worker(decode(frame({"t": "cancel", "id": "t"}))) == P.CancelRun("t")
    exc = refused(lambda: parse_reply(decode(frame({"t": "result", "rid": 7, "id": "t", "state": "pending"})),
                                      P.Accepted))
    assert (exc.code, exc.rid) == (ErrorCode.UNKNOWN_TYPE, 7) and "expected a 'accepted' reply" in exc.message


def test_a_frame_at_the_limit_is_read_and_one_byte_more_is_too_large() -> None:
    packed = frame({"t": "cancel", "rid": 7, "id": "t"})
    assert decode(packed, max_bytes=len(packed))["id"] == "t"
    exc = refused(lambda: decode(packed, max_bytes=len(packed) - 1))
    assert exc.code == ErrorCode.TOO_LARGE and f"limit of {len(packed) - 1}" in exc.message


@pytest.mark.parametrize("garbage", [
    b"\xdb\xff\xff\xff\xff",  # a str header claiming 4 GiB, in 5 bytes
    b"\xdd\xff\xff\xff\xff",  # an array of 4 billion items
    b"\xdf\xff\xff\xff\xff",  # a map of as many pairs
    b"\xc7\xff\x01",  # an ext of 255 bytes, in 3
])
def test_a_header_claiming_more_than_the_frame_holds_allocates_nothing(garbage: bytes) -> None:
    assert refused(lambda: decode(garbage)).code == ErrorCode.BAD_FRAME


def too_large_submit(rid_first: bool) -> bytes:
    bulk = {"tasks": [{"id": "big", "actor": "a", "args": ["x" * 2000]}]}
    message = {"t": "submit", "rid": 7, **bulk} if rid_first else {"t": "submit", **bulk, "rid": 7}
    return frame(message)


def test_a_too_large_frame_carries_its_rid_when_it_comes_first() -> None:
    exc = refused(lambda: decode(too_large_submit(rid_first=True), max_bytes=1000))
    assert (exc.code, exc.rid) == (ErrorCode.TOO_LARGE, 7)


def test_a_too_large_frame_is_not_read_past_the_peek_for_its_rid() -> None:
    bulk = ["x" * RID_PEEK_BYTES]  # fits no peek
    past = frame({"t": "submit", "tasks": bulk, "rid": 7})
    assert peek_rid(past) is None
    exc = refused(lambda: decode(past, max_bytes=1000))
    assert (exc.code, exc.rid) == (ErrorCode.TOO_LARGE, None)
    # Small values before it are skipped, not a reason to give up.
    assert peek_rid(too_large_submit(rid_first=False)) == 7


def with_garbage_after(fields: list[tuple[str, Any]], tail: bytes) -> bytes:
    """A map header promising one more pair than `fields`, then `tail` as that pair's key."""
    out = bytes([0x80 | (len(fields) + 1)])
    for name, value in fields:
        out += msgpack.packb(name) + msgpack.packb(value)
    return out + tail


@pytest.mark.parametrize(("packed", "rid"), [
    (with_garbage_after([("v", 1), ("t", "submit"), ("rid", 7)], b"\xc1"), 7),  # 0xc1: never used
    (with_garbage_after([("v", 1), ("t", "submit"), ("rid", 7)], b"\xa2\xff\xfe"), 7),  # invalid UTF-8
    (with_garbage_after([("v", 1), ("t", "submit"), ("rid", 7)], b"\xa9tas"), 7),  # cut short
    (with_garbage_after([("v", 1), ("t", "submit")], b"\xa3rid\xc1"), None),
    (with_garbage_after([("v", 1), ("rid", True)], b"\xc1"), None),  # a bool is not a rid
    (with_garbage_after([("v", 1), ("rid", "7")], b"\xc1"), None),
    (b"\xc1garbage", None),
    (msgpack.packb({(1, 2): 3, "v": 1, "rid": 7}), 7),  # an array as a map key: no Python dict holds it
    (msgpack.packb({"v": 1, "x": {(1, 2): 3}, "rid": 7}), 7),
])
def test_a_frame_that_is_not_msgpack_carries_its_rid_when_it_can_be_read(packed: bytes, rid: int | None) -> None:
    exc = refused(lambda: decode(packed))
    assert (exc.code, exc.rid) == (ErrorCode.BAD_FRAME, rid)
    assert "not valid msgpack" in exc.message


@pytest.mark.parametrize("packed", [
    msgpack.packb([1, 2, {"rid": 7}]), msgpack.packb("rid"), b"", b"\x81", msgpack.packb({"rid": 7})[:-1] + b"\xc1",
])
def test_peeking_gives_up_quietly_on_anything_odd(packed: bytes) -> None:
    assert peek_rid(packed) is None


# ---------------------------------------------------------------------------------------------
# Malformed frames (they were live-node cases of tests/integration/test_bad_input.py; the decision
# is the protocol's, so they are checked here without a node; that file keeps one live case)


@pytest.mark.parametrize(("packed", "code", "text"), [
    (b"\xc1garbage", "bad_frame", "not valid msgpack"),
    (msgpack.packb([1, 2]), "bad_frame", "must be a msgpack map"),
    (msgpack.packb({"t": "submit"}), "bad_version", "version"),
    (msgpack.packb({"v": 1, "t": "fly"}), "unknown_type", "fly"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7}), "bad_field", "'tasks'"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7, "tasks": [{"id": "x", "actor": 5}]}), "bad_field",
     "'tasks[0].actor' must be str"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7, "tasks": [{"id": "x", "actor": "a", "args": 3}]}),
     "bad_field", "'tasks[0].args'"),
    (msgpack.packb({"v": 1, "t": "submit", "rid": 7, "tasks": [{"id": "x", "actor": "a", "delay": -1}]}),
     "bad_field", "must not be negative"),
    (msgpack.packb({"v": 1, "t": "wait", "rid": "seven", "id": "x"}), "bad_field", "'rid'"),
    (msgpack.packb({"v": 1, "t": "hello", "worker_id": "w", "actors": [{"name": "a", "options": {"retires": 1}}],
                    "slots": 1, "concurrency": 1}), "bad_field", "unknown option 'retires'"),
    (msgpack.packb({"v": 1, "t": "done", "outcomes": [{"id": "x"}]}), "bad_field", "'outcomes[0].ok'"),
])
def test_malformed_frame_gets_an_error_naming_the_problem(packed: bytes, code: str, text: str) -> None:
    exc = refused(lambda: parse_request(decode(packed)))
    assert exc.code == code
    assert text in exc.message
    reply = decode(P.Error.of(exc).encode())  # what the coordinator answers
    assert reply["t"] == "error" and reply["code"] == code and text in reply["message"]
    assert reply.get("field") == exc.field


@pytest.mark.parametrize("tz", ["a" * 300, "../../etc/passwd", "Europe/" + "x" * 5000, "\x00"])
def test_a_hostile_time_zone_is_a_bad_field_not_a_crash(tz: str) -> None:
    # zoneinfo raises OSError ("File name too long") or others for such names: a coordinator that
    # let them out of parse_request stopped reading its socket mid-pass.
    cron_add = {"v": 1, "t": "cron_add", "rid": 3, "name": "n", "actor": "a", "expr": "* * * * *", "tz": tz}
    exc = refused(lambda: P.parse_request(cron_add))
    assert (exc.code, exc.field, exc.rid) == (ErrorCode.BAD_FIELD, "tz", 3)
    hello = {"v": 1, "t": "hello", "worker_id": "w", "slots": 1, "concurrency": 1,
             "actors": [{"name": "a", "options": {"cron": "* * * * *", "tz": tz}}]}
    exc = refused(lambda: P.parse_request(hello))
    assert (exc.code, exc.field) == (ErrorCode.BAD_FIELD, "actors[0].options.tz")


def nested(depth: int) -> list[Any]:
    """A list nested `depth` levels deep ([] is one level)."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(("message", "field"), [
    ({"t": "submit", "rid": 4, "tasks": [{"id": "t1", "actor": "a", "args": nested(65), "kwargs": {}}]},
     "tasks[0].args"),
    ({"t": "submit", "rid": 4, "tasks": [{"id": "t1", "actor": "a", "args": [], "kwargs": {"x": nested(64)}}]},
     "tasks[0].kwargs"),
    ({"t": "done", "credit": 1, "outcomes": [{"id": "t1", "attempt": 1, "ok": True, "value": nested(65)}]},
     "outcomes[0].value"),
    ({"t": "cron_add", "rid": 4, "name": "n", "actor": "a", "expr": "* * * * *", "args": nested(65)}, "args"),
])
def test_a_value_nested_past_the_limit_is_refused_at_the_edge(message: dict[str, Any], field: str) -> None:
    # One result nested ~1,020 deep passed ingress (msgpack's own limit is 1,024), then made its
    # `finish` command unpackable: the whole Raft batch around it was dropped, over and over.
    exc = refused(lambda: P.parse_request({"v": 1, **message}))
    assert (exc.code, exc.field) == (ErrorCode.BAD_FIELD, field)
    assert f"nested deeper than {defaults.MAX_NESTING} levels" in exc.message


def test_a_value_at_the_nesting_limit_is_accepted() -> None:
    frame = {"v": 1, "t": "submit", "rid": 4, "tasks": [{"id": "t1", "actor": "a", "args": nested(64), "kwargs": {}}]}
    submit = P.parse_request(frame)
    assert isinstance(submit, P.Submit) and submit.tasks[0].args == nested(64)


def test_a_run_task_nested_past_the_limit_is_refused_by_the_worker() -> None:
    raw = {"v": 1, "t": "run", "tasks": [{"id": "t1", "actor": "a", "args": nested(65), "kwargs": {},
                                           "attempt": 1, "timeout": 5.0, "term": 1}]}
    exc = refused(lambda: P.parse_for_worker(raw))
    assert exc.field == "tasks[0].args"


def test_what_one_request_may_create_is_bounded_and_each_limit_named() -> None:
    task = {"id": "t", "actor": "a"}
    submit = {"v": 1, "t": "submit", "rid": 1, "tasks": [task] * (defaults.MAX_TASKS_PER_SUBMIT + 1)}
    hello = {"v": 1, "t": "hello", "worker_id": "w", "slots": 1, "concurrency": 1,
             "actors": [{"name": "a"}] * (defaults.MAX_ACTORS_PER_HELLO + 1)}
    keyed = {"v": 1, "t": "submit", "rid": 2,
             "tasks": [{**task, "keys": {f"k{i}": i for i in range(defaults.MAX_KEYS_PER_TASK + 1)}}]}
    for message, field, says in [(submit, "tasks", "at most 10000 per submit"), (hello, "actors", "at most 1000"),
                                 (keyed, "tasks[0].keys", "at most 16")]:
        with pytest.raises(ProtocolError) as refused:
            P.parse_request(message)
        assert (refused.value.code, refused.value.field) == (P.ErrorCode.BAD_FIELD, field)
        assert says in refused.value.message


def test_a_large_frame_may_hold_one_array_or_map_per_8_bytes() -> None:
    n = 1024 * 1024
    head = P.encode({"t": "submit", "rid": 9, "tasks": []})[:-1]
    with pytest.raises(ProtocolError) as refused:
        P.decode(head + b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n)
    assert (refused.value.code, refused.value.rid) == (P.ErrorCode.BAD_FRAME, 9)
    tasks = [{"id": f"{i:032x}", "actor": "a", "args": [i], "kwargs": {}} for i in range(5000)]
    assert len(P.decode(P.encode({"t": "submit", "rid": 1, "tasks": tasks}))["tasks"]) == 5000  # ~300 KiB
