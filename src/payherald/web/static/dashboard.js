// The live feed: rows for new events, and for events whose messages changed, as the
// server sends them on /api/feed. A row is built here with the markup of the template
// macro event_row (templates/macros.html): change both together. Data goes into the page
// only as text (textContent, attributes), never as markup.
"use strict";

(function () {
  const table = document.getElementById("feed");
  if (!table || !window.EventSource) {
    return;
  }
  const body = table.tBodies[0];
  const KINDS = ["succeeded", "failed", "dispute", "refund", "other"];
  const settings = table.dataset;
  const format = new Intl.DateTimeFormat("en-CA", {
    timeZone: settings.timezone || "UTC",
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });

  function when(iso) {
    const instant = new Date(iso);
    if (isNaN(instant.getTime())) {
      return "";
    }
    const part = {};
    for (const piece of format.formatToParts(instant)) {
      part[piece.type] = piece.value;
    }
    return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute}:${part.second}`;
  }

  function token(value) {
    // A class name made of the status the server sent, and nothing else.
    return String(value).replace(/[^a-z0-9_-]/gi, "");
  }

  function cell(row, name) {
    const td = document.createElement("td");
    td.className = name;
    row.appendChild(td);
    return td;
  }

  function eventRow(e) {
    const row = document.createElement("tr");
    const kind = KINDS.includes(e.kind) ? e.kind : "other";
    row.className = `event kind-${kind}` + (e.livemode ? "" : " test-mode");
    row.dataset.eventId = e.id;

    const time = document.createElement("time");
    time.setAttribute("datetime", e.received_at);
    time.textContent = when(e.received_at);
    cell(row, "received").appendChild(time);

    const type = cell(row, "type");
    const link = document.createElement("a");
    link.setAttribute("href", "/events/" + encodeURIComponent(e.id));
    link.textContent = e.type;
    type.appendChild(link);
    if (!e.livemode) {
      type.appendChild(document.createTextNode(" "));
      const badge = document.createElement("span");
      badge.className = "badge test";
      badge.textContent = "test";
      type.appendChild(badge);
    }

    cell(row, "amount").textContent = e.amount_text || "";
    cell(row, "customer").textContent = e.email || e.customer_name || e.customer || "";

    const list = document.createElement("ul");
    for (const n of e.notifications || []) {
      const item = document.createElement("li");
      item.className = `notification-status status-${token(n.status)}`;
      item.dataset.notificationId = String(n.id);
      item.textContent = `${n.rule} · ${n.channel}` + (n.to ? ` → ${n.to}` : "") +
        `: ${n.status}` +
        (n.delivery_status ? ` (${n.delivery_status})` : "");
      list.appendChild(item);
    }
    cell(row, "messages").appendChild(list);
    return row;
  }

  function wanted(e) {
    // A row the page would list: in its mode, of its kind, with a message in its status.
    if ((settings.mode === "live") !== Boolean(e.livemode)) {
      return false;
    }
    if (settings.kind && e.kind !== settings.kind) {
      return false;
    }
    return !settings.status ||
      (e.notifications || []).some((n) => n.status === settings.status);
  }

  function show(e) {
    const row = eventRow(e);
    for (const old of body.querySelectorAll("tr.event")) {
      if (old.dataset.eventId === e.id) {
        // An event already listed is replaced where it is, whatever the filters.
        old.replaceWith(row);
        return;
      }
    }
    if (settings.insert === "yes" && wanted(e)) {
      body.insertBefore(row, body.firstChild);
    }
  }

  const source = new EventSource("/api/feed?mode=" + encodeURIComponent(settings.mode));
  source.addEventListener("event", (message) => {
    let summary;
    try {
      summary = JSON.parse(message.data);
    } catch (error) {
      return;
    }
    if (summary && typeof summary.id === "string") {
      show(summary);
    }
  });
})();
