"""The tags that relate a job (a clone) to the rest of an optimization, in one place.

A clone of an optimization carries ``optimizer:<optimizer task id>`` and ``trial:<trial
id>``; ``budget:<n>`` when its strategy gave it an iteration budget of its own (BOHB,
ASHA); ``resume:<task id>`` when it continues that task's checkpoint (a promoted ASHA
trial). A job that ``save_top_k_tasks_only`` leaves out of the best is tagged ``archived``
(ClearML's word); ``unread:<parameter>`` names a parameter the script never read;
``stopped-by:<cause>:<attempt>`` who stopped it (``hpo.optimization.ends``). What a
clone was cloned from is a field of the task (``cloned_from``),
not a tag. Standard library only (the agent reads ``resume:``; the controller, the
summary and the simulated agent read the others).
"""

from __future__ import annotations

OPTIMIZER = "optimizer:"
TRIAL = "trial:"
BUDGET = "budget:"
RESUME = "resume:"
ARCHIVED = "archived"  # a plain tag, no value
# A parameter set on the task (a tuned one, in a clone) that the script never read: in a
# section it connected, under no key it connected or asked for. The SDK tags the run
# with it as the script ends; the controller stops a search whose tuned names it lists.
UNREAD = "unread:"
# Who stopped a job's attempt: ``stopped-by:limit:<attempt>`` or ``stopped-by:user:<attempt>``,
# set where the stop is asked (hpo.optimization.ends.stop_job).
STOPPED_BY = "stopped-by:"


def tag(kind: str, value: object) -> str:
    """``tag(TRIAL, "t1")`` -> ``"trial:t1"``."""
    return f"{kind}{value}"


def tag_value(tags: list[str], kind: str) -> str | None:
    """The value of the first tag of ``kind`` (``"t1"`` of ``trial:t1``), None without one."""
    for text in tags:
        if text.startswith(kind):
            return text[len(kind):]
    return None
