/* atomlab dashboard: draws each page's figures and keeps them live with server-sent events.
 *
 * The page's data comes from the JSON block #page-data (the server renders it); figures are
 * plotly figure dicts built by atomlab.views. Live updates append with Plotly.extendTraces or
 * redraw with Plotly.react; both keep the user's zoom and legend choices (layout.uirevision).
 * window.atomlab counts the events received, for people and for the browser tests.
 */
(function () {
  "use strict";

  var PLOT_CONFIG = { responsive: true, displaylogo: false };
  var state = (window.atomlab = { ready: false, events: {}, points: 0, problems: [] });
  var data = JSON.parse(document.getElementById("page-data").textContent);
  var queues = {};

  function count(name) {
    state.events[name] = (state.events[name] || 0) + 1;
  }

  /* Plot calls on one element run in order: an append never overtakes the first draw. */
  function later(id, work) {
    var previous = queues[id] || Promise.resolve();
    queues[id] = previous.then(work).catch(function (err) {
      problem("chart " + id + ": " + err);
    });
    return queues[id];
  }

  function draw(id, figure) {
    return later(id, function () {
      var el = document.getElementById(id);
      if (!el || !figure) return null;
      if (!el.classList.contains("js-plotly-plot")) el.textContent = "";
      return Plotly.react(el, figure.data, figure.layout, PLOT_CONFIG);
    });
  }

  function extend(id, update, indices, maxPoints) {
    return later(id, function () {
      var el = document.getElementById(id);
      if (!el || !el.classList.contains("js-plotly-plot")) return null;
      return maxPoints
        ? Plotly.extendTraces(el, update, indices, maxPoints)
        : Plotly.extendTraces(el, update, indices);
    });
  }

  function setLive(text, cls) {
    var el = document.getElementById("live");
    if (el) {
      el.textContent = text;
      el.className = "live " + cls;
    }
  }

  function problem(message) {
    state.problems.push(String(message));
    var el = document.getElementById("problem");
    if (!el) {
      el = document.createElement("p");
      el.id = "problem";
      el.className = "notice error";
      var main = document.querySelector("main");
      main.insertBefore(el, main.children[1] || null);
    }
    el.textContent = message;
  }

  function clearProblem() {
    var el = document.getElementById("problem");
    if (el) el.remove();
  }

  /* Open a stream; handlers[name](payload) runs for each event `name`. */
  function follow(url, handlers) {
    var source = new EventSource(url);
    source.onopen = function () {
      setLive("live", "on");
    };
    source.onerror = function () {
      setLive("reconnecting…", "off");
    };
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (e) {
        count(name);
        if (name !== "problem") clearProblem();
        handlers[name](JSON.parse(e.data));
      });
    });
    if (!handlers.problem) {
      source.addEventListener("problem", function (e) {
        count("problem");
        problem(JSON.parse(e.data).message);
      });
    }
    window.addEventListener("pagehide", function () {
      source.close();
    });
    return source;
  }

  function html(id, markup) {
    var el = document.getElementById(id);
    if (el) el.innerHTML = markup; // markup is built and escaped by the server
  }

  function cell(tr, text) {
    var td = document.createElement("td");
    if (text instanceof Node) td.appendChild(text);
    else td.textContent = text === null || text === undefined ? "" : String(text);
    tr.appendChild(td);
  }

  function fetchJson(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
        return body;
      });
    });
  }

  /* ------------------------------------------------------------------ instrument */

  function actionRow(row) {
    var tr = document.createElement("tr");
    var a = document.createElement("a");
    var url = new URL(location.href);
    url.searchParams.set("action", row.action_idx);
    a.href = url.search;
    a.dataset.action = row.action_idx;
    a.textContent = row.action_idx;
    cell(tr, a);
    cell(tr, Number(row.dt_s).toFixed(2));
    cell(tr, row.spec_label);
    cell(tr, String(row.old_value) + " → " + String(row.new_value));
    cell(tr, row.source);
    return tr;
  }

  function selectAction(idx, push) {
    if (push) {
      var url = new URL(location.href);
      url.searchParams.set("action", idx);
      history.pushState({ action: idx }, "", url);
    }
    var title = document.querySelector("#window-title");
    fetchJson(data.window_url.replace("{idx}", encodeURIComponent(idx)))
      .then(function (body) {
        count("window");
        return draw("window", body.figure);
      })
      .catch(function (err) {
        problem("action " + idx + ": " + err.message);
      });
    if (title) title.textContent = "action " + idx;
  }

  function scanPanel() {
    var status = document.getElementById("scan-status");
    follow(data.scan_stream, {
      scan: function (s) {
        draw("scan", s.figure);
        if (status) status.textContent = "grabbed " + s.grabbed_at + " · channel " + s.channel;
      },
      problem: function (p) {
        if (status) status.textContent = p.message;
      },
    });
  }

  function instrument() {
    if (data.scan_stream) scanPanel();
    if (!data.run) return;
    var labels = data.labels;
    var indices = labels.map(function (_, k) {
      return k;
    });
    var tbody = document.querySelector("#actions tbody");
    draw("strip", data.strip);
    follow(data.stream, {
      samples: function (m) {
        var xs = labels.map(function () {
          return m.dt_s.slice();
        });
        var ys = labels.map(function (label) {
          return m.values[label];
        });
        state.points += m.dt_s.length;
        state.lastSample = m.sample_idx[m.sample_idx.length - 1];
        extend("strip", { x: xs, y: ys }, indices, data.max_points);
      },
      actions: function (rows) {
        var empty = document.getElementById("actions-empty");
        if (empty) empty.remove();
        rows.forEach(function (row) {
          tbody.appendChild(actionRow(row));
        });
      },
      run: function (r) {
        document.querySelectorAll("#run-counters dd[data-key]").forEach(function (dd) {
          dd.textContent = r[dd.dataset.key];
        });
      },
      newrun: function () {
        if (data.follow_latest) location.reload();
      },
    });
    document.getElementById("actions").addEventListener("click", function (e) {
      var link = e.target.closest("a[data-action]");
      if (!link) return;
      e.preventDefault();
      selectAction(Number(link.dataset.action), true);
    });
    window.addEventListener("popstate", function () {
      var idx = new URL(location.href).searchParams.get("action");
      if (idx !== null) selectAction(Number(idx), false);
    });
    if (data.action !== null && data.action !== undefined) selectAction(data.action, false);
  }

  /* ------------------------------------------------------------------ runs */

  function updateCompareLink() {
    var picked = Array.prototype.map.call(
      document.querySelectorAll("#runs input.pick:checked"),
      function (box) {
        return "run=" + encodeURIComponent(box.value);
      }
    );
    var link = document.getElementById("compare");
    link.href = "/runs/compare?" + picked.join("&");
    link.classList.toggle("disabled", picked.length < 2);
  }

  function runsList() {
    var tbody = document.querySelector("#runs tbody");
    var shown = document.getElementById("shown");
    tbody.addEventListener("change", updateCompareLink);
    document.getElementById("compare").addEventListener("click", function (e) {
      if (this.classList.contains("disabled")) e.preventDefault();
    });
    follow(data.stream, {
      rows: function (rows) {
        rows.forEach(function (row) {
          var holder = document.createElement("tbody");
          holder.innerHTML = row.html; // built and escaped by the server
          var tr = holder.firstElementChild;
          var old = tbody.querySelector('tr[data-run="' + CSS.escape(row.run_id) + '"]');
          if (old) {
            tr.querySelector("input.pick").checked = old.querySelector("input.pick").checked;
            old.replaceWith(tr);
          } else {
            tbody.insertBefore(tr, tbody.firstChild);
            while (tbody.rows.length > data.limit) tbody.deleteRow(-1);
          }
        });
        var empty = document.getElementById("runs-empty");
        if (empty && tbody.rows.length) empty.remove();
        shown.textContent = tbody.rows.length;
      },
    });
  }

  function curves(extra) {
    var handlers = {
      metrics_figure: function (f) {
        draw("metrics", f);
      },
      metrics_extend: function (p) {
        extend("metrics", { x: p.x, y: p.y }, p.indices);
      },
      telemetry_figure: function (f) {
        draw("telemetry", f);
      },
      telemetry_extend: function (p) {
        extend("telemetry", { x: p.x, y: p.y }, p.indices);
      },
    };
    Object.keys(extra || {}).forEach(function (k) {
      handlers[k] = extra[k];
    });
    follow(data.stream, handlers);
  }

  function runs() {
    if (document.getElementById("runs")) runsList();
    else if (data.run_id)
      curves({
        live: function (v) {
          html("run-live", v.html);
        },
      });
    else curves();
  }

  /* ------------------------------------------------------------------ swarm, engine */

  function swarm() {
    if (data.figure) draw("map", data.figure);
    follow(data.stream, {
      swarm: function (s) {
        draw("map", s.figure);
        html("halt", s.halt);
        html("counts", s.counts);
        html("agents", s.agents);
        html("events", s.events);
      },
    });
  }

  function engine() {
    draw("engine-figure", data.figure);
    follow(data.stream, {
      engine: function (e) {
        html("engine-table", e.table);
        draw("engine-figure", e.figure);
      },
    });
  }

  var pages = { instrument: instrument, runs: runs, swarm: swarm, engine: engine };
  if (pages[data.page]) pages[data.page]();
  Promise.all(
    Object.keys(queues).map(function (k) {
      return queues[k];
    })
  ).then(function () {
    state.ready = true;
  });
})();
