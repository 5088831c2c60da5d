"""What a task's script sees of its process, for tests/test_preload.py: writes it as
JSON to the file named by its first argument, then ends the way its second says
(ok, exit3, raise, sigkill)."""

import json
import os
import signal
import sys

import psutil

from hpo import Task

marker: int = 1  # compiled with the script's own __future__ imports, not hpo's

task = Task.init(project_name="preload-tests", task_name="probe")
task.get_logger().report_scalar("probe", "value", 1.0, 0)
parent = psutil.Process(os.getppid()).cmdline()
seen = {
    "name": __name__, "file": __file__, "spec": repr(__spec__), "argv": sys.argv,
    "cwd": os.getcwd(), "path": sys.path, "env": dict(os.environ),
    "own_group": os.getpgrp() == os.getpid() and os.getsid(0) == os.getpid(),
    "cmdline": psutil.Process().cmdline(), "forked": "warm slot" in " ".join(parent),
    "parent": os.getppid(), "pid": os.getpid(), "stdin": sys.stdin.read(),
    "task_id": task.id,
    "annotations": repr(__annotations__),
    "marker_mod": "marker_mod" in sys.modules,  # a task preload: imported before it ran
}
with open(sys.argv[1], "w", encoding="utf-8") as f:
    json.dump(seen, f)
print("probe wrote", sys.argv[1], flush=True)
mode = sys.argv[2]
if mode == "exit3":
    print("about to fail", file=sys.stderr)
    sys.exit(3)
if mode == "raise":
    raise RuntimeError("the probe raised")
if mode == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
