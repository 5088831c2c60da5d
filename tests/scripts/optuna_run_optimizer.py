"""Runs an OptimizerOptuna optimization in its own process, for the resume test:
python optuna_run_optimizer.py BASE_TASK_ID QUEUE TOTAL_JOBS. Prints the optimizer id."""

import sys

from hpo.automation import (
    DiscreteParameterRange,
    HyperParameterOptimizer,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.automation.optuna import OptimizerOptuna

base, queue, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
opt = HyperParameterOptimizer(
    base_task_id=base,
    hyper_parameters=[UniformParameterRange("x", 0.0, 1.0),
                      UniformIntegerParameterRange("y", 1, 3),
                      DiscreteParameterRange("sleep", [0.1])],
    objective_metric_title="loss", objective_metric_series="total",
    objective_metric_sign="min", optimizer_class=OptimizerOptuna,
    max_number_of_concurrent_tasks=2, execution_queue=queue, total_max_jobs=total,
    auto_connect_task=False, seed=11, optuna_pruner="NopPruner")
print(opt.id, flush=True)
opt.start()
opt.wait()
