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
    pub from: u32,
    pub from_role: String,
    pub to: u32,
    pub to_role: String,
    /// Missing when the sender left no trace.
    pub send_us: Option<u64>,
    /// Missing when the message was lost, dropped by an offline role, or the
    /// receiver left no trace.
    pub recv_us: Option<u64>,
    pub kind: String,
    pub ballot: Option<String>,
    pub label: String,
    /// Phase 2 of a ballot that a majority accepted, or the decision it led to.
    pub chosen: bool,
    /// Further copies of the same message (retransmissions), drawn as one.
    pub resends: u32,
    /// Whether the receiver left a trace (so a missing receive means lost).
    pub receiver_traced: bool,
}

impl Arrow {
    pub fn from_lane(&self) -> String {
        format!("s{} {}", self.from, self.from_role)
    }

    pub fn to_lane(&self) -> String {
        format!("s{} {}", self.to, self.to_role)
    }

    fn time(&self) -> u64 {
        self.send_us.or(self.recv_us).unwrap_or(0)
    }
}

/// A value chosen in the slot: a majority of ACCEPTED at one ballot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub ballot: String,
    /// When the majority-th acceptor accepted.
    pub at_us: u64,
    /// Acceptors that accepted this ballot in all (the first `majority` chose it).
    pub votes: usize,
    pub majority: usize,
    pub replicas: usize,
    pub value: Option<String>,
}

/// A stretch of time a replica (or one of its roles) was not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    pub node: u32,
    pub from_us: u64,
    pub to_us: u64,
    /// "acceptor offline", "down (killed or crashed), restarted", ...
    pub what: String,
}

#[derive(Clone, Debug)]
pub struct Round {
    pub selection: Selection,
    /// One lane per replica: "s1", "s2", ...
    pub lanes: Vec<String>,
    pub arrows: Vec<Arrow>,
    pub bands: Vec<Band>,
    pub choices: Vec<Choice>,
    pub chosen: Option<String>,
    pub warnings: Vec<String>,
}

