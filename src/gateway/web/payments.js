// dialgate temporary passwords page. Plain script, no build step, no external resources;
// it runs under `Content-Security-Policy: default-src 'self'`, so it never writes inline
// styles or markup: sections are switched with the `hidden` attribute and CSS classes,
// and every piece of text goes in with textContent.
//
// The owner is signed in on `/` (the `dialgate_session` cookie goes along by itself,
// same origin). GET /v1/balance and GET /v1/temp-passwords fill the page; a 401 from any
// of them shows "Sign in first". POST /v1/temp-passwords issues a password, shown once;
// POST /v1/temp-passwords/{id}/pause|resume|revoke change one, answering the new row.
// Money is integer minor units (1250 = 12.50) in the account's currency.
(function () {
  "use strict";

  var STATUS_TEXT = {
    usable: "Can be used",
    paused: "Paused",
    revoked: "Revoked",
    not_yet_valid: "Not valid yet",
    expired: "Expired",
    uses_exhausted: "No payments left",
    limit_exhausted: "Spending limit reached"
  };

  var STATE_TEXT = {
    active: "Active",
    paused: "Paused",
    revoked: "Revoked"
  };

  var ACTION_DONE = {
    pause: "paused",
    resume: "resumed",
    revoke: "revoked"
  };

  // Largest amount the server accepts (10^12 minor units).
  var MAX_AMOUNT = 1000000000000;
  var MAX_USES = 2147483647;

  function $(id) {
    return document.getElementById(id);
  }

  var el = {
    heading: $("page-heading"),
    loading: $("loading"),
    signedOut: $("signed-out"),
    loadFailed: $("load-failed"),
    loadFailedText: $("load-failed-text"),
    retry: $("retry"),
    view: $("signed-in-view"),
    balanceAmount: $("balance-amount"),
    balanceCurrency: $("balance-currency"),
    issued: $("issued"),
    issuedHeading: $("issued-heading"),
    issuedPassword: $("issued-password"),
    issuedSummary: $("issued-summary"),
    copy: $("copy-password"),
    copyLabel: $("copy-password-label"),
    copyStatus: $("copy-password-status"),
    done: $("issued-done"),
    form: $("issue-form"),
    label: $("tp-label"),
    validFor: $("tp-valid-for"),
    validUntilField: $("tp-valid-until-field"),
    validUntil: $("tp-valid-until"),
    maxUses: $("tp-max-uses"),
    spendLimit: $("tp-spend-limit"),
    perPayment: $("tp-per-payment-limit"),
    issueError: $("issue-error"),
    issueSubmit: $("issue-submit"),
    listHeading: $("list-heading"),
    list: $("tp-list"),
    empty: $("tp-empty"),
    status: $("status")
  };

  var currency = "";
  var items = [];
  var statusTimer = null;

  // ---------------------------------------------------------------- helpers

  var setText = window.dialgate.setText;
  var show = window.dialgate.show;
  var setBusy = window.dialgate.setBusy;

  // Announces `text` in the page's live region (cleared again after a while).
  function announce(text, tone) {
    clearTimeout(statusTimer);
    setText(el.status, text);
    el.status.className = "page-status" + (tone ? " page-status-" + tone : "");
    if (text) {
      statusTimer = setTimeout(function () {
        setText(el.status, "");
        el.status.className = "page-status";
      }, 15000);
    }
  }

  function api(method, path, json) {
    return window.dialgate.request(method, path, { json: json });
  }

  function retryAfter(r) {
    var n = (r.body && Number(r.body.retry_after)) ||
      Number(r.response.headers.get("Retry-After")) || 30;
    return Math.max(1, Math.ceil(n));
  }

  // A short sentence for an unexpected answer.
  function failureText(r) {
    if (r.status === 429) {
      var n = retryAfter(r);
      return "Too many requests. Try again in " + n + (n === 1 ? " second." : " seconds.");
    }
    if (r.status === 503) return "The service is temporarily unavailable. Please try again in a few minutes.";
    return "Something went wrong (error " + r.status + "). Please try again.";
  }

  // `1250` -> `12.50` (integer minor units, two decimals).
  function formatAmount(minor) {
    var n = Number(minor);
    if (!isFinite(n)) return "–";
    var sign = n < 0 ? "-" : "";
    n = Math.abs(Math.round(n));
    var cents = n % 100;
    return sign + Math.floor(n / 100) + "." + (cents < 10 ? "0" : "") + cents;
  }

  function money(minor) {
    return formatAmount(minor) + (currency ? " " + currency : "");
  }

  // `12.50`, `12.5`, `12`, `12,50` -> 1250; null when empty; NaN when not an amount.
  function parseAmount(text) {
    var t = String(text || "").trim();
    if (!t) return null;
    if (t.indexOf(".") < 0) t = t.replace(",", ".");
    var m = /^(\d{1,13})(?:\.(\d{1,2}))?$/.exec(t);
    if (!m) return NaN;
    var cents = m[2] ? Number((m[2] + "0").slice(0, 2)) : 0;
    var amount = Number(m[1]) * 100 + cents;
    if (amount <= 0 || amount > MAX_AMOUNT) return NaN;
    return amount;
  }

  // RFC 3339 text or Unix milliseconds -> a Date, or null.
  function parseTime(value) {
    if (value == null || value === "") return null;
    var ms = typeof value === "number" ? value : Date.parse(value);
    return isNaN(ms) ? null : new Date(ms);
  }

  function formatTime(value) {
    var d = parseTime(value);
    if (!d) return null;
    return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function field(item, name) {
    if (item[name] !== undefined) return item[name];
    return item[name + "_ms"];
  }

  function itemName(item) {
    return item.label ? "“" + item.label + "”" : "Temporary password #" + item.id;
  }

  // ---------------------------------------------------------------- views

  function showView(name) {
    show(el.loading, name === "loading");
    show(el.signedOut, name === "signed-out");
    show(el.loadFailed, name === "failed");
    show(el.view, name === "view");
    document.body.setAttribute("data-view", name);
  }

  function signedOut() {
    hideIssued();
    items = [];
    el.list.textContent = "";
    showView("signed-out");
    announce("You are not signed in.");
  }

  function loadFailed(text) {
    setText(el.loadFailedText, text);
    showView("failed");
  }

  // ---------------------------------------------------------------- loading

  function renderBalance(body) {
    currency = body && body.currency ? String(body.currency) : "";
    setText(el.balanceAmount, formatAmount(body ? body.balance : NaN));
    setText(el.balanceCurrency, currency);
  }

  function load() {
    showView("loading");
    Promise.all([api("GET", "/v1/balance"), api("GET", "/v1/temp-passwords")])
      .then(function (answers) {
        var balance = answers[0];
        var list = answers[1];
        if (balance.status === 401 || list.status === 401) {
          signedOut();
          return;
        }
        if (balance.status !== 200) {
          loadFailed(failureText(balance));
          return;
        }
        if (list.status !== 200) {
          loadFailed(failureText(list));
          return;
        }
        renderBalance(balance.body);
        items = (list.body && Array.isArray(list.body.items)) ? list.body.items.slice() : [];
        renderList();
        showView("view");
      })
      .catch(function () {
        loadFailed("Could not reach the server. Check your connection and try again.");
      });
  }

  function reloadList() {
    return api("GET", "/v1/temp-passwords")
      .then(function (r) {
        if (r.status === 401) {
          signedOut();
          return;
        }
        if (r.status !== 200) {
          announce("The list could not be updated. " + failureText(r), "error");
          return;
        }
        items = (r.body && Array.isArray(r.body.items)) ? r.body.items.slice() : [];
        renderList();
      })
      .catch(function () {
        announce("Could not reach the server to update the list.", "error");
      });
  }

  // ---------------------------------------------------------------- the list

  function fact(dl, term, value, className) {
    var dt = document.createElement("dt");
    dt.textContent = term;
    var dd = document.createElement("dd");
    dd.textContent = value;
    if (className) dd.className = className;
    dl.appendChild(dt);
    dl.appendChild(dd);
  }

  function actionButton(item, action, text, primary) {
    var b = document.createElement("button");
    b.type = "button";
    b.className = "button button-small " + (primary ? "button-danger" : "button-secondary");
    b.textContent = text;
    b.setAttribute("data-action", action);
    b.setAttribute("data-id", String(item.id));
    b.setAttribute("aria-label", text + " " + itemName(item));
    return b;
  }

  function renderItem(item) {
    var li = document.createElement("li");
    var state = String(item.state || "");
    var status = String(item.status || "");
    li.className = "tp-item tp-item-" + state;
    li.setAttribute("data-id", String(item.id));
    li.setAttribute("data-state", state);
    li.setAttribute("data-status", status);

    var head = document.createElement("div");
    head.className = "tp-head";
    var name = document.createElement("h3");
    name.className = "tp-name";
    name.id = "tp-name-" + item.id;
    name.tabIndex = -1;
    name.textContent = item.label ? item.label : "Temporary password #" + item.id;
    var badge = document.createElement("span");
    badge.className = "badge badge-" + state + " tp-state";
    badge.textContent = STATE_TEXT[state] || state;
    head.appendChild(name);
    head.appendChild(badge);
    li.setAttribute("aria-labelledby", name.id);
    li.appendChild(head);

    var dl = document.createElement("dl");
    dl.className = "tp-facts";
    fact(dl, "Status", STATUS_TEXT[status] || status, "tp-status");
    var uses = item.remaining_uses;
    fact(dl, "Payments left", uses == null ? "No limit" : String(uses), "tp-uses");
    var limit = item.remaining_limit;
    fact(dl, "Spending left", limit == null ? "No limit" : money(limit), "tp-limit");
    var until = formatTime(field(item, "valid_until"));
    fact(dl, "Valid until", until || "No end", "tp-until");
    var from = parseTime(field(item, "valid_from"));
    if (from && from.getTime() > Date.now()) {
      fact(dl, "Valid from", formatTime(field(item, "valid_from")), "tp-from");
    }
    var created = formatTime(field(item, "created_at"));
    if (created) fact(dl, "Issued", created, "tp-created");
    li.appendChild(dl);

    var message = document.createElement("p");
    message.className = "tp-message";
    message.hidden = true;
    li.appendChild(message);

    if (state !== "revoked") {
      var actions = document.createElement("div");
      actions.className = "tp-actions";
      if (state === "active") actions.appendChild(actionButton(item, "pause", "Pause"));
      if (state === "paused") actions.appendChild(actionButton(item, "resume", "Resume"));
      actions.appendChild(actionButton(item, "revoke", "Revoke"));
      li.appendChild(actions);

      // Revoking cannot be undone: ask once more, in place (no dialogs).
      var confirm = document.createElement("div");
      confirm.className = "tp-confirm";
      confirm.hidden = true;
      var question = document.createElement("p");
      question.className = "tp-confirm-text";
      question.id = "tp-confirm-" + item.id;
      question.textContent = "Revoke it for good? It cannot be used again, and this cannot be undone.";
      var yes = actionButton(item, "confirm-revoke", "Yes, revoke", true);
      yes.setAttribute("aria-describedby", question.id);
      var no = actionButton(item, "cancel-revoke", "Keep it");
      var row = document.createElement("div");
      row.className = "tp-actions";
      row.appendChild(yes);
      row.appendChild(no);
      confirm.appendChild(question);
      confirm.appendChild(row);
      li.appendChild(confirm);
    }
    return li;
  }

  function renderList() {
    el.list.textContent = "";
    items.forEach(function (item) {
      el.list.appendChild(renderItem(item));
    });
    show(el.empty, items.length === 0);
  }

  function rowOf(id) {
    return el.list.querySelector('li[data-id="' + String(id).replace(/[^0-9A-Za-z_-]/g, "") + '"]');
  }

  // Replaces one row with the server's new version of it, keeping focus nearby.
  function updateItem(item, focusAction) {
    var index = -1;
    items.forEach(function (it, i) {
      if (String(it.id) === String(item.id)) index = i;
    });
    if (index < 0) {
      items.unshift(item);
      renderList();
      return;
    }
    items[index] = item;
    var old = rowOf(item.id);
    var fresh = renderItem(item);
    if (old) el.list.replaceChild(fresh, old);
    else renderList();
    var target = focusAction && fresh.querySelector('button[data-action="' + focusAction + '"]');
    (target || fresh.querySelector(".tp-name")).focus();
  }

  function askRevoke(li, open) {
    var confirm = li.querySelector(".tp-confirm");
    var actions = li.querySelector(".tp-actions");
    if (!confirm || !actions) return;
    show(confirm, open);
    show(actions, !open);
    var target = li.querySelector(open ? 'button[data-action="cancel-revoke"]' : 'button[data-action="revoke"]');
    if (target) target.focus();
  }

  function runAction(id, action, button) {
    var item = null;
    items.forEach(function (it) {
      if (String(it.id) === String(id)) item = it;
    });
    var name = item ? itemName(item) : "The temporary password";
    setBusy(button, true);
    api("POST", "/v1/temp-passwords/" + encodeURIComponent(id) + "/" + action)
      .then(function (r) {
        setBusy(button, false);
        if (r.status === 200 && r.body && r.body.id != null) {
          var next = r.body.state === "paused" ? "resume" : r.body.state === "active" ? "pause" : null;
          updateItem(r.body, next);
          announce(name + " " + ACTION_DONE[action] + ".", "success");
          return;
        }
        if (r.status === 401) {
          signedOut();
          return;
        }
        if (r.status === 409) {
          announce("Cannot do that now.", "error");
          rowMessage(id, "Cannot do that now: it changed in the meantime. It is shown as it is now.");
          return;
        }
        if (r.status === 404) {
          announce(name + " no longer exists. The list is updated.", "error");
          reloadList();
          return;
        }
        announce(failureText(r), "error");
      })
      .catch(function () {
        setBusy(button, false);
        announce("Could not reach the server. Please try again.", "error");
      });
  }

  // After a refused change: the fresh list, with a note on the row (and focus on it).
  function rowMessage(id, text) {
    reloadList().then(function () {
      var li = rowOf(id);
      if (!li) return;
      var note = li.querySelector(".tp-message");
      setText(note, text);
      show(note, true);
      var name = li.querySelector(".tp-name");
      if (name) name.focus();
    });
  }

  function onListClick(event) {
    var button = event.target.closest ? event.target.closest("button[data-action]") : null;
    if (!button || button.disabled) return;
    var li = button.closest("li[data-id]");
    var id = button.getAttribute("data-id");
    switch (button.getAttribute("data-action")) {
      case "pause":
        runAction(id, "pause", button);
        break;
      case "resume":
        runAction(id, "resume", button);
        break;
      case "revoke":
        askRevoke(li, true);
        break;
      case "cancel-revoke":
        askRevoke(li, false);
        break;
      case "confirm-revoke":
        runAction(id, "revoke", button);
        break;
    }
  }

  // ---------------------------------------------------------------- issuing

  function issueError(text, input) {
    setText(el.issueError, text);
    [el.label, el.validUntil, el.maxUses, el.spendLimit, el.perPayment].forEach(function (i) {
      i.setAttribute("aria-invalid", i === input ? "true" : "false");
    });
    if (input) input.focus();
  }

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  // The value of a datetime-local input for `date` (local time, minutes).
  function localInputValue(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
  }

  function onValidForChange() {
    var until = el.validFor.value === "until";
    show(el.validUntilField, until);
    if (until) {
      var now = new Date();
      el.validUntil.min = localInputValue(now);
      if (!el.validUntil.value) {
        el.validUntil.value = localInputValue(new Date(now.getTime() + 86400000));
      }
    }
  }

  // The request body, or null after showing what is wrong.
  function readForm() {
    var body = {};
    var label = el.label.value.trim();
    if (label) {
      if (label.length > 64) {
        issueError("The label can be at most 64 characters.", el.label);
        return null;
      }
      body.label = label;
    }

    if (el.validFor.value === "until") {
      var raw = el.validUntil.value;
      // datetime-local values are local time without a zone: Date reads them as such.
      var until = raw ? new Date(raw) : null;
      if (!until || isNaN(until.getTime())) {
        issueError("Choose the date and time until which the password is valid.", el.validUntil);
        return null;
      }
      if (until.getTime() <= Date.now() + 60000) {
        issueError("The end of validity must be in the future.", el.validUntil);
        return null;
      }
      body.valid_until = until.toISOString();
    } else {
      body.valid_for = Number(el.validFor.value);
    }

    var uses = el.maxUses.value.trim();
    if (uses) {
      if (!/^\d{1,10}$/.test(uses) || Number(uses) < 1 || Number(uses) > MAX_USES) {
        issueError("The maximum number of payments must be a whole number of at least 1.", el.maxUses);
        return null;
      }
      body.max_uses = Number(uses);
    }

    var spend = parseAmount(el.spendLimit.value);
    if (spend !== null) {
      if (isNaN(spend)) {
        issueError("Write the spending limit like 20.00 (more than 0, at most two decimals).", el.spendLimit);
        return null;
      }
      body.spend_limit = spend;
    }

    var per = parseAmount(el.perPayment.value);
    if (per !== null) {
      if (isNaN(per)) {
        issueError("Write the limit per payment like 5.00 (more than 0, at most two decimals).", el.perPayment);
        return null;
      }
      body.per_payment_limit = per;
    }
    return body;
  }

  function describeConditions(issued) {
    var parts = [];
    var until = formatTime(field(issued, "valid_until"));
    parts.push(until ? "Valid until " + until : "No end date");
    if (issued.max_uses != null) {
      parts.push(issued.max_uses + (Number(issued.max_uses) === 1 ? " payment" : " payments"));
    }
    if (issued.spend_limit != null) parts.push("up to " + money(issued.spend_limit) + " in total");
    if (issued.per_payment_limit != null) parts.push("at most " + money(issued.per_payment_limit) + " per payment");
    return (issued.label ? issued.label + ": " : "") + parts.join(", ") + ".";
  }

  function showIssued(issued) {
    if (issued.currency && !currency) currency = String(issued.currency);
    setText(el.issuedPassword, issued.password);
    setText(el.issuedSummary, describeConditions(issued));
    copyPassword.reset();
    show(el.issued, true);
    el.issuedHeading.focus();
  }

  function hideIssued() {
    setText(el.issuedPassword, "");
    setText(el.issuedSummary, "");
    copyPassword.reset();
    show(el.issued, false);
  }

  function onIssueSubmit(event) {
    event.preventDefault();
    if (el.issueSubmit.disabled) return;
    var body = readForm();
    if (!body) return;
    issueError("");
    setBusy(el.issueSubmit, true);
    api("POST", "/v1/temp-passwords", body)
      .then(function (r) {
        setBusy(el.issueSubmit, false);
        if ((r.status === 201 || r.status === 200) && r.body && r.body.password) {
          el.form.reset();
          onValidForChange();
          showIssued(r.body);
          announce("Temporary password issued. It is shown once, below the balance.", "success");
          reloadList();
          return;
        }
        if (r.status === 401) {
          signedOut();
          return;
        }
        if (r.status === 400 || r.status === 422) {
          var detail = r.body && r.body.detail ? String(r.body.detail) : "";
          issueError(detail ? "Check the values: " + detail + "." : "Check the values and try again.", null);
          return;
        }
        issueError(failureText(r), null);
      })
      .catch(function () {
        setBusy(el.issueSubmit, false);
        issueError("Could not reach the server. Check your connection and try again.", null);
      });
  }

  // ---------------------------------------------------------------- copy

  var copyPassword = window.dialgate.copyButton(el.copy, el.copyLabel, el.copyStatus, "password");

  function onCopy() {
    copyPassword.copy(el.issuedPassword.textContent);
  }

  function onDone() {
    hideIssued();
    announce("The password is hidden now. It is in the list below.");
    el.listHeading.setAttribute("tabindex", "-1");
    el.listHeading.focus();
  }

  // ---------------------------------------------------------------- start

  el.form.addEventListener("submit", onIssueSubmit);
  el.validFor.addEventListener("change", onValidForChange);
  el.copy.addEventListener("click", onCopy);
  el.done.addEventListener("click", onDone);
  el.list.addEventListener("click", onListClick);
  el.retry.addEventListener("click", load);
  // Never leave a shown password in the page when leaving it (back/forward cache).
  window.addEventListener("pagehide", hideIssued);

  document.documentElement.classList.add("js");
  load();
})();
