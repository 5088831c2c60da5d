"""GPU and CPU slots from the agent's options, and its bad-input errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpo.agent.slots import make_slots, parse_gpus
from hpo.errors import ConfigError


def test_gpu_lists_and_ranges_parse():
    assert parse_gpus("0,1") == ["0", "1"]
    assert parse_gpus("0-3") == ["0", "1", "2", "3"]
    assert parse_gpus("0-1,4") == ["0", "1", "4"]


def test_gpus_in_one_slot_or_one_per_task():
    [both] = make_slots("0,1", None, False, None)
    assert both.environment() == {"CUDA_VISIBLE_DEVICES": "0,1", "NVIDIA_VISIBLE_DEVICES": "0,1"}
    four = make_slots("0-3", 1, False, None)
    assert [s.environment()["CUDA_VISIBLE_DEVICES"] for s in four] == ["0", "1", "2", "3"]
    pairs = make_slots("0-3", 2, False, None)
    assert [s.gpus for s in pairs] == [("0", "1"), ("2", "3")]


def test_cpu_slots_hide_gpus_only_when_asked():
    assert [s.environment() for s in make_slots(None, None, False, 2)] == [{}, {}]
    assert make_slots(None, None, True, None)[0].environment() == {"CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize(
    ("gpus", "per_task", "cpu_only", "concurrency", "message"),
    [("0-3", 3, False, None, "does not divide"), ("a,b", None, False, None, "bad --gpus"),
     ("3-1", None, False, None, "bad --gpus"), ("0,0", None, False, None, "twice"),
     ("0", None, True, None, "exclude each other"), (None, 1, False, None, "needs --gpus"),
     (None, None, False, 0, "at least 1"), ("0,1", None, False, 2, "--gpus-per-task")],
)
def test_bad_slot_options_are_clear_errors(gpus, per_task, cpu_only, concurrency, message):
    with pytest.raises(ConfigError, match=message):
        make_slots(gpus, per_task, cpu_only, concurrency)


def test_hpo_agent_bad_input_is_one_line_and_exit_code_2(hpo_env):
    result = subprocess.run(
        [sys.executable, "-m", "hpo.agent.cli", "--gpus", "0-3", "--gpus-per-task", "3"],
        env=hpo_env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("hpo-agent: error:")
    assert len(result.stderr.strip().splitlines()) == 1
