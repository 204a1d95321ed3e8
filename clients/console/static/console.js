// Live inbox: when the daemon's inbox changes, fetch the page again and swap its <main>.
// (Server-sent events from /events; no other script, no external code: see the CSP.)
"use strict";
// Dates: the page says them in UTC; add the viewer's own time beside each.
function localTimes(root) {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone || zone === "UTC" || zone === "Etc/UTC") {
    return;
  }
  root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (t) {
    const when = new Date(t.getAttribute("datetime"));
    if (isNaN(when)) {
      return;
    }
    const local = when.toLocaleString(undefined, {
      dateStyle: "short", timeStyle: "short", timeZone: zone,
    });
    t.setAttribute("data-local", "1");
    t.append(" (" + local + " " + zone + ")");
  });
}
document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
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
        localTimes(fresh);
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
