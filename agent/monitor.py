"""Samples a task's resource use: CPU and memory of its process tree, and its GPUs."""

from __future__ import annotations

import shutil
import subprocess

import psutil

from hpo.defaults import NVIDIA_SMI_TIMEOUT_S
from hpo.store import ScalarReport

MONITOR_TITLE = ":monitor:machine"
GPU_TITLE = ":monitor:gpu"


class ResourceMonitor:
    """``sample()`` returns scalars for the process tree rooted at ``pid`` and the
    given GPUs (where ``nvidia-smi`` answers)."""

    def __init__(self, pid: int, gpus: tuple[str, ...] | None) -> None:
        self._processes: dict[int, psutil.Process] = {}
        self._pid = pid
        self._gpus = gpus or ()
        self._nvidia_smi = shutil.which("nvidia-smi") if self._gpus else None

    def sample(self, iteration: int, now: float) -> list[ScalarReport]:
        cpu, rss = self._tree_usage()
        reports = [
            ScalarReport(MONITOR_TITLE, "cpu_percent", iteration, cpu, now),
            ScalarReport(MONITOR_TITLE, "memory_mb", iteration, rss / 2**20, now),
        ]
        for index, util, memory in self._gpu_usage():
            reports.append(ScalarReport(GPU_TITLE, f"gpu_{index}_utilization", iteration,
                                        util, now))
            reports.append(ScalarReport(GPU_TITLE, f"gpu_{index}_memory_mb", iteration,
                                        memory, now))
        return reports

    def _tree_usage(self) -> tuple[float, float]:
        try:
            root = psutil.Process(self._pid)
            current = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0, 0.0
        cpu = rss = 0.0
        alive: dict[int, psutil.Process] = {}
        for process in current:
            # Keep the same Process objects: cpu_percent measures since the last call.
            known = self._processes.get(process.pid, process)
            try:
                cpu += known.cpu_percent(interval=None)
                rss += known.memory_info().rss
                alive[process.pid] = known
            except psutil.Error:
                continue
        self._processes = alive
        return cpu, rss

    def _gpu_usage(self) -> list[tuple[str, float, float]]:
        if not self._nvidia_smi:
            return []
        try:
            out = subprocess.run(
                [self._nvidia_smi, "--query-gpu=index,uuid,utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S,
                check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        usage = []
        for line in out.splitlines():
            fields = [f.strip() for f in line.split(",")]
            # A slot names its GPUs by index, or by UUID when an inherited
            # CUDA_VISIBLE_DEVICES did.
            if len(fields) == 4 and (fields[0] in self._gpus or fields[1] in self._gpus):
                try:
                    usage.append((fields[0], float(fields[2]), float(fields[3])))
                except ValueError:
                    continue
        return usage
