//! Turns the message traces of all replicas (`crate::trace`) into a picture of
//! one round: every message about one Paxos slot (or one 2PC transaction) as
//! an arrow between role lanes, offline periods marked, the chosen value
//! highlighted; as a self-contained HTML page with an SVG sequence diagram,
//! and as plain text.

use crate::trace::TraceEvent;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    Slot(u64),
    Txn(String),
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Slot(slot) => write!(f, "slot {slot}"),
            Selection::Txn(txn) => write!(f, "transaction {txn}"),
        }
    }
}

/// Every event of every trace file, with what could not be read.
#[derive(Debug, Default)]
pub struct Traces {
    pub events: Vec<TraceEvent>,
    /// Replicas that left a trace file.
    pub traced: BTreeSet<u32>,
    pub warnings: Vec<String>,
}

/// Reads every `trace-*.jsonl` in `dir`. Malformed or truncated lines are
/// skipped with a warning; a directory with no trace at all is an error.
pub fn load_traces(dir: &Path) -> Result<Traces> {
    let mut traces = Traces::default();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("trace-") && name.ends_with(".jsonl")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no trace-*.jsonl files in {}; start the servers with --trace", dir.display());
    }
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file)?).into_owned();
        let mut skipped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<TraceEvent>(line) {
                Ok(event) => {
                    traces.traced.insert(event.node);
                    traces.events.push(event);
                }
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            traces.warnings.push(format!("{}: skipped {skipped} malformed or truncated line(s)", file.display()));
        }
    }
    traces.events.sort_by_key(|e| e.ts_us);
    Ok(traces)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrow {
    pub from_lane: String,
    pub to_lane: String,
    /// Missing when the sender left no trace.
    pub send_us: Option<u64>,
    /// Missing when the message was lost, dropped by an offline role, or the
    /// receiver left no trace.
    pub recv_us: Option<u64>,
    pub kind: String,
    pub label: String,
    pub chosen: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfflineSpan {
    pub lane: String,
    pub from_us: u64,
    pub to_us: u64,
}

#[derive(Clone, Debug)]
pub struct Round {
    pub selection: Selection,
    pub lanes: Vec<String>,
    pub arrows: Vec<Arrow>,
    pub offline: Vec<OfflineSpan>,
    pub chosen: Option<String>,
    pub warnings: Vec<String>,
}

fn lane(node: u32, role: &str) -> String {
    format!("s{node} {role}")
}

fn is_relevant(event: &TraceEvent, selection: &Selection, ballots: &BTreeSet<String>) -> bool {
    match selection {
        Selection::Txn(txn) => event.txn.as_deref() == Some(txn.as_str()),
        Selection::Slot(slot) => match event.kind.as_str() {
            "ACCEPT" | "ACCEPTED" | "DECIDE" => event.slot == Some(*slot),
            // Phase 1 of a ballot that later proposed in this slot, covering it.
            "PREPARE" | "PROMISE" => {
                event.ballot.as_ref().is_some_and(|b| ballots.contains(b))
                    && event.first_slot.is_none_or(|f| f <= *slot)
            }
            "NACK" => event.ballot.as_ref().is_some_and(|b| ballots.contains(b)),
            _ => false,
        },
    }
}

/// Picks the events of one round and pairs each send with its receive.
pub fn select(traces: &Traces, selection: &Selection) -> Result<Round> {
    let ballots: BTreeSet<String> = match selection {
        Selection::Slot(slot) => traces
            .events
            .iter()
            .filter(|e| e.kind == "ACCEPT" && e.slot == Some(*slot))
            .filter_map(|e| e.ballot.clone())
            .collect(),
        Selection::Txn(_) => BTreeSet::new(),
    };
    let relevant: Vec<&TraceEvent> = traces
        .events
        .iter()
        .filter(|e| (e.event == "send" || e.event == "recv") && is_relevant(e, selection, &ballots))
        .collect();
    if relevant.is_empty() {
        bail!(
            "no message about {selection} in the traces of replica(s) {:?}; is it decided, and were the servers started with --trace?",
            traces.traced
        );
    }
    let chosen =
        relevant.iter().find(|e| e.kind == "DECIDE" || e.kind == "COMMIT" || e.kind == "ABORT").and_then(|e| {
            if e.kind == "DECIDE" {
                e.value.clone()
            } else {
                Some(e.kind.clone())
            }
        });

    // Pair sends with receives: same endpoints and content, first receive after the send.
    type Key = (u32, u32, String, String, Option<String>, Option<u64>, Option<u64>, Option<String>);
    let key = |e: &TraceEvent| -> Key {
        (e.from, e.to, e.from_role.clone(), e.kind.clone(), e.ballot.clone(), e.slot, e.first_slot, e.value.clone())
    };
    let mut receives: BTreeMap<Key, Vec<(u64, bool)>> = BTreeMap::new();
    for e in relevant.iter().filter(|e| e.event == "recv") {
        receives.entry(key(e)).or_default().push((e.ts_us, false));
    }
    let mut arrows = Vec::new();
    let label = |e: &TraceEvent| -> String {
        let mut label = e.kind.clone();
        if let Some(ballot) = &e.ballot {
            let _ = write!(label, " b={ballot}");
        }
        if let Some(txn) = &e.txn {
            let _ = write!(label, " {txn}");
        }
        if matches!(e.kind.as_str(), "VOTE" | "NACK") {
            if let Some(value) = &e.value {
                let _ = write!(label, " {value}");
            }
        }
        label
    };
    let is_chosen = |e: &TraceEvent| -> bool {
        match selection {
            Selection::Slot(_) => chosen.is_some() && e.value == chosen && (e.kind == "ACCEPT" || e.kind == "DECIDE"),
            Selection::Txn(_) => e.kind == "COMMIT",
        }
    };
    for send in relevant.iter().filter(|e| e.event == "send") {
        let recv_us = receives.get_mut(&key(send)).and_then(|candidates| {
            let found = candidates.iter_mut().find(|(ts, used)| !*used && *ts + 1_000 >= send.ts_us)?;
            found.1 = true;
            Some(found.0)
        });
        arrows.push(Arrow {
            from_lane: lane(send.from, &send.from_role),
            to_lane: lane(send.to, &send.to_role),
            send_us: Some(send.ts_us),
            recv_us,
            kind: send.kind.clone(),
            label: label(send),
            chosen: is_chosen(send),
        });
    }
    for (k, candidates) in &receives {
        for (ts, used) in candidates {
            if !used {
                let e = relevant
                    .iter()
                    .find(|e| e.event == "recv" && e.ts_us == *ts && key(e) == *k)
                    .expect("came from here");
                arrows.push(Arrow {
                    from_lane: lane(e.from, &e.from_role),
                    to_lane: lane(e.to, &e.to_role),
                    send_us: None,
                    recv_us: Some(*ts),
                    kind: e.kind.clone(),
                    label: label(e),
                    chosen: is_chosen(e),
                });
            }
        }
    }
    arrows.sort_by_key(|a| a.send_us.or(a.recv_us));

    let mut nodes: BTreeSet<u32> = traces.traced.clone();
    for e in &relevant {
        nodes.insert(e.from);
        nodes.insert(e.to);
    }
    let roles: &[&str] = match selection {
        Selection::Slot(_) => &["proposer", "acceptor", "learner"],
        Selection::Txn(_) => &["coordinator", "participant"],
    };
    let lanes: Vec<String> = nodes.iter().flat_map(|n| roles.iter().map(move |r| lane(*n, r))).collect();

    let start = arrows.iter().filter_map(|a| a.send_us.or(a.recv_us)).min().unwrap_or(0);
    let end = arrows.iter().filter_map(|a| a.recv_us.or(a.send_us)).max().unwrap_or(start);
    let mut offline = Vec::new();
    for node in &nodes {
        let mut down_since: Option<(u64, String)> = None;
        for e in traces.events.iter().filter(|e| e.node == *node && (e.event == "offline" || e.event == "online")) {
            match (e.event.as_str(), &down_since) {
                ("offline", None) => down_since = Some((e.ts_us, e.from_role.clone())),
                ("online", Some((since, role))) => {
                    if *since <= end && e.ts_us >= start {
                        offline.push(OfflineSpan {
                            lane: lane(*node, role),
                            from_us: (*since).max(start),
                            to_us: e.ts_us.min(end),
                        });
                    }
                    down_since = None;
                }
                _ => {}
            }
        }
        if let Some((since, role)) = down_since {
            if since <= end {
                offline.push(OfflineSpan { lane: lane(*node, &role), from_us: since.max(start), to_us: end });
            }
        }
    }

    offline.sort_by_key(|span| span.from_us);
    let mut warnings = traces.warnings.clone();
    let untraced: Vec<u32> = nodes.difference(&traces.traced).copied().collect();
    if !untraced.is_empty() {
        warnings.push(format!(
            "no trace from replica(s) {untraced:?}: their sends and receives are missing, so their arrows are partial"
        ));
    }
    Ok(Round { selection: selection.clone(), lanes, arrows, offline, chosen, warnings })
}

fn fmt_ms(us: u64, start: u64) -> String {
    format!("+{:.3} ms", (us.saturating_sub(start)) as f64 / 1000.0)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Round {
    fn start_us(&self) -> u64 {
        self.arrows.iter().filter_map(|a| a.send_us.or(a.recv_us)).min().unwrap_or(0)
    }

    /// One line per message, in time order.
    pub fn render_text(&self) -> String {
        let start = self.start_us();
        let mut out = format!("Timeline of {}", self.selection);
        if let Some(chosen) = &self.chosen {
            let _ = write!(out, " (chosen: {chosen})");
        }
        out.push('\n');
        for a in &self.arrows {
            let when = a.send_us.or(a.recv_us).map_or("?".into(), |t| fmt_ms(t, start));
            let fate = match (a.send_us, a.recv_us) {
                (Some(_), Some(r)) => format!("received {}", fmt_ms(r, start)),
                (Some(_), None) => "not received".to_string(),
                (None, _) => "send not traced".to_string(),
            };
            let _ = writeln!(
                out,
                "{when:>13}  {:<16} -> {:<16} {:<28} {fate}{}",
                a.from_lane,
                a.to_lane,
                a.label,
                if a.chosen { "  *chosen*" } else { "" }
            );
        }
        for span in &self.offline {
            let _ = writeln!(
                out,
                "{:>13}  {:<16} OFFLINE until {}",
                fmt_ms(span.from_us, start),
                span.lane,
                fmt_ms(span.to_us, start)
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }

    /// The sequence diagram. Time runs down by event order (not to scale), so
    /// messages sent together stay readable; each row is labelled with its time.
    pub fn render_svg(&self) -> String {
        const LANE_WIDTH: f64 = 120.0;
        const ROW: f64 = 26.0;
        const TOP: f64 = 70.0;
        const LEFT: f64 = 110.0;
        let start = self.start_us();
        let mut times: BTreeSet<u64> = BTreeSet::new();
        for a in &self.arrows {
            times.extend(a.send_us);
            times.extend(a.recv_us);
        }
        for s in &self.offline {
            times.insert(s.from_us);
            times.insert(s.to_us);
        }
        let rank: BTreeMap<u64, usize> = times.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        let y = |t: u64| TOP + 20.0 + rank[&t] as f64 * ROW;
        let lane_x: BTreeMap<&str, f64> =
            self.lanes.iter().enumerate().map(|(i, l)| (l.as_str(), LEFT + LANE_WIDTH * (i as f64 + 0.5))).collect();
        let width = LEFT + LANE_WIDTH * self.lanes.len() as f64 + 20.0;
        let height = TOP + 60.0 + ROW * times.len().max(1) as f64;
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">
<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="15">{}</text>
"#,
            escape(&format!(
                "{}{}",
                self.selection,
                self.chosen.as_ref().map_or(String::new(), |c| format!(" - chosen: {c}"))
            ))
        );
        for span in &self.offline {
            if let Some(x) = lane_x.get(span.lane.as_str()) {
                let _ = writeln!(
                    svg,
                    r##"<rect class="offline" data-lane="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#f4cccc"/><text x="{:.1}" y="{:.1}" fill="#a00">offline</text>"##,
                    escape(&span.lane),
                    x - 14.0,
                    y(span.from_us),
                    28.0,
                    (y(span.to_us) - y(span.from_us)).max(4.0),
                    x + 16.0,
                    y(span.from_us) + 10.0
                );
            }
        }
        for (name, x) in self.lanes.iter().map(|l| (l, lane_x[l.as_str()])) {
            let _ = writeln!(
                svg,
                r##"<g class="lane" data-lane="{}"><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#bbb" stroke-dasharray="4 3"/></g>"##,
                escape(name),
                TOP,
                escape(name),
                TOP + 8.0,
                height - 20.0
            );
        }
        for t in &times {
            let _ = writeln!(svg, r##"<text x="8" y="{:.1}" fill="#666">{}</text>"##, y(*t) + 4.0, fmt_ms(*t, start));
        }
        for a in &self.arrows {
            let (Some(x1), Some(x2)) = (lane_x.get(a.from_lane.as_str()), lane_x.get(a.to_lane.as_str())) else {
                continue;
            };
            let y1 = a.send_us.map(y);
            let y2 = a.recv_us.map(y);
            let (y1, y2, dashed) = match (y1, y2) {
                (Some(y1), Some(y2)) => (y1, y2, false),
                (Some(y1), None) => (y1, y1 + ROW * 0.6, true),
                (None, Some(y2)) => (y2 - ROW * 0.6, y2, true),
                (None, None) => continue,
            };
            // A message to another role of the same replica, or a lost one, is drawn short.
            let x2 = if a.recv_us.is_none() { x1 + (x2 - x1) * 0.5 } else { *x2 };
            let color = if a.chosen {
                "#2ca02c"
            } else if a.kind == "NACK" || a.kind == "ABORT" {
                "#d62728"
            } else {
                "#1f4e79"
            };
            let _ = writeln!(
                svg,
                r#"<line class="arrow{}" data-kind="{}" data-from="{}" data-to="{}" x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{color}" stroke-width="{}"{} marker-end="url(#head)"/>"#,
                if a.chosen { " chosen" } else { "" },
                escape(&a.kind),
                escape(&a.from_lane),
                escape(&a.to_lane),
                if a.chosen { 2.5 } else { 1.4 },
                if dashed { r#" stroke-dasharray="5 3""# } else { "" },
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="{color}">{}</text>"#,
                (x1 + x2) / 2.0,
                (y1 + y2) / 2.0 - 4.0,
                escape(&a.label)
            );
        }
        svg += "</svg>\n";
        svg
    }

    /// A self-contained page: the diagram, then the same round as text.
    pub fn render_html(&self) -> String {
        let mut warnings = String::new();
        for w in &self.warnings {
            let _ = writeln!(warnings, r#"<p class="warning">warning: {}</p>"#, escape(w));
        }
        format!(
            r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>paxos-kv timeline: {title}</title>
<style>body {{ font-family: sans-serif; margin: 20px; }} .warning {{ color: #a00; }} pre {{ background: #f6f6f6; padding: 10px; }}</style>
</head><body>
<h1>paxos-kv: {title}</h1>
<p>Each column is one role of one replica; each arrow one message, from the time it was sent to the
time it was received (rows follow event order; the left column gives the time). Green marks the chosen
value, red a refusal, a dashed arrow a message that was not received (or whose other end left no trace),
a pink band a role that was offline.</p>
{warnings}{svg}
<h2>As text</h2>
<pre>{text}</pre>
</body></html>
"#,
            title = escape(&self.selection.to_string()),
            svg = self.render_svg(),
            text = escape(&self.render_text()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: u32, event: &str, from: u32, to: u32, kind: &str, ts_us: u64) -> TraceEvent {
        let (from_role, to_role) = match kind {
            "ACCEPT" => ("proposer", "acceptor"),
            "ACCEPTED" => ("acceptor", "proposer"),
            _ => ("proposer", "learner"),
        };
        TraceEvent {
            ts_us,
            node,
            event: event.into(),
            from,
            to,
            from_role: from_role.into(),
            to_role: to_role.into(),
            kind: kind.into(),
            ballot: (kind != "DECIDE").then(|| "1.1".into()),
            slot: Some(3),
            first_slot: None,
            txn: None,
            value: (kind != "ACCEPTED").then(|| "batch of 1 #ab".into()),
        }
    }

    #[test]
    fn sends_pair_with_receives_and_a_missing_receiver_leaves_a_partial_arrow() {
        let traces = Traces {
            events: vec![
                event(1, "send", 1, 2, "ACCEPT", 10),
                event(2, "recv", 1, 2, "ACCEPT", 20),
                event(1, "send", 1, 3, "ACCEPT", 11),
                event(2, "send", 2, 1, "ACCEPTED", 30),
                event(1, "recv", 2, 1, "ACCEPTED", 40),
                event(1, "send", 1, 2, "DECIDE", 50),
                event(2, "recv", 1, 2, "DECIDE", 60),
            ],
            traced: [1, 2].into(),
            warnings: vec![],
        };
        let round = select(&traces, &Selection::Slot(3)).unwrap();
        assert_eq!(round.chosen.as_deref(), Some("batch of 1 #ab"));
        assert_eq!(round.arrows.len(), 4);
        let to_three = round.arrows.iter().find(|a| a.to_lane == "s3 acceptor").unwrap();
        assert_eq!(to_three.recv_us, None);
        assert!(round.warnings.iter().any(|w| w.contains("[3]")), "{:?}", round.warnings);
        assert_eq!(round.lanes.len(), 9);
        let svg = round.render_svg();
        assert_eq!(svg.matches(r#"class="lane""#).count(), 9);
        assert_eq!(svg.matches(r#"class="arrow chosen""#).count(), 3, "two ACCEPTs and one DECIDE carry the value");
        assert!(round.render_text().contains("not received"));
    }

    #[test]
    fn a_slot_without_messages_is_a_clear_error() {
        let traces =
            Traces { events: vec![event(1, "send", 1, 2, "ACCEPT", 10)], traced: [1].into(), warnings: vec![] };
        let error = select(&traces, &Selection::Slot(99)).unwrap_err().to_string();
        assert!(error.contains("slot 99"), "{error}");
    }
}
