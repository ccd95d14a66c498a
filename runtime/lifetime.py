"""Child processes that must not outlive the process that forked or spawned them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Call in a child: it is killed when `parent` (strictly: the thread that made it) exits."""
    if sys.platform == "linux":
        # SIGKILL from the kernel, even in the middle of C code or of a pickling snapshot.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    else:  # no such thing elsewhere: a thread watches (it needs the GIL, so this is best effort)
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="qrt-parent-watch").start()
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
