// Live job panels: each `.job[data-live]` subscribes to /ws/jobs/<request_id>/ (CONTRACT §7).
(function () {
  "use strict";

  function field(panel, name) {
    return panel.querySelector('[data-field="' + name + '"]');
  }

  function setStatus(panel, status) {
    var badge = field(panel, "status");
    panel.dataset.status = status;
    badge.textContent = status;
    badge.className = "badge badge-" + status;
    var out = field(panel, "text");
    if (out) out.classList.toggle("streaming", status === "pending" || status === "running");
  }

  function setProgress(panel, progress) {
    var bar = field(panel, "progress");
    if (bar) bar.style.width = Math.round((progress || 0) * 100) + "%";
  }

  // A continuation starts with the space after the prompt; an output box should not.
  function appendText(out, text) {
    out.textContent = (out.textContent + text).replace(/^\s+/, "");
  }

  function embeddingsSummary(vectors) {
    var dims = vectors.length ? vectors[0].length : 0;
    return vectors.length + " vector(s) of " + dims + " numbers\n" + vectors.map(function (v) {
      return "[" + v.slice(0, 8).map(function (x) { return x.toFixed(4); }).join(", ") + ", …]";
    }).join("\n");
  }

  function render(panel, job) {
    setStatus(panel, job.status);
    setProgress(panel, job.progress);
    if (typeof job.text === "string") field(panel, "text").textContent = job.text.replace(/^\s+/, "");
    if (Array.isArray(job.embeddings)) field(panel, "text").textContent = embeddingsSummary(job.embeddings);
    if (job.cost !== undefined) field(panel, "cost").textContent = job.cost + " credits";
    if (job.usage) {
      field(panel, "tokens").textContent = job.usage.prompt_tokens + " in" +
        (job.usage.completion_tokens === undefined ? "" : " · " + job.usage.completion_tokens + " out");
    }
    var error = field(panel, "error");
    if (job.error) {
      error.textContent = job.error.message + " (" + job.error.code + ")";
      error.hidden = false;
    }
  }

  function connect(panel) {
    if (panel.dataset.connected) return;
    panel.dataset.connected = "1";
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var ws = new WebSocket(scheme + location.host + "/ws/jobs/" + panel.dataset.requestId + "/");
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "snapshot" || msg.type === "result") render(panel, msg.job);
      if (msg.type === "result" || (msg.type === "snapshot" && msg.job.cost !== undefined)) {
        document.body.dispatchEvent(new CustomEvent("job-finished"));
      }
      else if (msg.type === "status") { setStatus(panel, msg.status); setProgress(panel, msg.progress); }
      else if (msg.type === "progress") setProgress(panel, msg.progress);
      else if (msg.type === "delta") appendText(field(panel, "text"), msg.text);
    };
    ws.onclose = function (event) {
      if (event.code === 4401 || event.code === 4404) {
        var error = field(panel, "error");
        error.textContent = event.code === 4401 ? "Log in again to follow this job." : "Job not found.";
        error.hidden = false;
      }
    };
  }

  function scan(root) {
    if (!root.querySelectorAll) return;
    if (root.matches && root.matches(".job[data-live]")) connect(root);
    root.querySelectorAll(".job[data-live]").forEach(connect);
  }

  function copyButtons(root) {
    if (!root.querySelectorAll) return;
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var target = document.querySelector(button.dataset.copy);
        navigator.clipboard.writeText(target.textContent.trim()).then(function () {
          button.textContent = "Copied";
        });
      });
    });
  }

  function init(root) { scan(root); copyButtons(root); }

  if (window.htmx) window.htmx.onLoad(init);
  else document.addEventListener("DOMContentLoaded", function () { init(document); });
})();
