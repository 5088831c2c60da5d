// The front page: statuses, agents' heartbeats and queue lengths change all the time.
// It is re-read every few seconds and its content swapped in place (the server renders
// it: one template, no second renderer here), without reloading the page.
"use strict";

(() => {
  const PERIOD_MS = 3000;
  async function refresh() {
    try {
      const response = await fetch(window.location.pathname, { cache: "no-store" });
      // A session that ended is sent to the login page: go there, to come back after.
      if (response.redirected && new URL(response.url).pathname === "/login") {
        window.location.assign(response.url);
        return;
      }
      if (response.ok) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html")
          .getElementById("live");
        if (fresh) document.getElementById("live").replaceWith(fresh);
      }
    } finally {
      setTimeout(refresh, PERIOD_MS);
    }
  }
  setTimeout(refresh, PERIOD_MS);
})();
