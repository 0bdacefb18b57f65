// autoswarm dashboard: live updates over Server-Sent Events.
// Everything from the server is data: it is written with textContent and never parsed as HTML,
// and links are taken only when they are paths on this node. No framework, no inline script.
"use strict";
(() => {
  const MAX_FEED = 200;          // items kept in the feed list
  const MAX_CREDITS = 50;        // items kept in the credit history
  const CHART_REFRESH_MS = 5000; // charts reload at most this often
  const body = document.body;
  if (body.dataset.page !== "index") return;

  const $ = (id) => document.getElementById(id);
  let lastChartsAt = 0, chartTimer = null, lastRow = Number(body.dataset.row || 0);

  function link(text, href) {
    if (typeof href === "string" && href.startsWith("/") && !href.startsWith("//")) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      return a;
    }
    return document.createTextNode(text);
  }

  function fillTable(id, table) {
    const el = $(id);
    if (!el || !table) return;
    const head = document.createElement("tr");
    for (const name of table.columns) {
      const th = document.createElement("th");
      th.textContent = name;
      head.append(th);
    }
    el.tHead.replaceChildren(head);
    const rows = table.rows.map((row) => {
      const tr = document.createElement("tr");
      for (const c of row) {
        const td = document.createElement("td");
        td.append(link(String(c.text), c.href));
        tr.append(td);
      }
      return tr;
    });
    if (rows.length === 0) {
      const tr = document.createElement("tr"), td = document.createElement("td");
      td.className = "empty";
      td.colSpan = Math.max(1, table.columns.length);
      td.textContent = "none yet";
      tr.append(td);
      rows.push(tr);
    }
    el.tBodies[0].replaceChildren(...rows);
  }

  function itemNode(item) {
    const li = document.createElement("li");
    li.dataset.row = String(item.row);
    li.dataset.kind = String(item.kind);
    const time = document.createElement("time");
    time.textContent = String(item.time);
    const kind = document.createElement("span");
    kind.className = "kind k-" + String(item.kind).replace(/[^a-z]/g, "");
    kind.textContent = String(item.kind);
    const text = document.createElement("span");
    text.className = "text";
    text.append(link(String(item.text), item.href));
    li.append(time, " ", kind, " ", text);
    return li;
  }

  function prepend(list, items, max) {
    if (!list || items.length === 0) return;
    const seen = new Set([...list.children].map((li) => li.dataset.row + ":" + li.dataset.kind));
    const fresh = items.filter((i) => !seen.has(i.row + ":" + i.kind)).slice(-max).reverse();
    list.prepend(...fresh.map(itemNode));
    while (list.children.length > max) list.lastElementChild.remove();
  }

  function refreshCharts() {
    chartTimer = null;
    lastChartsAt = Date.now();
    for (const img of document.querySelectorAll("img[data-chart]")) {
      img.src = img.dataset.chart + "?v=" + lastRow;
    }
  }

  function scheduleCharts() {
    if (chartTimer !== null) return;
    const wait = Math.max(0, lastChartsAt + CHART_REFRESH_MS - Date.now());
    chartTimer = setTimeout(refreshCharts, wait);
  }

  function applySummary(s) {
    for (const [key, value] of Object.entries(s.stats)) {
      const el = $("s-" + key);
      if (el) el.textContent = String(value);
    }
    for (const [name, table] of Object.entries(s.tables)) fillTable("t-" + name, table);
    $("c-balance").textContent = s.credits.balance;
    $("c-minted").textContent = s.credits.minted;
  }

  function apply(message) {
    const items = message.items || [];
    if (message.reset) {
      $("feed").replaceChildren();
      $("credit-feed").replaceChildren();
    }
    prepend($("feed"), items, MAX_FEED);
    prepend($("credit-feed"), items.filter((i) => i.kind === "mint" || i.kind === "transfer"), MAX_CREDITS);
    if (message.summary) applySummary(message.summary);
    if (items.length > 0) {
      lastRow = Math.max(lastRow, ...items.map((i) => i.row));
      scheduleCharts();
    }
  }

  const live = $("live");
  const source = new EventSource("/dashboard/events?after=" + lastRow);
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live off"; });
  source.addEventListener("update", (event) => apply(JSON.parse(event.data)));
  lastChartsAt = Date.now();
})();
