// The parameter form's controls: sliders with their number box, the seed dice, media files
// (read into a data: URI, with a preview), and the code tabs.
(function () {
  "use strict";

  function byId(id) { return document.getElementById(id); }

  function fire(input) {
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.addEventListener("input", function (event) {
    var el = event.target;
    if (el.dataset && el.dataset.rangeFor) {
      var box = byId("id_" + el.dataset.rangeFor);
      box.value = el.value;
      fire(box);
    }
    if (el.id && el.id.indexOf("id_") === 0) {
      var name = el.id.slice(3);
      var slider = document.querySelector('[data-range-for="' + name + '"]');
      if (slider && el !== slider && el.value !== "") slider.value = el.value;
      var shown = document.querySelector('[data-range-value="' + name + '"]');
      if (shown) shown.textContent = el.value;
    }
  });

  document.addEventListener("click", function (event) {
    var dice = event.target.closest && event.target.closest("[data-dice]");
    if (dice) {
      var input = byId(dice.dataset.dice);
      var max = Number(dice.dataset.max) || 2147483647;
      var values = new Uint32Array(1);
      crypto.getRandomValues(values);
      input.value = String(values[0] % (max + 1));
      fire(input);
    }
    var tab = event.target.closest && event.target.closest("[data-code-tab]");
    if (tab) {
      try { localStorage.setItem("codeTab", tab.dataset.codeTab); } catch (e) { /* private mode */ }
      showTab(tab.dataset.codeTab);
    }
  });

  function showTab(id) {
    var tabs = document.querySelectorAll("[data-code-tab]");
    if (!document.querySelector('[data-code-tab="' + id + '"]')) return;
    tabs.forEach(function (tab) { tab.setAttribute("aria-selected", String(tab.dataset.codeTab === id)); });
    document.querySelectorAll("[data-code-panel]").forEach(function (panel) {
      panel.hidden = panel.dataset.codePanel !== id;
    });
  }

  // Arrow keys move between code tabs, as in every tab list.
  document.addEventListener("keydown", function (event) {
    var tab = event.target.closest && event.target.closest("[data-code-tab]");
    if (!tab || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
    var tabs = Array.prototype.slice.call(document.querySelectorAll("[data-code-tab]"));
    var next = tabs[(tabs.indexOf(tab) + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
    next.focus();
    next.click();
  });

  document.addEventListener("change", function (event) {
    var file = event.target;
    if (!file.dataset || !file.dataset.mediaFor || !file.files.length) return;
    var target = byId(file.dataset.mediaFor);
    var preview = document.querySelector('[data-media-preview="' + file.dataset.mediaFor + '"]');
    // The file travels inline as a data: URI, so it must fit the request body limit.
    var limit = Number(file.dataset.maxBytes) || 0;
    if (limit && file.files[0].size > limit) {
      preview.textContent = "This file is " + Math.ceil(file.files[0].size / 1024) +
        " KB; files up to " + Math.floor(limit / 1024) + " KB go inline. Paste a URL instead.";
      file.value = "";
      return;
    }
    var reader = new FileReader();
    reader.onload = function () {
      target.value = reader.result;
      var kind = file.files[0].type.split("/")[0];
      var el = document.createElement(kind === "audio" ? "audio" : kind === "video" ? "video" : "img");
      el.src = reader.result;
      if (kind === "audio" || kind === "video") el.controls = true;
      else el.alt = "Chosen file: " + file.files[0].name;
      preview.replaceChildren(el);
      fire(target);
    };
    reader.readAsDataURL(file.files[0]);
  });

  function init() {
    var saved = null;
    try { saved = localStorage.getItem("codeTab"); } catch (e) { /* private mode */ }
    if (saved) showTab(saved);
  }

  if (window.htmx) window.htmx.onLoad(init);
  else document.addEventListener("DOMContentLoaded", init);
})();
