// Copy to the clipboard, shared by the login and the temporary-password pages.
// dialgateCopy(text, focusAfter, done): done(true|false) once the copy has been tried.
"use strict";
window.dialgateCopy = function (text, focusAfter, done) {
  function fallback() {
    // Older browsers and plain-HTTP pages have no async clipboard API.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (e) {
      ok = false;
    }
    document.body.removeChild(area);
    focusAfter.focus();
    return ok;
  }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(
      function () { done(true); },
      function () { done(fallback()); }
    );
  } else {
    done(fallback());
  }
};
