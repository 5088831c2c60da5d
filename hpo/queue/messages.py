"""What an hpo task message is, and what becomes of anything else on a queue.

An hpo task message is a Celery protocol-2 message for ``hpo.run_task`` in JSON whose
arguments are one task id as the store makes them (``new_task_id``: 32 lowercase hex
digits) and no keyword arguments. Anything else (an entry pushed by hand onto a Redis
list, another program's message, a message for a task this app does not have) is logged
once, in one line, and dropped: it must never stop an agent, hold a slot or reach the
store. It is caught at the first layer that can see what is wrong with it:

* the virtual transports (Redis, the embedded broker) read a raw JSON envelope before
  kombu makes it a message: an entry that is not JSON, or JSON that is no kombu envelope,
  is dropped there (``hpo.queue.redis_transport``, the embedded broker's channel, and
  ``envelope_is_sound`` in each transport's ``_deliver``);
* the agent's Celery consumer checks every message with ``message_problem`` before
  Celery's own code sees it, and turns Celery's hooks for undecodable, unknown and
  invalid messages into the same one line (``hpo.agent.consumer``);
* the Celery task checks its arguments again (``arguments_problem``) before a slot is
  taken.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from celery.utils.time import maybe_iso8601
from kombu.serialization import loads as kombu_loads
from kombu.transport import TRANSPORT_ALIASES

from hpo import defaults

log = logging.getLogger("hpo.queue")

RUN_TASK = "hpo.run_task"
# hpo.store.tasks.new_task_id: uuid4().hex.
TASK_ID = re.compile(f"[0-9a-f]{{{defaults.TASK_ID_LEN}}}")
# A real message's body is about 100 bytes; anything this large is not one (and is not
# decoded at all).
MAX_BODY_BYTES = 64 * 1024
_PREVIEW_CHARS = 120


def preview(value: object) -> str:
    """``repr(value)`` cut to a readable length, on one line."""
    if isinstance(value, str | bytes) and len(value) > _PREVIEW_CHARS:
        return f"{value[:_PREVIEW_CHARS]!r}... ({len(value)} in all)"
    text = repr(value)
    if len(text) > _PREVIEW_CHARS:
        text = f"{text[:_PREVIEW_CHARS]}... ({len(text)} chars)"
    return text


def dropped(problem: str) -> None:
    """The one line logged for a message that is dropped."""
    log.warning("message dropped: %s", " ".join(problem.split()))


def task_id_problem(value: object) -> str | None:
    """None for a task id the store could have made; else what is wrong with it."""
    if not isinstance(value, str):
        return f"task id {preview(value)} is of type {type(value).__name__}, not a string"
    if not TASK_ID.fullmatch(value):
        return f"task id {preview(value)} is not 32 hex digits"
    return None


def arguments_problem(args: object, kwargs: object) -> str | None:
    """None for the arguments of ``hpo.run_task`` (one task id); else what is wrong."""
    if not isinstance(args, list | tuple) or len(args) != 1 or kwargs:
        return (f"{RUN_TASK} takes one task id, got args {preview(args)} and kwargs "
                f"{preview(kwargs)}")
    return task_id_problem(args[0])


def message_problem(message: Any) -> str | None:
    """None for a well-formed hpo task message (a kombu ``Message``); else what is
    wrong with it, for the log."""
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return (f"not a Celery task message (no task header; headers {preview(headers)}, "
                f"body {preview(message.body)})")
    name = headers["task"]
    if name != RUN_TASK:
        return f"unknown task {preview(name)}"
    if not isinstance(headers.get("id"), str):
        return f"{RUN_TASK} message without a Celery task id"
    problem = headers_problem(headers)
    if problem:
        return problem
    if message.content_type != "application/json":
        return (f"{RUN_TASK} message of content type {preview(message.content_type)}, "
                "not application/json")
    body = message.body
    if not isinstance(body, bytes | str):
        return f"{RUN_TASK} message with a body of type {type(body).__name__}"
    if len(body) > MAX_BODY_BYTES:
        return f"{RUN_TASK} message of {len(body)} bytes: {preview(body)}"
    try:
        decoded = kombu_loads(body, message.content_type, message.content_encoding,
                              accept={"application/json"})
    except Exception as exc:
        return f"{RUN_TASK} message whose body is not JSON ({exc}): {preview(body)}"
    if not (isinstance(decoded, list) and len(decoded) == 3
            and isinstance(decoded[2], dict)):
        return f"{RUN_TASK} body is not Celery's [args, kwargs, embed]: {preview(decoded)}"
    return arguments_problem(decoded[0], decoded[1])


def headers_problem(headers: dict[str, Any]) -> str | None:
    """None when Celery's strategy can make a request of these headers; else what is
    wrong: a header Celery parses (an ETA or expiry that is no ISO 8601 time, a time
    limit that is no pair of numbers, a retry count that is no integer...) would make it
    raise on the message, which must be dropped here instead."""
    for key in ("eta", "expires"):
        value = headers.get(key)
        if value is None:
            continue
        try:
            if not isinstance(value, str):
                raise TypeError(f"a {type(value).__name__}, not a string")
            maybe_iso8601(value)
        except (AttributeError, ValueError, TypeError, OverflowError) as exc:
            label = "ETA" if key == "eta" else key
            return f"invalid task message (invalid {label} value {preview(value)}: {exc})"
    limits = headers.get("timelimit")
    if limits and not (isinstance(limits, list | tuple) and len(limits) == 2
                       and all(_number_or_none(limit) for limit in limits)):
        return f"invalid task message (timelimit {preview(limits)} is no [soft, hard] pair)"
    retries = headers.get("retries")
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int)):
        return f"invalid task message (retries {preview(retries)} is no integer)"
    for key in ("shadow", "root_id", "parent_id", "group", "argsrepr", "kwargsrepr",
                "origin"):
        value = headers.get(key)
        if value is not None and not isinstance(value, str):
            return f"invalid task message ({key} {preview(value)} is no string)"
    if headers.get("stamped_headers") is not None and not isinstance(
            headers["stamped_headers"], list):
        return "invalid task message (stamped_headers is no list)"
    if headers.get("stamps") is not None and not isinstance(headers["stamps"], dict):
        return "invalid task message (stamps is no object)"
    return None


def _number_or_none(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def envelope_is_sound(raw: Any) -> bool:
    """Whether a virtual transport's raw entry is a kombu envelope it can make a message
    of (logged and False when not): kombu itself would raise in the consumer's loop."""
    problem = _envelope_problem(raw)
    if problem:
        dropped(f"{problem}: {preview(raw)}")
    return problem is None


def _envelope_problem(raw: Any) -> str | None:
    if not isinstance(raw, dict):
        return f"not a kombu message (a JSON {type(raw).__name__})"
    properties = raw.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"),
                                                          str):
        return "not a kombu message (no properties with a delivery tag)"
    info = properties.get("delivery_info")
    if not (isinstance(info, dict) and isinstance(info.get("exchange"), str)
            and isinstance(info.get("routing_key"), str)):
        return "not a kombu message (no delivery info)"
    if not isinstance(raw.get("headers") or {}, dict):
        return "not a kombu message (headers are not an object)"
    for key in ("body", "content-type", "content-encoding"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            return f"not a kombu message ({key} is not a string)"
    if properties.get("body_encoding") not in (None, "base64"):
        return f"unknown body encoding {preview(properties['body_encoding'])}"
    return None


def install() -> None:
    """Make ``redis://`` and ``rediss://`` broker URLs use ``hpo.queue.redis_transport``."""
    TRANSPORT_ALIASES["redis"] = "hpo.queue.redis_transport:Transport"
    TRANSPORT_ALIASES["rediss"] = "hpo.queue.redis_transport:Transport"
