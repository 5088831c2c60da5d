"""A training job that uses the GPU it was given: reports what CUDA shows it and the
result of a matrix product computed on the device, for a few seconds of real load."""

import os
import time

import torch

from hpo import Task

task = Task.init(project_name="gpu-tests", task_name="gpu job")
cfg = task.connect({"seconds": 3.0})
logger = task.get_logger()
print("CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"), flush=True)
available = torch.cuda.is_available()
logger.report_scalar("gpu", "available", float(available), 0)
logger.report_scalar("gpu", "device_count", float(torch.cuda.device_count()), 0)
if available:
    print("device=" + torch.cuda.get_device_name(0), flush=True)
    a = torch.ones(4096, 4096, device="cuda")
    deadline = time.monotonic() + cfg["seconds"]
    step = 0
    while time.monotonic() < deadline:  # keep the GPU busy so the monitor sees load
        product = a @ a
        torch.cuda.synchronize()
        step += 1
    # Every entry of ones @ ones is the inner dimension.
    logger.report_scalar("gpu", "product_ok", float(bool((product == 4096).all())), step)
    logger.report_scalar("gpu", "memory_allocated_mb",
                         torch.cuda.memory_allocated() / 2**20, step)
