// Live updates on the order page: poll the live fragment and swap it in when it changed,
// keeping the events a reader has expanded open. No framework, no build step.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.liveUrl) { return; }
  var status = document.getElementById("live-status");
  var interval = parseInt(live.dataset.pollMs, 10) || 2000;

  function openSummaries() {
    var open = [];
    live.querySelectorAll("details[open] pre").forEach(function (pre) { open.push(pre.textContent); });
    return open;
  }

  function poll() {
    var known = live.querySelectorAll(".timeline .event").length;
    var url = live.dataset.liveUrl + "?known=" + known;
    fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (answer) {
        if (!answer.ok) { throw new Error("status " + answer.status); }
        return answer.status === 204 ? null : answer.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var incoming = document.createElement("div");
        incoming.innerHTML = html;
        var count = incoming.querySelectorAll(".timeline .event").length;
        var signature = count + ":" + (incoming.querySelector(".bad") ? "bad" : "ok");
        if (signature !== live.dataset.signature) {
          var open = openSummaries();
          var before = live.querySelectorAll(".timeline .event").length;
          live.innerHTML = html;
          live.dataset.signature = signature;
          live.querySelectorAll("details").forEach(function (details) {
            var pre = details.querySelector("pre");
            if (pre && open.indexOf(pre.textContent) >= 0) { details.open = true; }
          });
          if (status && count > before) {
            status.textContent = (count - before) + " new event(s); the timeline has " + count + ".";
          }
        }
      })
      .catch(function (error) {
        if (status) { status.textContent = "Live updates paused: " + error.message; }
      })
      .then(function () { window.setTimeout(poll, interval); });
  }
  window.setTimeout(poll, interval);
})();
