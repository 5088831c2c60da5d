"""Like ClearML's examples/reporting/configuration_including_hyperparameters.py and
hyper_parameters.py: user properties, a connected dict changed after connect, a
TaskParameters class, configuration objects from a dict and from a file, argparse,
tags and a comment (imports changed to hpo; written for hpo's tests). It prints what it
ran with, so a test can see an agent's overrides."""

import json
import sys
import time
from argparse import ArgumentParser
from enum import Enum
from pathlib import Path

from hpo import Task
from hpo.task_parameters import TaskParameters, param, percent_param

task = Task.init(project_name="clearml-like", task_name="configuration")
task.set_user_properties(custom1="great", custom2=True)
task.set_user_properties({"name": "custom3", "value": 1, "description": "a number"})
task.add_tags(["example", "configuration"])
task.set_comment("configured by the example")


class Color(Enum):
    RED = "red"


parameters = {"list": [1, 2, 3], "dict": {"a": 1, "b": 2}, "tuple": (1, 2, 3), "int": 3,
              "float": 2.2, "string": "my string", "color": Color.RED}
parameters = task.connect(parameters)
# Changed after connect: recorded too, as ClearML does.
parameters["new_param"] = "this is new"
parameters["float"] = 9.9


class MyTaskParameters(TaskParameters):
    iterations = param(type=int, desc="Number of iterations to run", range=(0, 100000))
    target_accuracy = percent_param(desc="The target accuracy of the model")


my_parameters = MyTaskParameters(iterations=1000, target_accuracy=0.95)
my_parameters = task.connect(my_parameters, name="from TaskParameters-like object")

nested = {"list_of_dicts": [{"a": 1}, {"b": 2}], "nested": {"key": "value", "number": 42},
          "learning_rate": 0.01}
nested = task.connect_configuration(nested, name="configuration dictionary")

config_file = Path(sys.argv[0]).with_name("model_config.yaml")
local_config = task.connect_configuration(config_file, name="model file")

if __name__ == "__main__":
    parser = ArgumentParser()
    parser.add_argument("--argparser_int_value", type=int, default=1)
    parser.add_argument("--argparser_disabled", action="store_true", default=False)
    args = parser.parse_args()
    print(f"Running under Python {sys.version_info[0]}.{sys.version_info[1]}", file=sys.stderr)
    # A change well after connect, inside the "training loop": the watcher records it.
    for step in range(3):
        parameters["step_seen"] = step
        time.sleep(0.01)
    task.get_logger().report_scalar("accuracy", "total", nested["learning_rate"] * 10, 0)
    print("RESULT " + json.dumps({
        "task_id": task.id, "int": parameters["int"], "learning_rate": nested["learning_rate"],
        "config_text": Path(local_config).read_text(), "iterations": my_parameters.iterations,
        "argparser_int_value": args.argparser_int_value,
        "properties": task.get_user_properties(value_only=True), "tags": task.get_tags()}))
