// wfr ui's only script: a cell's details on click, and live refresh of the grid while runs or
// backfills are active (the server renders all HTML; this only swaps in its newer rendering).
// No framework and no build step: there are two behaviours, and nothing to download offline.
"use strict";
(() => {
  const REFRESH_MS = 3000;
  const token = document.documentElement.dataset.token;
  let picked = null; // the data-time of the cell shown in the detail panel

  function show(cell) {
    const panel = document.querySelector("#detail dl");
    if (!panel || !cell) return;
    picked = cell.dataset.time;
    document.querySelectorAll(".cell.picked").forEach((c) => c.classList.remove("picked"));
    cell.classList.add("picked");
    const rows = [["time", cell.dataset.time], ["state", cell.textContent + " " + cell.dataset.state],
                  ["execution", cell.dataset.execution || "-"], ["attempts", cell.dataset.attempts],
                  ["duration", cell.dataset.duration], ["error", cell.dataset.error || "-"]];
    panel.replaceChildren(...rows.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = name;
      dd.textContent = value;
      dd.dataset.field = name;
      return [dt, dd];
    }));
    document.querySelector("#detail .hint")?.remove();
    // The re-run of this one time: offered once it ran and is not running (the server checks again).
    const form = document.querySelector("#detail form.rerun-one");
    if (!form) return;
    const state = cell.dataset.state;
    const why = state === "missing" ? "Never ran: use Backfill missing."
      : state === "running" ? "Still running."
      : state === "queued" ? "Waiting for a free slot of its job." : "";
    form.elements.time.value = cell.dataset.time;
    const button = form.querySelector("button");
    button.dataset.rerunTime = cell.dataset.time;
    button.disabled = why !== "";
    button.textContent = "Re-run " + cell.dataset.time + "…";
    form.querySelector(".reason").textContent = why;
    // On a phone the panel sits below the grid: bring it into view.
    if (window.matchMedia("(max-width: 820px)").matches) form.closest("#detail").scrollIntoView({block: "nearest"});
  }

  document.addEventListener("click", (event) => {
    const cell = event.target.closest(".cell");
    if (cell && document.querySelector("#detail")) show(cell);
  });

  async function refresh() {
    const live = document.getElementById("live");
    if (!live || live.dataset.live !== "1") return;
    try {
      const answer = await fetch(live.dataset.src, {headers: {"X-Wfr-Token": token}, cache: "no-store"});
      if (!answer.ok) return;
      const next = document.createElement("div");
      next.innerHTML = await answer.text();
      const fresh = next.querySelector("#live");
      if (!fresh) return;
      live.replaceWith(fresh);
      if (picked) show([...fresh.querySelectorAll(".cell")].find((c) => c.dataset.time === picked));
    } catch (error) {
      // the server stopped or the network blinked: try again at the next tick
    }
  }
  setInterval(refresh, REFRESH_MS);
})();
