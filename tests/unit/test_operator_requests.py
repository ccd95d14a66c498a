"""Operators' requests are checked in the library, before anything is sent: InvalidArgument, naming it."""

from __future__ import annotations

from typing import Any

import pytest

from qrt.errors import InvalidArgument
from qrt.operator import cron_request, limits_request


@pytest.mark.parametrize(("kwargs", "names"), [
    ({}, "give 'rate'"),
    ({"rate": "ten a second"}, "rate"),
    ({"concurrency": "3"}, "concurrency"),
    ({"concurrency": 2.5}, "concurrency"),
    ({"concurrency": True}, "concurrency"),
    ({"concurrency": 0}, "concurrency"),
    ({"key": "acme", "weight": "2"}, "weight"),
    ({"weight": 2}, "weight"),
    ({"key": "acme"}, "key"),
    ({"key": ["a"], "rate": "1/s"}, "key"),
])
def test_a_bad_limits_request_is_refused_before_sending(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(InvalidArgument, match=names):
        limits_request("mail.send", **kwargs)


def test_a_good_limits_request_carries_the_parsed_rate() -> None:
    request = limits_request("mail.send", rate="10/m", key="acme", weight=3)
    assert (request.rate, request.key, request.weight) == ((10, 60.0), "acme", 3)


@pytest.mark.parametrize(("expr", "tz", "names"), [
    ("61 * * * *", "UTC", "minute"),
    ("* * * * *", "Mars/Base", "unknown time zone"),
    ("* * * * *", "a" * 300, "unknown time zone"),
])
def test_a_bad_cron_request_is_refused_before_sending(expr: str, tz: str, names: str) -> None:
    with pytest.raises(InvalidArgument, match=names):
        cron_request("nightly", "reports.build", expr, tz=tz)
