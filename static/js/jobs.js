// Live job panels: each `.job[data-live]` subscribes to /ws/jobs/<request_id>/ (CONTRACT §7).
// The dashboard's `[data-user-live]` list listens on /ws/user/ and refetches itself on updates.
(function () {
  "use strict";

  var TERMINAL = { success: 1, failed: 1, canceled: 1 };

  function field(panel, name) {
    return panel.querySelector('[data-field="' + name + '"]');
  }

  function wsUrl(path) {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  }

  function setStatus(panel, status) {
    var badge = field(panel, "status");
    panel.dataset.status = status;
    badge.textContent = status;
    badge.className = "badge badge-" + status;
    var out = field(panel, "text");
    if (out) out.classList.toggle("streaming", !TERMINAL[status]);
    var cancel = field(panel, "cancel");
    if (cancel) cancel.hidden = !!TERMINAL[status];
  }

  function setProgress(panel, progress) {
    var pct = Math.round((progress || 0) * 100);
    var bar = field(panel, "progress");
    if (bar) bar.style.width = pct + "%";
    var wrap = field(panel, "progressbar");
    if (wrap) wrap.setAttribute("aria-valuenow", String(pct));
  }

  // A continuation starts with the space after the prompt; an output box should not.
  function appendText(out, text) {
    out.textContent = (out.textContent + text).replace(/^\s+/, "");
  }

  function embeddingsSummary(vectors) {
    var dims = vectors.length ? vectors[0].length : 0;
    return vectors.length + " vector(s) of " + dims + " numbers\n" + vectors.slice(0, 8).map(function (v) {
      return "[" + v.slice(0, 8).map(function (x) { return x.toFixed(4); }).join(", ") + ", …]";
    }).join("\n");
  }

  function figure(media, url, label) {
    var fig = document.createElement("figure");
    fig.appendChild(media);
    var caption = document.createElement("figcaption");
    var link = document.createElement("a");
    link.href = url;
    link.download = "";
    link.textContent = "Download " + label;
    caption.appendChild(link);
    fig.appendChild(caption);
    return fig;
  }

  // Media outputs by the status document's shape: images[].url, audio_url, video.url.
  function renderMedia(panel, job) {
    var box = field(panel, "media");
    if (!box) return false;
    var figures = [];
    (job.images || []).forEach(function (image, i) {
      var img = document.createElement("img");
      img.src = image.url;
      img.alt = "Generated image " + (i + 1);
      figures.push(figure(img, image.url, "image " + (i + 1)));
    });
    if (job.audio_url) {
      var audio = document.createElement("audio");
      audio.controls = true;
      audio.src = job.audio_url;
      figures.push(figure(audio, job.audio_url, "audio"));
    }
    if (job.video && job.video.url) {
      var video = document.createElement("video");
      video.controls = true;
      video.src = job.video.url;
      figures.push(figure(video, job.video.url, "video"));
    }
    if (!figures.length) return false;
    box.replaceChildren.apply(box, figures);
    return true;
  }

  function render(panel, job) {
    setStatus(panel, job.status);
    setProgress(panel, job.progress);
    var out = field(panel, "text");
    if (typeof job.text === "string") out.textContent = job.text.replace(/^\s+/, "");
    if (Array.isArray(job.embeddings)) out.textContent = embeddingsSummary(job.embeddings);
    if (renderMedia(panel, job)) out.hidden = true;
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

  function logEvent(panel, text) {
    var log = document.querySelector('[data-event-log="' + panel.dataset.requestId + '"]');
    if (!log) return;
    var item = document.createElement("li");
    var time = document.createElement("time");
    time.textContent = new Date().toISOString().slice(11, 23);
    item.appendChild(time);
    item.appendChild(document.createTextNode(" " + text));
    log.appendChild(item);
  }

  function describe(msg) {
    if (msg.type === "status") return "status " + msg.status;
    if (msg.type === "progress") return "progress " + Math.round(msg.progress * 100) + " %";
    if (msg.type === "log") return "log: " + msg.message;
    if (msg.type === "result") return "result: " + msg.job.status;
    if (msg.type === "snapshot") return "connected (" + msg.job.status + ")";
    return null;
  }

  function connect(panel) {
    if (panel.dataset.connected) return;
    panel.dataset.connected = "1";
    var ws = new WebSocket(wsUrl("/ws/jobs/" + panel.dataset.requestId + "/"));
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      var line = describe(msg);
      if (line) logEvent(panel, line);
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

  // The dashboard: one socket for all the user's jobs; each update refetches the list (htmx).
  function followUser(list) {
    if (list.dataset.connected || window.__userSocket) return;
    list.dataset.connected = "1";
    var ws = new WebSocket(wsUrl("/ws/user/"));
    window.__userSocket = ws;
    ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "job") {
        document.body.dispatchEvent(new CustomEvent("user-job", { detail: msg }));
        if (TERMINAL[msg.status]) document.body.dispatchEvent(new CustomEvent("job-finished"));
      }
    };
    ws.onclose = function () { window.__userSocket = null; };
  }

  function scan(root) {
    if (!root.querySelectorAll) return;
    if (root.matches && root.matches(".job[data-live]")) connect(root);
    root.querySelectorAll(".job[data-live]").forEach(connect);
    var list = root.matches && root.matches("[data-user-live]") ? root : root.querySelector("[data-user-live]");
    if (list) followUser(list);
  }

  // Copy buttons anywhere, also ones htmx swaps in later: `data-copy` is a selector.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var target = document.querySelector(button.dataset.copy);
    if (!target || !navigator.clipboard) return;
    navigator.clipboard.writeText(target.textContent.trim()).then(function () {
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = "Copy"; button.classList.remove("copied"); }, 1500);
    }, function () { button.textContent = "Select and copy"; });
  });

  if (window.htmx) window.htmx.onLoad(scan);
  else document.addEventListener("DOMContentLoaded", function () { scan(document); });
})();
