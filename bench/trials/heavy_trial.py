"""A trial that imports scikit-learn and SciPy at the top, as a real training script
does, then runs the trial named on its command line (hpo_trial.py or optuna_trial.py,
with that script's arguments): the imports are what ``hpo-agent --preload`` saves."""

import os
import runpy
import sys

import scipy.optimize  # noqa: F401
import sklearn.ensemble  # noqa: F401

target = os.path.join(os.path.dirname(os.path.abspath(__file__)), sys.argv[1])
sys.argv = [target, *sys.argv[2:]]
runpy.run_path(target, run_name="__main__")
