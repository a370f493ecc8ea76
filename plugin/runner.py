"""Run a command in a subprocess, stream its output lines to a callback, and stop it on cancel."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence


class ProcessCancelled(Exception):  # noqa: N818 - a state, not a failure
    """The run was cancelled and the subprocess stopped."""


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Interrupt ``proc`` (Ctrl-C, so it can keep its last checkpoint), then kill it after ``grace_s``."""
    try:
        if os.name == "nt":
            proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace_s)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        try:
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()


def run_streaming(args: Sequence[str], on_line: Callable[[str], None], is_cancelled: Callable[[], bool],
                  cwd: str | None = None, env: dict[str, str] | None = None, grace_s: float = 5.0,
                  tail: int = 40) -> tuple[int, list[str]]:
    """Run ``args``, call ``on_line`` for every output line (stdout and stderr merged), poll ``is_cancelled``.

    Returns:
        (exit status, the last ``tail`` output lines).

    Raises:
        ProcessCancelled: ``is_cancelled()`` turned True; the process (and its children) were stopped.
        OSError: the program cannot be started.
    """
    kwargs = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {
        "start_new_session": True}
    proc = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace", bufsize=1,
                            **kwargs)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\r\n"))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    last: deque[str] = deque(maxlen=tail)
    done = False
    while not done:
        if is_cancelled():
            _stop(proc, grace_s)
            raise ProcessCancelled(" ".join(args[:4]))
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            done = True
            continue
        last.append(line)
        on_line(line)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if is_cancelled():
            _stop(proc, grace_s)
            raise ProcessCancelled(" ".join(args[:4]))
        time.sleep(0.1)
    return proc.wait(), list(last)
