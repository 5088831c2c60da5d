// The optimization page: header, the best jobs, every job and the report's figures,
// refreshed from /api/optimizations/ID while the optimization is not final.
"use strict";

(() => {
  const page = document.getElementById("page");
  const stop = document.getElementById("stop");

  function jobRow(job, rank, parameters) {
    const tr = hpo.el("tr", { "data-task": job.task_id });
    tr.append(hpo.el("td", { class: "num muted" }, String(rank)));
    const link = hpo.el("a", { class: "id", href: `/tasks/${job.task_id}`, title: job.name },
                        hpo.short(job.task_id));
    const cell = hpo.el("td");
    cell.append(link);
    tr.append(cell);
    tr.append(hpo.el("td", { class: "num strong" }, hpo.number(job.objective)));
    tr.append(hpo.el("td", { class: "num" }, hpo.number(job.iteration)));
    for (const value of job.objectives.slice(1)) {  // several objectives: the others
      tr.append(hpo.el("td", { class: "num" }, hpo.number(value)));
    }
    for (const name of parameters) {
      const value = job.parameters[name];
      tr.append(hpo.el("td", { class: "num" },
                       typeof value === "number" ? hpo.number(value) : String(value ?? "–")));
    }
    const status = hpo.el("td");
    // How it ended, in the words of the counts above (hpo.optimization.ends).
    status.append(hpo.el("span", { class: `status status-${job.status}` },
                         job.end || job.status));
    tr.append(status);
    tr.append(hpo.el("td", { class: "num" }, hpo.duration(job.duration_s)));
    tr.append(hpo.el("td", { class: "muted" }, job.worker || "–"));
    return tr;
  }

  function fillTable(id, jobs, parameters, objectiveCount, empty) {
    const body = document.querySelector(`#${id} tbody`);
    const rows = jobs.map((job, i) => jobRow(job, i + 1, parameters));
    if (!rows.length) {
      const tr = hpo.el("tr", { class: "placeholder" });
      const columns = parameters.length + objectiveCount + 6;
      tr.append(hpo.el("td", { colspan: String(columns) }, empty));
      rows.push(tr);
    }
    body.replaceChildren(...rows);
  }

  function fillHeader(s) {
    hpo.setStatus(s.status);
    hpo.setField("message", s.message || "");
    hpo.setField("launched", hpo.limit(s.budget.jobs_launched, s.budget.total_max_jobs));
    for (const name of ["done", "running", "queued"]) {
      hpo.setField(name, String(s[name]));
    }
    for (const [words, count] of Object.entries(s.ends)) {
      hpo.setField(`end:${words}`, String(count));
    }
    hpo.setField("best", hpo.number(s.best_value));
    hpo.setField("compute", hpo.limit(s.budget.compute_min, s.budget.compute_time_limit, " min"));
    hpo.setField("wall", hpo.limit(s.budget.wall_min, s.budget.optimization_time_limit, " min"));
  }

  function show(data) {
    const s = data.summary;
    fillHeader(s);
    const objectives = s.objectives.length;
    fillTable("top-jobs", s.top, data.parameters, objectives, "no finished job yet");
    fillTable("all-jobs", s.jobs, data.parameters, objectives, "no job launched yet");
    for (const div of document.querySelectorAll(".figures .plot[data-stem]")) {
      const figure = data.figures[div.dataset.stem];
      if (figure) hpo.draw(div, figure);
    }
    if (data.final && stop) stop.remove();  // nothing left to stop
    return !data.final;
  }

  hpo.poll(() => page.dataset.api, show);
  hpo.stopButton(stop, page.dataset.stop, "optimization and all its jobs");
})();
