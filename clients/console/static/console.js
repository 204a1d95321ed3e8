// Live inbox: when the daemon's inbox changes, fetch the page again and swap its <main>.
// (Server-sent events from /events; no other script, no external code: see the CSP.)
"use strict";
(function () {
  if (!document.body || document.body.dataset.live !== "inbox" || !window.EventSource) {
    return;
  }
  const source = new EventSource("/events");
  source.addEventListener("inbox", async function () {
    try {
      const answer = await fetch(window.location.pathname, { credentials: "same-origin" });
      if (!answer.ok) {
        return;
      }
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.querySelector("main");
      const main = document.querySelector("main");
      if (fresh && main) {
        main.replaceWith(fresh);
        const status = document.getElementById("live-status");
        if (status) {
          status.textContent = "Updated " + new Date().toLocaleTimeString();
        }
      }
    } catch (e) {
      // the next event tries again
    }
  });
})();
