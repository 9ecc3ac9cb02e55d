// Taskforge inspector: live updates. A page that names a stream
// (data-stream) and the URL of its live part (data-refresh) follows the
// stream with an EventSource and, when a run changes, fetches its live
// part again, rendered by the server, and swaps it in: open sections stay
// open and the focused control keeps focus. No token is ever read here:
// the browser sends the inspector's HttpOnly cookie itself.
(function () {
  "use strict";
  var body = document.body;
  var streamUrl = body.getAttribute("data-stream");
  var refreshUrl = body.getAttribute("data-refresh");
  var target = document.getElementById("live");
  var badge = document.getElementById("live-status");
  if (!streamUrl || !refreshUrl || !target || !window.EventSource || !window.fetch) {
    if (badge) badge.textContent = "";
    return;
  }
  var EVENTS = ["snapshot", "run_queued", "run_started", "step_started",
    "step_succeeded", "step_failed", "step_skipped", "run_waiting", "run_finished", "lagged"];
  var timer = null, busy = false, again = false, swaps = 0;

  function show(text, state) {
    if (!badge) return;
    badge.textContent = text;
    badge.setAttribute("data-state", state);
  }

  var shown = null;
  function swap(html) {
    // Nothing changed: leave the page (and whatever has focus) alone.
    if (html === shown) return;
    shown = html;
    var open = {};
    target.querySelectorAll("details[data-key]").forEach(function (d) {
      open[d.getAttribute("data-key")] = d.open;
    });
    var active = document.activeElement;
    var focused = active && target.contains(active) ? active.id : null;
    target.innerHTML = html;
    target.querySelectorAll("details[data-key]").forEach(function (d) {
      var key = d.getAttribute("data-key");
      if (Object.prototype.hasOwnProperty.call(open, key)) d.open = open[key];
    });
    if (focused) {
      var again = document.getElementById(focused);
      if (again) again.focus();
    }
    swaps += 1;
    body.setAttribute("data-swaps", String(swaps));
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    again = false;
    fetch(refreshUrl, {
      credentials: "same-origin",
      headers: { "x-taskforge-fragment": "1" },
      cache: "no-store"
    }).then(function (response) {
      if (response.redirected || response.status === 401) {
        // Signed out meanwhile: the full page leads to the login form.
        window.location.reload();
        return null;
      }
      return response.ok ? response.text() : null;
    }).then(function (html) {
      if (html !== null) swap(html);
    }).catch(function () {
      show("Update failed", "off");
    }).then(function () {
      busy = false;
      if (again) schedule();
    });
  }

  var last = 0;
  function schedule() {
    if (timer !== null) return;
    // Bursts of updates (every step of a run) make one fetch, and a busy
    // engine at most one a second.
    var wait = Math.max(150, 1000 - (Date.now() - last));
    timer = window.setTimeout(function () {
      timer = null;
      last = Date.now();
      refresh();
    }, wait);
  }

  var source = new EventSource(streamUrl);
  EVENTS.forEach(function (name) { source.addEventListener(name, schedule); });
  source.onopen = function () {
    show("Live", "on");
    // Whatever happened between the page's rendering and now.
    schedule();
  };
  source.onerror = function () {
    show(source.readyState === EventSource.CLOSED ? "Not live" : "Reconnecting…", "off");
  };
  window.addEventListener("pagehide", function () { source.close(); });
})();
