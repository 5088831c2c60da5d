"""Like ClearML's examples/reporting/artifacts.py and artifacts_retrieval.py: upload a
dict, a numpy array, a DataFrame (if pandas is there), a file, a folder, a string and a
plain object, then read them back (imports changed to hpo; written for hpo's tests)."""

import json
import sys
from pathlib import Path

import numpy as np

from hpo import Task

task = Task.init(project_name="clearml-like", task_name="artifacts")
folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd() / "artifact-data"
folder.mkdir(parents=True, exist_ok=True)
(folder / "notes.txt").write_text("some notes\n")
(folder / "sub").mkdir(exist_ok=True)
(folder / "sub" / "weights.bin").write_bytes(bytes(range(256)))

task.upload_artifact("dictionary", {"legs": {"falcon": 2, "dog": 4}, "seen": [10, 2]},
                     metadata={"counting": "legs"})
task.upload_artifact("Numpy Eye", np.eye(5, 5))
try:
    import pandas as pd

    frame = pd.DataFrame({"legs": [2, 4]}, index=["falcon", "dog"])
    task.upload_artifact("Pandas", artifact_object=frame)
    # A watched DataFrame: what it holds when the task ends is what is kept.
    task.register_artifact("train", frame, metadata={"counting": "legs"})
    frame.loc["spider"] = [8]
except ImportError:
    pass
task.upload_artifact("local file", artifact_object=str(folder / "notes.txt"))
task.upload_artifact("local folder", artifact_object=folder)
task.upload_artifact("a string", "just text, not a path")
task.upload_artifact("an object", {1, 2, 3})

seen = {name: type(a.get()).__name__ for name, a in task.artifacts.items()}
back = task.artifacts["dictionary"].get()
eye = task.artifacts["Numpy Eye"].get()
print("RESULT " + json.dumps({"task_id": task.id, "types": seen, "dictionary": back,
                              "eye_trace": float(eye.trace()),
                              "object": sorted(task.artifacts["an object"].get())}))
