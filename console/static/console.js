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
    new EventSource("/console/events?page=sessions").addEventListener("sessions", function (e) {
      // Not under a keyboard user's focus (a Disconnect button).
      if (rows.contains(document.activeElement)) {
        return;
      }
      rows.innerHTML = e.data;
    });
  }
})();