fn is_relevant(event: &TraceEvent, selection: &Selection, ballots: &BTreeSet<String>) -> bool {
    match selection {
        Selection::Txn(txn) => event.txn.as_deref() == Some(txn.as_str()),
        Selection::Slot(slot) => match event.kind.as_str() {
            "ACCEPT" | "ACCEPTED" | "CHOSEN" | "DECIDE" => event.slot == Some(*slot),
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

/// What a PROMISE says about `slot`: the vote it reports there, or none.
fn promise_report(event: &TraceEvent, slot: u64) -> String {
    let Some(votes) = &event.votes else { return String::new() };
    match votes.iter().find(|v| v.slot == slot) {
        Some(vote) => format!(": slot {slot} voted ({}, {})", vote.ballot, vote.value),
        None if event.votes_omitted.is_some_and(|n| n > 0) => format!(": slot {slot} not recorded"),
        None => format!(": slot {slot} none"),
    }
}

/// Slots whose decided (or proposed) values touched `key`, latest first.
pub fn slots_touching(traces: &Traces, key: &str) -> Vec<u64> {
    let mut slots: BTreeSet<u64> = BTreeSet::new();
    for e in &traces.events {
        if (e.kind == "DECIDE" || e.kind == "ACCEPT") && e.keys.as_ref().is_some_and(|k| k.iter().any(|k| k == key)) {
            slots.extend(e.slot);
        }
    }
    slots.into_iter().rev().collect()
}

/// Slots that saw ACCEPTs at more than one ballot, with those ballots.
pub fn contested_slots(traces: &Traces) -> Vec<(u64, Vec<String>)> {
    let mut ballots: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for e in traces.events.iter().filter(|e| e.kind == "ACCEPT") {
        if let (Some(slot), Some(ballot)) = (e.slot, &e.ballot) {
            ballots.entry(slot).or_default().insert(ballot.clone());
        }
    }
    ballots.into_iter().filter(|(_, b)| b.len() > 1).map(|(slot, b)| (slot, b.into_iter().collect())).collect()
}

/// Picks the events of one round, pairs each send with its receive, merges
/// resends, and finds at which ballot (if any) a majority accepted.
pub fn select(traces: &Traces, selection: &Selection) -> Result<Round> {
    let slot = match selection {
        Selection::Slot(slot) => Some(*slot),
        Selection::Txn(_) => None,
    };
    let ballots: BTreeSet<String> = traces
        .events
        .iter()
        .filter(|e| e.kind == "ACCEPT" && slot.is_some() && e.slot == slot)
        .filter_map(|e| e.ballot.clone())
        .collect();
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
    let mut nodes: BTreeSet<u32> = traces.traced.clone();
    for e in &traces.events {
        if e.event == "send" || e.event == "recv" {
            nodes.insert(e.from);
            nodes.insert(e.to);
        }
    }
    let replicas = nodes.iter().copied().max().unwrap_or(0) as usize;
    let majority = replicas / 2 + 1;

    // Which ballots a majority accepted, and when: the majority-th acceptor's ACCEPTED.
    let mut choices = Vec::new();
    if let Some(slot) = slot {
        for ballot in &ballots {
            let mut first_vote: BTreeMap<u32, u64> = BTreeMap::new();
            for e in relevant.iter().filter(|e| e.kind == "ACCEPTED" && e.ballot.as_ref() == Some(ballot)) {
                let at = first_vote.entry(e.from).or_insert(e.ts_us);
                *at = (*at).min(e.ts_us);
            }
            let mut times: Vec<u64> = first_vote.values().copied().collect();
            times.sort_unstable();
            if times.len() >= majority {
                let value = relevant
                    .iter()
                    .find(|e| e.kind == "ACCEPT" && e.ballot.as_ref() == Some(ballot) && e.slot == Some(slot))
                    .and_then(|e| e.value.clone());
                choices.push(Choice {
                    ballot: ballot.clone(),
                    at_us: times[majority - 1],
                    votes: times.len(),
                    majority,
                    replicas,
                    value,
                });
            }
        }
        choices.sort_by_key(|c| c.at_us);
    }
    let chosen = match selection {
        Selection::Slot(_) => choices
            .first()
            .and_then(|c| c.value.clone())
            .or_else(|| relevant.iter().find(|e| e.kind == "DECIDE").and_then(|e| e.value.clone())),
        Selection::Txn(_) => relevant.iter().find(|e| e.kind == "COMMIT" || e.kind == "ABORT").map(|e| e.kind.clone()),
    };
    let chosen_ballots: BTreeSet<&String> = choices.iter().map(|c| &c.ballot).collect();
    let chosen_values: BTreeSet<&String> = choices.iter().filter_map(|c| c.value.as_ref()).collect();
    let is_chosen = |e: &TraceEvent| -> bool {
        match selection {
            Selection::Slot(_) => match e.kind.as_str() {
                "ACCEPT" | "ACCEPTED" | "CHOSEN" => e.ballot.as_ref().is_some_and(|b| chosen_ballots.contains(b)),
                "DECIDE" => e.value.as_ref().is_some_and(|v| chosen_values.contains(v)),
                _ => false,
            },
            Selection::Txn(_) => e.kind == "COMMIT",
        }
    };
    let label = |e: &TraceEvent| -> String {
        let mut label = e.kind.clone();
        if let Some(ballot) = &e.ballot {
            let _ = write!(label, " b={ballot}");
        }
        if let Some(txn) = &e.txn {
            let _ = write!(label, " {txn}");
        }
        match e.kind.as_str() {
            "PROMISE" => label += &promise_report(e, slot.unwrap_or(0)),
            "ACCEPT" | "DECIDE" | "VOTE" | "NACK" => {
                if let Some(value) = &e.value {
                    let _ = write!(label, " {value}");
                }
            }
            _ => {}
        }
        label
    };

    // Pair sends with receives: same endpoints and content, first receive after the send.
    type Key = (u32, u32, String, String, Option<String>, Option<u64>, Option<u64>, Option<String>);
    let key = |e: &TraceEvent| -> Key {
        (e.from, e.to, e.from_role.clone(), e.kind.clone(), e.ballot.clone(), e.slot, e.first_slot, e.value.clone())
    };
    let mut receives: BTreeMap<Key, Vec<(u64, bool)>> = BTreeMap::new();
    for e in relevant.iter().filter(|e| e.event == "recv") {
        receives.entry(key(e)).or_default().push((e.ts_us, false));
    }
    let arrow = |e: &TraceEvent, send_us: Option<u64>, recv_us: Option<u64>| Arrow {
        from: e.from,
        from_role: e.from_role.clone(),
        to: e.to,
        to_role: e.to_role.clone(),
        send_us,
        recv_us,
        kind: e.kind.clone(),
        ballot: e.ballot.clone(),
        label: label(e),
        chosen: is_chosen(e),
        resends: 0,
        receiver_traced: traces.traced.contains(&e.to),
    };
    // Retransmissions of one message are drawn once: the first send, and the
    // first receive of any copy.
    let mut merged: BTreeMap<Key, Arrow> = BTreeMap::new();
    for send in relevant.iter().filter(|e| e.event == "send") {
        let recv_us = receives.get_mut(&key(send)).and_then(|candidates| {
            let found = candidates.iter_mut().find(|(ts, used)| !*used && *ts + 1_000 >= send.ts_us)?;
            found.1 = true;
            Some(found.0)
        });
        match merged.get_mut(&key(send)) {
            Some(first) => {
                first.resends += 1;
                first.recv_us = first.recv_us.or(recv_us);
            }
            None => {
                merged.insert(key(send), arrow(send, Some(send.ts_us), recv_us));
            }
        }
    }
    // Receives without a traced send (the sender left no trace); a spare
    // receive of a message already drawn is one of its resends.
    let mut unsent = Vec::new();
    for (k, candidates) in &receives {
        if merged.contains_key(k) {
            continue;
        }
        if let Some(ts) = candidates.iter().find(|(_, used)| !used).map(|(ts, _)| *ts) {
            let e =
                relevant.iter().find(|e| e.event == "recv" && e.ts_us == ts && key(e) == *k).expect("came from here");
            unsent.push(arrow(e, None, Some(ts)));
        }
    }
    let mut arrows: Vec<Arrow> = merged.into_values().chain(unsent).collect();
    arrows.sort_by_key(Arrow::time);

    let lanes: Vec<String> = nodes.iter().map(|n| format!("s{n}")).collect();
    let start = arrows.iter().map(Arrow::time).min().unwrap_or(0);
    let end = arrows.iter().filter_map(|a| a.recv_us.or(a.send_us)).max().unwrap_or(start);
    let bands = bands_between(traces, &nodes, start, end);
    let mut warnings = traces.warnings.clone();
    let untraced: Vec<u32> = nodes.difference(&traces.traced).copied().collect();
    if !untraced.is_empty() {
        warnings.push(format!(
            "no trace from replica(s) {untraced:?}: their sends and receives are missing, so their arrows are partial"
        ));
    }
    Ok(Round { selection: selection.clone(), lanes, arrows, bands, choices, chosen, warnings })
}

/// Offline roles (the failure thread) and down replicas (a process that
/// stopped and started again: the time between its last event and its
/// restart) that overlap `start..=end`.
fn bands_between(traces: &Traces, nodes: &BTreeSet<u32>, start: u64, end: u64) -> Vec<Band> {
    let mut bands = Vec::new();
    let mut clip = |node: u32, from: u64, to: u64, what: String| {
        if from <= end && to >= start {
            bands.push(Band { node, from_us: from.max(start), to_us: to.min(end), what });
        }
    };
    for node in nodes {
        let mut down_since: Option<(u64, String)> = None;
        let mut last_seen: Option<u64> = None;
        for e in traces.events.iter().filter(|e| e.node == *node) {
            match e.event.as_str() {
                "offline" if down_since.is_none() => down_since = Some((e.ts_us, e.from_role.clone())),
                "online" => {
                    if let Some((since, role)) = down_since.take() {
                        clip(*node, since, e.ts_us, format!("{role} offline"));
                    }
                }
                "start" => {
                    if let Some(last) = last_seen {
                        clip(*node, last, e.ts_us, "down (killed or crashed), then restarted".into());
                    }
                    down_since = None;
                }
                _ => {}
            }
            last_seen = Some(e.ts_us);
        }
        if let Some((since, role)) = down_since {
            clip(*node, since, end, format!("{role} offline"));
        }
    }
    bands.sort_by_key(|b| b.from_us);
    bands
}

fn fmt_ms(us: u64, start: u64) -> String {
    format!("+{:.3} ms", (us.saturating_sub(start)) as f64 / 1000.0)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const TIME_COLUMN: f64 = 96.0;
const PHASE_COLUMN: f64 = 150.0;
const LANE_WIDTH: f64 = 190.0;
const ROW: f64 = 24.0;
/// The extra height of a compressed idle gap.
const BREAK: f64 = 22.0;
/// Gaps longer than this are compressed, with a visible break.
const IDLE_US: u64 = 1_000_000;
const HEADER_HEIGHT: f64 = 58.0;

/// Where each moment goes on the page: rows in event order (not to scale),
/// with a break wherever more than a second passed.
struct Rows {
    y: BTreeMap<u64, f64>,
    breaks: Vec<(f64, u64)>,
    height: f64,
}

impl Rows {
    fn new(times: &BTreeSet<u64>) -> Rows {
        let (mut y, mut breaks, mut at, mut previous) = (BTreeMap::new(), Vec::new(), 20.0, None::<u64>);
        for &t in times {
            if let Some(p) = previous {
                at += ROW;
                if t - p > IDLE_US {
                    breaks.push((at - ROW / 2.0 + BREAK / 2.0, t - p));
                    at += BREAK;
                }
            }
            y.insert(t, at);
            previous = Some(t);
        }
        Rows { y, breaks, height: at + 40.0 }
    }

    fn at(&self, t: u64) -> f64 {
        self.y[&t]
    }
}

/// Which phase a message belongs to, for the brackets on the left.
fn phase_of(kind: &str) -> Option<&'static str> {
    match kind {
        "PREPARE" | "PROMISE" | "NACK" => Some("phase 1"),
        "ACCEPT" | "ACCEPTED" => Some("phase 2"),
        "CHOSEN" | "DECIDE" => Some("learning"),
        "VOTE_REQUEST" | "VOTE" => Some("voting"),
        "COMMIT" | "ABORT" | "ACK" => Some("decision"),
        _ => None,
    }
}

impl Round {
    fn start_us(&self) -> u64 {
        self.arrows.iter().map(Arrow::time).min().unwrap_or(0)
    }

    fn title(&self) -> String {
        let mut title = self.selection.to_string();
        match self.choices.as_slice() {
            [] => {
                if let Some(chosen) = &self.chosen {
                    let _ = write!(title, ": {chosen}");
                }
            }
            [one] => {
                let _ = write!(title, ": chosen at ballot {}: {}", one.ballot, one.value.as_deref().unwrap_or("?"));
            }
            many => {
                let _ = write!(title, ": CHOSEN {} WAYS (agreement broken)", many.len());
            }
        }
        title
    }

    /// One line per message, in time order, then the choices and bands.
    pub fn render_text(&self) -> String {
        let start = self.start_us();
        let mut out = format!("Timeline of {}\n", self.title());
        for a in &self.arrows {
            let when = fmt_ms(a.time(), start);
            let fate = match (a.send_us, a.recv_us) {
                (Some(_), Some(r)) => format!("received {}", fmt_ms(r, start)),
                (Some(_), None) if a.receiver_traced => "LOST (not received)".to_string(),
                (Some(_), None) => "receiver not traced".to_string(),
                (None, _) => "send not traced".to_string(),
            };
            let resent = if a.resends > 0 { format!(" (resent {}x)", a.resends) } else { String::new() };
            let _ = writeln!(
                out,
                "{when:>13}  {:<16} -> {:<16} {} {fate}{resent}{}",
                a.from_lane(),
                a.to_lane(),
                a.label,
                if a.chosen { "  [chosen ballot]" } else { "" }
            );
        }
        for c in &self.choices {
            let _ = writeln!(
                out,
                "{:>13}  CHOSEN: {} of {} accepted ballot {} ({} in all): {}",
                fmt_ms(c.at_us, start),
                c.majority,
                c.replicas,
                c.ballot,
                c.votes,
                c.value.as_deref().unwrap_or("?")
            );
        }
        for band in &self.bands {
            let _ = writeln!(
                out,
                "{:>13}  s{:<15} {} until {}",
                fmt_ms(band.from_us, start),
                band.node,
                band.what,
                fmt_ms(band.to_us, start)
            );
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }

    fn lane_x(&self) -> BTreeMap<u32, f64> {
        self.lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.trim_start_matches('s')
                    .parse()
                    .ok()
                    .map(|n| (n, TIME_COLUMN + PHASE_COLUMN + LANE_WIDTH * (i as f64 + 0.5)))
            })
            .collect()
    }

    fn width(&self) -> f64 {
        // Room on the right for the labels of loops on the last lane.
        TIME_COLUMN + PHASE_COLUMN + LANE_WIDTH * self.lanes.len() as f64 + 220.0
    }

    /// The lane headers, alone (the page keeps them in view while it scrolls).
    fn render_header_svg(&self) -> String {
        let width = self.width();
        let mut svg = format!(
            r##"<svg class="header" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{HEADER_HEIGHT:.0}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="8" y="22" font-size="12" fill="#666">time</text><text x="{:.0}" y="22" font-size="12" fill="#666">phase</text>
"##,
            TIME_COLUMN + 4.0
        );
        let roles = match self.selection {
            Selection::Slot(_) => "proposer · acceptor · learner",
            Selection::Txn(_) => "coordinator · participant",
        };
        for (node, x) in self.lane_x() {
            let _ = writeln!(
                svg,
                r##"<text x="{x:.1}" y="22" text-anchor="middle" font-weight="bold" font-size="14">s{node}</text><text x="{x:.1}" y="40" text-anchor="middle" fill="#888">{roles}</text>"##
            );
        }
        svg += "</svg>\n";
        svg
    }

    /// The diagram without headers: lanes, bands, phases, arrows, choices.
    /// Every moment the diagram draws, placed in rows.
    fn rows(&self) -> Rows {
        let mut times: BTreeSet<u64> = BTreeSet::new();
        for a in &self.arrows {
            times.extend(a.send_us);
            times.extend(a.recv_us);
        }
        for b in &self.bands {
            times.insert(b.from_us);
            times.insert(b.to_us);
        }
        for c in &self.choices {
            times.insert(c.at_us);
        }
        Rows::new(&times)
    }

    fn render_body_svg(&self) -> String {
        let start = self.start_us();
        let rows = self.rows();
        let lane_x = self.lane_x();
        let width = self.width();
        let height = rows.height;
        let lanes_left = TIME_COLUMN + PHASE_COLUMN;
        let mut svg = format!(
            r#"<svg class="body" xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">
<defs><marker id="head" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
"#
        );
        for band in &self.bands {
            let Some(x) = lane_x.get(&band.node) else { continue };
            let down = band.what.starts_with("down");
            let _ = writeln!(
                svg,
                r##"<rect class="band" data-lane="s{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.8"/><text x="{:.1}" y="{:.1}" fill="#a00">{}</text>"##,
                band.node,
                x - LANE_WIDTH / 2.0 + 6.0,
                rows.at(band.from_us),
                LANE_WIDTH - 12.0,
                (rows.at(band.to_us) - rows.at(band.from_us)).max(4.0),
                if down { "#dddddd" } else { "#f4cccc" },
                x - LANE_WIDTH / 2.0 + 10.0,
                rows.at(band.from_us) + 12.0,
                escape(&band.what)
            );
        }
        for (node, x) in &lane_x {
            let _ = writeln!(
                svg,
                r##"<g class="lane" data-lane="s{node}" data-x="{x:.1}"><line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{:.1}" stroke="#bbb" stroke-dasharray="4 3"/></g>"##,
                height - 10.0
            );
        }
        for (y, gap) in &rows.breaks {
            let _ = writeln!(
                svg,
                r##"<g class="break"><line x1="0" y1="{y:.1}" x2="{width:.0}" y2="{y:.1}" stroke="#999" stroke-dasharray="2 4"/><text x="{:.1}" y="{:.1}" fill="#666" font-style="italic">… {:.1} s without a message about this {} …</text></g>"##,
                lanes_left + 8.0,
                y - 3.0,
                *gap as f64 / 1e6,
                if matches!(self.selection, Selection::Slot(_)) { "slot" } else { "transaction" }
            );
        }
        for (t, y) in &rows.y {
            let _ = writeln!(svg, r##"<text x="8" y="{:.1}" fill="#666">{}</text>"##, y + 4.0, fmt_ms(*t, start));
        }
        // Phase brackets: runs of messages of one phase and ballot.
        let mut runs: Vec<(String, f64, f64)> = Vec::new();
        for a in &self.arrows {
            let Some(phase) = phase_of(&a.kind) else { continue };
            let name = match &a.ballot {
                Some(b) if phase != "learning" => format!("{phase}, ballot {b}"),
                _ => phase.to_string(),
            };
            let (top, bottom) = (rows.at(a.time()), rows.at(a.recv_us.unwrap_or(a.time())));
            match runs.last_mut() {
                Some((last, _, end)) if *last == name => *end = end.max(bottom),
                _ => runs.push((name, top, bottom)),
            }
        }
        for (name, top, bottom) in &runs {
            let _ = writeln!(
                svg,
                r##"<g class="phase"><line x1="{0:.1}" y1="{top:.1}" x2="{0:.1}" y2="{bottom:.1}" stroke="#888" stroke-width="3"/><text x="{1:.1}" y="{2:.1}" fill="#444">{3}</text></g>"##,
                TIME_COLUMN,
                TIME_COLUMN + 6.0,
                top + 4.0,
                escape(name)
            );
        }
        if let (Selection::Slot(slot), Some(phase1), Some(phase2)) = (
            &self.selection,
            self.arrows.iter().find(|a| a.kind == "PREPARE"),
            self.arrows.iter().find(|a| a.kind == "ACCEPT"),
        ) {
            if phase2.time().saturating_sub(phase1.time()) > IDLE_US {
                let _ = writeln!(
                    svg,
                    r##"<text class="note" x="{:.1}" y="{:.1}" fill="#444" font-style="italic">phase 1 ran once, when s{} became leader: its promise covers slot {slot} and every later slot</text>"##,
                    lanes_left + 8.0,
                    rows.at(phase1.time()) - 8.0,
                    phase1.from
                );
            }
        }
        for a in &self.arrows {
            let (Some(&x1), Some(&x2)) = (lane_x.get(&a.from), lane_x.get(&a.to)) else { continue };
            let (y1, y2) = match (a.send_us, a.recv_us) {
                (Some(s), Some(r)) => (rows.at(s), rows.at(r)),
                (Some(s), None) => (rows.at(s), rows.at(s) + ROW * 0.7),
                (None, Some(r)) => (rows.at(r) - ROW * 0.7, rows.at(r)),
                (None, None) => continue,
            };
            let lost = a.send_us.is_some() && a.recv_us.is_none() && a.receiver_traced;
            let partial = !lost && (a.send_us.is_none() || a.recv_us.is_none());
            let color = if lost || a.kind == "NACK" || a.kind == "ABORT" {
                "#d62728"
            } else if a.chosen {
                "#2ca02c"
            } else if a.kind == "ACCEPT" || a.kind == "ACCEPTED" {
                // Phase 2 of a ballot that no majority accepted.
                "#8c8c8c"
            } else {
                "#1f4e79"
            };
            let class = format!(
                "arrow{}{}{}",
                if a.chosen { " chosen" } else { "" },
                if lost { " lost" } else { "" },
                if partial { " partial" } else { "" }
            );
            let common = format!(
                r#"class="{class}" data-kind="{}" data-ballot="{}" data-from="{}" data-to="{}" data-to-lane="s{}" data-x2="{x2:.1}" stroke="{color}" stroke-width="{}"{} fill="none""#,
                escape(&a.kind),
                escape(a.ballot.as_deref().unwrap_or("")),
                escape(&a.from_lane()),
                escape(&a.to_lane()),
                a.to,
                if a.chosen { 2.4 } else { 1.4 },
                if partial { r#" stroke-dasharray="5 3""# } else { "" },
            );
            let head = if lost { "" } else { r#" marker-end="url(#head)""# };
            if a.from == a.to {
                // Between two roles of one replica: a loop on its lane.
                let _ = writeln!(
                    svg,
                    r#"<path {common} d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}"{head}/>"#,
                    x1 + 40.0,
                    x2 + 40.0
                );
            } else {
                let _ = writeln!(svg, r#"<line {common} x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}"{head}/>"#);
            }
            if lost {
                let _ = writeln!(
                    svg,
                    r##"<path class="cross" d="M{0:.1},{1:.1} L{2:.1},{3:.1} M{0:.1},{3:.1} L{2:.1},{1:.1}" stroke="#d62728" stroke-width="2"/>"##,
                    x2 - 5.0,
                    y2 - 5.0,
                    x2 + 5.0,
                    y2 + 5.0
                );
            }
            let mut label = a.label.clone();
            if a.resends > 0 {
                let _ = write!(label, " (resent {}x)", a.resends);
            }
            if lost {
                label += " (lost)";
            }
            let (lx, ly) = if a.from == a.to {
                (x1 + 44.0, (y1 + y2) / 2.0 + 4.0)
            } else {
                (x1 + (x2 - x1) * 0.35, y1 + (y2 - y1) * 0.35 - 4.0)
            };
            let _ = writeln!(
                svg,
                r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="{}" fill="{color}">{}</text>"#,
                if a.from == a.to { "start" } else { "middle" },
                escape(&label)
            );
        }
        for c in &self.choices {
            let y = rows.at(c.at_us);
            let _ = writeln!(
                svg,
                r##"<g class="choice" data-ballot="{}"><line x1="{lanes_left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#2ca02c" stroke-width="2" stroke-dasharray="8 3"/><text x="{:.1}" y="{:.1}" fill="#2ca02c" font-weight="bold" font-size="12">chosen at {}: {} of {} at ballot {}: {}</text></g>"##,
                escape(&c.ballot),
                width - 10.0,
                lanes_left + 8.0,
                y + 14.0,
                fmt_ms(c.at_us, start),
                c.majority,
                c.replicas,
                escape(&c.ballot),
                escape(c.value.as_deref().unwrap_or("?"))
            );
        }
        svg += "</svg>\n";
        svg
    }

    /// A standalone picture: title, legend, lane headers and the diagram.
    pub fn render_svg(&self) -> String {
        let header = self.render_header_svg();
        let body = self.render_body_svg();
        let width = self.width();
        let top = 40.0 + HEADER_HEIGHT;
        let height = top + self.rows().height;
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" font-size="15">{}</text>
<svg y="40">{}</svg>
<svg y="{top:.0}">{}</svg>
</svg>
"#,
            escape(&self.title()),
            header.trim_end(),
            body.trim_end()
        )
    }

    /// A self-contained page: legend, headers that stay in view, the diagram,
    /// the same round as text, and a check (run by the browser) that every
    /// arrow ends on its receiver's lane.
    pub fn render_html(&self) -> String {
        let mut warnings = String::new();
        for w in &self.warnings {
            let _ = writeln!(warnings, r#"<p class="warning">warning: {}</p>"#, escape(w));
        }
        format!(
            r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>paxos-kv timeline: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 20px; }}
.warning {{ color: #a00; }}
pre {{ background: #f6f6f6; padding: 10px; }}
.sticky {{ position: sticky; top: 0; background: white; z-index: 1; border-bottom: 1px solid #ddd; }}
.legend span {{ display: inline-block; margin-right: 14px; }}
</style>
</head><body>
<h1>paxos-kv: {title}</h1>
<p class="legend">
<span>Ballot <b>r.n</b> = round r, proposed by replica n (higher rounds win; ties by replica).</span>
<span style="color:#1f4e79">&#9472; message</span>
<span style="color:#2ca02c">&#9472; phase 2 of the chosen ballot, and the decision</span>
<span style="color:#8c8c8c">&#9472; phase 2 of a ballot no majority accepted</span>
<span style="color:#d62728">&#10005; lost (never received) &middot; &#9472; refusal</span>
<span>- - the other end left no trace</span>
<span style="background:#f4cccc">&nbsp;role offline&nbsp;</span>
<span style="background:#dddddd">&nbsp;replica down (killed), restarted&nbsp;</span>
<span>Rows follow event order, not scale; a dotted line marks a long idle gap. A PROMISE shows the vote it reports for this slot, or none.</span>
</p>
{warnings}<div class="sticky">{header}</div>
{body}
<h2>As text</h2>
<pre>{text}</pre>
<p id="check">not checked</p>
<script>
// Every arrow must end on its receiver's lane (a lost one with a cross there).
(function () {{
  var lanes = {{}};
  document.querySelectorAll('g.lane').forEach(function (g) {{ lanes[g.dataset.lane] = parseFloat(g.dataset.x); }});
  var arrows = document.querySelectorAll('.arrow');
  var bad = [];
  arrows.forEach(function (a) {{
    var x = a.tagName === 'line' ? parseFloat(a.getAttribute('x2')) : parseFloat(a.dataset.x2);
    var path = a.getAttribute('d');
    if (path) {{ x = parseFloat(path.trim().split(' ').pop().split(',')[0]); }}
    if (!(Math.abs(x - lanes[a.dataset.toLane]) < 0.5)) {{ bad.push(a.dataset.kind + ' to ' + a.dataset.to); }}
  }});
  var check = document.getElementById('check');
  check.dataset.arrows = arrows.length;
  check.dataset.bad = bad.length;
  check.textContent = bad.length === 0 ? 'checked: ' + arrows.length + ' arrows, each ending on its receiver\'s lane' : 'WRONG: ' + bad.join(', ');
}})();
</script>
</body></html>
"#,
            title = escape(&self.title()),
            header = self.render_header_svg(),
            body = self.render_body_svg(),
            text = escape(&self.render_text()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::ReportedVote;

    fn event(node: u32, event: &str, from: u32, to: u32, kind: &str, ballot: &str, ts_us: u64) -> TraceEvent {
        let (from_role, to_role) = match kind {
            "ACCEPT" | "PREPARE" => ("proposer", "acceptor"),
            "ACCEPTED" | "PROMISE" => ("acceptor", "proposer"),
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
            ballot: (kind != "DECIDE").then(|| ballot.into()),
            slot: matches!(kind, "ACCEPT" | "ACCEPTED" | "DECIDE").then_some(3),
            first_slot: matches!(kind, "PREPARE" | "PROMISE").then_some(0),
            value: matches!(kind, "ACCEPT" | "DECIDE").then(|| "PUT a=1 #ab".into()),
            ..TraceEvent::default()
        }
    }

    /// A message sent by `from` and received by `to`.
    fn message(from: u32, to: u32, kind: &str, ballot: &str, sent: u64, received: Option<u64>) -> Vec<TraceEvent> {
        let mut events = vec![event(from, "send", from, to, kind, ballot, sent)];
        events.extend(received.map(|at| event(to, "recv", from, to, kind, ballot, at)));
        events
    }

    /// The story of the issue's slot: ballot 8.5 reaches 2 of 5, its leader
    /// dies, 12.3 runs phase 1 (a promise reports the 8.5 vote) and is chosen.
    fn failed_then_chosen() -> Traces {
        let mut events = Vec::new();
        for to in 1..=5 {
            // s4's copy is lost; s2's is resent.
            let received = (to != 4).then_some(110 + to as u64);
            events.extend(message(5, to, "ACCEPT", "8.5", 100, received));
        }
        events.extend(message(5, 2, "ACCEPT", "8.5", 150, Some(151)));
        events.extend(message(5, 5, "ACCEPTED", "8.5", 120, Some(121)));
        events.extend(message(1, 5, "ACCEPTED", "8.5", 122, None));
        for to in [1, 2, 3] {
            events.extend(message(3, to, "PREPARE", "12.3", 5_000_000 + to as u64, Some(5_000_010 + to as u64)));
        }
        let mut promise = message(1, 3, "PROMISE", "12.3", 5_000_020, Some(5_000_030));
        for e in &mut promise {
            e.votes = Some(vec![ReportedVote { slot: 3, ballot: "8.5".into(), value: "PUT a=1 #ab".into() }]);
        }
        events.extend(promise);
        let mut empty = message(2, 3, "PROMISE", "12.3", 5_000_021, Some(5_000_031));
        for e in &mut empty {
            e.votes = Some(vec![]);
        }
        events.extend(empty);
        for to in [1, 2, 3] {
            events.extend(message(3, to, "ACCEPT", "12.3", 5_000_100, Some(5_000_110 + to as u64)));
            events.extend(message(to, 3, "ACCEPTED", "12.3", 5_000_200 + to as u64, Some(5_000_300 + to as u64)));
            events.extend(message(3, to, "DECIDE", "", 5_000_400, Some(5_000_410 + to as u64)));
        }
        events.push(TraceEvent { ts_us: 1, node: 5, event: "start".into(), from: 5, to: 5, ..TraceEvent::default() });
        events.push(TraceEvent {
            ts_us: 5_000_005,
            node: 5,
            event: "start".into(),
            from: 5,
            to: 5,
            ..TraceEvent::default()
        });
        events.sort_by_key(|e| e.ts_us);
        Traces { events, traced: (1..=5).collect(), warnings: vec![] }
    }

    #[test]
    fn a_value_is_chosen_only_at_the_ballot_a_majority_accepted() {
        let round = select(&failed_then_chosen(), &Selection::Slot(3)).unwrap();
        assert_eq!(round.choices.len(), 1, "{:?}", round.choices);
        let choice = &round.choices[0];
        assert_eq!((choice.ballot.as_str(), choice.majority, choice.votes, choice.replicas), ("12.3", 3, 3, 5));
        assert_eq!(choice.at_us, 5_000_203, "the third ACCEPTED");
        for a in round.arrows.iter().filter(|a| a.ballot.as_deref() == Some("8.5")) {
            assert!(!a.chosen, "ballot 8.5 got 2 of 5 and must not be drawn chosen: {a:?}");
        }
        assert!(round.arrows.iter().filter(|a| a.kind == "DECIDE").all(|a| a.chosen));
        let svg = round.render_svg();
        assert!(svg.contains("chosen at +5000.103 ms: 3 of 5 at ballot 12.3"), "{svg}");
        assert!(round.title().contains("chosen at ballot 12.3"));
    }

    #[test]
    fn every_arrow_ends_on_its_receivers_lane_and_a_lost_one_in_a_cross() {
        let round = select(&failed_then_chosen(), &Selection::Slot(3)).unwrap();
        let svg = round.render_body_svg();
        let lanes: BTreeMap<String, f64> = svg
            .split(r#"<g class="lane" data-lane=""#)
            .skip(1)
            .map(|rest| {
                let lane = rest[..rest.find('"').unwrap()].to_string();
                let x = rest.split(r#"data-x=""#).nth(1).unwrap();
                (lane, x[..x.find('"').unwrap()].parse().unwrap())
            })
            .collect();
        assert_eq!(lanes.len(), 5, "one lane per replica");
        let arrows: Vec<&str> = svg.split(r#"class="arrow"#).skip(1).collect();
        assert!(!arrows.is_empty());
        for arrow in &arrows {
            let attr = |name: &str| {
                let rest = arrow.split(&format!(r#" {name}=""#)).nth(1).unwrap();
                rest[..rest.find('"').unwrap()].to_string()
            };
            let x2: f64 = attr("data-x2").parse().unwrap();
            assert_eq!(x2, lanes[&attr("data-to-lane")], "arrow ends off its receiver's lane: {arrow}");
        }
        assert_eq!(svg.matches(r#"class="cross""#).count(), 2, "the lost ACCEPT and the lost ACCEPTED");
        assert!(svg.contains("(resent 1x)"), "the resend is drawn once");
        assert!(svg.contains("PROMISE b=12.3: slot 3 voted (8.5, PUT a=1 #ab)"), "{svg}");
        assert!(svg.contains("PROMISE b=12.3: slot 3 none"), "{svg}");
        assert!(svg.contains("phase 1, ballot 12.3") && svg.contains("phase 2, ballot 8.5"));
        assert!(svg.contains(r#"class="break""#), "five idle seconds are compressed with a visible break");
        assert!(svg.contains("down (killed or crashed), then restarted"), "s5's restart is a band");
        let html = round.render_html();
        assert!(html.contains("position: sticky") && html.contains("round r, proposed by replica n"));
    }

    #[test]
    fn two_majorities_at_two_ballots_are_both_shown() {
        let mut traces = failed_then_chosen();
        traces.events.extend(message(4, 5, "ACCEPTED", "8.5", 130, Some(131)));
        traces.events.sort_by_key(|e| e.ts_us);
        let round = select(&traces, &Selection::Slot(3)).unwrap();
        assert_eq!(round.choices.len(), 2);
        assert!(round.title().contains("CHOSEN 2 WAYS"), "{}", round.title());
    }

    #[test]
    fn slots_are_found_by_key_and_contested_slots_listed() {
        let mut traces = failed_then_chosen();
        for e in &mut traces.events {
            if e.kind == "DECIDE" {
                e.keys = Some(vec!["a".into()]);
            }
        }
        assert_eq!(slots_touching(&traces, "a"), [3]);
        assert!(slots_touching(&traces, "b").is_empty());
        assert_eq!(contested_slots(&traces), [(3, vec!["12.3".to_string(), "8.5".to_string()])]);
    }

    #[test]
    fn a_slot_without_messages_is_a_clear_error() {
        let traces = failed_then_chosen();
        let error = select(&traces, &Selection::Slot(99)).unwrap_err().to_string();
        assert!(error.contains("slot 99"), "{error}");
    }
}
