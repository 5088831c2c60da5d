"""The benchmark trial through hpo's SDK: Task.init, connect (x1, x2), the Branin
function reported as objective/branin. ``--reports`` and ``--seconds`` shape the work."""

import time

T0 = time.time()  # first line: the cold start measurement ends here (Python start-up in)

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from branin import note_first_line, work  # noqa: E402

from hpo import Task  # noqa: E402

note_first_line(T0)
task = Task.init(project_name="bench", task_name="branin")
parser = argparse.ArgumentParser()
parser.add_argument("--reports", type=int, default=5)
parser.add_argument("--seconds", type=float, default=0.0)
args = parser.parse_args()
params = task.connect({"x1": 2.5, "x2": 7.5})
logger = task.get_logger()
work(params["x1"], params["x2"], args.reports, args.seconds,
     lambda value, i: logger.report_scalar("objective", "branin", value, iteration=i))
