// OCTI review: the transcript follows the recording, and a turn seeks the recording.
(function () {
  "use strict";
  var audio = document.getElementById("recording");
  if (!audio) return;
  var turns = Array.prototype.slice.call(document.querySelectorAll(".turn[data-start-ms]"));
  var current = [];

  function bounds(turn) {
    var start = Number(turn.getAttribute("data-start-ms"));
    var end = turn.hasAttribute("data-end-ms") ? Number(turn.getAttribute("data-end-ms")) : Infinity;
    return [start, end];
  }

  // Highlight every turn the playback position falls in (caller and OCTI may overlap on a barge-in).
  function follow() {
    var ms = audio.currentTime * 1000;
    var playing = turns.filter(function (turn) {
      var b = bounds(turn);
      return ms >= b[0] && ms < b[1];
    });
    turns.forEach(function (turn) {
      var on = playing.indexOf(turn) >= 0;
      turn.classList.toggle("playing", on);
      if (on) turn.setAttribute("aria-current", "true"); else turn.removeAttribute("aria-current");
    });
    var fresh = playing.filter(function (turn) { return current.indexOf(turn) < 0; });
    if (fresh.length && !audio.paused && fresh[0].scrollIntoView) {
      fresh[0].scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
    current = playing;
  }

  function seek(turn) {
    audio.currentTime = bounds(turn)[0] / 1000;
    follow();
    var started = audio.play();
    if (started && started.catch) started.catch(function () { /* the reader presses play */ });
  }

  ["timeupdate", "seeked", "loadedmetadata", "play", "pause"].forEach(function (name) {
    audio.addEventListener(name, follow);
  });
  turns.forEach(function (turn) {
    turn.addEventListener("click", function (event) {
      // Let passages, links and text selection behave normally.
      if (event.target.closest("details, a")) return;
      if (!event.target.closest("button.seek") && String(window.getSelection ? window.getSelection() : "")) return;
      seek(turn);
    });
  });
  follow();
})();
