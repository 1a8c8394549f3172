// Draws the plots page from the JSON the server embedded (#plot-data) with the locally served plotly.js.
"use strict";
(function () {
  const source = document.getElementById("plot-data");
  if (!source || typeof Plotly === "undefined") return;
  const data = JSON.parse(source.textContent);
  const config = { responsive: true, displaylogo: false };
  const base = { margin: { l: 64, r: 24, t: 24, b: 56 }, font: { size: 13 } };

  const lines = document.getElementById("plot-lines");
  if (lines) {
    if (data.lines.length) {
      // A point whose measurement has a per-layer profile is ringed and opens its chart when clicked.
      const traces = data.lines.map((line) => ({
        type: "scatter", mode: "lines+markers", name: line.name, x: line.x, y: line.y,
        customdata: line.measurement_ids,
        marker: { size: line.measurement_ids.map((id) => (id ? 11 : 7)),
                  line: { width: line.measurement_ids.map((id) => (id ? 2 : 0)), color: "#24292f" } },
        error_y: { type: "data", array: line.std, visible: true },
        hovertemplate: "%{x} MHz: %{y:.3f} ms<extra>%{fullData.name}</extra>",
      }));
      Plotly.newPlot(lines, traces, Object.assign({}, base, {
        xaxis: { title: { text: data.clock_title || "CPU frequency (MHz)" } },
        yaxis: { title: { text: "median latency (ms)" + (data.virtual ? " (virtual)" : "") }, rangemode: "tozero" },
        legend: { orientation: "h", y: -0.25 },
      }), config);
      lines.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        if (point && point.customdata) window.location.assign("/dashboard/measurements/" + point.customdata);
      });
    } else {
      lines.textContent = "No measured configs to draw.";
    }
  }

  const heat = document.getElementById("plot-heatmap");
  if (heat && data.heatmap) {
    const h = data.heatmap;
    Plotly.newPlot(heat, [{
      type: "heatmap", x: h.widths.map(String), y: h.depths.map(String), z: h.z, customdata: h.counts,
      colorscale: "Viridis", colorbar: { title: { text: "ms" } }, hoverongaps: false,
      hovertemplate: "depth %{y}, width %{x}: %{z:.3f} ms (mean of %{customdata} configs)<extra></extra>",
    }], Object.assign({}, base, {
      xaxis: { title: { text: "width (widest layer, channels)" }, type: "category" },
      yaxis: { title: { text: "depth (body layers)" }, type: "category" },
    }), config);
  }

  const p = data.predictor;
  const scatter = document.getElementById("plot-scatter");
  if (scatter && p && p.measured.length) {
    const hi = Math.max.apply(null, p.measured.concat(p.predicted)) * 1.05;
    Plotly.newPlot(scatter, [
      { x: [0, hi], y: [0, hi * 0.9], mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip" },
      { x: [0, hi], y: [0, hi * 1.1], mode: "lines", line: { width: 0 }, fill: "tonexty",
        fillcolor: "rgba(26,127,55,0.15)", name: "±10 %", hoverinfo: "skip" },
      { x: [0, hi], y: [0, hi], mode: "lines", line: { dash: "dash", color: "#57606a" }, name: "predicted = measured", hoverinfo: "skip" },
      { x: p.measured, y: p.predicted, mode: "markers", type: "scatter", name: "holdout", marker: { size: 7, color: "#0a58ca" },
        hovertemplate: "measured %{x:.3f} ms<br>predicted %{y:.3f} ms<extra></extra>" },
    ], Object.assign({}, base, {
      xaxis: { title: { text: "measured (ms)" }, range: [0, hi] }, yaxis: { title: { text: "predicted (ms)" }, range: [0, hi] },
      legend: { orientation: "h", y: -0.25 },
    }), config);
  }
  const errors = document.getElementById("plot-errors");
  if (errors && p && p.errors_pct.length) {
    Plotly.newPlot(errors, [{ type: "histogram", x: p.errors_pct, xbins: { size: 2.5 }, marker: { color: "#8250df" }, name: "error",
      hovertemplate: "%{x} %: %{y} points<extra></extra>" }], Object.assign({}, base, {
      xaxis: { title: { text: "prediction error (% of measured)" } }, yaxis: { title: { text: "holdout points" } },
      shapes: [-10, 10].map((x) => ({ type: "line", x0: x, x1: x, yref: "paper", y0: 0, y1: 1, line: { dash: "dot", color: "#1a7f37" } })),
    }), config);
  }
})();
