// The /ops dashboard's live updates. Each server-sent "snapshot" event carries a "view":
// the dashboard's text, already formatted by the relay (relay/api/ops_page.py), the same
// view the page was first rendered from. This script formats nothing: it puts the view's
// strings into the page with textContent only.
(function () {
  "use strict";
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function cells(tr, list) {
    (list || []).forEach(function (c) { tr.appendChild(el("td", c.text, c.cls)); });
  }
  function timeline(lines) {
    var ol = el("ol", null, "timeline");
    (lines || []).forEach(function (line) { ol.appendChild(el("li", line)); });
    return ol;
  }
  function renderSummary(summary) {
    Object.keys(summary || {}).forEach(function (id) {
      var node = document.getElementById(id);
      if (!node) return;
      node.textContent = summary[id].text;
      node.className = summary[id].cls;
    });
  }
  function renderAuthorities(rows) {
    var body = document.getElementById("authorities-body");
    body.replaceChildren.apply(body, (rows || []).map(function (a) {
      var tr = el("tr");
      tr.dataset.authority = a.id;
      var who = el("td");
      who.appendChild(el("span", a.id, "id"));
      who.appendChild(el("div", a.name, "muted"));
      tr.appendChild(who);
      cells(tr, a.cells);
      return tr;
    }));
  }
  function renderEscalations(rows, none) {
    var body = document.getElementById("escalations-body");
    var trs = (rows || []).map(function (m) {
      var tr = el("tr");
      tr.dataset.message = m.id;
      cells(tr, m.cells);
      var td = el("td");
      td.appendChild(timeline(m.timeline));
      tr.appendChild(td);
      return tr;
    });
    if (!trs.length) {
      var tr = el("tr", null, "none");
      var td = el("td", none, "muted");
      td.colSpan = body.dataset.columns;
      tr.appendChild(td);
      trs.push(tr);
    }
    body.replaceChildren.apply(body, trs);
  }
  function render(view) {
    renderSummary(view.summary);
    renderAuthorities(view.authorities);
    renderEscalations(view.escalations, view.no_escalations);
  }

  var live = document.getElementById("live");
  if (!window.EventSource) return;
  var source = new EventSource("ops/events");
  source.addEventListener("snapshot", function (ev) {
    try {
      render(JSON.parse(ev.data).view);
      live.textContent = "live";
      live.className = "ok";
    } catch (err) {
      live.textContent = "bad update: " + err;
      live.className = "bad";
    }
  });
  source.addEventListener("problem", function (ev) {
    var p = {};
    try { p = JSON.parse(ev.data); } catch (err) { p = {}; }
    live.textContent = "relay problem: " + (p.detail || "unknown");
    live.className = "bad";
  });
  source.onerror = function () { live.textContent = "reconnecting\u2026"; live.className = "warn"; };
})();
