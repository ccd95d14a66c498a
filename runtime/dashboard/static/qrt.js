// The dashboard's live parts: server-sent events that replace fragments and redraw the overview's
// uPlot charts, and a live tail. (htmx handles the rest: polling and partial forms.)
"use strict";

function follow(root) {
  const source = new EventSource(root.dataset.sse);
  for (const target of root.querySelectorAll("[data-swap]")) {
    source.addEventListener(target.dataset.swap, (e) => { target.innerHTML = e.data; });
  }
  for (const section of root.querySelectorAll("[data-charts]")) {
    source.addEventListener("charts", (e) => draw(section, JSON.parse(e.data)));
  }
  const problem = document.getElementById("problem");
  source.addEventListener("problem", (e) => { problem.textContent = e.data; problem.hidden = !e.data; });
}

function tail(table) {
  const body = table.querySelector("tbody");
  const source = new EventSource(table.dataset.tail);
  source.addEventListener("ready", () => { table.dataset.ready = "1"; });
  const problem = document.getElementById("problem");
  source.addEventListener("problem", (e) => { problem.textContent = e.data; problem.hidden = !e.data; });
  source.addEventListener("row", (e) => {
    body.insertAdjacentHTML("afterbegin", e.data);
    while (body.rows.length > 500) body.deleteRow(-1);
  });
}

const CHARTS = {
  throughput: [["tasks/s", "throughput", "#2f6fdf"]],
  failed: [["failed", "failed", "#c9302c"]],
  wait: [["p50", "wait_p50", "#2f6fdf"], ["p95", "wait_p95", "#b46a00"]],
  run: [["p50", "run_p50", "#2f6fdf"], ["p95", "run_p95", "#b46a00"]],
};

const PLOTS = new WeakMap();  // a charts section -> its uPlot instances by name

function draw(section, data) {
  const plots = PLOTS.get(section) || {};
  PLOTS.set(section, plots);
  for (const box of section.querySelectorAll("[data-chart]")) {
    const lines = CHARTS[box.dataset.chart];
    const columns = [data.x, ...lines.map((l) => data[l[1]])];
    if (plots[box.dataset.chart]) { plots[box.dataset.chart].setData(columns); continue; }
    const options = {
      width: Math.max(box.clientWidth, 300), height: 180, legend: { show: true },
      // (percentiles have gaps, minutes without tasks: points show a lone minute's value)
      series: [{}, ...lines.map((l) => ({ label: l[0], stroke: l[2], width: 1.5, spanGaps: false,
                                          points: { show: l[1].includes("_p"), size: 4, fill: l[2] } }))],
      axes: [{}, { size: 56 }],
    };
    plots[box.dataset.chart] = new uPlot(options, columns, box);
  }
  section.dataset.drawn = String(data.x.length);
}


window.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-sse]").forEach(follow);
  document.querySelectorAll("[data-tail]").forEach(tail);
});
