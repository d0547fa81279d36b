// The curation queue's keys: j/k move between corrections, a accepts, e edits, d discards.
// No framework. The server renders every card with its forms and links; this file only
// moves a selection and submits (or follows) what the selected card already holds.
// Without it every form and link still works.
(function () {
  "use strict";

  const root = document.getElementById("curation");
  if (!root) return;

  const cards = () => Array.from(root.querySelectorAll(".candidate"));
  let selected = null;

  function select(card) {
    if (!card) return;
    cards().forEach((c) => {
      const on = c === card;
      c.classList.toggle("is-selected", on);
      if (on) c.setAttribute("aria-current", "true");
      else c.removeAttribute("aria-current");
    });
    selected = card;
    card.scrollIntoView({ block: "nearest" });
  }

  function move(delta) {
    const all = cards();
    if (!all.length) return;
    const i = selected ? all.indexOf(selected) + delta : 0;
    select(all[Math.max(0, Math.min(all.length - 1, i))]);
  }

  function act(key) {
    if (!selected) return;
    const target = selected.querySelector(`[data-key="${key}"]`);
    if (!target) return;
    if (target.tagName === "A") window.location.assign(target.href);
    else target.requestSubmit();
  }

  function typing(el) {
    return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && typing(document.activeElement)) {
      document.activeElement.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    const actions = {
      j: () => move(1),
      k: () => move(-1),
      a: () => act("accept"),
      e: () => act("edit"),
      d: () => act("discard"),
    };
    const action = actions[event.key];
    if (!action) return;
    event.preventDefault();
    action();
  });

  root.addEventListener("click", (event) => {
    const card = event.target.closest(".candidate");
    if (card) select(card);
  });

  // The first card is the one the keys act on until another is chosen.
  select(cards()[0]);
})();
