// SecAuto dashboard: the little the pages need beyond htmx. Loaded as a file (the
// Content-Security-Policy allows no inline script).
(function () {
  "use strict";

  // Times are rendered in UTC; the title shows the same moment in the browser's local time.
  function localTimes(root) {
    var items = root.querySelectorAll ? root.querySelectorAll("time[datetime]") : [];
    for (var i = 0; i < items.length; i++) {
      var moment = new Date(items[i].getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        items[i].title = "Your local time: " + moment.toLocaleString();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () { localTimes(document); });
  document.addEventListener("htmx:afterSwap", function (event) { localTimes(event.target); });

  // Pause buttons: a paused live region skips its refreshes; resuming refreshes it once.
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-pause-target]") : null;
    if (!button) { return; }
    var region = document.getElementById(button.getAttribute("data-pause-target"));
    if (!region) { return; }
    var paused = region.getAttribute("data-paused") === "true";
    region.setAttribute("data-paused", paused ? "false" : "true");
    button.setAttribute("aria-pressed", paused ? "false" : "true");
    button.textContent = paused ? "Pause" : "Resume";
    if (paused && window.htmx) { window.htmx.trigger(region, "resume"); }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var region = event.target.closest ? event.target.closest("[data-paused]") : null;
    if (region && region.getAttribute("data-paused") === "true") { event.preventDefault(); }
  });
})();
