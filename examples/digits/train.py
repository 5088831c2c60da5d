"""Digits: a linear classifier of 8x8 handwritten digits, trained one epoch per iteration.

scikit-learn ships the data (``load_digits``: 1,797 images, no download). An
``SGDClassifier`` learns with ``partial_fit`` over mini-batches; after each epoch the
accuracy on a fixed validation split is reported, so the optimizer can watch (and stop)
a job while it runs. A job takes about a second.

Run it by hand (``python examples/digits/train.py``) and it is registered as a template
task; ``hpo-controller start examples/digits/hpo.yaml --local-agents 2`` optimizes it.

It checkpoints after every epoch (``task.checkpoint_dir`` + ``task.save_checkpoint``): a
job that ASHA promotes continues from its parent's model (``task.resume_checkpoint``,
``task.resume_iteration``) instead of training again from the first epoch.
"""

import os
import pickle

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from hpo import Task

task = Task.init(project_name="examples", task_name="digits")
# Under an agent, connect() returns the clone's values, with the types written here.
config = task.connect({
    "alpha": 1e-4,               # L2/L1 regularisation strength
    "eta0": 0.01,                # initial learning rate (not used by "optimal")
    "learning_rate": "optimal",  # optimal, constant, invscaling or adaptive
    "penalty": "l2",             # l2, l1 or elasticnet
    "epochs": 10,
    "batch_size": 128,
})

digits = load_digits()
x_train, x_val, y_train, y_val = train_test_split(
    digits.data, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
scaler = StandardScaler().fit(x_train)
x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
classes = np.unique(digits.target)

model = SGDClassifier(loss="hinge", alpha=config["alpha"], eta0=config["eta0"],
                      learning_rate=config["learning_rate"], penalty=config["penalty"],
                      random_state=0)
rng = np.random.default_rng(0)
first_epoch = 0
if task.resume_checkpoint is not None:  # a promoted job: continue the parent's training
    with open(task.resume_checkpoint / "model.pkl", "rb") as f:
        model, rng = pickle.load(f)
    first_epoch = task.resume_iteration + 1
logger = task.get_logger()
batch_size = max(1, int(config["batch_size"]))
accuracy = 0.0
for epoch in range(first_epoch, int(config["epochs"])):
    order = rng.permutation(len(x_train))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        model.partial_fit(x_train[batch], y_train[batch], classes=classes)
    accuracy = float(model.score(x_val, y_val))
    logger.report_scalar("validation", "accuracy", accuracy, epoch)
    logger.report_scalar("validation", "error", 1.0 - accuracy, epoch)
    # Written aside and renamed: a job stopped mid-write leaves the last whole model.
    with open(task.checkpoint_dir / "model.tmp", "wb") as f:
        pickle.dump((model, rng), f)
    os.replace(task.checkpoint_dir / "model.tmp", task.checkpoint_dir / "model.pkl")
    task.save_checkpoint(epoch)
print(f"validation accuracy {accuracy:.4f} after {config['epochs']} epochs")
