"""A configurable job for agent tests. Parameters (General/...):
steps, sleep (seconds per step), exit_code, print_mb, marker_dir, wait_for (count of
marker files to wait for, with a deadline), ignore_sigterm, first_attempt_hangs (on its
first attempt the job does not end after its steps but waits to be stopped, a minute at
most)."""

import json
import os
import signal
import sys
import time
from pathlib import Path

from hpo import Task

task = Task.init(project_name="agent-tests", task_name="job")
cfg = task.connect({"steps": 3, "sleep": 0.0, "exit_code": 0, "print_mb": 0,
                    "marker_dir": "", "wait_for": 0, "ignore_sigterm": False,
                    "first_attempt_hangs": False})
if cfg["ignore_sigterm"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if cfg["marker_dir"]:
    # Tell the test this job runs, with what it sees, then wait for its siblings.
    marker = Path(cfg["marker_dir"], f"{task.id}.txt")
    marker.write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>") + "|"
                      + os.environ.get("NVIDIA_VISIBLE_DEVICES", "<unset>"))
    deadline = time.monotonic() + 60
    while len(list(Path(cfg["marker_dir"]).glob("*.txt"))) < cfg["wait_for"]:
        if time.monotonic() > deadline:
            sys.exit("siblings never arrived")
        time.sleep(0.05)
if cfg["print_mb"]:
    line = "x" * 1023 + "\n"
    for _ in range(cfg["print_mb"] * 1024):
        sys.stdout.write(line)
logger = task.get_logger()
for step in range(cfg["steps"]):
    logger.report_scalar("metric", "value", float(step), step)
    print(f"step {step}", flush=True)
    time.sleep(cfg["sleep"])
if cfg["first_attempt_hangs"]:
    spec = json.loads(Path(os.environ["HPO_TASK_SPEC"]).read_text())
    if spec["attempt"] == 1:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        sys.exit("never stopped")
if cfg["exit_code"]:
    print("about to fail", file=sys.stderr, flush=True)
    sys.exit(cfg["exit_code"])
