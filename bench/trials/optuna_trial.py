"""The benchmark trial for Optuna's subprocess-per-trial peer: the same work as
hpo_trial.py, its reports printed as "REPORT iteration value" lines, which the worker
that started it passes to ``trial.report`` (and the last to ``tell``)."""

import time

T0 = time.time()  # first line: the cold start measurement ends here

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from branin import note_first_line, work  # noqa: E402

note_first_line(T0)
parser = argparse.ArgumentParser()
parser.add_argument("--x1", type=float, required=True)
parser.add_argument("--x2", type=float, required=True)
parser.add_argument("--reports", type=int, default=5)
parser.add_argument("--seconds", type=float, default=0.0)
args = parser.parse_args()

work(args.x1, args.x2, args.reports, args.seconds,
     lambda value, i: print(f"REPORT {i} {value!r}", flush=True))
