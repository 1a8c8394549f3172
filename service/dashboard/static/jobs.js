// Live job progress: poll the small JSON endpoint and update each job's bar, counts, percent and ETA in
// place. A job that appears or disappears reloads the page so its card and cancel button are drawn.
"use strict";
(function () {
  const root = document.getElementById("jobs");
  if (!root) return;
  const url = root.dataset.pollUrl;
  const every = parseInt(root.dataset.pollMs || "2000", 10);

  function eta(job) {
    const seconds = job.eta_seconds;
    if ((job.status !== "queued" && job.status !== "running") || seconds === 0) return "—";
    if (seconds === null || seconds === undefined) return "estimating…";
    if (seconds < 120) return Math.round(seconds) + " s";
    if (seconds < 7200) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }
  function set(card, field, value) {
    const el = card.querySelector('[data-field="' + field + '"]');
    if (el) el.textContent = value;
  }
  async function poll() {
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const jobs = await response.json();
      const shown = new Set(Array.from(root.querySelectorAll("[data-job-id]"), (el) => el.dataset.jobId));
      if (jobs.some((job) => !shown.has(String(job.id)))) { window.location.reload(); return; }
      for (const job of jobs) {
        const card = document.getElementById("job-" + job.id);
        const bar = card.querySelector("progress");
        bar.max = Math.max(job.total, 1);
        bar.value = job.finished;
        bar.textContent = job.percent.toFixed(1) + " %";
        set(card, "finished", job.finished);
        set(card, "total", job.total);
        set(card, "percent", job.percent.toFixed(1));
        set(card, "eta", eta(job));
        set(card, "status", job.status);
        card.className = "job status-" + job.status;
        for (const [status, n] of Object.entries(job.counts)) {
          const el = card.querySelector('[data-count="' + status + '"]');
          if (el) el.textContent = n;
        }
      }
    } catch (error) {
      // The service restarting is not an error worth a console line; the next poll retries.
    } finally {
      window.setTimeout(poll, every);
    }
  }
  window.setTimeout(poll, every);
})();
