// slipway's dashboard script, small and optional: every page reads without it. It shows times
// in the viewer's zone (the exact UTC time stays in the tooltip), follows a running pipeline's
// job states and a running job's log over Server-Sent Events, and asks before dangerous forms.
(function () {
  "use strict";

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function zoneName(d) {
    try {
      var parts = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" }).formatToParts(d);
      for (var i = 0; i < parts.length; i++) {
        if (parts[i].type === "timeZoneName") { return parts[i].value; }
      }
    } catch (e) { /* an old browser: no zone name */ }
    return "";
  }

  function localTimes(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = times[i], iso = t.getAttribute("datetime"), d = new Date(iso);
      if (isNaN(d.getTime())) { continue; }
      t.textContent = t.hasAttribute("data-seconds")
        ? pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds())
        : d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
          pad(d.getHours()) + ":" + pad(d.getMinutes()) + " " + zoneName(d);
      t.title = iso;
    }
  }

  function confirmForms(root) {
    var forms = root.querySelectorAll("form[data-confirm]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener("submit", function (ev) {
        if (!window.confirm(this.getAttribute("data-confirm"))) { ev.preventDefault(); }
      });
    }
  }

  function setStatus(el, status, label) {
    // `class` as an attribute: an SVG element's className is not a string.
    var kept = (el.getAttribute("class") || "").split(/\s+/).filter(function (c) {
      return c && !/^(created|pending|running|success|failed|allowed_failure|canceled|skipped|manual|scheduled)$/.test(c);
    });
    kept.push(status);
    el.setAttribute("class", kept.join(" "));
    if (label !== null) { el.textContent = label; }
  }

  // A running pipeline: job states, durations and the pipeline's own state as they change.
  function followPipeline(main) {
    var url = main.getAttribute("data-live-pipeline");
    if (!url || !window.EventSource) { return; }
    var es = new EventSource(url);
    es.addEventListener("jobs", function (ev) {
      var v = JSON.parse(ev.data);
      var head = document.querySelector("[data-run-status]");
      if (head) { setStatus(head, v.status, v.label); }
      v.jobs.forEach(function (j) {
        var cells = document.querySelectorAll("[data-job=\"" + j.index + "\"]");
        for (var i = 0; i < cells.length; i++) {
          var c = cells[i];
          if (c.hasAttribute("data-duration")) { c.textContent = j.duration; }
          else if (c.tagName.toLowerCase() === "a") {
            setStatus(c, j.status, null);
            var st = c.querySelector(".st");
            if (st) { st.textContent = j.label; }
          } else { setStatus(c, j.status, j.label); }
        }
      });
    });
    es.addEventListener("end", function () { es.close(); window.location.reload(); });
  }

  // A running job's log: new lines appended; the view follows while it is at the bottom.
  function followLog(pre) {
    var url = pre.getAttribute("data-live-log");
    if (!url || !window.EventSource) { return; }
    var es = new EventSource(url);
    es.addEventListener("lines", function (ev) {
      var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
      pre.insertAdjacentHTML("beforeend", ev.data);
      if (atBottom) { window.scrollTo(0, document.body.scrollHeight); }
    });
    es.addEventListener("end", function () {
      es.close();
      var u = new URL(window.location.href);
      u.searchParams.delete("page");
      window.location.replace(u.toString());
    });
  }

  // A rollout under way: its lines as the engine tells them; the page reloads when it ends.
  function followRollout(ol) {
    var url = ol.getAttribute("data-live-rollout");
    if (!url || !window.EventSource) { return; }
    var es = new EventSource(url);
    es.addEventListener("lines", function (ev) {
      ol.insertAdjacentHTML("beforeend", ev.data);
      localTimes(ol);
      ol.scrollTop = ol.scrollHeight;
    });
    es.addEventListener("end", function () { es.close(); window.location.reload(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    confirmForms(document);
    var main = document.querySelector("main[data-live-pipeline]");
    if (main) { followPipeline(main); }
    var pre = document.querySelector("pre[data-live-log]");
    if (pre) { followLog(pre); }
    var ol = document.querySelector("ol[data-live-rollout]");
    if (ol) { followRollout(ol); }
  });
})();
