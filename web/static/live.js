// bbb's one script: every element with `data-live="<url>"` has its content
// replaced by what <url> answers (an HTML fragment the server renders, escaped
// as every page is) every `data-every` ms (default 3000). Without JavaScript
// the page shows the figures of its load; a reload shows new ones.
// While keyboard focus is inside the element, a refresh waits (replacing the
// content would take the focus away).
(function () {
  "use strict";
  function follow(el) {
    var url = el.getAttribute("data-live");
    var every = parseInt(el.getAttribute("data-every") || "3000", 10);
    function again() { window.setTimeout(refresh, every); }
    function refresh() {
      if (el.contains(document.activeElement) && document.activeElement !== el) {
        again();
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) {
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.text();
        })
        .then(function (html) {
          el.innerHTML = html;
          el.removeAttribute("data-stale");
        })
        .catch(function () { el.setAttribute("data-stale", "true"); })
        .then(again);
    }
    again();
  }
  document.querySelectorAll("[data-live]").forEach(follow);
})();
