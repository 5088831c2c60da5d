"""Runs an optimization in its own process, for the controller's crash tests:
python run_optimizer.py BASE_TASK_ID QUEUE TOTAL_JOBS. Prints the optimizer task id."""

import sys

from hpo.automation import (
    DiscreteParameterRange,
    HyperParameterOptimizer,
    UniformParameterRange,
)

base, queue, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
opt = HyperParameterOptimizer(
    base_task_id=base,
    hyper_parameters=[UniformParameterRange("x", 0.0, 1.0, step_size=0.1),
                      DiscreteParameterRange("sleep", [0.05, 0.1])],
    objective_metric_title="loss", objective_metric_series="total",
    objective_metric_sign="min", optimizer_class="grid",
    max_number_of_concurrent_tasks=2, execution_queue=queue, total_max_jobs=total,
    auto_connect_task=False)
print(opt.id, flush=True)
opt.start()
opt.wait()
