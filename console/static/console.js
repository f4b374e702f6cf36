// mailgate console: live parts from the server's event stream, the
// overview's figures and the live sessions list. Every page works
// without this script.
"use strict";
(function () {
  if (!window.EventSource) {
    return;
  }
  var sessions = document.getElementById("sessions");
  var rate = document.getElementById("rate");
  if (sessions && rate) {
    new EventSource("/console/events").addEventListener("overview", function (e) {
      var d = JSON.parse(e.data);
      sessions.textContent = String(d.sessions);
      rate.textContent = d.rate;
    });
  }
  var rows = document.getElementById("live-rows");
  if (rows) {
    // The rows arrive rendered and escaped by the server's template.
    // The stream of this page's filter and page, as the server named it.
    var src = rows.getAttribute("data-stream") || "/console/events?page=sessions";
    new EventSource(src).addEventListener("sessions", function (e) {
      // Not under a keyboard user's focus (a Disconnect button).
      if (rows.contains(document.activeElement)) {
        return;
      }
      rows.innerHTML = e.data;
    });
  }
})();
