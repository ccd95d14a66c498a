"""Requests to a dashboard from another network namespace (`ip netns exec NS python -m
tests.dashboard.probe URL STEPS_JSON`): each step [method, path, form or null, headers or null] is
sent in turn with one cookie jar; prints a JSON list of [status, location, body prefix]."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from typing import Any
from urllib.parse import urlencode


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def main() -> None:
    url, steps = sys.argv[1], json.loads(sys.argv[2])
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect)
    out = []
    for method, path, form, headers in steps:
        data = urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url + path, data=data, headers=headers or {}, method=method)
        try:
            with opener.open(request, timeout=10) as reply:
                out.append([reply.status, reply.headers.get("location"), reply.read(4000).decode()])
        except urllib.error.HTTPError as exc:
            out.append([exc.code, exc.headers.get("location"), exc.read(4000).decode()])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
