/* smsgw admin panel behaviour. Loaded from /static/ (CSP script-src 'self': no inline
   script anywhere). Everything received is written with textContent, never as HTML. */
(function () {
  "use strict";

  // -- small helpers -----------------------------------------------------------------------

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }

  var numberFormat = new Intl.NumberFormat();

  // A live region announces every write, even of the same text: write only changes.
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function setAttr(node, name, value) {
    if (value === null) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== value) {
      node.setAttribute(name, value);
    }
  }

  function formatValue(value, kind) {
    // queue.not_ready: null while some route can send, else the reason it cannot.
    if (kind === "readiness") return value ? "Not accepting messages: " + value : "Accepting messages";
    if (value === null || value === undefined) return "—";
    if (kind === "percent") return (value * 100).toFixed(1) + " %";
    if (kind === "age") return formatAge(value);
    if (kind === "rate") return value.toFixed(2);
    if (typeof value === "number") return numberFormat.format(value);
    return String(value);
  }

  function formatAge(seconds) {
    if (seconds < 60) return seconds + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
  }

  // <time datetime="…Z">: shown in the browser's time zone, named (e.g. "CST"), so no
  // reader takes it for UTC; the UTC text stays as a title.
  function localTimes(root) {
    var fmt = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "short", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      timeZoneName: "short",
    });
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        t.title = t.getAttribute("datetime");
        t.textContent = fmt.format(d);
      }
    });
  }

  // Time filters in the browser's own time zone; the server gets UTC.
  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function localInputValue(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
  }

  function localTimeFilters() {
    document.querySelectorAll("form[data-local-times]").forEach(function (form) {
      form.querySelectorAll("[data-zone-label]").forEach(function (l) { l.textContent = "(your time)"; });
      var inputs = form.querySelectorAll("input[type=datetime-local][data-utc]");
      inputs.forEach(function (input) {
        var utc = input.getAttribute("data-utc");
        var d = new Date(/[zZ]|[+-]\d\d:\d\d$/.test(utc) ? utc : utc + "Z");
        if (utc && !isNaN(d.getTime())) input.value = localInputValue(d);
      });
      form.addEventListener("submit", function () {
        inputs.forEach(function (input) {
          if (!input.value) return;
          var hidden = document.createElement("input");
          hidden.type = "hidden";
          hidden.name = input.name;
          hidden.value = new Date(input.value).toISOString().replace(/\.\d{3}Z$/, "Z");
          input.removeAttribute("name");
          form.appendChild(hidden);
        });
      });
    });
  }

  // Forms that change something important ask first.
  function confirmForms() {
    document.addEventListener("submit", function (event) {
      var form = event.target;
      var question = form.getAttribute && form.getAttribute("data-confirm");
      if (question && !window.confirm(question)) event.preventDefault();
    });
  }

  // -- dashboard ---------------------------------------------------------------------------

  function Dashboard(root) {
    this.root = root;
    this.status = document.getElementById("live-status");
    this.chart = null;
    this.chartBox = document.getElementById("throughput-chart");
    this.routes = document.getElementById("route-cards");
    this.failures = document.getElementById("failure-rows");
    this.classes = document.getElementById("class-rows");
    this.toggle = document.getElementById("live-toggle");
    this.paused = false;
    this.pending = null;
    var self = this;
    if (this.toggle) {
      this.toggle.addEventListener("click", function () { self.setPaused(!self.paused); });
    }
  }

  // WCAG 2.2.2: live updates can be paused; what arrives meanwhile is kept (only the
  // newest snapshot) and shown on resume.
  Dashboard.prototype.receive = function (snap) {
    if (this.paused) {
      this.pending = snap;
      this.setStatus("paused", "Paused; new figures are waiting", true);
      return;
    }
    this.setStatus("live", "Live");
    this.render(snap);
  };

  Dashboard.prototype.setPaused = function (paused) {
    this.paused = paused;
    setText(this.toggle, paused ? "Resume live updates" : "Pause live updates");
    if (paused) {
      this.setStatus("paused", "Paused");
      return;
    }
    var snap = this.pending;
    this.pending = null;
    this.setStatus("live", "Live");
    if (snap) this.render(snap);
  };

  Dashboard.prototype.connect = function () {
    var self = this;
    var source = new EventSource(this.root.getAttribute("data-events"));
    source.addEventListener("snapshot", function (event) {
      self.receive(JSON.parse(event.data));
    });
    source.addEventListener("logout", function () {
      source.close();
      window.location.assign(self.root.getAttribute("data-login") || "/login");
    });
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.CLOSED) {
        self.setStatus("lost", "Reconnecting…");
        return;
      }
      // The server refused the stream. Signed out? Then go to the sign-in page;
      // otherwise say so and leave reloading to the user (no reload loop).
      self.setStatus("lost", "Disconnected");
      fetch(window.location.href, { method: "HEAD", credentials: "same-origin" }).then(function (r) {
        if (r.redirected && /\/login$/.test(new URL(r.url).pathname)) {
          window.location.assign(r.url);
        } else {
          self.setStatus("lost", "Disconnected — reload the page");
        }
      }, function () { self.setStatus("lost", "Gateway unreachable"); });
    });
  };

  Dashboard.prototype.setStatus = function (state, text, waiting) {
    if (!this.status) return;
    setAttr(this.status, "data-state", state);
    setAttr(this.status, "data-waiting", waiting ? "true" : null);
    setText(this.status, text);
  };

  Dashboard.prototype.render = function (snap) {
    this.root.querySelectorAll("[data-bind]").forEach(function (node) {
      setText(node, formatValue(get(snap, node.getAttribute("data-bind")), node.getAttribute("data-format")));
    });
    var accepting = this.root.querySelector("[data-format=readiness]");
    if (accepting) setAttr(accepting, "class", "badge " + (snap.queue.accepting ? "badge-ok" : "badge-bad"));
    // A warning is said in words (the flag), not by the tile's colour alone.
    this.root.querySelectorAll("[data-warn-above]").forEach(function (node) {
      var value = get(snap, node.getAttribute("data-warn-key")) || 0;
      var warn = value > Number(node.getAttribute("data-warn-above"));
      if (node.classList.contains("is-warn") !== warn) node.classList.toggle("is-warn", warn);
      var flag = node.querySelector(".warn-flag");
      if (flag && flag.hidden === warn) flag.hidden = !warn;
    });
    this.renderClasses(snap.queue.classes);
    this.renderFailures(snap.failures);
    this.renderRoutes(snap.routes);
    this.renderChart(snap.throughput);
    scrollRegions(this.root);
  };

  Dashboard.prototype.renderClasses = function (classes) {
    if (!this.classes) return;
    var text = JSON.stringify(classes);
    if (text === this.classesText) return;
    this.classesText = text;
    var rows = classes.map(function (c) {
      var tr = el("tr");
      var name = el("th", null);
      name.scope = "row";
      name.appendChild(el("span", "badge badge-" + c.name, c.name));
      tr.appendChild(name);
      ["queued", "scheduled", "sending"].forEach(function (k) {
        tr.appendChild(el("td", "num", numberFormat.format(c[k])));
      });
      return tr;
    });
    this.classes.replaceChildren.apply(this.classes, rows);
  };

  Dashboard.prototype.renderFailures = function (failures) {
    if (!this.failures) return;
    var text = JSON.stringify(failures);
    if (text === this.failuresText) return;
    this.failuresText = text;
    if (!failures.length) {
      var tr = el("tr");
      var td = el("td", "empty", "No failures in the last hour.");
      td.colSpan = 2;
      tr.appendChild(td);
      this.failures.replaceChildren(tr);
      return;
    }
    this.failures.replaceChildren.apply(this.failures, failures.map(function (f) {
      var tr = el("tr");
      tr.appendChild(el("td", "mono", f.code));
      tr.appendChild(el("td", "num", numberFormat.format(f.count)));
      return tr;
    }));
  };

  Dashboard.prototype.renderRoutes = function (routes) {
    if (!this.routes) return;
    var text = JSON.stringify(routes);
    if (text === this.routesText) return;  // unchanged: keep the DOM (and any focus) as it is
    this.routesText = text;
    this.routes.replaceChildren.apply(this.routes, routes.map(routeCard));
    scrollRegions(this.routes);
  };

  function routeCard(r) {
    var wide = r.units && r.units.length;  // a modem bank's table needs the whole row
    var card = el("article", "card route-card" + (wide ? " route-card-wide" : ""));
    card.setAttribute("aria-label", "Route " + r.name);
    card.setAttribute("data-route", r.name);
    var head = el("header");
    var title = el("div");
    title.appendChild(el("h3", null, r.name));
    title.appendChild(el("span", "route-type", r.type));
    head.appendChild(title);
    var badges = el("div");
    var state = el("span", "badge badge-" + r.state, r.state);
    state.setAttribute("data-field", "state");
    badges.appendChild(state);
    if (r.throttled) {
      badges.appendChild(document.createTextNode(" "));
      badges.appendChild(el("span", "badge badge-throttled", "throttled"));
    }
    head.appendChild(badges);
    card.appendChild(head);
    card.appendChild(el("div", "route-detail", r.detail || ""));
    var label = el("div", "stat-sub", "Window " + r.in_flight + " of " + r.window + " in use");
    card.appendChild(label);
    var meter = el("progress", "meter");
    meter.max = r.window;
    meter.value = Math.min(r.in_flight, r.window);
    meter.setAttribute("aria-label", "Window in use");
    card.appendChild(meter);
    var facts = el("dl", "facts");
    [["Queued", r.queued], ["Scheduled", r.scheduled], ["Sending", r.sending],
     ["Rate", r.rate === null ? "unlimited" : r.rate + " /s" + (r.configured_rate && r.rate < r.configured_rate ? " of " + r.configured_rate : "") + (r.discovered ? " (found from the carrier's throttling)" : "")]
    ].forEach(function (pair) {
      facts.appendChild(el("dt", null, pair[0]));
      facts.appendChild(el("dd", null, typeof pair[1] === "number" ? numberFormat.format(pair[1]) : pair[1]));
    });
    card.appendChild(facts);
    if (r.units && r.units.length) card.appendChild(unitTable(r.unit_columns, r.units));
    var counters = el("div", "counters");
    Object.keys(r.counters).forEach(function (k) {
      var item = el("span", null, k.replace(/_/g, " ") + " ");
      item.appendChild(el("b", null, numberFormat.format(r.counters[k])));
      counters.appendChild(item);
    });
    card.appendChild(counters);
    return card;
  }

  function unitTable(columns, units) {
    var wrap = el("div", "table-wrap units");
    var table = el("table");
    var head = el("tr");
    head.appendChild(el("th", null, "Modem"));
    columns.forEach(function (c) { head.appendChild(el("th", null, c.replace(/_/g, " "))); });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    units.forEach(function (u) {
      var tr = el("tr");
      var name = el("th", null, u.name);
      name.scope = "row";
      tr.appendChild(name);
      u.cells.forEach(function (v, i) {
        var td = el("td", null, v === null ? "—" : (typeof v === "object" ? null : v));
        td.setAttribute("data-col", columns[i]);
        if (v !== null && typeof v === "object") {  // a modem's signal: bars and words
          var bars = el("span", "bars bars-" + v.bars);
          bars.setAttribute("aria-hidden", "true");
          for (var b = 0; b < 4; b++) bars.appendChild(el("i"));
          td.appendChild(bars);
          td.appendChild(document.createTextNode(" " + v.text));
        }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.appendChild(body);
    wrap.appendChild(table);
    return wrap;
  }

  Dashboard.prototype.renderChart = function (t) {
    if (!this.chartBox || typeof window.uPlot !== "function") return;
    var xs = t.per_second.map(function (_, i) { return t.start + i * t.step; });
    var data = [xs, t.per_second];
    if (this.chart) {
      this.chart.setData(data);
      return;
    }
    var box = this.chartBox;
    var hours = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    var opts = {
      width: chartWidth(box),
      height: 240,
      series: [
        {},
        { label: "Sends per second", stroke: "#1f5fbf", fill: "rgba(31,95,191,0.12)", width: 2,
          value: function (u, v) { return v == null ? "—" : v.toFixed(2); } },
      ],
      // Short labels, far enough apart not to overlap on a tablet or a phone.
      axes: [
        { space: 72, values: function (u, splits) {
          return splits.map(function (v) { return hours.format(new Date(v * 1000)); });
        } },
        { label: "per second", size: 56, space: 36 },
      ],
      scales: { y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.15)]; } } },
      cursor: { drag: { x: false, y: false } },
      legend: { show: false },
    };
    this.chart = new window.uPlot(opts, data, box);
    var chart = this.chart;
    box.uplotChart = chart;  // for the browser tests' label check
    var width = chartWidth(box);
    new ResizeObserver(function () {
      if (chartWidth(box) !== width) {
        width = chartWidth(box);
        chart.setSize({ width: width, height: 240 });
      }
    }).observe(box);
  };

  function chartWidth(box) {
    return Math.max(180, Math.floor(box.clientWidth));
  }

  // -- tables that scroll sideways can be scrolled from the keyboard ----------------------

  function scrollRegions(root) {
    root.querySelectorAll(".table-wrap").forEach(function (wrap) {
      if (wrap.scrollWidth > wrap.clientWidth + 1) {
        if (wrap.getAttribute("tabindex") === "0") return;
        var caption = wrap.querySelector("caption");
        var section = wrap.closest("section[aria-labelledby], article[aria-labelledby]");
        var heading = section && document.getElementById(section.getAttribute("aria-labelledby"));
        var name = (caption || heading || { textContent: "Table" }).textContent.trim();
        wrap.tabIndex = 0;
        wrap.setAttribute("role", "region");
        wrap.setAttribute("aria-label", name + " (scrolls sideways)");
      } else if (wrap.getAttribute("tabindex") === "0") {
        ["tabindex", "role", "aria-label"].forEach(function (a) { wrap.removeAttribute(a); });
      }
    });
  }

  // -- copy a secret shown once -----------------------------------------------------------

  function copyButtons() {
    document.querySelectorAll("button[data-copy]").forEach(function (button) {
      var source = document.querySelector(button.getAttribute("data-copy"));
      var result = document.getElementById("copy-result");
      if (!source || !result) return;
      button.addEventListener("click", function () {
        var text = source.textContent.trim();
        function fallback() {
          var range = document.createRange();
          range.selectNodeContents(source);
          var selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
          result.textContent = "Could not copy by itself: the token is selected, press Ctrl+C (⌘C on a Mac).";
        }
        result.textContent = "";
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(text).then(function () {
            result.textContent = "Copied to the clipboard.";
          }, fallback);
        } else {
          fallback();
        }
      });
    });
  }

  // -- the idle sign-out, announced before it happens (WCAG 2.2.1) ---------------------------

  var TOUCH_SLACK = 5000;  // the server writes last_seen at most every 5 s (sessions.py)
  var SHARED_DEADLINE = "smsgw.session-ends";

  function idleWarning() {
    var body = document.body;
    var dialog = document.getElementById("idle-warning");
    var endsIn = parseFloat(body.getAttribute("data-session-ends-in"));
    if (!dialog || isNaN(endsIn)) return;
    var idle = parseFloat(body.getAttribute("data-session-idle")) * 1000;
    var lead = Math.min(120000, idle / 2);  // warn two minutes before (less for short timeouts)
    var stay = document.getElementById("idle-stay");
    var countdown = document.getElementById("idle-countdown");
    var problem = document.getElementById("idle-problem");
    var deadline = Date.now() + endsIn * 1000;
    var timer = null;

    function shared() {
      try { return Number(window.localStorage.getItem(SHARED_DEADLINE)) || 0; } catch (e) { return 0; }
    }
    function share() {  // other tabs of this session: their activity counts too
      try {
        if (shared() < deadline) window.localStorage.setItem(SHARED_DEADLINE, String(deadline));
      } catch (e) { /* storage disabled: each tab keeps its own time */ }
    }
    function say(text) {
      problem.textContent = text;
      problem.hidden = !text;
    }
    function show(now) {
      if (!dialog.open) {
        say("");
        dialog.showModal();
        stay.focus();
      }
      setText(countdown, "Time left: " + formatAge(Math.max(0, Math.ceil((deadline - now) / 1000))) + ".");
    }
    function schedule() {
      clearTimeout(timer);
      var now = Date.now();
      deadline = Math.max(deadline, shared());
      if (now >= deadline) {
        // The server has ended the session by now: loading the page shows the sign-in form.
        window.location.assign(window.location.href);
        return;
      }
      if (now >= deadline - lead) {
        show(now);
        timer = setTimeout(schedule, Math.min(1000, deadline - now));
        return;
      }
      if (dialog.open) dialog.close();
      timer = setTimeout(schedule, deadline - lead - now);
    }
    stay.addEventListener("click", function () {
      var token = document.querySelector("meta[name=csrf-token]").content;
      fetch(body.getAttribute("data-keepalive"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": token, "Accept": "application/json" },
      }).then(function (r) {
        if (r.status === 401) {
          window.location.assign(window.location.href);
          return null;
        }
        if (!r.ok) throw new Error(String(r.status));
        return r.json();
      }).then(function (answer) {
        if (!answer) return;
        deadline = Date.now() + answer.ends_in * 1000;
        share();
        schedule();
        if (answer.ends_in * 1000 <= lead) {
          say("This session has reached its longest allowed time: sign in again to go on.");
        }
      }, function () { say("The gateway did not answer. Try again."); });
    });
    // Escape answers the question too: someone is there.
    dialog.addEventListener("cancel", function (event) {
      event.preventDefault();
      stay.click();
    });
    window.addEventListener("storage", function (event) {
      if (event.key === SHARED_DEADLINE) schedule();
    });
    document.body.addEventListener("htmx:afterRequest", function () {
      deadline = Math.max(deadline, Date.now() + idle - TOUCH_SLACK);
      share();
      schedule();
    });
    share();
    schedule();
  }

  // -- start --------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    localTimeFilters();
    confirmForms();
    copyButtons();
    idleWarning();
    // On a narrow screen the navigation scrolls sideways: show where we are.
    var nav = document.querySelector(".sidenav");
    var here = nav && nav.querySelector("a[aria-current=page]");
    if (here && nav.scrollWidth > nav.clientWidth) nav.scrollLeft = Math.max(0, here.offsetLeft - 8);
    scrollRegions(document);
    var resizing = false;
    window.addEventListener("resize", function () {
      if (resizing) return;
      resizing = true;
      window.requestAnimationFrame(function () {
        resizing = false;
        scrollRegions(document);
      });
    });
    var root = document.getElementById("dashboard");
    if (root) {
      var dashboard = new Dashboard(root);
      var initial = document.getElementById("dashboard-initial");
      if (initial) dashboard.render(JSON.parse(initial.textContent));
      dashboard.connect();
    }
    document.body.addEventListener("htmx:afterSwap", function (event) {
      localTimes(event.target);
      scrollRegions(document);
      // The button that was pressed is gone: keyboard focus goes to what replaced it.
      var revealed = event.target.querySelector(".revealed");
      if (revealed) {
        revealed.tabIndex = -1;
        revealed.focus();
      }
    });
    document.body.addEventListener("htmx:responseError", function (event) {
      var target = event.detail.target;
      var xhr = event.detail.xhr;
      var message = "The request was refused (" + xhr.status + ").";
      try { message = JSON.parse(xhr.responseText).error.message; } catch (e) { /* not JSON */ }
      if (target) {
        var note = el("span", "notice notice-bad", message);
        note.setAttribute("role", "alert");
        target.replaceChildren(note);
      }
    });
  });
})();
