// dialgate sign-in page. Plain script, no build step, no external resources; it runs
// under `Content-Security-Policy: default-src 'self'`, so it never writes inline styles
// or markup: steps are switched with the `hidden` attribute and CSS classes.
//
// Flow: POST /v1/login -> show the number to call -> wait for the call (SSE on
// /v1/login/{id}/events with the HttpOnly challenge cookie, falling back to polling
// GET /v1/login/{id} with the Bearer secret) -> POST /v1/login/{id}/session -> signed in.
// "Call me instead" (POST /v1/login/{id}/callback) has dialgate call the enrolled phone;
// answering and pressing 1 verifies the same challenge, so the same wait applies.
// The challenge secret lives only in this closure: never in storage, URLs or the DOM.
(function () {
  "use strict";

  var POLL_MS = 2000;

  var FAILURE_TEXT = {
    wrong_code: "The code typed was wrong.",
    too_many_calls: "Too many calls were made for this sign-in.",
    superseded: "A newer sign-in was started, so this one was cancelled.",
    expired: "The time to call ran out.",
    consumed: "This sign-in was already used.",
    wrong_caller: "The call did not come from your enrolled phone.",
    caller_mismatch: "The call did not come from your enrolled phone.",
    unknown_caller: "The call did not come from your enrolled phone.",
    caller_id_hidden: "Your phone hid its number. Call again with caller ID shown.",
    hangup: "The call ended before the code was typed.",
    no_input: "No code was typed before the time ran out.",
    no_code: "No code was typed before the call ended.",
    timeout: "No code was typed in time.",
    callback_busy: "Your phone was busy when we called.",
    callback_no_answer: "We called your phone but nobody answered.",
    callback_congestion: "The phone network could not connect our call.",
    callback_failed: "We could not call your phone.",
    callback_refused: "We called your phone, but 1 was not pressed to confirm."
  };

  function $(id) {
    return document.getElementById(id);
  }

  var el = {
    steps: {
      login: $("step-login"),
      call: $("step-call"),
      done: $("step-done")
    },
    headings: {
      login: $("login-heading"),
      call: $("call-heading"),
      done: $("done-heading")
    },
    loginForm: $("login-form"),
    username: $("username"),
    password: $("password"),
    loginError: $("login-error"),
    loginSubmit: $("login-submit"),
    phoneMask: $("phone-hint-mask"),
    phoneSr: $("phone-hint-sr"),
    dialLink: $("dial-link"),
    dialDisplay: $("dial-display"),
    copyButton: $("copy-number"),
    copyLabel: $("copy-label"),
    copyStatus: $("copy-status"),
    codeBlock: $("code-block"),
    codeValue: $("code-value"),
    callStatus: $("call-status"),
    countdown: $("countdown"),
    countdownLabel: $("countdown-label"),
    simulate: $("simulate-call"),
    callback: $("callback"),
    demoNote: $("demo-note"),
    restart: $("restart"),
    cancel: $("cancel"),
    signedInUser: $("signed-in-user"),
    sessionExpiry: $("session-expiry"),
    logout: $("logout"),
    logoutError: $("logout-error")
  };

  // The one challenge in progress. `generation` changes whenever a challenge is
  // abandoned, so late answers from an old one are ignored.
  var challenge = null;
  var generation = 0;
  var demoMode = false;
  var clockSkewMs = 0; // server time minus browser time, from the Date header
  var rateLimitTimer = null;

  // ---------------------------------------------------------------- helpers

  var setText = window.dialgate.setText;
  var show = window.dialgate.show;
  var setBusy = window.dialgate.setBusy;

  function showStep(name) {
    Object.keys(el.steps).forEach(function (key) {
      show(el.steps[key], key === name);
    });
    document.body.setAttribute("data-step", name);
    // Move focus to the new step's heading so screen readers announce it.
    el.headings[name].focus();
  }

  function noteServerDate(response) {
    var date = response.headers.get("Date");
    if (!date) return;
    var server = Date.parse(date);
    if (isNaN(server)) return;
    var skew = server - Date.now();
    // The Date header has one-second resolution: only correct real clock errors.
    clockSkewMs = Math.abs(skew) > 2000 ? skew : 0;
  }

  function serverNow() {
    return Date.now() + clockSkewMs;
  }

  // The API, keeping the server's clock for the countdown.
  function api(method, path, options) {
    return window.dialgate.request(method, path, options).then(function (r) {
      noteServerDate(r.response);
      return r;
    });
  }

  function formatSeconds(total) {
    total = Math.max(0, Math.ceil(total));
    var m = Math.floor(total / 60);
    var s = total % 60;
    return (m < 10 ? "0" : "") + m + ":" + (s < 10 ? "0" : "") + s;
  }

  function pluralSeconds(n) {
    return n + (n === 1 ? " second" : " seconds");
  }

  // ---------------------------------------------------------------- step 1: login

  function loginError(text) {
    setText(el.loginError, text);
    var invalid = !!text;
    el.username.setAttribute("aria-invalid", invalid ? "true" : "false");
    el.password.setAttribute("aria-invalid", invalid ? "true" : "false");
  }

  function rateLimited(seconds) {
    seconds = Math.max(1, Math.ceil(seconds || 30));
    loginError("Too many attempts. Try again in " + pluralSeconds(seconds) + ".");
    el.loginSubmit.disabled = true;
    clearTimeout(rateLimitTimer);
    rateLimitTimer = setTimeout(function () {
      rateLimitTimer = null;
      el.loginSubmit.disabled = false;
      loginError("");
    }, seconds * 1000);
  }

  function onLoginSubmit(event) {
    event.preventDefault();
    if (rateLimitTimer) return;
    var username = el.username.value.trim();
    var password = el.password.value;
    if (!username || !password) {
      loginError("Enter your username and password.");
      (username ? el.password : el.username).focus();
      return;
    }
    loginError("");
    setBusy(el.loginSubmit, true);
    api("POST", "/v1/login", { json: { username: username, password: password } })
      .then(function (r) {
        setBusy(el.loginSubmit, false);
        if (r.status === 200 && r.body && r.body.challenge_id && r.body.secret) {
          el.password.value = "";
          startChallenge(r.body);
          return;
        }
        if (r.status === 401 || r.status === 403) {
          loginError("Invalid username or password.");
          el.password.value = "";
          el.password.focus();
        } else if (r.status === 429) {
          var retry = (r.body && Number(r.body.retry_after)) ||
            Number(r.response.headers.get("Retry-After")) || 30;
          rateLimited(retry);
        } else if (r.status === 503) {
          loginError("Sign-in is temporarily unavailable. Please try again in a few minutes.");
        } else {
          loginError("Something went wrong (error " + r.status + "). Please try again.");
        }
      })
      .catch(function () {
        setBusy(el.loginSubmit, false);
        loginError("Could not reach the server. Check your connection and try again.");
      });
  }

  // ---------------------------------------------------------------- step 2: call

  function maskedDigits(hint) {
    var m = /(\d+)\s*$/.exec(hint || "");
    return m ? m[1] : "";
  }

  function renderNumber(display, e164) {
    el.dialDisplay.textContent = "";
    var groups = String(display || e164 || "").trim().split(/\s+/);
    groups.forEach(function (group) {
      var span = document.createElement("span");
      span.className = "dial-group";
      span.textContent = group;
      el.dialDisplay.appendChild(span);
      // A real space between groups so copy-paste and screen readers keep them apart.
      el.dialDisplay.appendChild(document.createTextNode(" "));
    });
    el.dialLink.setAttribute("href", "tel:" + String(e164 || display || "").replace(/[^+\d]/g, ""));
  }

  function renderCode(code) {
    el.codeValue.textContent = "";
    if (code == null || code === "") {
      show(el.codeBlock, false);
      return;
    }
    String(code).split("").forEach(function (ch) {
      var span = document.createElement("span");
      span.className = "code-digit";
      span.textContent = ch;
      el.codeValue.appendChild(span);
    });
    el.codeValue.setAttribute("aria-label", String(code).split("").join(" "));
    show(el.codeBlock, true);
  }

  function setCallStatus(text, tone) {
    setText(el.callStatus, text);
    el.callStatus.className = "status" + (tone ? " status-" + tone : "");
  }

  function startChallenge(body) {
    stopChallenge();
    generation += 1;
    challenge = {
      gen: generation,
      id: String(body.challenge_id),
      secret: String(body.secret),
      expiresAt: Date.parse(body.expires_at),
      state: "pending",
      source: null,
      pollTimer: null,
      tickTimer: null,
      sessionRequested: false
    };

    renderNumber(body.dial_display, body.dial_number);
    var hint = body.phone_hint || "";
    setText(el.phoneMask, hint);
    var digits = maskedDigits(hint);
    setText(el.phoneSr, digits ? "ending in " + digits : hint);
    renderCode(body.code);
    copyNumber.reset();

    setCallStatus("Waiting for your call…", "waiting");
    show(el.restart, false);
    show(el.cancel, true);
    show(el.simulate, demoMode);
    show(el.demoNote, demoMode);
    el.simulate.disabled = false;
    show(el.callback, true);
    el.callback.disabled = false;
    el.countdownLabel.textContent = "Time left to call";
    el.countdown.classList.remove("countdown-low", "countdown-over");

    showStep("call");
    tick();
    challenge.tickTimer = setInterval(tick, 250);
    listen(challenge);
  }

  function stopChallenge() {
    if (!challenge) return;
    if (challenge.source) challenge.source.close();
    clearTimeout(challenge.pollTimer);
    clearInterval(challenge.tickTimer);
    challenge.source = null;
    challenge.pollTimer = null;
    challenge.tickTimer = null;
  }

  function isCurrent(c) {
    return challenge === c && c.gen === generation;
  }

  function tick() {
    var c = challenge;
    if (!c || c.state !== "pending") return;
    if (isNaN(c.expiresAt)) {
      setText(el.countdown, "--:--");
      return;
    }
    var left = (c.expiresAt - serverNow()) / 1000;
    setText(el.countdown, formatSeconds(left));
    el.countdown.classList.toggle("countdown-low", left <= 30);
    if (left <= 0) {
      onExpired(c);
    }
  }

  // Live updates: SSE first (the HttpOnly cookie authenticates it), polling after an error.
  function listen(c) {
    if (typeof window.EventSource !== "function") {
      schedulePoll(c, 0);
      return;
    }
    var source;
    try {
      source = new EventSource("/v1/login/" + encodeURIComponent(c.id) + "/events");
    } catch (e) {
      schedulePoll(c, 0);
      return;
    }
    c.source = source;

    function data(event) {
      try {
        return event.data ? JSON.parse(event.data) : {};
      } catch (e) {
        return {};
      }
    }

    source.addEventListener("pending", function (event) {
      if (!isCurrent(c)) return;
      var d = data(event);
      if (d.expires_at) {
        var t = Date.parse(d.expires_at);
        if (!isNaN(t)) c.expiresAt = t;
      }
    });
    source.addEventListener("verified", function () {
      if (isCurrent(c)) onVerified(c);
    });
    source.addEventListener("failed", function (event) {
      if (isCurrent(c)) onFailed(c, data(event).reason);
    });
    source.addEventListener("expired", function () {
      if (isCurrent(c)) onExpired(c);
    });
    source.onerror = function () {
      source.close();
      if (c.source === source) c.source = null;
      // A stream closed after a final event is not an error worth polling for.
      if (isCurrent(c) && c.state === "pending") schedulePoll(c, 0);
    };
  }

  function schedulePoll(c, delay) {
    if (!isCurrent(c) || c.state !== "pending") return;
    clearTimeout(c.pollTimer);
    c.pollTimer = setTimeout(function () {
      poll(c);
    }, delay);
  }

  function poll(c) {
    if (!isCurrent(c) || c.state !== "pending") return;
    api("GET", "/v1/login/" + encodeURIComponent(c.id), { secret: c.secret })
      .then(function (r) {
        if (!isCurrent(c) || c.state !== "pending") return;
        if (r.status === 404 || r.status === 410) {
          onExpired(c);
          return;
        }
        if (r.status === 200 && r.body) {
          var status = String(r.body.status || r.body.state || r.body.event || "pending");
          if (r.body.expires_at) {
            var t = Date.parse(r.body.expires_at);
            if (!isNaN(t)) c.expiresAt = t;
          }
          if (status === "verified") return onVerified(c);
          if (status === "failed") return onFailed(c, r.body.reason);
          if (status === "expired") return onExpired(c);
          if (status === "consumed") return onFailed(c, "consumed");
        }
        schedulePoll(c, POLL_MS);
      })
      .catch(function () {
        schedulePoll(c, POLL_MS);
      });
  }

  function finish(c, state) {
    c.state = state;
    if (c.source) {
      c.source.close();
      c.source = null;
    }
    clearTimeout(c.pollTimer);
    c.pollTimer = null;
    if (state !== "verified") {
      clearInterval(c.tickTimer);
      c.tickTimer = null;
    }
    show(el.simulate, false);
    show(el.demoNote, false);
    show(el.callback, false);
  }

  function offerRestart() {
    if (challenge && challenge.state !== "expired") {
      // The time left no longer matters once the attempt has failed.
      setText(el.countdown, "--:--");
    }
    el.countdown.classList.remove("countdown-low");
    el.countdown.classList.add("countdown-over");
    show(el.cancel, false);
    show(el.restart, true);
    el.restart.focus();
  }

  function onExpired(c) {
    if (c.state !== "pending") return;
    finish(c, "expired");
    setText(el.countdown, "00:00");
    el.countdown.classList.add("countdown-over");
    setCallStatus("The time to call ran out. Start again to get a new number.", "error");
    offerRestart();
  }

  function onFailed(c, reason) {
    if (c.state !== "pending") return;
    if (reason === "expired") return onExpired(c);
    finish(c, "failed");
    var text = FAILURE_TEXT[reason] || "The call could not confirm it was you.";
    setCallStatus(text + " Start again to try once more.", "error");
    offerRestart();
  }

  function onVerified(c) {
    if (c.state !== "pending" && c.state !== "verified") return;
    if (c.sessionRequested) return;
    finish(c, "verified");
    c.sessionRequested = true;
    setCallStatus("Call received — signing you in…", "success");
    show(el.cancel, false);
    requestSession(c, 0);
  }

  function requestSession(c, attempt) {
    api("POST", "/v1/login/" + encodeURIComponent(c.id) + "/session", { secret: c.secret })
      .then(function (r) {
        if (!isCurrent(c)) return;
        if (r.status === 200 && r.body) {
          signedIn(r.body);
          return;
        }
        if (r.status === 409 && attempt < 5) {
          // Not verified yet as far as the server is concerned: try again shortly.
          setTimeout(function () {
            if (isCurrent(c)) requestSession(c, attempt + 1);
          }, 500);
          return;
        }
        clearInterval(c.tickTimer);
        c.tickTimer = null;
        c.state = "failed";
        if (r.status === 410) {
          setCallStatus("This sign-in is no longer valid. Start again.", "error");
        } else {
          setCallStatus("Signing in failed (error " + r.status + "). Start again.", "error");
        }
        offerRestart();
      })
      .catch(function () {
        if (!isCurrent(c)) return;
        if (attempt < 5) {
          setTimeout(function () {
            if (isCurrent(c)) requestSession(c, attempt + 1);
          }, 1000);
          return;
        }
        c.state = "failed";
        setCallStatus("Could not reach the server. Start again.", "error");
        offerRestart();
      });
  }

  function onSimulate() {
    var c = challenge;
    if (!c || c.state !== "pending") return;
    setBusy(el.simulate, true);
    api("POST", "/v1/demo/simulate-call", { secret: c.secret, json: { challenge_id: c.id } })
      .then(function (r) {
        setBusy(el.simulate, false);
        if (!isCurrent(c)) return;
        if (r.status !== 200) {
          setCallStatus("The simulated call could not be made (error " + r.status + ").", "error");
          return;
        }
        // The live stream reports the outcome; check at once in case it is not connected.
        schedulePoll(c, 300);
      })
      .catch(function () {
        setBusy(el.simulate, false);
        if (isCurrent(c)) setCallStatus("Could not reach the server to simulate the call.", "error");
      });
  }

  function onCallback() {
    var c = challenge;
    if (!c || c.state !== "pending") return;
    setBusy(el.callback, true);
    api("POST", "/v1/login/" + encodeURIComponent(c.id) + "/callback", { secret: c.secret })
      .then(function (r) {
        setBusy(el.callback, false);
        if (!isCurrent(c) || c.state !== "pending") return;
        if (r.status === 202) {
          var hint = (r.body && r.body.phone_hint) || el.phoneMask.textContent || "";
          setCallStatus("Calling your phone " + hint + " — answer and press 1.", "waiting");
          el.callback.disabled = true;
          return;
        }
        var code = r.body && r.body.error;
        if (r.status === 503 && code === "callback_unavailable") {
          setCallStatus("Call-back is not available. Please call the number instead.", "error");
          show(el.callback, false);
        } else if (r.status === 429) {
          var wait = (r.body && r.body.retry_after) || Number(r.response.headers.get("Retry-After")) || 60;
          setCallStatus("We called recently. You can ask again in " + pluralSeconds(wait) + ".", "error");
        } else {
          setCallStatus("The call-back could not be started (error " + r.status + ").", "error");
        }
      })
      .catch(function () {
        setBusy(el.callback, false);
        if (isCurrent(c)) setCallStatus("Could not reach the server to start the call-back.", "error");
      });
  }

  function backToLogin() {
    stopChallenge();
    challenge = null;
    generation += 1;
    loginError("");
    el.password.value = "";
    showStep("login");
  }

  // ---------------------------------------------------------------- copy

  var copyNumber = window.dialgate.copyButton(el.copyButton, el.copyLabel, el.copyStatus, "number");

  function onCopy() {
    copyNumber.copy((el.dialLink.getAttribute("href") || "").replace(/^tel:/, ""));
  }

  // ---------------------------------------------------------------- step 3: signed in

  function signedIn(body) {
    stopChallenge();
    setText(el.signedInUser, body.username || el.username.value.trim());
    var expires = Date.parse(body.expires_at);
    if (!isNaN(expires)) {
      var when = new Date(expires - clockSkewMs);
      setText(el.sessionExpiry, "Session ends " + when.toLocaleString(undefined, {
        dateStyle: "medium",
        timeStyle: "short"
      }) + ".");
    } else {
      setText(el.sessionExpiry, "");
    }
    setText(el.logoutError, "");
    showStep("done");
  }

  function onLogout() {
    setBusy(el.logout, true);
    setText(el.logoutError, "");
    api("POST", "/v1/logout")
      .then(function (r) {
        setBusy(el.logout, false);
        if (r.status === 204 || r.status === 200) {
          challenge = null;
          generation += 1;
          setText(el.signedInUser, "");
          el.password.value = "";
          loginError("");
          showStep("login");
        } else {
          setText(el.logoutError, "Signing out failed (error " + r.status + "). Please try again.");
        }
      })
      .catch(function () {
        setBusy(el.logout, false);
        setText(el.logoutError, "Could not reach the server. Please try again.");
      });
  }

  // ---------------------------------------------------------------- start

  function detectDemo() {
    api("GET", "/v1/demo")
      .then(function (r) {
        demoMode = r.status === 200 && !!(r.body && r.body.demo === true);
        if (challenge && challenge.state === "pending") {
          show(el.simulate, demoMode);
          show(el.demoNote, demoMode);
        }
      })
      .catch(function () {
        demoMode = false;
      });
  }

  el.loginForm.addEventListener("submit", onLoginSubmit);
  el.copyButton.addEventListener("click", onCopy);
  el.simulate.addEventListener("click", onSimulate);
  el.callback.addEventListener("click", onCallback);
  el.restart.addEventListener("click", backToLogin);
  el.cancel.addEventListener("click", backToLogin);
  el.logout.addEventListener("click", onLogout);
  window.addEventListener("pagehide", stopChallenge);

  document.body.setAttribute("data-step", "login");
  document.documentElement.classList.add("js");
  detectDemo();
})();
