// AstrID review: keyboard first. r/b/u label, j/k next/previous, s stretch, q queue, ? help.
// Every key does what a button or link on the page does; no build step, no dependencies.
"use strict";
(function () {
  const page = document.body.dataset.page;
  const help = document.getElementById("help");
  let busy = false;

  function typing(event) {
    const tag = (event.target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || event.target.isContentEditable;
  }
  function go(id) {
    const link = document.getElementById(id);
    if (link) { window.location.href = link.href; }
  }
  function submit(id) {
    const form = document.getElementById(id);
    if (form && !busy) { busy = true; form.submit(); }
  }
  function toggleHelp() {
    if (!help) { return; }
    if (help.open) { help.close(); } else { help.showModal(); }
  }
  function switchStretch() {
    const button = document.getElementById("stretch-button");
    if (!button) { return; }
    const next = button.dataset.stretch === "zscale" ? "asinh" : "zscale";
    document.querySelectorAll("img.stamp").forEach(function (img) { img.src = img.dataset[next]; });
    button.dataset.stretch = next;
    button.textContent = next + " (s: switch to " + (next === "zscale" ? "asinh" : "zscale") + ")";
  }

  // Queue: a selected row moved with j/k and opened with Enter/o.
  const rows = Array.from(document.querySelectorAll("tr.queue-row"));
  let selected = rows.length ? 0 : -1;
  function select(index) {
    if (!rows.length) { return; }
    selected = Math.max(0, Math.min(rows.length - 1, index));
    rows.forEach(function (row, i) { row.classList.toggle("selected", i === selected); });
    rows[selected].scrollIntoView({block: "nearest"});
  }
  if (page === "queue") { select(0); }

  const helpButton = document.getElementById("help-button");
  if (helpButton) { helpButton.addEventListener("click", toggleHelp); }
  const stretchButton = document.getElementById("stretch-button");
  if (stretchButton) { stretchButton.addEventListener("click", switchStretch); }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event)) { return; }
    if (event.key === "?") { toggleHelp(); event.preventDefault(); return; }
    if (help && help.open) { return; }
    if (event.key === "q") { window.location.href = "/queue"; return; }
    if (page === "candidate") {
      const actions = {r: "label-real", b: "label-bogus", u: "label-unsure"};
      if (actions[event.key]) { submit(actions[event.key]); event.preventDefault(); }
      else if (event.key === "j") { go("next"); }
      else if (event.key === "k") { go("previous"); }
      else if (event.key === "s") { switchStretch(); }
    } else if (page === "queue") {
      if (event.key === "j") { select(selected + 1); }
      else if (event.key === "k") { select(selected - 1); }
      else if ((event.key === "Enter" || event.key === "o") && selected >= 0) {
        window.location.href = rows[selected].dataset.href;
      }
    }
  });
})();
