// The console's only script (served by the daemon; the CSP allows no other, and no
// external code). Every page works without it; with it:
// - live pages (inbox, message, sent) fetch themselves again and swap their <main> when
//   the daemon says something changed (server-sent events from /events), unless the
//   person is typing in a form on it;
// - dates given in UTC get the viewer's own time beside them;
// - compose: the authority search filters the table as one types, the escalation plan
//   follows the priority and acknowledgement time chosen, the recipients not reachable
//   now are named, a list of items gets more rows, chosen photos are previewed.
"use strict";

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
    const local = when.toLocaleString(document.documentElement.lang || undefined, {
      dateStyle: "short", timeStyle: "short", timeZone: zone,
    });
    t.setAttribute("data-local", "1");
    t.append(" (" + local + " " + zone + ")");
  });
}

let typing = false;

function live() {
  if (!document.body || !document.body.dataset.live || !window.EventSource) {
    return;
  }
  document.addEventListener("input", function (e) {
    if (e.target.closest && e.target.closest("main form")) {
      typing = true;
    }
  });
  const source = new EventSource("/events");
  source.addEventListener("change", async function () {
    const active = document.activeElement;
    if (typing || (active && active.closest && active.closest("main form"))) {
      return; // never throw away what someone is typing; the next change tries again
    }
    try {
      const answer = await fetch(window.location.pathname + window.location.search, {
        credentials: "same-origin",
      });
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
          status.textContent = (status.dataset.updated || "Updated") + " " +
            new Date().toLocaleTimeString();
        }
      }
    } catch (e) {
      // the next event tries again
    }
  });
}

function filterRecipients() {
  const box = document.querySelector("input[data-filter]");
  const table = box && document.getElementById(box.dataset.filter);
  if (!box || !table) {
    return;
  }
  const apply = function () {
    const words = box.value.toLowerCase().trim().split(/\s+/).filter(Boolean);
    table.querySelectorAll("tbody tr[data-search]").forEach(function (row) {
      const picked = row.querySelector("input:checked") !== null;
      const match = words.every(function (w) { return row.dataset.search.includes(w); });
      row.hidden = !(picked || match);
    });
  };
  box.addEventListener("input", apply);
  box.form.addEventListener("submit", function (e) { e.preventDefault(); apply(); });
}

function duration(ms, units) {
  // As outgoing.duration says it: "10 min", "2 h", "1 h 55 min", "3 d".
  if (ms >= 86400000 && ms % 86400000 === 0) {
    return (ms / 86400000) + " " + units.d;
  }
  const minutes = Math.max(1, Math.round(ms / 60000));
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  if (hours && rest) {
    return hours + " " + units.h + " " + rest + " " + units.min;
  }
  return hours ? hours + " " + units.h : minutes + " " + units.min;
}

function plan() {
  const section = document.getElementById("plan");
  const priority = document.getElementById("priority");
  const ack = document.getElementById("ack_minutes");
  if (!section || !priority || !ack) {
    return;
  }
  const policies = JSON.parse(section.dataset.policies || "[]");
  const units = JSON.parse(section.dataset.units || "{}");
  const update = function () {
    const p = policies.find(function (x) { return x.priority === priority.value; });
    if (p) {
      let steps = { remind: p.remind_after_ms, release: p.release_after_ms, notify: p.notify_after_ms };
      const minutes = parseFloat(ack.value);
      if (!isNaN(minutes) && minutes * 60000 < steps.remind) {
        const shift = steps.remind - Math.max(minutes * 60000, 0);
        steps = { remind: steps.remind - shift, release: steps.release - shift, notify: steps.notify - shift };
      }
      section.querySelectorAll("li[data-step]").forEach(function (li) {
        const after = li.querySelector(".after");
        if (after && steps[li.dataset.step] !== undefined) {
          after.textContent = duration(steps[li.dataset.step], units);
        }
      });
      const hours = section.querySelector("[data-working-hours]");
      if (hours) {
        hours.hidden = !p.working_hours;
      }
    }
    const away = Array.from(document.querySelectorAll("#recipients tr[data-reachable=no]"))
      .filter(function (row) { return row.querySelector("input[name=to]:checked"); })
      .map(function (row) { return row.querySelector("input[name=to]").value; });
    const note = document.getElementById("unreachable");
    if (note) {
      note.hidden = away.length === 0;
      note.textContent = (section.dataset.unreachable || "%s").replace("%s", away.join(", "));
    }
  };
  priority.addEventListener("change", update);
  ack.addEventListener("input", update);
  document.querySelectorAll("#recipients input[name=to]").forEach(function (box) {
    box.addEventListener("change", update);
  });
  update();
}

function moreRows() {
  document.querySelectorAll("button[data-add-row]").forEach(function (button) {
    button.addEventListener("click", function () {
      const body = document.querySelector('table[data-items="' + button.dataset.addRow + '"] tbody');
      const last = body && body.lastElementChild;
      if (!last) {
        return;
      }
      const row = last.cloneNode(true);
      const next = body.children.length;
      row.querySelectorAll("input").forEach(function (input) {
        const parts = input.name.split(".");
        parts[1] = String(next);
        input.name = parts.join(".");
        input.value = "";
        input.setAttribute("aria-label",
          input.getAttribute("aria-label").replace(/\d+$/, String(next + 1)));
      });
      body.appendChild(row);
      row.querySelector("input").focus();
    });
  });
}

function previews() {
  const input = document.getElementById("photo");
  const box = document.getElementById("photo-preview");
  if (!input || !box) {
    return;
  }
  input.addEventListener("change", function () {
    box.replaceChildren();
    Array.from(input.files || []).forEach(function (file) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.alt = file.name;
      const caption = document.createElement("figcaption");
      caption.textContent = file.name;
      figure.append(img, caption);
      box.append(figure);
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  localTimes(document);
  filterRecipients();
  plan();
  moreRows();
  previews();
});
live();
