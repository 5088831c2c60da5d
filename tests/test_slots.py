"""GPU and CPU slots from the agent's options, and its bad-input errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpo.agent.slots import HostGpus, host_gpus, make_slots, parse_gpus
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


TWO = HostGpus(("0", "1"), "nvidia-smi -L")


def test_gpus_all_takes_every_gpu_the_host_has():
    assert [s.gpus for s in make_slots("all", 1, False, None, TWO)] == [("0",), ("1",)]
    [both] = make_slots("all", None, False, None, TWO)
    assert both.environment()["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_an_inherited_cuda_visible_devices_is_what_the_indices_point_into():
    # Given an agent started with GPUs 2 and 3 (by UUID for one) visible to it
    host = host_gpus({"CUDA_VISIBLE_DEVICES": "2,GPU-5d3e"})
    assert host.devices == ("2", "GPU-5d3e")
    # Then its slot 0 is physical GPU 2, slot 1 the other, and all is both
    slots = make_slots("0-1", 1, False, None, host)
    assert [s.environment()["CUDA_VISIBLE_DEVICES"] for s in slots] == ["2", "GPU-5d3e"]
    assert make_slots("all", None, False, None, host)[0].gpus == ("2", "GPU-5d3e")
    # And CUDA's own rule: the list ends at the first invalid entry
    assert host_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,0"}).devices == ("1",)
    assert host_gpus({"CUDA_VISIBLE_DEVICES": ""}).devices == ()


@pytest.mark.parametrize(("gpus", "host", "message"), [
    ("0,2", TWO, "GPU 2 does not exist here \\(nvidia-smi -L gives GPUs 0-1\\)"),
    ("0", HostGpus((), "the inherited CUDA_VISIBLE_DEVICES=''"), "gives no GPU"),
    ("all", HostGpus((), "nvidia-smi -L"), "lists no GPU"),
    ("all", HostGpus(None, "nvidia-smi -L"), "no GPU found on this host"),
])
def test_gpus_this_host_does_not_have_are_one_clear_error(gpus, host, message):
    with pytest.raises(ConfigError, match=message):
        make_slots(gpus, None, False, None, host)


def test_gpus_that_cannot_be_checked_are_used_as_given_with_a_warning(caplog):
    [slot] = make_slots("0,1", None, False, None, HostGpus(None, "nvidia-smi -L"))
    assert slot.gpus == ("0", "1")
    assert "cannot check --gpus 0,1" in caplog.text


def test_hpo_agent_on_a_host_without_gpus_refuses_gpus_all(hpo_env):
    env = {k: v for k, v in hpo_env.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # as a container without GPUs gets it
    result = subprocess.run([sys.executable, "-m", "hpo.agent.cli", "--gpus", "all"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "lists no GPU" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_the_gpus_of_a_host_are_what_nvidia_smi_lists(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 9\n"
                    "echo 'GPU 0: NVIDIA H200 (UUID: GPU-aaa)'\n"
                    "echo 'GPU 1: NVIDIA H200 (UUID: GPU-bbb)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert host_gpus().devices == ("0", "1")
    assert [s.gpus for s in make_slots("all", 1, False, None)] == [("0",), ("1",)]
    with pytest.raises(ConfigError, match="GPU 3 does not exist here"):
        make_slots("3", None, False, None)
