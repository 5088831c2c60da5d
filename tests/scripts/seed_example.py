# ruff: noqa: I001
# The example of ClearML's HPO page (../shared/seeds/), with only its imports changed
# from clearml to hpo. TEMPLATE_TASK_ID comes from the environment, set by the test.
import os

from hpo.automation import UniformParameterRange, UniformIntegerParameterRange
from hpo.automation import HyperParameterOptimizer
from hpo.automation.optuna import OptimizerOptuna

from hpo import Task

TEMPLATE_TASK_ID = os.environ["TEMPLATE_TASK_ID"]

task = Task.init(
    project_name='Hyper-Parameter Optimization',
    task_name='Automatic Hyper-Parameter Optimization',
    task_type=Task.TaskTypes.optimizer,
    reuse_last_task_id=False
)

optimizer = HyperParameterOptimizer(
      # specifying the task to be optimized, task must be in system already so it can be cloned
      base_task_id=TEMPLATE_TASK_ID,
      # setting the hyper-parameters to optimize
      hyper_parameters=[
          UniformIntegerParameterRange('number_of_epochs', min_value=2, max_value=12, step_size=2),
          UniformIntegerParameterRange('batch_size', min_value=2, max_value=16, step_size=2),
          UniformParameterRange('dropout', min_value=0, max_value=0.5, step_size=0.05),
          UniformParameterRange('base_lr', min_value=0.00025, max_value=0.01, step_size=0.00025),
          ],
      # setting the objective metric we want to maximize/minimize
      objective_metric_title='accuracy',
      objective_metric_series='total',
      objective_metric_sign='max',

      # setting optimizer
      optimizer_class=OptimizerOptuna,

      # configuring optimization parameters
      execution_queue='default',
      max_number_of_concurrent_tasks=2,
      optimization_time_limit=60.,
      compute_time_limit=120,
      total_max_jobs=20,
      min_iteration_per_job=15000,
      max_iteration_per_job=150000,
      )

# What ClearML's examples do next: run, wait, report, stop.
optimizer.start()
optimizer.wait()
print("top:", [t.id for t in optimizer.get_top_experiments(top_k=3)])
optimizer.stop()
