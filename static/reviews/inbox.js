// The reviewer's inbox: keyboard, bulk selection and live updates. No framework.
//
// The server renders everything (the list and the pane are htmx partials); this file only
// moves a selection, submits the forms the server rendered, and asks htmx to re-fetch the
// list when a queue's websocket says something changed. Without it every link and form
// still works.
(function () {
  "use strict";

  const pane = () => document.getElementById("pane");
  const list = () => document.getElementById("inbox-list");
  const root = document.getElementById("inbox");
  const help = document.getElementById("help");

  let selectedId = null;
  let selectedIndex = -1;
  const picked = new Set();
  const ownActions = new Map(); // request id -> time of this tab's last decision on it

  // --- the selection -----------------------------------------------------------------------

  function rows() {
    const el = list();
    return el ? Array.from(el.querySelectorAll(".row")) : [];
  }

  function mark(row) {
    rows().forEach((r) => {
      const on = r === row;
      r.classList.toggle("is-selected", on);
      if (on) r.setAttribute("aria-current", "true");
      else r.removeAttribute("aria-current");
    });
  }

  function select(row, open) {
    if (!row) return;
    selectedId = row.dataset.id;
    selectedIndex = rows().indexOf(row);
    mark(row);
    row.scrollIntoView({ block: "nearest" });
    if (open) htmx.ajax("GET", row.dataset.url, { target: "#pane", swap: "innerHTML" });
  }

  function move(delta) {
    const all = rows();
    if (!all.length) return;
    let i = all.findIndex((r) => r.dataset.id === selectedId);
    if (i < 0) {
      // The selected request left the list (decided): the row now at its place is the next.
      i = selectedIndex < 0 ? 0 : selectedIndex + (delta > 0 ? 0 : -1);
    } else {
      i += delta;
    }
    select(all[Math.max(0, Math.min(all.length - 1, i))], true);
  }

  function restore() {
    // After the list was re-rendered: the same selection and the same ticked boxes.
    const all = rows();
    const row = all.find((r) => r.dataset.id === selectedId);
    if (row) {
      mark(row);
      selectedIndex = all.indexOf(row);
    }
    const present = new Set(all.map((r) => r.dataset.id));
    Array.from(picked).forEach((id) => { if (!present.has(id)) picked.delete(id); });
    all.forEach((r) => {
      const box = r.querySelector("input.pick");
      if (box) box.checked = picked.has(r.dataset.id);
    });
    countPicked();
  }

  function countPicked() {
    const count = document.getElementById("bulk-count");
    if (count) count.textContent = String(picked.size);
    const bar = document.getElementById("bulk-bar");
    if (bar) bar.classList.toggle("has-picks", picked.size > 0);
  }

  function togglePick() {
    const row = rows().find((r) => r.dataset.id === selectedId);
    const box = row && row.querySelector("input.pick");
    if (!box) return;
    box.checked = !box.checked;
    box.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // --- the pane ----------------------------------------------------------------------------

  function openForm(name) {
    const p = pane();
    const details = p && p.querySelector(`details[data-form="${name}"]`);
    if (!details) return;
    details.open = true;
    // A field with an error first, then the amount (the usual edit), then the first field.
    const field = details.querySelector(".has-error input, .has-error textarea, .has-error select")
      || details.querySelector("input.amount-input")
      || details.querySelector("input:not([type=hidden]), textarea, select");
    if (field) {
      field.focus();
      if (field.select && field.type !== "checkbox") field.select();
    }
  }

  function approve() {
    const p = pane();
    const form = p && p.querySelector('form[data-key="approve"]');
    if (form) form.requestSubmit();
  }

  function openedId() {
    const detail = document.getElementById("detail");
    return detail ? detail.dataset.id : null;
  }

  // --- keys --------------------------------------------------------------------------------

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  function showHelp(show) {
    if (!help) return;
    help.hidden = !show;
    if (show) help.querySelector("[data-help-close]").focus();
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      if (help && !help.hidden) showHelp(false);
      else if (typing(document.activeElement)) document.activeElement.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (help && !help.hidden && event.key !== "?") return;
    const actions = {
      j: () => move(1),
      k: () => move(-1),
      Enter: () => {
        const row = rows().find((r) => r.dataset.id === selectedId);
        if (row) select(row, true);
      },
      a: approve,
      e: () => openForm("edit"),
      r: () => openForm("reject"),
      x: togglePick,
      "?": () => showHelp(help ? help.hidden : false),
    };
    const action = actions[event.key];
    if (!action) return;
    if (event.key === "Enter" && !root) return;
    event.preventDefault();
    action();
  });

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-help-open]")) showHelp(true);
    if (event.target.closest("[data-help-close]") || event.target === help) showHelp(false);
    const row = event.target.closest("#inbox-list .row");
    if (row && event.target.closest(".row-main")) select(row, false);
  });

  document.addEventListener("change", (event) => {
    const box = event.target.closest("input.pick");
    if (!box) return;
    if (box.checked) picked.add(box.value);
    else picked.delete(box.value);
    countPicked();
  });

  document.addEventListener("htmx:afterSettle", (event) => {
    if (event.target.id === "inbox-list") restore();
    if (event.target.id === "pane") {
      const id = openedId();
      const row = rows().find((r) => r.dataset.id === id);
      if (row) {
        selectedId = id;
        selectedIndex = rows().indexOf(row);
        mark(row);
      }
      const detail = document.getElementById("detail");
      if (detail && detail.dataset.openForm) openForm(detail.dataset.openForm);
    }
  });

  document.addEventListener("htmx:beforeRequest", (event) => {
    // Remember this tab's own decisions, so their echo on the socket does not reload a pane
    // that already shows the outcome.
    const form = event.target.closest && event.target.closest("#pane form");
    const id = openedId();
    if (form && id) ownActions.set(id, Date.now());
  });

  // --- live updates ------------------------------------------------------------------------

  let refreshTimer = null;
  function refreshList() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => htmx.trigger(document.body, "inbox-refresh"), 150);
  }

  function refreshPane(requestId) {
    const id = openedId();
    if (!id || String(requestId) !== id) return;
    const own = ownActions.get(id);
    if (own && Date.now() - own < 3000) return;
    const p = pane();
    if (p && typing(document.activeElement) && p.contains(document.activeElement)) return;
    htmx.ajax("GET", root.dataset.detailUrl.replace(/0\/$/, `${id}/`), {
      target: "#pane",
      swap: "innerHTML",
    });
  }

  function liveState(state, text) {
    const el = document.getElementById("live-state");
    if (!el) return;
    el.dataset.state = state;
    el.textContent = text;
  }

  const sockets = new Map();
  function connect(queueId, attempt) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/queues/${queueId}/`);
    let subscribed = false;
    sockets.set(queueId, socket);
    socket.onmessage = (message) => {
      let data;
      try { data = JSON.parse(message.data); } catch (_) { return; }
      if (data.event === "subscribed") {
        subscribed = true;
        liveState("live", "live");
        // After a reconnect we may have missed events: fetch the list again.
        if (attempt > 0) refreshList();
        return;
      }
      refreshList();
      if (data.event !== "claimed") refreshPane(data.request);
    };
    socket.onclose = (event) => {
      sockets.delete(queueId);
      if (event.code === 4401 || event.code === 4404) return; // not allowed: do not retry
      liveState("down", "reconnecting…");
      const next = subscribed ? 1 : attempt + 1;
      const delay = Math.min(30000, 500 * 2 ** Math.min(next, 6)) * (0.75 + Math.random() / 2);
      setTimeout(() => connect(queueId, next), delay);
    };
  }

  if (root && root.dataset.live === "socket" && root.dataset.queues && window.WebSocket) {
    root.dataset.queues.split(",").filter(Boolean).forEach((id) => connect(id, 0));
  }
  if (root) restore();
})();
