"""Execution slots: what each concurrently running task gets (GPUs or a CPU share)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hpo.errors import ConfigError


@dataclass(frozen=True)
class Slot:
    """One place to run a task. ``gpus`` None: leave CUDA alone; (): CPU only."""

    name: str
    gpus: tuple[str, ...] | None

    def environment(self) -> dict[str, str]:
        if self.gpus is None:
            return {}
        visible = ",".join(self.gpus)
        env = {"CUDA_VISIBLE_DEVICES": visible}
        if self.gpus:
            env["NVIDIA_VISIBLE_DEVICES"] = visible
        return env


def parse_gpus(text: str) -> list[str]:
    """``0,1`` -> [0, 1]; ``0-3`` -> [0, 1, 2, 3]; ``0-1,4`` -> [0, 1, 4]."""
    gpus: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            if dash:
                start, end = int(first), int(last)
                if end < start:
                    raise ValueError
                gpus.extend(str(i) for i in range(start, end + 1))
            else:
                gpus.append(str(int(part)))
        except ValueError:
            raise ConfigError(
                f"bad --gpus {text!r}: give GPU indices like 0,1 or a range like 0-3"
            ) from None
    if not gpus:
        raise ConfigError(f"bad --gpus {text!r}: give GPU indices like 0,1 or 0-3")
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"bad --gpus {text!r}: a GPU is listed twice")
    return gpus


def make_slots(
    gpus: str | None, gpus_per_task: int | None, cpu_only: bool, concurrency: int | None
) -> list[Slot]:
    """The slots an agent serves, from its command-line options."""
    if gpus and cpu_only:
        raise ConfigError("--gpus and --cpu-only exclude each other: pick one")
    if concurrency is not None and concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if gpus:
        if concurrency is not None:
            raise ConfigError("--concurrency is for CPU slots; with --gpus use --gpus-per-task")
        ids = parse_gpus(gpus)
        per_task = gpus_per_task or len(ids)
        if per_task < 1 or len(ids) % per_task:
            raise ConfigError(
                f"--gpus-per-task {per_task} does not divide the {len(ids)} GPUs of --gpus "
                f"{gpus}: pick a divisor")
        groups = [tuple(ids[i:i + per_task]) for i in range(0, len(ids), per_task)]
        return [Slot("gpu" + "+".join(group), group) for group in groups]
    if gpus_per_task is not None:
        raise ConfigError("--gpus-per-task needs --gpus")
    count = concurrency or 1
    return [Slot(f"cpu{i}", () if cpu_only else None) for i in range(count)]


class SlotPool:
    """Hands out free slots to the threads that run tasks."""

    def __init__(self, slots: list[Slot]) -> None:
        self._free = list(slots)
        self._lock = threading.Lock()

    def acquire(self) -> Slot:
        with self._lock:
            if not self._free:
                # The worker runs exactly one thread per slot, so this cannot happen.
                raise RuntimeError("no free slot: more tasks than slots")
            return self._free.pop(0)

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._free.append(slot)

    @contextmanager
    def taken(self) -> Iterator[Slot]:
        """A free slot for the block, given back however the block ends."""
        slot = self.acquire()
        try:
            yield slot
        finally:
            self.release(slot)
