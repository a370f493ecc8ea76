"""Runtime plumbing (engine.runtime): the worker thread behind inference and the thread-aware stage timer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.runtime import Behind, StageTimer


def test_behind_runs_calls_in_order_on_one_thread_a_bounded_way_behind():
    done, threads, in_queue = [], set(), []
    gate = threading.Event()

    def work(k):
        gate.wait(5)
        threads.add(threading.get_ident())
        done.append(k)

    with Behind(depth=2) as behind:
        behind.submit(work, 0)  # taken by the worker, which then waits at the gate
        time.sleep(0.05)
        behind.submit(work, 1)
        behind.submit(work, 2)  # the queue is full now: the next submit blocks until the worker moves
        blocked = threading.Thread(target=lambda: (behind.submit(work, 3), in_queue.append(3)))
        blocked.start()
        time.sleep(0.1)
        assert in_queue == []
        gate.set()
        blocked.join(5)
    assert done == [0, 1, 2, 3] and in_queue == [3]
    assert threads and threading.get_ident() not in threads and len(threads) == 1


def test_behind_hands_a_calls_error_to_the_caller_and_drops_the_rest():
    done = []

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), Behind() as behind:
        behind.submit(fail)
        time.sleep(0.05)
        behind.submit(done.append, 1)  # raises the worker's error here
    assert done == []
    # an error is also raised on leaving the block when no later submit saw it
    with pytest.raises(OSError, match="disk full"), Behind() as behind:
        behind.submit(fail)
    # and the caller's own error drops what is queued
    with pytest.raises(KeyError), Behind() as behind:
        behind.submit(time.sleep, 0.1)
        behind.submit(done.append, 2)
        raise KeyError("cancelled")
    assert done == []


def test_stage_timer_nests_per_thread_and_keeps_other_threads_cpu_out_of_the_owners_stages():
    timer = StageTimer()

    def busy(seconds):
        end = time.thread_time() + seconds
        x = np.zeros(1000)
        while time.thread_time() < end:
            x += 1.0

    def worker():
        with timer("vectorize"):
            busy(0.3)

    with timer("inference"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
        with timer("read"):
            time.sleep(0.05)
    assert timer.seconds["inference"] >= 0.25 and timer.seconds["read"] >= 0.05
    assert timer.cpu_seconds["vectorize"] >= 0.25
    # the worker's 0.3 s of CPU is its stage's, not the owner's stage that ran meanwhile
    assert timer.cpu_seconds["inference"] < 0.1
