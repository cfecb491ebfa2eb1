//! The dashboard's page: plain HTML rendered here, and a little plain JavaScript that reads
//! `/_cohort/data` every two seconds and fills the tables. Nothing is loaded from elsewhere, so
//! it works offline; the script writes values as text, never as markup.

/// The page of the instance `instance`, whose broker is `broker` (`nats` or `embedded`).
pub(super) fn render(instance: &str, broker: &str) -> String {
    let instance = escape(instance);
    let broker = escape(broker);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cohort · {instance}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>Cohort</h1>
<p>Served by instance <strong id="instance">{instance}</strong> · broker <strong>{broker}</strong> · <span id="status">loading…</span></p>
</header>
<section>
<h2>Instances</h2>
<table id="instances"><thead><tr><th>Instance</th><th>Commands</th><th>Requests</th><th>Errors</th><th>Requests/s</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Version drift</h2>
<table id="drift"><thead><tr><th>Finding</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Commands</h2>
<table id="commands"><thead><tr><th>Command</th><th>Instance</th><th>Requests/s</th><th>Requests</th><th>Errors</th><th>Latency now</th><th>Latency overall</th><th>Last error</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Subscriptions</h2>
<table id="subscriptions"><thead><tr><th>Subscription</th><th>Event</th><th>Pending</th><th>In flight</th><th>Redelivered</th><th>Dead letters</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Tasks as {instance} sees them</h2>
<table id="tasks"><thead><tr><th>Task</th><th>Schedule</th><th>Next run</th><th>Last run</th><th>Last outcome</th><th>Runs here</th><th>Running now</th></tr></thead><tbody></tbody></table>
</section>
<section>
<h2>Recent commands on {instance}</h2>
<table id="recent"><thead><tr><th>Finished</th><th>Trace id</th><th>Command</th><th>Status</th><th>Duration</th></tr></thead><tbody></tbody></table>
</section>
<script>{SCRIPT}</script>
</body>
</html>
"#
    )
}

/// `text` safe inside HTML text and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

