// What the live pages share: polling a JSON endpoint with its ETag, drawing plotly
// figures in place, formatting numbers like the server does (formatting.py), and the
// stop buttons. No framework: the pages are small.
"use strict";

const hpo = (() => {
  const PERIOD_MS = 2000;
  const RETRY_MS = 5000;

  function number(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    if (Number.isInteger(value)) return String(value);
    return String(Number(value.toPrecision(4)));
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const minutes = Math.floor(seconds / 60);
    const secs = String(Math.floor(seconds) % 60).padStart(2, "0");
    if (minutes < 60) return `${minutes}m ${secs}s`;
    return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
  }

  function limit(used, total, unit = "") {
    const text = `${number(used)}${unit}`;
    return total === null || total === undefined ? text : `${text} / ${number(total)}${unit}`;
  }

  function short(id) { return id ? id.slice(0, 8) : "–"; }

  // With a login, the session's CSRF token (in a meta tag) goes with every POST; a 401
  // (the session ended) leads to the login page, which brings the user back here.
  const CSRF = document.querySelector('meta[name="hpo-csrf"]')?.content;

  function loginAgain(response) {
    if (response.status !== 401) return false;
    const here = window.location.pathname + window.location.search;
    window.location.assign(`/login?next=${encodeURIComponent(here)}`);
    return true;
  }

  function el(tag, attrs = {}, text = null) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== null) node.textContent = text;  // text, never HTML: names come from users
    return node;
  }

  function setField(name, text) {
    for (const node of document.querySelectorAll(`[data-field="${name}"]`)) {
      node.textContent = text;
    }
  }

  function setStatus(status) {
    for (const node of document.querySelectorAll('[data-field="status"]')) {
      node.textContent = status;
      node.className = `status status-${status}`;
    }
  }

  // Polls `url()` every PERIOD_MS; `onData(json)` returns true to keep polling. The
  // ETag goes back as If-None-Match: an unchanged view is a bodiless 304.
  function poll(url, onData) {
    let etag = null;
    const note = document.getElementById("updated");
    async function tick() {
      let next = PERIOD_MS;
      try {
        const headers = etag ? { "If-None-Match": etag } : {};
        const response = await fetch(url(), { headers, cache: "no-store" });
        if (loginAgain(response)) return;
        if (response.status === 200) {
          const data = await response.json();
          if (!onData(data)) next = null;
          // Only once drawn: a page that failed to draw asks for the whole answer again.
          etag = response.headers.get("ETag");
        } else if (response.status !== 304) {
          const body = await response.json().catch(() => ({}));
          throw new Error(body.message || `HTTP ${response.status}`);
        }
        if (note) note.textContent = `updated ${new Date().toLocaleTimeString()}` +
          (next === null ? " (finished: no more updates)" : "");
      } catch (error) {
        if (note) note.textContent = `cannot update: ${error.message}; retrying`;
        next = RETRY_MS;
      }
      if (next !== null) setTimeout(tick, next);
    }
    tick();
  }

  const PLOT_CONFIG = { responsive: true, displaylogo: false };

  function draw(div, figure) {
    Plotly.react(div, figure.data || [], figure.layout || {}, PLOT_CONFIG);
  }

  // One figure per key inside `container`, created on first sight, redrawn after.
  function drawAll(container, figures) {
    const keys = Object.keys(figures);
    if (keys.length) container.querySelector(".empty")?.remove();
    for (const key of keys) {
      let div = [...container.querySelectorAll(".plot")].find(d => d.dataset.key === key);
      if (!div) {
        div = el("div", { class: "plot", "data-key": key });
        const section = el("section", { class: "figure" });
        section.append(div);
        container.append(section);
      }
      draw(div, figures[key]);
    }
  }

  function stopButton(button, url, what) {
    if (!button) return;
    button.addEventListener("click", async () => {
      if (!window.confirm(`Stop this ${what}?`)) return;
      button.disabled = true;
      const headers = { "Content-Type": "application/json" };
      if (CSRF) headers["X-CSRF-Token"] = CSRF;
      const response = await fetch(url, { method: "POST", headers, body: "{}" });
      if (loginAgain(response)) return;
      const body = await response.json().catch(() => ({}));
      setField("message", body.message || `HTTP ${response.status}`);
      if (!response.ok) button.disabled = false;
    });
  }

  return { number, duration, limit, short, el, setField, setStatus, poll, draw, drawAll,
           stopButton };
})();
