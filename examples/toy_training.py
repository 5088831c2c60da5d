"""A toy training script: gradient descent on a quadratic, one step per iteration.

Run it by hand once (``python examples/toy_training.py``) and it is registered as a
template task that hpo can clone with other parameters; ``hpo task list`` shows it.
"""

import argparse

from hpo import Task

task = Task.init(project_name="examples", task_name="toy training")
config = {"learning_rate": 0.1, "momentum": 0.5, "iterations": 30}
task.connect(config)  # under an agent, the clone's values replace these

parser = argparse.ArgumentParser()
parser.add_argument("--start", type=float, default=5.0)  # recorded as Args/start
args = parser.parse_args()

logger = task.get_logger()
x, velocity = args.start, 0.0
for iteration in range(config["iterations"]):
    gradient = 2 * (x - 1.0)
    velocity = config["momentum"] * velocity - config["learning_rate"] * gradient
    x += velocity
    logger.report_scalar("loss", "train", (x - 1.0) ** 2, iteration)
print(f"final loss {(x - 1.0) ** 2:.6f}")
