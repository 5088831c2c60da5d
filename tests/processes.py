"""Running store operations from several processes at once, released together by a
barrier: the helper of the concurrency tests (tests/test_store_contract.py,
tests/test_store_races.py)."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable
from typing import Any

import pytest


def run_together(target: Callable[..., None], per_process: dict[str, tuple[Any, ...]],
                 timeout: float = 90) -> dict[str, Any]:
    """Run ``target(*args, barrier, results)`` in one spawned process per entry, all
    released at once by a barrier; the result each one returned, by name."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(per_process))
    results = ctx.Queue()
    processes = [ctx.Process(target=target, args=(*args, barrier, results), name=name)
                 for name, args in per_process.items()]
    for process in processes:
        process.start()
    outcomes: dict[str, Any] = {}
    errors: list[str] = []
    reported: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        for _ in processes:
            try:
                name, status, payload = results.get(
                    timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"processes did not report within {timeout}s: "
                            f"{sorted(set(per_process) - reported)} missing")
            reported.add(name)
            if status == "ok":
                outcomes[name] = payload
            else:
                errors.append(f"{name}:\n{payload}")
    finally:
        for process in processes:
            process.join(timeout=max(1.0, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return outcomes
