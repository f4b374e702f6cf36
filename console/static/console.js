// mailgate console: the overview's live figures from the server's event
// stream. Every page works without this script.
"use strict";
(function () {
  var sessions = document.getElementById("sessions");
  var rate = document.getElementById("rate");
  if (!sessions || !rate || !window.EventSource) {
    return;
  }
  var es = new EventSource("/console/events");
  es.addEventListener("overview", function (e) {
    var d = JSON.parse(e.data);
    sessions.textContent = String(d.sessions);
    rate.textContent = d.rate;
  });
})();
