// The task page: status, scalars, machine monitor and the log (appended from a cursor),
// refreshed from /api/tasks/ID until the task is final; the reported plots, drawn once.
"use strict";

(() => {
  const page = document.getElementById("page");
  const stop = document.getElementById("stop");
  const log = document.getElementById("log");
  const MAX_LOG_LINES = 5000;
  let cursor = null;  // the last log line shown; null: ask for the tail

  function appendLog(lines) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    for (const line of lines) {
      log.append(hpo.el("span", { class: `line ${line.stream}` }, line.text + "\n"));
    }
    while (log.childNodes.length > MAX_LOG_LINES) log.firstChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function show(data) {
    const t = data.task;
    hpo.setStatus(t.status);
    hpo.setField("message", t.message || "");
    hpo.setField("worker", t.worker || "–");
    hpo.setField("attempt", String(t.attempt));
    hpo.setField("duration", hpo.duration(t.duration_s));
    hpo.setField("exit_code", t.exit_code === null ? "–" : String(t.exit_code));
    hpo.drawAll(document.getElementById("scalars"), data.scalars);
    hpo.drawAll(document.getElementById("monitor"), data.monitor);
    appendLog(data.log);
    cursor = data.log_cursor;
    // Only a queued or running task can be stopped: no button once it has ended.
    if (stop && !["queued", "running"].includes(t.status)) stop.remove();
    else if (stop) stop.disabled = t.stop_requested;
    return !data.final;
  }

  // The reported plots are drawn once, from the page (they are final when reported).
  const plots = document.getElementById("plots-data");
  if (plots) hpo.drawAll(document.getElementById("plots"), JSON.parse(plots.textContent));

  hpo.poll(() => cursor === null ? page.dataset.api : `${page.dataset.api}?log_after=${cursor}`,
           show);
  hpo.stopButton(stop, page.dataset.stop, "task");
})();
