// holdfast console: progressive enhancement only. Every page works without this script.
"use strict";

// A query box checks its KQL as you type and shows the first error at its position.
function watchQuery(input) {
  const out = document.getElementById(input.dataset.error);
  if (!out) return;
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (input.value.trim() === "") {
        out.textContent = "";
        input.removeAttribute("aria-invalid");
        return;
      }
      try {
        const answer = await fetch("/console/kql?q=" + encodeURIComponent(input.value), {
          headers: { "Accept": "application/json" },
        });
        if (!answer.ok) return;
        const result = await answer.json();
        if (result.ok) {
          out.textContent = "";
          input.removeAttribute("aria-invalid");
        } else {
          out.textContent = "Error at character " + (result.position + 1) + ": " + result.message;
          input.setAttribute("aria-invalid", "true");
        }
      } catch (_) {
        // Offline or signed out: the server checks the query when the form is sent.
      }
    }, 250);
  });
}

// Warns before the session ends (WCAG 2.2.1): reloading any page keeps it open.
function watchTimeout(note) {
  let left = parseInt(note.dataset.seconds, 10);
  if (!(left > 0)) return;
  const tick = () => {
    left -= 30;
    if (left <= 0) {
      note.textContent = "Your session has ended; sign in again to go on.";
      note.setAttribute("role", "alert");
    } else if (left <= 300) {
      note.textContent = "Your session ends in " + Math.ceil(left / 60) +
        " minute(s) without activity; open any page to keep it.";
      note.setAttribute("role", "alert");
      setTimeout(tick, 30000);
    } else {
      setTimeout(tick, 30000);
    }
  };
  setTimeout(tick, 30000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("input.kql").forEach(watchQuery);
  document.querySelectorAll("p.timeout").forEach(watchTimeout);
  const summary = document.querySelector(".error-summary");
  if (summary) summary.focus();
});
