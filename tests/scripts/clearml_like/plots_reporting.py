"""Like ClearML's examples/reporting/scatter_hist_confusion_mat_reporting.py,
pandas_reporting.py, text_reporting.py and media_reporting.py: every Logger plot call a
training script makes, with the import changed from clearml to hpo (written for hpo's
tests, not copied). numpy is used as ClearML's examples use it; pandas only if present."""

import io
import json
import logging
import sys

import numpy as np

from hpo import Logger, Task


def report_plots(logger: Logger, iteration: int = 0) -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 10, size=10)
    logger.report_histogram("single histogram", "random counts", iteration=iteration,
                            values=counts, xaxis="bucket", yaxis="count")
    logger.report_histogram("two histograms", "series A", iteration=iteration,
                            values=rng.integers(0, 13, size=10), xaxis="bucket")
    logger.report_histogram("two histograms", "series B", iteration=iteration,
                            values=counts * 0.5, xaxis="bucket")
    matrix = rng.integers(0, 10, size=(4, 4))
    logger.report_confusion_matrix("confusion", "ignored", iteration=iteration,
                                   matrix=matrix, xaxis="predicted", yaxis="actual",
                                   xlabels=list("abcd"), ylabels=list("abcd"))
    logger.report_matrix("confusion, 0 at the top", "ignored", iteration=iteration,
                         matrix=matrix, yaxis_reversed=True)
    points = np.hstack((np.atleast_2d(np.arange(10)).T, rng.integers(0, 10, size=(10, 1))))
    for mode in ("lines", "markers", "lines+markers"):
        logger.report_scatter2d("scatter", f"series {mode}", iteration=iteration,
                                scatter=points, xaxis="x", yaxis="y", mode=mode)


def report_tables(logger: Logger, iteration: int = 0) -> None:
    logger.report_table("people", "list of rows", iteration=iteration, table_plot=[
        ["last name", "first name", "age"], ["Doe", "Jane", 31], ["Roe", "Rick", 44]])
    try:
        import pandas as pd
    except ImportError:
        return
    frame = pd.DataFrame({"legs": [2, 4, 8, 0], "wings": [2, 0, 0, 0],
                          "seen": [10, 2, float("nan"), 8]},
                         index=["falcon", "dog", "spider", "fish"])
    frame.index.name = "animal"
    logger.report_table("animals", "pandas with index", iteration=iteration, table_plot=frame)


def main() -> None:
    task = Task.init(project_name="clearml-like", task_name="plots reporting")
    print("reporting some graphs")
    logger = task.get_logger()
    report_plots(logger)
    report_tables(logger)
    logger.report_plotly("plotly", "a dict figure", iteration=0, figure={
        "data": [{"type": "scatter", "x": [1, 2, 3], "y": [3, 1, 2]}], "layout": {}})
    gradient = np.linspace(0, 1, 16 * 16 * 3).reshape(16, 16, 3)
    logger.report_image("image", "gradient", iteration=1, image=gradient)
    logger.report_media("html", "page", iteration=1,
                        stream=io.StringIO("<p>hello from a stream</p>"), file_extension="html")
    logger.report_text("a line for the log only", level=logging.DEBUG, print_console=False)
    logger.report_text("a line printed and logged")
    logger.report_single_value("accuracy", 0.93)
    for i in range(3):
        logger.report_scalar("loss", "train", 1.0 / (i + 1), iteration=i)
    print("a warning on stderr", file=sys.stderr)
    logger.flush()
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlalchemy", "celery"})
    print("RESULT " + json.dumps({"task_id": task.id, "heavy": heavy}))


if __name__ == "__main__":
    main()
