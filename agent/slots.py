"""Execution slots: what each concurrently running task gets (GPUs or a CPU share)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from hpo.defaults import NVIDIA_SMI_TIMEOUT_S
from hpo.errors import ConfigError

log = logging.getLogger("hpo.agent")


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


@dataclass(frozen=True)
class HostGpus:
    """The GPUs this agent may hand out, in order: what an inherited
    ``CUDA_VISIBLE_DEVICES`` names (a container runtime or a scheduler chose them; an
    agent's ``--gpus`` indexes into that list, as CUDA itself does), else the GPUs
    ``nvidia-smi -L`` lists; ``devices`` None when neither tells (no driver here)."""

    devices: tuple[str, ...] | None
    source: str  # where the list came from, for messages

    def pick(self, indices: list[str] | None) -> tuple[str, ...]:
        """The devices at ``indices`` (None: all of them), as CUDA_VISIBLE_DEVICES
        entries for a slot."""
        if self.devices is None:
            if indices is None:
                raise ConfigError("--gpus all: no GPU found on this host (no nvidia-smi "
                                  "answers, no CUDA_VISIBLE_DEVICES): give indices, or "
                                  "drop --gpus")
            return tuple(indices)
        if indices is None:
            if not self.devices:
                raise ConfigError(f"--gpus all: {self.source} lists no GPU: drop --gpus or "
                                  "use --cpu-only")
            return self.devices
        missing = [i for i in indices if int(i) >= len(self.devices)]
        if missing:
            have = (f"GPUs 0-{len(self.devices) - 1}" if self.devices else "no GPU")
            raise ConfigError(f"--gpus {','.join(indices)}: GPU {missing[0]} does not exist "
                              f"here ({self.source} gives {have}): give indices in that "
                              "range, or --gpus all")
        return tuple(self.devices[int(i)] for i in indices)


def host_gpus(environ: Mapping[str, str] | None = None) -> HostGpus:
    """The GPUs of this host as the agent sees them (see ``HostGpus``)."""
    environ = os.environ if environ is None else environ
    inherited = environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None:
        # CUDA stops at the first entry it cannot use ("-1", "NoDevFiles"): so does this.
        devices: list[str] = []
        for entry in (e.strip() for e in inherited.split(",")):
            if not entry or entry.startswith("-") or entry == "NoDevFiles":
                break
            devices.append(entry)
        return HostGpus(tuple(devices), f"the inherited CUDA_VISIBLE_DEVICES={inherited!r}")
    return HostGpus(_nvidia_smi_gpus(), "nvidia-smi -L")


def _nvidia_smi_gpus() -> tuple[str, ...] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, check=True,
                             timeout=NVIDIA_SMI_TIMEOUT_S).stdout
    except (OSError, subprocess.SubprocessError):
        return None  # a broken driver: as if there were none to ask
    return tuple(m.group(1) for m in re.finditer(r"^GPU (\d+):", out, re.MULTILINE))


def make_slots(
    gpus: str | None, gpus_per_task: int | None, cpu_only: bool, concurrency: int | None,
    host: HostGpus | None = None,
) -> list[Slot]:
    """The slots an agent serves, from its command-line options; ``host``: its GPUs
    (default: ``host_gpus()``, read only when --gpus is given)."""
    if gpus and cpu_only:
        raise ConfigError("--gpus and --cpu-only exclude each other: pick one")
    if concurrency is not None and concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    if gpus:
        if concurrency is not None:
            raise ConfigError("--concurrency is for CPU slots; with --gpus use --gpus-per-task")
        host = host or host_gpus()
        ids = list(host.pick(None if gpus.strip() == "all" else parse_gpus(gpus)))
        per_task = gpus_per_task or len(ids)
        if per_task < 1 or len(ids) % per_task:
            raise ConfigError(
                f"--gpus-per-task {per_task} does not divide the {len(ids)} GPUs of --gpus "
                f"{gpus}: pick a divisor")
        groups = [tuple(ids[i:i + per_task]) for i in range(0, len(ids), per_task)]
        if host.devices is None:
            log.warning("cannot check --gpus %s: no nvidia-smi answers on this host, so "
                        "it may have no GPU; tasks get CUDA_VISIBLE_DEVICES as given", gpus)
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
