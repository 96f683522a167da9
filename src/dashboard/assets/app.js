// studio-worker dashboard: live pages. When the queue changes (server-sent events from
// /live), a page marked data-live fetches a fresh copy of its content and swaps it in,
// keeping focus and scroll; forms being edited are left alone. No framework, no build.
"use strict";
(function () {
  var main = document.getElementById("main");
  if (!main || main.dataset.live !== "true" || !window.EventSource) return;
  var busy = false, again = false;
  window.studioLive = { refreshes: 0, connected: false };
  function editing() {
    var a = document.activeElement;
    return a && main.contains(a) && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName);
  }
  function refresh() {
    if (busy) { again = true; return; }
    if (editing()) return;
    busy = true;
    fetch(location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && !editing()) {
          main.innerHTML = html;
          window.studioLive.refreshes += 1;
        }
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }
  var source = new EventSource("/live");
  source.addEventListener("ready", function () { window.studioLive.connected = true; });
  source.addEventListener("change", refresh);
  source.onerror = function () { window.studioLive.connected = false; };
})();
