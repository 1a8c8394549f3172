// Draws a measurement's per-layer chart (#layers-data, embedded by the server) with the locally served plotly.js:
// horizontal bars in graph order, one trace (and colour) per unit the layers ran on.
"use strict";
(function () {
  const source = document.getElementById("layers-data");
  const target = document.getElementById("plot-layers");
  if (!source || !target || typeof Plotly === "undefined") return;
  const data = JSON.parse(source.textContent);
  const colours = { gpu: "#1a7f37", npu: "#8250df", cpu: "#0a58ca" };
  const fallback = ["#9a6700", "#cf222e", "#57606a", "#bf3989"];
  const suffix = data.virtual ? " (virtual)" : "";
  const traces = data.traces.map((t, i) => ({
    type: "bar", orientation: "h", name: t.unit + suffix, x: t.x, y: t.y,
    customdata: t.op_types.map((op, j) => [op, t.names[j]]),
    marker: { color: colours[t.unit] || fallback[i % fallback.length] },
    hovertemplate: "%{customdata[1]} (%{customdata[0]})<br>%{x:.3f} ms on " + t.unit + suffix + "<extra></extra>",
  }));
  target.style.height = Math.max(340, 120 + 24 * data.order.length) + "px";
  Plotly.newPlot(target, traces, {
    margin: { l: 220, r: 24, t: 24, b: 90 }, font: { size: 13 }, barmode: "overlay", bargap: 0.2,
    xaxis: { title: { text: "mean ms per run" + suffix }, rangemode: "tozero" },
    yaxis: { type: "category", categoryorder: "array", categoryarray: data.order, autorange: "reversed", automargin: true },
    showlegend: true, legend: { orientation: "h", x: 0, y: -0.22, yanchor: "top", title: { text: "ran on" } },
  }, { responsive: true, displaylogo: false });
})();
