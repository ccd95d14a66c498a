"""Commands as records: a batch is written byte for byte as it always was (replicas of other versions
and the digest read those bytes), and every kind reads back with its fields."""

from __future__ import annotations

import typing
from typing import Any

import msgpack

from qrt.protocol import Envelope, Outcome
from qrt.state import commands as C

FULL = Envelope("t1", "mail.send", [1, "x"], {"to": "a@b"}, keys={"tenant": "acme"}, delay=2.5, priority=3,
                eta=1_900_000_000.0, expires_in=60.0, expires_at=1_900_000_100.0, idempotency_key="order-7")
PLAIN = Envelope("t2", "a", [], {})
FAILED = Outcome("t1", 2, False, None, "ValueError", "boom", "Traceback (most recent call last): ...", 30.0, False)
SUCCEEDED = Outcome("t2", 1, True, {"value": [1, 2]})

# Each command, and the list the log has always held for it.
CASES: list[tuple[C.Command, list[Any]]] = [
    (C.Submit([FULL, PLAIN]), ["submit", [
        {"id": "t1", "actor": "mail.send", "args": [1, "x"], "kwargs": {"to": "a@b"}, "keys": {"tenant": "acme"},
         "delay": 2.5, "priority": 3, "eta": 1_900_000_000.0, "expires_in": 60.0, "expires_at": 1_900_000_100.0,
         "idempotency_key": "order-7"},
        {"id": "t2", "actor": "a", "args": [], "kwargs": {}},
    ]]),
    (C.Dispatch([C.Offer("w1", ["a", "b"], 2), C.Offer("w2", ["a"], 1)]),
     ["dispatch", [["w1", ["a", "b"], 2], ["w2", ["a"], 1]]]),
    (C.Finish("w1", [FAILED, SUCCEEDED]), ["finish", "w1", [
        ["t1", 2, False, None, "ValueError", "boom", "Traceback (most recent call last): ...", 30.0, False],
        ["t2", 1, True, {"value": [1, 2]}, "", "", "", None, True],
    ]]),
    (C.Lost("w1"), ["lost", "w1", None, True]),
    (C.Lost("w2", [("t1", 2), ("t3", 1)], counts=False), ["lost", "w2", [["t1", 2], ["t3", 1]], False]),
    (C.Cancel("t1"), ["cancel", "t1"]),
    (C.RegisterActors({"a": {"retries": 2, "cron": "* * * * *"}, "b": {}}, 1700000000.5),
     ["register_actors", {"a": {"retries": 2, "cron": "* * * * *"}, "b": {}}, 1700000000.5]),
    (C.RegisterNode("127.0.0.1:7800", "tcp://127.0.0.1:7700"),
     ["register_node", "127.0.0.1:7800", "tcp://127.0.0.1:7700"]),
    (C.DlqReplay(None), ["dlq_replay", None, None]),
    (C.DlqPurge(["t1", "t2"], "op-1"), ["dlq_purge", ["t1", "t2"], "op-1"]),
    (C.Tick(), ["tick"]),
    (C.Checkpoint(120, "9f3a"), ["checkpoint", 120, "9f3a"]),
    (C.SetLimits("a", rate_limits=[[5, 1.0, None]], concurrency=[[2, "tenant"]], key_rate=("vip", 5, 1.0),
                  rate=(3, 1.0), cap=4, weight=("gold", 3)),
     ["set_limits", "a", [[5, 1.0, None]], [[2, "tenant"]], ["vip", 5, 1.0], [3, 1.0], 4, ["gold", 3]]),
    (C.operator_limits("a", (3, 1.0), None, 2, None), ["set_limits", "a", None, None, None, [3, 1.0], 2, None]),
    (C.operator_limits("a", (5, 1.0), "vip", None, 3),
     ["set_limits", "a", None, None, ["vip", 5, 1.0], None, None, ["vip", 3]]),
    (C.ResetLimits("a"), ["reset_limits", "a"]),
    (C.Pause("a", True), ["pause", "a", True]),
    (C.PurgeQueue("a"), ["purge_queue", "a", None]),
    (C.Alert("backlog", "mail.send", True, 130.5, "backlog: waited 130 s"),
     ["alert", "backlog", "mail.send", True, 130.5, "backlog: waited 130 s"]),
    (C.CronAdd("beat", "a", "*/5 * * * *", "Europe/Paris", [1], {"k": 2}),
     ["cron_add", "beat", "a", "*/5 * * * *", "Europe/Paris", [1], {"k": 2}]),
    (C.CronRemove("beat"), ["cron_remove", "beat"]),
    (C.Grant("w1", [("t1", 1), ("t2", 3)]), ["grant", "w1", [["t1", 1], ["t2", 3]]]),
]


def test_every_kind_of_command_is_covered_here() -> None:
    assert {type(command) for command, _ in CASES} == set(typing.get_args(C.Command))


def test_a_batch_is_written_exactly_as_before() -> None:
    payload = C.pack_batch(3, 1000.5, [command for command, _ in CASES])
    assert payload == msgpack.packb([3, 1000.5, [wire for _, wire in CASES]], use_bin_type=True)


def test_every_kind_reads_back_as_its_record_with_its_fields() -> None:
    term, timestamp, commands, refs = C.unpack_batch(C.pack_batch(3, 1000.5, [command for command, _ in CASES]))
    assert (term, timestamp) == (3, 1000.5) and refs == list(range(1, len(CASES) + 1))
    assert commands == [command for command, _ in CASES]
    assert [type(c) for c in commands] == [type(command) for command, _ in CASES]
    submit, _, finish = commands[:3]
    assert isinstance(submit, C.Submit) and isinstance(submit.tasks[0], Envelope)
    assert submit.tasks[0].idempotency_key == "order-7" and submit.tasks[1].eta is None
    assert isinstance(finish, C.Finish) and isinstance(finish.outcomes[0], Outcome)
    assert finish.outcomes[0].retry_delay == 30.0 and finish.outcomes[0].retryable is False
    assert finish.outcomes[1].value == {"value": [1, 2]}


def test_a_command_that_does_not_fit_its_record_reads_as_unreadable() -> None:
    payload = msgpack.packb([1, 0.0, [["cancel"], ["warp", 9], ["tick"]]], use_bin_type=True)
    _, _, commands, _ = C.unpack_batch(payload)
    assert [type(c) for c in commands] == [C.Unreadable, C.Unreadable, C.Tick]
    assert isinstance(commands[1], C.Unreadable) and commands[1].kind == "warp" and "'warp'" in commands[1].reason


def test_a_batch_joined_from_commands_packed_one_by_one_is_the_batch_packed_whole() -> None:
    commands = [command for command, _ in CASES]
    joined = C.join_batch(3, 1000.5, [C.pack_command(c) for c in commands], list(range(10, 10 + len(commands))))
    assert joined == msgpack.packb([3, 1000.5, [wire for _, wire in CASES], list(range(10, 10 + len(commands)))],
                                   use_bin_type=True)
