// The chat view: each turn is a job on the model; its tokens stream in over /ws/jobs/<id>/.
(function () {
  "use strict";

  var root, log, form, input, sendButton, stopButton, errorBox, totalBox;
  var history = [];
  var current = null; // {requestId, ws, bubble, text}
  var totalMicro = 0;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; }
    catch (e) { return ""; }
  }

  // Money is a decimal string; sums are kept in integer millionths (the ledger's unit).
  function toMicro(text) {
    var parts = String(text).split(".");
    return Number(parts[0]) * 1000000 + Number(((parts[1] || "") + "000000").slice(0, 6));
  }

  function fromMicro(micro) {
    var whole = Math.floor(micro / 1000000);
    var frac = String(micro % 1000000).padStart(6, "0").replace(/0+$/, "");
    return frac ? whole + "." + frac : String(whole);
  }

  function bubble(role, text) {
    var empty = log.querySelector(".chat-empty");
    if (empty) empty.remove();
    var item = document.createElement("li");
    item.className = "chat-msg chat-" + role;
    var who = document.createElement("div");
    who.className = "chat-role";
    who.textContent = role === "user" ? "You" : "Assistant";
    var body = document.createElement("div");
    body.className = "chat-text";
    body.textContent = text;
    var meta = document.createElement("div");
    meta.className = "chat-meta muted small";
    item.append(who, body, meta);
    log.appendChild(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  function busy(on) {
    sendButton.hidden = on;
    stopButton.hidden = !on;
    input.disabled = on;
    if (!on) input.focus();
  }

  function numberParam(name) {
    var el = document.getElementById("id_" + name);
    if (!el || el.value === "") return undefined;
    return Number(el.value);
  }

  function send(text) {
    errorBox.textContent = "";
    var messages = [];
    var system = document.getElementById("chat-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages = messages.concat(history, [{ role: "user", content: text }]);
    var body = { messages: messages };
    ["max_tokens", "temperature", "top_p"].forEach(function (name) {
      var value = numberParam(name);
      if (value !== undefined) body[name] = value;
    });
    busy(true);
    fetch(root.dataset.sendUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
      credentials: "same-origin",
    }).then(function (response) {
      return response.json().then(function (data) { return { ok: response.ok, data: data }; });
    }).then(function (answer) {
      if (!answer.ok) {
        errorBox.textContent = answer.data.error ? answer.data.error.message : "Could not send.";
        busy(false);
        return;
      }
      history.push({ role: "user", content: text });
      bubble("user", text);
      input.value = "";
      follow(answer.data.request_id);
    }).catch(function () {
      errorBox.textContent = "Could not reach the server.";
      busy(false);
    });
  }

  function follow(requestId) {
    var item = bubble("assistant", "");
    item.dataset.requestId = requestId;
    var textBox = item.querySelector(".chat-text");
    textBox.classList.add("streaming");
    var turn = { requestId: requestId, bubble: item, text: "" };
    current = turn;
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    turn.ws = new WebSocket(scheme + location.host + "/ws/jobs/" + requestId + "/");
    turn.ws.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (msg.type === "snapshot" && typeof msg.job.text === "string") turn.text = msg.job.text;
      if (msg.type === "delta") turn.text += msg.text;
      textBox.textContent = turn.text.replace(/^\s+/, "");
      if (msg.type === "delta") item.scrollIntoView({ block: "end" });
      var done = msg.type === "result" || (msg.type === "snapshot" && msg.job.cost !== undefined);
      if (done) finish(turn, msg.job);
    };
    turn.ws.onclose = function (event) {
      if (current === turn && event.code !== 1000) {
        errorBox.textContent = "Lost the connection to this reply.";
        finish(turn, null);
      }
    };
  }

  function finish(turn, job) {
    if (turn.finished) return;
    turn.finished = true;
    var textBox = turn.bubble.querySelector(".chat-text");
    textBox.classList.remove("streaming");
    if (job && typeof job.text === "string") turn.text = job.text;
    var reply = turn.text.replace(/^\s+/, "");
    textBox.textContent = reply;
    var meta = [];
    if (job) {
      turn.bubble.dataset.status = job.status;
      if (job.status !== "success") meta.push(job.status === "canceled" ? "stopped" : job.status);
      if (job.usage) meta.push(job.usage.prompt_tokens + " in · " + (job.usage.completion_tokens || 0) + " out");
      if (job.cost !== undefined) {
        meta.push(job.cost + " credits");
        totalMicro += toMicro(job.cost);
        totalBox.textContent = "Conversation total: " + fromMicro(totalMicro) + " credits";
      }
      if (job.error) errorBox.textContent = job.error.message;
    }
    var link = document.createElement("a");
    link.href = "/jobs/" + turn.requestId + "/";
    link.textContent = "job";
    var metaBox = turn.bubble.querySelector(".chat-meta");
    metaBox.textContent = meta.join(" · ") + (meta.length ? " · " : "");
    metaBox.appendChild(link);
    if (reply) history.push({ role: "assistant", content: reply });
    if (current === turn) current = null;
    busy(false);
    document.body.dispatchEvent(new CustomEvent("job-finished"));
  }

  function stop() {
    if (!current) return;
    fetch("/jobs/" + current.requestId + "/cancel", {
      method: "POST",
      headers: { "X-CSRFToken": csrfToken(), "HX-Request": "true" },
      credentials: "same-origin",
    });
  }

  function clear() {
    if (current) stop();
    history = [];
    totalMicro = 0;
    totalBox.textContent = "Conversation total: 0 credits";
    log.replaceChildren();
    var empty = document.createElement("li");
    empty.className = "chat-empty muted";
    empty.textContent = "Conversation cleared. Say something to start again.";
    log.appendChild(empty);
    errorBox.textContent = "";
    input.focus();
  }

  document.addEventListener("DOMContentLoaded", function () {
    root = document.getElementById("chat");
    if (!root || root.hasAttribute("data-anonymous")) return;
    log = document.getElementById("chat-log");
    form = document.getElementById("chat-form");
    input = document.getElementById("chat-message");
    sendButton = document.getElementById("chat-send");
    stopButton = document.getElementById("chat-stop");
    errorBox = document.getElementById("chat-error");
    totalBox = document.getElementById("chat-total");
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = input.value.trim();
      if (text && !current) send(text);
    });
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    stopButton.addEventListener("click", stop);
    document.getElementById("chat-clear").addEventListener("click", clear);
  });
})();
