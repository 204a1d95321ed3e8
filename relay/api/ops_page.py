"""The ``/ops`` dashboard: one server-rendered HTML page, no external assets.

The page is complete as served (every value escaped with :func:`html.escape`), so it
reads without JavaScript. Its inline script then follows ``ops/events`` (server-sent
events) and redraws the same tables from each JSON snapshot, building DOM nodes with
``textContent`` only; the message search asks ``ops/messages/{id}``. Style and script
carry the per-response CSP nonce. URLs are relative, so the page also works behind a
reverse proxy under a path prefix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from relay.status import fmt_age, fmt_event, fmt_latency, fmt_presence, fmt_time

Json = Mapping[str, Any]

AUTHORITY_COLUMNS = (
    "Authority",
    "Daemon",
    "Last seen",
    "Last probe",
    "Queue",
    "Oldest unacked",
    "Open escalations",
    "Latency p50",
    "Latency p95",
)
ESCALATION_COLUMNS = ("Message", "From", "To", "Priority", "Step", "State", "Timeline")
TIMELINE_COLUMNS = ("Status", "By", "Signed at", "Received at", "Detail")

CSS = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700;
  --muted: #6e7781; --line: #d0d7de; --head: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root { --line: #30363d; --head: #161b22; } }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 1.5rem 2rem; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; align-items: baseline;
  padding: 1rem 0 .5rem; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.25rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
.muted { color: var(--muted); }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--head); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
ol.timeline { margin: 0; padding-left: 1.2rem; }
form { display: flex; gap: .5rem; margin: .5rem 0; }
input[type=search] { flex: 1; max-width: 32rem; padding: .3rem .5rem; font: inherit; }
button { font: inherit; padding: .3rem .8rem; }
#timers span { margin-right: 1.5rem; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtTime(ms) {
    if (ms === null || ms === undefined) return "\u2014";
    var d = new Date(ms);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "Z";
  }
  function fmtAge(s) {
    if (s === null || s === undefined) return "\u2014";
    s = Math.floor(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
  }
  function fmtLatency(s) {
    if (s === null || s === undefined) return "\u2014";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return s.toFixed(1) + " s";
    return fmtAge(s);
  }
  function fmtEvent(e) {
    var status = String(e.status) + (e.step ? " (" + e.step + ")" : "");
    return status + " by " + e.by + " at " + fmtTime(e.at);
  }
  function presence(a) {
    if (!a.connected) return "offline";
    return "connected" + (a.connections > 1 ? " x" + a.connections : "");
  }
  function stale(a) {  // connected, answered a probe once, but not lately
    return a.connected && a.reachable === false && a.probe_answered_at !== null;
  }
  function cell(tr, text, cls) { tr.appendChild(el("td", text, cls)); }
  function timelineList(events) {
    var ol = el("ol", null, "timeline");
    (events || []).forEach(function (e) { ol.appendChild(el("li", fmtEvent(e))); });
    return ol;
  }
  function renderAuthorities(snap) {
    var body = document.getElementById("authorities-body");
    var rows = (snap.authorities || []).map(function (a) {
      var tr = el("tr");
      tr.dataset.authority = a.id;
      var who = el("td");
      who.appendChild(el("span", a.id, "id"));
      who.appendChild(el("div", a.name, "muted"));
      tr.appendChild(who);
      cell(tr, presence(a), a.connected ? "presence ok" : "presence bad");
      cell(tr, a.connected ? "now" : fmtTime(a.last_seen));
      var probe = fmtTime(a.probe_answered_at);
      if (a.probe_rtt_ms !== null && a.probe_rtt_ms !== undefined) probe += " (" + a.probe_rtt_ms + " ms)";
      cell(tr, probe, stale(a) ? "warn" : "");
      cell(tr, a.queue_depth, "num queue");
      cell(tr, fmtAge(a.oldest_unacked_age_s), "num");
      cell(tr, a.open_escalations, "num" + (a.open_escalations ? " warn" : ""));
      cell(tr, fmtLatency(a.latency_p50_s), "num");
      cell(tr, fmtLatency(a.latency_p95_s), "num");
      return tr;
    });
    body.replaceChildren.apply(body, rows);
  }
  function renderEscalations(snap) {
    var body = document.getElementById("escalations-body");
    var list = snap.escalations || [];
    var rows = list.map(function (m) {
      var tr = el("tr");
      tr.dataset.message = m.id;
      cell(tr, m.id, "id");
      cell(tr, m.sender);
      cell(tr, (m.to || []).join(", "));
      cell(tr, m.priority);
      cell(tr, m.escalation_step || "\u2014", "warn");
      cell(tr, m.state);
      var td = el("td");
      td.appendChild(timelineList(m.timeline));
      tr.appendChild(td);
      return tr;
    });
    if (!rows.length) {
      var tr = el("tr", null, "none");
      var td = el("td", "No open escalations.", "muted");
      td.colSpan = 7;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
    document.getElementById("escalation-count").textContent = String(list.length);
  }
  function renderSummary(snap) {
    var t = snap.timers || {};
    var health = document.getElementById("health");
    health.textContent = snap.healthy ? "healthy" : (snap.problems || []).join("; ");
    health.className = snap.healthy ? "ok" : "bad";
    document.getElementById("timers-pending").textContent = String(t.pending);
    var od = document.getElementById("timers-overdue");
    od.textContent = String(t.overdue);
    od.className = t.overdue ? "bad" : "";
    document.getElementById("timers-next").textContent = fmtTime(t.next_due);
    document.getElementById("queued").textContent = String(snap.queued);
    document.getElementById("connected-daemons").textContent = String(snap.connected_daemons);
    document.getElementById("as-of").textContent = fmtTime(snap.now);
    document.getElementById("directory-version").textContent = String(snap.directory_version);
  }
  function render(snap) { renderSummary(snap); renderAuthorities(snap); renderEscalations(snap); }

  var live = document.getElementById("live");
  if (window.EventSource) {
    var source = new EventSource("ops/events");
    source.addEventListener("snapshot", function (ev) {
      try {
        render(JSON.parse(ev.data));
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
  }

  var form = document.getElementById("lookup");
  var out = document.getElementById("lookup-result");
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var id = form.elements.message.value.trim();
    if (!id) return;
    history.replaceState(null, "", "?message=" + encodeURIComponent(id));
    fetch("ops/messages/" + encodeURIComponent(id), {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (res) {
      out.replaceChildren();
      if (!res.ok) { out.appendChild(el("p", res.body.detail || "not found", "bad")); return; }
      var m = res.body;
      out.appendChild(el("p", m.id + " \u2014 from " + m.sender + " to " + (m.to || []).join(", ") +
        " \u2014 " + m.priority + ", " + m.state, "id"));
      var table = el("table");
      var head = el("tr");
      ["Status", "By", "Signed at", "Received at", "Detail"].forEach(function (h) { head.appendChild(el("th", h)); });
      table.appendChild(head);
      (m.timeline || []).forEach(function (e) {
        var tr = el("tr");
        cell(tr, String(e.status) + (e.step ? " (" + e.step + ")" : ""));
        cell(tr, e.by, "id");
        cell(tr, fmtTime(e.at));
        cell(tr, fmtTime(e.received_at));
        cell(tr, e.reason || "");
        table.appendChild(tr);
      });
      out.appendChild(table);
    }).catch(function (err) {
      out.replaceChildren(el("p", "lookup failed: " + err, "bad"));
    });
  });
})();
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _td(value: object, cls: str = "") -> str:
    attr = f' class="{_e(cls)}"' if cls else ""
    return f"<td{attr}>{_e(value)}</td>"


def _head(columns: Sequence[str], numeric: Sequence[str] = ()) -> str:
    cells = "".join(
        f'<th class="num">{_e(c)}</th>' if c in numeric else f"<th>{_e(c)}</th>" for c in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


def _timeline_list(events: Sequence[Json]) -> str:
    items = "".join(f"<li>{_e(fmt_event(e))}</li>" for e in events)
    return f'<ol class="timeline">{items}</ol>'


def _authority_row(a: Json) -> str:
    probe = fmt_time(a.get("probe_answered_at"))
    if a.get("probe_rtt_ms") is not None:
        probe += f" ({a['probe_rtt_ms']} ms)"
    stale = a.get("connected") and a.get("reachable") is False and a.get("probe_answered_at")
    probe_cls = "warn" if stale else ""  # connected, answered once, but not lately
    open_esc = a.get("open_escalations", 0)
    return (
        f'<tr data-authority="{_e(a.get("id"))}">'
        f'<td><span class="id">{_e(a.get("id"))}</span>'
        f'<div class="muted">{_e(a.get("name"))}</div></td>'
        + _td(fmt_presence(a), "presence ok" if a.get("connected") else "presence bad")
        + _td("now" if a.get("connected") else fmt_time(a.get("last_seen")))
        + _td(probe, probe_cls)
        + _td(a.get("queue_depth", 0), "num queue")
        + _td(fmt_age(a.get("oldest_unacked_age_s")), "num")
        + _td(open_esc, "num warn" if open_esc else "num")
        + _td(fmt_latency(a.get("latency_p50_s")), "num")
        + _td(fmt_latency(a.get("latency_p95_s")), "num")
        + "</tr>"
    )


def _escalation_row(m: Json) -> str:
    return (
        f'<tr data-message="{_e(m.get("id"))}">'
        + _td(m.get("id"), "id")
        + _td(m.get("sender"))
        + _td(", ".join(m.get("to", [])))
        + _td(m.get("priority"))
        + _td(m.get("escalation_step") or "—", "warn")
        + _td(m.get("state"))
        + f"<td>{_timeline_list(m.get('timeline', []))}</td></tr>"
    )


def _message_block(lookup: str, message: Json | None) -> str:
    if not lookup:
        return ""
    if message is None:
        return f'<p class="bad">no message {_e(lookup)}</p>'
    rows = "".join(
        "<tr>"
        + _td(str(e.get("status")) + (f" ({e['step']})" if e.get("step") else ""))
        + _td(e.get("by"), "id")
        + _td(fmt_time(e.get("at")))
        + _td(fmt_time(e.get("received_at")))
        + _td(e.get("reason") or "")
        + "</tr>"
        for e in message.get("timeline", [])
    )
    summary = (
        f"{message.get('id')} — from {message.get('sender')} to "
        f"{', '.join(message.get('to', []))} — {message.get('priority')}, {message.get('state')}"
    )
    return f'<p class="id">{_e(summary)}</p><table>{_head(TIMELINE_COLUMNS)}{rows}</table>'


def render_page(snap: Json, *, nonce: str, lookup: str = "", message: Json | None = None) -> str:
    timers = snap.get("timers", {})
    overdue = int(timers.get("overdue", 0))
    healthy = bool(snap.get("healthy"))
    authorities = "".join(_authority_row(a) for a in snap.get("authorities", []))
    escalations = snap.get("escalations", [])
    esc_rows = "".join(_escalation_row(m) for m in escalations) or (
        '<tr class="none"><td colspan="7" class="muted">No open escalations.</td></tr>'
    )
    numeric = ("Queue", "Oldest unacked", "Open escalations", "Latency p50", "Latency p95")
    n = _e(nonce)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>Relay {_e(snap.get("relay"))} — operations</title>
<style nonce="{n}">{CSS}</style>
</head>
<body>
<header>
  <h1>Relay <span class="id">{_e(snap.get("relay"))}</span></h1>
  <span>network <span class="id">{_e(snap.get("network"))}</span>,
    directory v<span id="directory-version">{_e(snap.get("directory_version"))}</span></span>
  <span id="health" class="{"ok" if healthy else "bad"}">{
        _e("healthy" if healthy else "; ".join(snap.get("problems", [])))
    }</span>
  <span>as of <span id="as-of">{_e(fmt_time(snap.get("now")))}</span>
    · <span id="live" class="muted">static</span></span>
</header>
<section id="summary">
  <h2>Queues and timers</h2>
  <p id="timers">
    <span>queued items: <b id="queued">{_e(snap.get("queued", 0))}</b></span>
    <span>connected daemons: <b id="connected-daemons">{
        _e(snap.get("connected_daemons", 0))
    }</b></span>
    <span>escalation timers pending: <b id="timers-pending">{
        _e(timers.get("pending", 0))
    }</b></span>
    <span>overdue: <b id="timers-overdue" class="{"bad" if overdue else ""}">{
        _e(overdue)
    }</b></span>
    <span>next due: <b id="timers-next">{_e(fmt_time(timers.get("next_due")))}</b></span>
  </p>
</section>
<section id="authorities">
  <h2>Authorities</h2>
  <table>{_head(AUTHORITY_COLUMNS, numeric)}<tbody id="authorities-body">{
        authorities
    }</tbody></table>
</section>
<section id="escalations">
  <h2>Open escalations (<span id="escalation-count">{len(escalations)}</span>)</h2>
  <table>{_head(ESCALATION_COLUMNS)}<tbody id="escalations-body">{esc_rows}</tbody></table>
</section>
<section id="message">
  <h2>Message timeline</h2>
  <form id="lookup" method="get" action="ops" role="search">
    <input type="search" name="message" placeholder="message id" value="{_e(lookup)}"
      aria-label="message id" autocomplete="off" spellcheck="false">
    <button type="submit">Look up</button>
  </form>
  <div id="lookup-result">{_message_block(lookup, message)}</div>
</section>
<script nonce="{n}">{SCRIPT}</script>
</body>
</html>
"""