const STYLE: &str = "
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2330; background: #f7f8fa; }
header h1 { margin: 0; font-size: 1.6em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; width: 100%; background: #fff; box-shadow: 0 1px 2px #0002; }
th, td { text-align: left; padding: .35em .7em; border-bottom: 1px solid #e3e6eb; }
th { background: #eef1f5; font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.bad { color: #b3261e; font-weight: 600; }
td.empty { color: #6b7280; font-style: italic; }
code { font-size: .92em; }
#status.bad { color: #b3261e; font-weight: 600; }
";

const SCRIPT: &str = r##"
"use strict";
let previous = null;

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fill(id, items, columns, render) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  if (items.length === 0) {
    cell(body.insertRow(), "none", "empty").colSpan = columns;
    return;
  }
  for (const item of items) render(body.insertRow(), item);
}

function ms(value) {
  return value === null ? "–" : value.toFixed(value < 10 ? 2 : 1) + " ms";
}

// A time in milliseconds since the Unix epoch, or a dash when there is none.
function time(millis) {
  return millis === null ? "–" : new Date(millis).toLocaleString();
}

function perSecond(value) {
  return value === null ? "–" : value.toFixed(1);
}

// What happened between the previous sample and this one, for the command `key`.
function delta(key, command, at) {
  const before = previous && previous.commands.get(key);
  if (!before) return { rate: null, latency: null };
  const seconds = (at - previous.at) / 1000;
  const requests = command.requests - before.requests;
  const nanos = command.processing_nanos - before.processing_nanos;
  return {
    rate: seconds > 0 ? requests / seconds : null,
    latency: requests > 0 ? nanos / requests / 1e6 : null,
  };
}

function render(data, at) {
  const commands = new Map();
  const instances = new Map();
  for (const id of data.instances) instances.set(id, { commands: 0, requests: 0, errors: 0, rate: 0, known: false });
  // A command no instance has run yet gets no rows of its own, only a mention in the last one.
  const ran = new Set(data.commands.filter((c) => c.requests > 0).map((c) => c.command));
  const idle = [...new Set(data.commands.map((c) => c.command))].filter((c) => !ran.has(c));
  for (const c of data.commands) {
    const instance = instances.get(c.instance);
    instance.commands += 1;
    instance.requests += c.requests;
    instance.errors += c.errors;
  }
  fill("commands", data.commands.filter((c) => ran.has(c.command)), 8, (row, c) => {
    const key = c.instance + " " + c.subject;
    const change = delta(key, c, at);
    const instance = instances.get(c.instance);
    if (change.rate !== null) { instance.rate += change.rate; instance.known = true; }
    cell(row, c.command);
    cell(row, c.instance);
    cell(row, perSecond(change.rate), "n");
    cell(row, String(c.requests), "n");
    cell(row, String(c.errors), c.errors > 0 ? "n bad" : "n");
    cell(row, ms(change.latency), "n");
    cell(row, ms(c.requests > 0 ? c.average_nanos / 1e6 : null), "n");
    cell(row, c.last_error || "");
  });
  if (idle.length > 0) {
    const body = document.querySelector("#commands tbody");
    const note = cell(body.insertRow(), "not run yet: " + idle.join(", "), "empty");
    note.colSpan = 8;
  }
  for (const c of data.commands) commands.set(c.instance + " " + c.subject, c);
  fill("instances", [...instances.entries()], 5, (row, [id, i]) => {
    cell(row, id === data.instance ? id + " (this one)" : id);
    cell(row, String(i.commands), "n");
    cell(row, String(i.requests), "n");
    cell(row, String(i.errors), i.errors > 0 ? "n bad" : "n");
    cell(row, perSecond(i.known ? i.rate : null), "n");
  });
  fill("drift", data.drift, 1, (row, line) => cell(row, line, "bad"));
  fill("subscriptions", data.subscriptions, 6, (row, s) => {
    cell(row, s.subscription);
    cell(row, s.event);
    if (s.error) {
      cell(row, s.error, "bad").colSpan = 4;
      return;
    }
    for (const count of [s.pending, s.in_flight, s.redelivered]) cell(row, count === undefined ? "–" : String(count), "n");
    cell(row, s.dead_letters === undefined ? "–" : String(s.dead_letters), s.dead_letters > 0 ? "n bad" : "n");
  });
  fill("tasks", data.tasks, 7, (row, t) => {
    cell(row, t.task);
    cell(row, t.schedule);
    for (const at of [t.next_run, t.last_run]) cell(row, time(at));
    const outcome = t.last_error ? t.last_outcome + ": " + t.last_error : t.last_outcome || "–";
    cell(row, outcome, t.last_outcome && t.last_outcome !== "ok" ? "bad" : "");
    cell(row, String(t.runs), "n");
    cell(row, t.running ? "yes" : "no");
  });
  fill("recent", data.recent, 5, (row, r) => {
    cell(row, new Date(r.at).toLocaleTimeString());
    const trace = cell(row, r.trace_id ? "" : "–", r.trace_id ? "" : "empty");
    if (r.trace_id) trace.appendChild(document.createElement("code")).textContent = r.trace_id;
    cell(row, r.service + "." + r.command);
    cell(row, String(r.status), r.status >= 500 ? "n bad" : "n");
    cell(row, ms(r.duration_ms), "n");
  });
  previous = { at, commands };
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/_cohort/data", { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error("the data answered " + response.status);
    const data = await response.json();
    render(data, Date.now());
    const problems = data.problems.join("; ");
    status.textContent = problems ? "incomplete: " + problems : "updated " + new Date().toLocaleTimeString();
    status.className = problems ? "bad" : "";
  } catch (err) {
    status.textContent = "cannot refresh: " + err.message;
    status.className = "bad";
  }
  setTimeout(refresh, 2000);
}

refresh();
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        let page = render("<i1>", "nats");
        assert!(page.contains("&lt;i1&gt;") && !page.contains("<i1>"));
    }
}
