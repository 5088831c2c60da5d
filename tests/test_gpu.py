"""GPU assignment on a real GPU: the agent hands a job the device of its slot, the job's
CUDA sees exactly that device and computes on it, the monitor records the GPU's load, and
``--cpu-only`` hides it. Skipped where ``nvidia-smi`` lists no GPU or torch is missing:
CI machines have none, so these run only on a machine with a GPU (how: bench/README.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.agent.monitor import GPU_TITLE
from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import make_app
from hpo.records import ScriptInfo
from hpo.store import Store, open_store
from tests.agents import env_for, running_agent, wait_final


def _gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return [line for line in out.stdout.splitlines() if line.startswith("GPU ")]


pytestmark = [
    pytest.mark.slow, pytest.mark.timeout(240),
    pytest.mark.skipif(not _gpus(), reason="no GPU (nvidia-smi lists none)"),
]
torch = pytest.importorskip("torch")
JOB = Path(__file__).parent / "scripts" / "gpu_job.py"


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


def run_gpu_job(store: Store, env: dict[str, str], tmp_path: Path, queue: str,
                *agent_args: str) -> str:
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(tmp_path),
                        interpreter=sys.executable)
    template = store.create_task("gpu-tests", "gpu job", script=script,
                                 parameters={"General/seconds": 4.0})
    clone = store.clone_task(template.id, name="gpu job")
    with running_agent(store, env_for(env, broker), tmp_path, "--queue", queue,
                       "--monitor-period", "1", *agent_args):
        dispatch.enqueue(store, make_app(broker), clone.id, queue)
        task = wait_final(store, clone.id, timeout=180)
    assert task.status is Status.completed, (task.status_message, _log(store, clone.id))
    return clone.id


def _log(store: Store, task_id: str) -> str:
    return "\n".join(line.text for line in store.read_logs(task_id))


def _values(store: Store, task_id: str, title: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for s in store.task_scalars(task_id, title=title):
        out.setdefault(s.series, []).append(s.value)
    return out


def test_a_gpu_slot_gives_the_job_its_gpu_and_the_monitor_sees_the_load(
        store, hpo_env, tmp_path, queue_name):
    task_id = run_gpu_job(store, hpo_env, tmp_path, queue_name, "--gpus", "0")
    seen = _values(store, task_id, "gpu")
    assert seen["available"] == [1.0] and seen["device_count"] == [1.0]
    assert seen["product_ok"] == [1.0]
    assert "CUDA_VISIBLE_DEVICES=0" in _log(store, task_id)
    gpu = _values(store, task_id, GPU_TITLE)
    print("monitor:", {k: v for k, v in gpu.items()}, "log:", _log(store, task_id))
    assert max(gpu["gpu_0_utilization"]) > 0  # nvidia-smi saw the job's matrix products
    assert max(gpu["gpu_0_memory_mb"]) > 64  # the job's 3 x 64 MiB tensors at least


def test_cpu_only_hides_the_gpu_from_cuda(store, hpo_env, tmp_path, queue_name):
    task_id = run_gpu_job(store, hpo_env, tmp_path, queue_name, "--cpu-only")
    seen = _values(store, task_id, "gpu")
    assert seen["available"] == [0.0] and seen["device_count"] == [0.0]
    assert "product_ok" not in seen
    assert not _values(store, task_id, GPU_TITLE)
