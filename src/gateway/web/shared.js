// Helpers shared by the login and the temporary-password pages, as window.dialgate.
"use strict";
window.dialgate = {};

window.dialgate.setText = function (node, text) {
  node.textContent = text == null ? "" : String(text);
};

window.dialgate.show = function (node, visible) {
  node.hidden = !visible;
};

window.dialgate.setBusy = function (button, busy) {
  button.disabled = busy;
  if (busy) button.setAttribute("aria-busy", "true");
  else button.removeAttribute("aria-busy");
  button.classList.toggle("is-busy", busy);
};

// fetch() of the JSON API, resolving to {status, body, response}; body is the parsed
// JSON or null. options: json (request body), secret (Bearer token).
window.dialgate.request = function (method, path, options) {
  options = options || {};
  var headers = { Accept: "application/json" };
  var init = {
    method: method,
    headers: headers,
    credentials: "same-origin",
    cache: "no-store"
  };
  if (options.secret) headers.Authorization = "Bearer " + options.secret;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.json);
  }
  return fetch(path, init).then(function (response) {
    return response.text().then(function (text) {
      var body = null;
      if (text) {
        try {
          body = JSON.parse(text);
        } catch (e) {
          body = null;
        }
      }
      return { status: response.status, body: body, response: response };
    });
  });
};

// Copies text to the clipboard; done(true|false) once the copy has been tried.
window.dialgate.copy = function (text, focusAfter, done) {
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

// A copy button with its label and live status. `what` names what it copies ("number").
// copy(text) copies and says how it went; reset() returns to "Copy <what>".
window.dialgate.copyButton = function (button, label, status, what) {
  var setText = window.dialgate.setText;
  var timer = null;
  function reset() {
    clearTimeout(timer);
    setText(label, "Copy " + what);
    setText(status, "");
    button.classList.remove("is-done");
  }
  function copy(text) {
    if (!text) return;
    window.dialgate.copy(text, button, function (ok) {
      clearTimeout(timer);
      setText(label, ok ? "Copied" : "Copy failed");
      setText(status, ok
        ? what.charAt(0).toUpperCase() + what.slice(1) + " copied to the clipboard."
        : "Could not copy. Select the " + what + " and copy it instead.");
      button.classList.toggle("is-done", ok);
      timer = setTimeout(reset, 2500);
    });
  }
  return { copy: copy, reset: reset };
};
