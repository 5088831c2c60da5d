"""bench/vs_optuna.py stays runnable: a tiny run of hpo (embedded, real agents and
controller) and its Optuna peer ends cleanly and prints its table and ratio line. No
timing is asserted: the numbers of a smoke run mean nothing."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_vs_optuna_quick_run_prints_its_ratios(tmp_path):
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vs_optuna.py"), "--quick", "--trials", "4",
         "--only", "hpo-embedded,optuna-journal", "--json", str(out)],
        capture_output=True, text=True, timeout=170, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "ratio overhead hpo-embedded / optuna-journal: " in run.stdout
    assert "controller CPU per job hpo-embedded" in run.stdout
    assert out.exists()


def test_vs_optuna_measures_the_hand_off_between_one_second_trials(tmp_path):
    """Four 1 s trials on two agents: a worker runs two in a row, and the hand-off
    between them, found from the trials' own lines (told apart by their parent), is a
    number, not nan."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vs_optuna.py"), "--quick",
         "--only", "util-hpo-embedded"],
        capture_output=True, text=True, timeout=170, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = re.search(r"util-hpo-embedded: .* hand-off (\S+) ms", run.stdout)
    assert found, run.stdout[-3000:]
    assert math.isfinite(float(found.group(1))), found.group(0)


def test_vs_optuna_refuses_an_unknown_case_in_one_line():
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "vs_optuna.py"), "--only", "hpo-embeded"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert "unknown case 'hpo-embeded'" in run.stderr
