//! `client watch`: a live terminal view of every replica. The model below
//! turns successive status polls into rows, a throughput history and an
//! event log (replicas dying and coming back, acceptors going offline,
//! leadership changes, 2PC participants blocking); `run` draws it.

use crate::client;
use crate::node::NodeStatus;
use crate::paxos::proposer::ProposerMode;
use crate::prompt;
use crate::security::ClientSecurity;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const EVENTS_KEPT: usize = 100;
const SAMPLES_KEPT: usize = 240;
/// An event equal to one of this many recent ones is counted there instead
/// of listed again (random failures would otherwise flood the log).
const EVENTS_MERGED_WITHIN: usize = 8;

pub type Poll = Vec<(SocketAddr, Result<NodeStatus, String>)>;

/// Headers, rows (cells and style) and column widths that fit a width.
type FittedTable = (Vec<String>, Vec<(Vec<String>, Style)>, Vec<u16>);

/// One line of the event log: what happened, when last, and how often lately.
#[derive(Clone, Debug)]
struct LoggedEvent {
    clock: String,
    text: String,
    count: u32,
}

#[derive(Default)]
pub struct WatchModel {
    latest: Poll,
    /// Newest first.
    events: VecDeque<LoggedEvent>,
    /// Operations per second, oldest first.
    pub throughput: VecDeque<u64>,
    previous_leader: Option<usize>,
    previous_total: Option<(Instant, u64)>,
    /// Time between polls, for the throughput scale (each bar is one poll).
    pub poll_interval: Duration,
}

fn leader_of(poll: &Poll) -> Option<(usize, String)> {
    poll.iter()
        .enumerate()
        .filter_map(|(i, (_, s))| {
            let s = s.as_ref().ok()?.paxos()?;
            (s.proposer.mode == ProposerMode::Leading).then_some((i, s.proposer.ballot))
        })
        .max_by_key(|(_, ballot)| *ballot)
        .map(|(i, ballot)| (i, ballot.to_string()))
}

/// Requests applied so far, as the replica that applied most reports it.
fn applied_total(poll: &Poll) -> u64 {
    poll.iter()
        .filter_map(|(_, s)| match s.as_ref().ok()? {
            NodeStatus::Paxos(p) => Some(p.commands_applied),
            NodeStatus::TwoPc(t) => Some(t.committed),
        })
        .max()
        .unwrap_or(0)
}

impl WatchModel {
    /// Folds in one poll taken at `now`; `clock` labels the events it finds.
    pub fn update(&mut self, poll: Poll, now: Instant, clock: &str) {
        let mut found = Vec::new();
        if self.latest.is_empty() {
            // The first poll: report what is already wrong.
            for (i, (_, status)) in poll.iter().enumerate() {
                let name = format!("s{}", i + 1);
                match status {
                    Err(e) => found.push(format!("{name} DOWN: {e}")),
                    Ok(NodeStatus::Paxos(p)) if !p.acceptor_online => found.push(format!("{name} acceptor OFFLINE")),
                    Ok(NodeStatus::TwoPc(t)) if !t.participant_online => {
                        found.push(format!("{name} participant OFFLINE"))
                    }
                    Ok(NodeStatus::TwoPc(t)) if t.prepared_count > 0 => {
                        let keys: Vec<&str> = t.prepared.iter().map(|(_, k)| k.as_str()).collect();
                        found.push(format!("{name} BLOCKED: voted YES, waiting for a decision on {keys:?}"));
                    }
                    _ => {}
                }
            }
        } else {
            for (i, ((_, before), (_, after))) in self.latest.iter().zip(&poll).enumerate() {
                let name = format!("s{}", i + 1);
                match (before, after) {
                    (Ok(_), Err(e)) => found.push(format!("{name} DOWN: {e}")),
                    (Err(_), Ok(_)) => found.push(format!("{name} is back up")),
                    (Ok(NodeStatus::Paxos(b)), Ok(NodeStatus::Paxos(a))) => {
                        if b.acceptor_online && !a.acceptor_online {
                            found.push(format!("{name} acceptor OFFLINE"));
                        } else if !b.acceptor_online && a.acceptor_online {
                            found.push(format!("{name} acceptor restarted from durable state"));
                        }
                    }
                    (Ok(NodeStatus::TwoPc(b)), Ok(NodeStatus::TwoPc(a))) => {
                        if b.participant_online && !a.participant_online {
                            found.push(format!("{name} participant OFFLINE"));
                        } else if !b.participant_online && a.participant_online {
                            found.push(format!("{name} participant restarted"));
                        }
                        if a.prepared_count > b.prepared_count {
                            let keys: Vec<&str> = a.prepared.iter().map(|(_, k)| k.as_str()).collect();
                            found.push(format!("{name} BLOCKED: voted YES, waiting for a decision on {keys:?}"));
                        } else if a.prepared_count == 0 && b.prepared_count > 0 {
                            found.push(format!("{name} unblocked"));
                        }
                    }
                    _ => {}
                }
            }
        }
        let leader = leader_of(&poll);
        if leader.as_ref().map(|(i, _)| *i) != self.previous_leader {
            match &leader {
                Some((i, ballot)) => found.push(format!("s{} leads with ballot {ballot}", i + 1)),
                None if poll.iter().any(|(_, s)| s.as_ref().is_ok_and(|s| s.paxos().is_some())) => {
                    found.push("no leader: an election is running".to_string())
                }
                None => {}
            }
            self.previous_leader = leader.map(|(i, _)| i);
        }
        for text in found {
            let recent = self.events.iter().take(EVENTS_MERGED_WITHIN).position(|e| e.text == text);
            let count = match recent.and_then(|i| self.events.remove(i)) {
                Some(earlier) => earlier.count + 1,
                None => 1,
            };
            self.events.push_front(LoggedEvent { clock: clock.to_string(), text, count });
        }
        self.events.truncate(EVENTS_KEPT);
        let total = applied_total(&poll);
        if let Some((at, before)) = self.previous_total {
            let seconds = now.duration_since(at).as_secs_f64().max(0.001);
            self.throughput.push_back((total.saturating_sub(before) as f64 / seconds) as u64);
            if self.throughput.len() > SAMPLES_KEPT {
                self.throughput.pop_front();
            }
        }
        self.previous_total = Some((now, total));
        self.latest = poll;
    }

    /// The event log, newest first: "12:00:01.250  s2 acceptor OFFLINE (x3)".
    pub fn event_lines(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| match e.count {
                1 => format!("{}  {}", e.clock, e.text),
                n => format!("{}  {} (x{n})", e.clock, e.text),
            })
            .collect()
    }

    /// The one thing that matters: can the cluster decide? With the style to show it in.
    pub fn quorum_line(&self) -> (String, bool) {
        let n = self.latest.len();
        let majority = n / 2 + 1;
        let paxos: Vec<Option<&crate::node::PaxosStatus>> =
            self.latest.iter().map(|(_, s)| s.as_ref().ok().and_then(|s| s.paxos())).collect();
        let twopc = self.latest.iter().any(|(_, s)| matches!(s, Ok(NodeStatus::TwoPc(_))));
        if twopc {
            let up = self
                .latest
                .iter()
                .filter(|(_, s)| matches!(s, Ok(NodeStatus::TwoPc(t)) if t.participant_online))
                .count();
            return if up == n {
                (format!("participants up {up}/{n}: 2PC can commit (it needs every one)"), true)
            } else {
                (format!("NOT ALL PARTICIPANTS UP ({up}/{n}): 2PC writes will abort; it needs every one"), false)
            };
        }
        let online = paxos.iter().flatten().filter(|s| s.acceptor_online && !s.rebuilding).count();
        let leader = leader_of(&self.latest).map(|(i, ballot)| format!("; leader s{} at ballot {ballot}", i + 1));
        if online >= majority {
            (
                format!("acceptors reachable {online}/{n}: majority ({majority} needed){}", leader.unwrap_or_default()),
                true,
            )
        } else {
            (format!("NO QUORUM: writes will fail. acceptors reachable {online}/{n}, {majority} needed"), false)
        }
    }

    fn table(&self, width: u16) -> FittedTable {
        let red = Style::default().fg(Color::Red).add_modifier(Modifier::BOLD);
        let green = Style::default().fg(Color::Green).add_modifier(Modifier::BOLD);
        let yellow = Style::default().fg(Color::Yellow);
        let rows: Vec<(Vec<String>, Style)> = self
            .latest
            .iter()
            .enumerate()
            .map(|(i, (addr, status))| {
                let style = match status {
                    Err(_) => red,
                    Ok(NodeStatus::Paxos(s)) if !s.acceptor_online => yellow,
                    Ok(NodeStatus::Paxos(s)) if s.proposer.mode == ProposerMode::Leading => green,
                    Ok(NodeStatus::TwoPc(s)) if !s.participant_online || s.prepared_count > 0 => yellow,
                    Ok(_) => Style::default(),
                };
                (prompt::status_cells(i, addr, status), style)
            })
            .collect();
        let columns = prompt::status_columns(&self.latest);
        let cells: Vec<Vec<String>> = rows.iter().map(|(cells, _)| cells.clone()).collect();
        let (shown, headers, widths) = fit_columns(columns, &cells, width);
        let rows = rows
            .into_iter()
            .map(|(cells, style)| (shown.iter().map(|&c| cells.get(c).cloned().unwrap_or_default()).collect(), style))
            .collect();
        (headers, rows, widths)
    }

    fn recent(&self) -> (String, Vec<String>) {
        let source =
            leader_of(&self.latest).map(|(i, _)| i).or_else(|| self.latest.iter().position(|(_, s)| s.is_ok()));
        let Some(i) = source else { return ("recent decisions".into(), Vec::new()) };
        match &self.latest[i].1 {
            Ok(NodeStatus::Paxos(s)) => (
                format!("recent decisions (at s{})", i + 1),
                s.recent_decisions.iter().map(|(slot, value)| format!("slot {slot}: {value}")).collect(),
            ),
            Ok(NodeStatus::TwoPc(s)) => (format!("recent outcomes (at s{})", i + 1), s.recent_outcomes.clone()),
            Err(_) => ("recent decisions".into(), Vec::new()),
        }
    }

    /// Laid out for any terminal from 80x24 up: the quorum line first, then
    /// the replicas (columns dropped or abbreviated to fit), throughput with
    /// its scale, recent decisions and events.
    pub fn draw(&self, frame: &mut Frame, title: &str) {
        let area = frame.area();
        let wide = area.width >= 120;
        let areas = Layout::default()
            .direction(Direction::Vertical)
            .constraints([
                Constraint::Length(1),
                Constraint::Length(self.latest.len() as u16 + 3),
                Constraint::Length(4),
                Constraint::Min(6),
            ])
            .split(area);

        let (quorum, healthy) = self.quorum_line();
        let quorum_style = if healthy {
            Style::default().fg(Color::Green).add_modifier(Modifier::BOLD)
        } else {
            Style::default().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD)
        };
        frame.render_widget(Paragraph::new(Line::from(Span::styled(quorum, quorum_style))), areas[0]);

        let (headers, rows, widths) = self.table(areas[1].width.saturating_sub(2));
        let table = Table::new(
            rows.into_iter().map(|(cells, style)| Row::new(cells).style(style)),
            widths.into_iter().map(Constraint::Length),
        )
        .column_spacing(1)
        .header(Row::new(headers).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::default().borders(Borders::ALL).title(title.to_string()));
        frame.render_widget(table, areas[1]);

        let samples: Vec<u64> = self.throughput.iter().copied().collect();
        let width = areas[2].width.saturating_sub(2) as usize;
        let shown = &samples[samples.len().saturating_sub(width)..];
        let current = shown.last().copied().unwrap_or(0);
        let peak = shown.iter().copied().max().unwrap_or(0).max(1);
        let sparkline = Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(format!(
                "applied/s: now {current}; bars 0 to {peak}, one per {:.1} s",
                self.poll_interval.as_secs_f64()
            )))
            .data(shown)
            .max(peak)
            .style(Style::default().fg(Color::Cyan));
        frame.render_widget(sparkline, areas[2]);

        let bottom = Layout::default()
            .direction(if wide { Direction::Horizontal } else { Direction::Vertical })
            .constraints([Constraint::Percentage(45), Constraint::Percentage(55)])
            .split(areas[3]);
        let (recent_title, recent) = self.recent();
        let recent = List::new(recent.into_iter().map(ListItem::new).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(recent_title));
        frame.render_widget(recent, bottom[0]);
        let events: Vec<ListItem> = self
            .event_lines()
            .into_iter()
            .map(|e| {
                let style = if e.contains("DOWN") || e.contains("OFFLINE") || e.contains("BLOCKED") {
                    Style::default().fg(Color::Red)
                } else {
                    Style::default()
                };
                ListItem::new(Line::from(Span::styled(e, style)))
            })
            .collect();
        frame.render_widget(List::new(events).block(Block::default().borders(Borders::ALL).title("events")), bottom[1]);
    }
}

/// Which columns to show, under which headers, how wide: every column with
/// its full header if that fits `width`; else short headers; then columns
/// dropped, least telling first, until the rest fits. Never a cell cut.
fn fit_columns(columns: &[&str], rows: &[Vec<String>], width: u16) -> (Vec<usize>, Vec<String>, Vec<u16>) {
    // Least telling last: what a student needs is who is up, who leads, how far each got.
    const PRIORITY: [&str; 16] = [
        "replica",
        "state",
        "acceptor",
        "participant",
        "role",
        "ballot",
        "applied",
        "blocked on",
        "committed",
        "leader",
        "decided",
        "in flight",
        "coordinating",
        "keys",
        "promised",
        "address",
    ];
    fn short(name: &str) -> &str {
        match name {
            "replica" => "id",
            "acceptor" => "acc",
            "participant" => "part",
            "promised" => "prom",
            "decided" => "dec",
            "in flight" => "infl",
            "coordinating" => "coord",
            "committed" => "commit",
            "blocked on" => "blocked",
            other => other,
        }
    }
    let content = |c: usize| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0);
    let layout = |shown: &[usize], abbreviate: bool| -> (Vec<String>, Vec<u16>, usize) {
        let headers: Vec<String> =
            shown.iter().map(|&c| if abbreviate { short(columns[c]) } else { columns[c] }.to_string()).collect();
        let widths: Vec<u16> =
            shown.iter().zip(&headers).map(|(&c, h)| content(c).max(h.chars().count()) as u16).collect();
        let total = widths.iter().map(|&w| w as usize).sum::<usize>() + shown.len().saturating_sub(1);
        (headers, widths, total)
    };
    let mut shown: Vec<usize> = (0..columns.len()).collect();
    let mut abbreviate = false;
    loop {
        let (headers, widths, total) = layout(&shown, abbreviate);
        if total <= width as usize || shown.len() <= 1 {
            return (shown, headers, widths);
        }
        if !abbreviate {
            abbreviate = true;
            continue;
        }
        let rank = |c: &usize| PRIORITY.iter().position(|p| *p == columns[*c]).unwrap_or(PRIORITY.len());
        let least = *shown.iter().max_by_key(|c| rank(c)).expect("not empty");
        shown.retain(|&c| c != least);
    }
}

fn clock() -> String {
    let since_midnight = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64 % 86_400_000);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        since_midnight / 3_600_000,
        since_midnight / 60_000 % 60,
        since_midnight / 1_000 % 60,
        since_midnight % 1_000
    )
}

/// Runs the live view until `q`, Esc or Ctrl-C (or `duration`, if given).
pub fn run(
    replicas: &[SocketAddr],
    security: &ClientSecurity,
    interval: Duration,
    duration: Option<Duration>,
) -> std::io::Result<()> {
    let stop_at = duration.map(|d| Instant::now() + d);
    let mut model = WatchModel { poll_interval: interval, ..WatchModel::default() };
    let mut terminal = ratatui::init();
    let title = format!(" paxos-kv watch: {} replicas (UTC clock, q to quit) ", replicas.len());
    let result = (|| -> std::io::Result<()> {
        loop {
            let poll = client::status_all(replicas, interval.min(Duration::from_millis(500)), security);
            model.update(poll, Instant::now(), &clock());
            terminal.draw(|frame| model.draw(frame, &title))?;
            if stop_at.is_some_and(|at| Instant::now() >= at) {
                return Ok(());
            }
            if event::poll(interval)? {
                if let Event::Key(key) = event::read()? {
                    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
                    if key.kind == KeyEventKind::Press
                        && (key.code == KeyCode::Char('q') || key.code == KeyCode::Esc || ctrl_c)
                    {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::PaxosStatus;
    use crate::paxos::proposer::ProposerStatus;
    use crate::paxos::Ballot;

    fn paxos(id: u32, leading: bool, online: bool, applied: u64) -> Result<NodeStatus, String> {
        Ok(NodeStatus::Paxos(PaxosStatus {
            node_id: id,
            acceptor_online: online,
            rebuilding: false,
            promised: Ballot::new(1, 1),
            accepted_slots: 0,
            log_start: 0,
            proposer: ProposerStatus {
                mode: if leading { ProposerMode::Leading } else { ProposerMode::Follower },
                ballot: Ballot::new(1, 1),
                leader: Some(1),
                next_slot: 0,
                slots_in_flight: 0,
                queued_commands: 0,
                reachable_acceptors: 3,
            },
            learner_next_slot: 0,
            decided_through: None,
            keys: 0,
            store_bytes: 0,
            learner_held_bytes: 0,
            apply_pause_max_us: 0,
            apply_pause_cpu_max_us: 0,
            apply_pause_cause: String::new(),
            apply_pauses_over_10ms: 0,
            apply_pauses_over_10ms_cpu: 0,
            peers_connected: vec![],
            acceptor_failures: u64::from(!online),
            commands_applied: applied,
            recent_decisions: vec![],
        }))
    }

    #[test]
    fn deaths_failures_and_new_leaders_become_events_and_throughput_is_measured() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut model = WatchModel::default();
        let start = Instant::now();
        model.update(vec![(addr, paxos(1, true, true, 0)), (addr, paxos(2, false, true, 0))], start, "t0");
        assert_eq!(model.event_lines().len(), 1, "{:?}", model.event_lines());
        assert!(model.event_lines()[0].contains("s1 leads"));
        let mut late = WatchModel::default();
        late.update(vec![(addr, Err("refused".into())), (addr, paxos(2, true, false, 0))], start, "t0");
        assert!(late.event_lines().iter().any(|e| e.contains("s1 DOWN")), "{:?}", late.event_lines());
        assert!(late.event_lines().iter().any(|e| e.contains("s2 acceptor OFFLINE")), "{:?}", late.event_lines());
        model.update(
            vec![(addr, Err("refused".into())), (addr, paxos(2, false, false, 100))],
            start + Duration::from_secs(1),
            "t1",
        );
        let events = model.event_lines();
        assert!(events.iter().any(|e| e.contains("s1 DOWN")), "{events:?}");
        assert!(events.iter().any(|e| e.contains("s2 acceptor OFFLINE")), "{events:?}");
        assert!(events.iter().any(|e| e.contains("no leader")), "{events:?}");
        assert_eq!(model.throughput.back(), Some(&100));
        model.update(
            vec![(addr, paxos(1, false, true, 0)), (addr, paxos(2, true, true, 300))],
            start + Duration::from_secs(2),
            "t2",
        );
        let events = model.event_lines();
        assert!(events[0].starts_with("t2") && events.iter().any(|e| e.contains("s2 leads")));
        assert!(events.iter().any(|e| e.contains("s1 is back up")));
        assert_eq!(model.throughput.back(), Some(&200));
    }

    #[test]
    fn repeated_failures_are_counted_on_one_line() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut model = WatchModel::default();
        let start = Instant::now();
        for round in 0..10u64 {
            let online = round % 2 == 0;
            let poll = vec![(addr, paxos(1, true, true, 0)), (addr, paxos(2, false, online, 0))];
            model.update(poll, start + Duration::from_secs(round), &format!("t{round}"));
        }
        let events = model.event_lines();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[0].starts_with("t9") && events[0].contains("s2 acceptor OFFLINE (x5)"), "{events:?}");
        assert!(events[1].contains("s2 acceptor restarted from durable state (x4)"), "{events:?}");
    }

    /// The screen as text, one string per row.
    fn render(model: &WatchModel, width: u16, height: u16) -> Vec<String> {
        let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| model.draw(frame, " watch ")).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect()).collect()
    }

    #[test]
    fn at_80_by_24_every_shown_cell_is_whole_and_the_quorum_line_leads() {
        let addr: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let mut model = WatchModel::default();
        let mut poll: Poll = (1..=5).map(|id| (addr, paxos(id, id == 1, id != 4, 1000 * id as u64))).collect();
        poll[2] = (addr, Err("connection refused".into()));
        if let Ok(NodeStatus::Paxos(s)) = &mut poll[0].1 {
            s.recent_decisions = vec![(6143, "PUT a=1, GET b, +2 more".into())];
        }
        model.update(poll.clone(), Instant::now(), "12:00:00.000");
        let screen = render(&model, 80, 24);
        let text = screen.join("\n");
        assert!(screen[0].contains("acceptors reachable 3/5: majority (3 needed); leader s1"), "{text}");
        let header = screen.iter().find(|l| l.contains("state")).unwrap_or_else(|| panic!("no header:\n{text}"));
        for word in ["id", "state", "acc", "role", "ballot", "applied"] {
            assert!(header.split(['│', ' ']).any(|w| w == word), "header lacks {word}: {header}");
        }
        let leader_row = screen.iter().find(|l| l.contains("LEADER")).unwrap_or_else(|| panic!("{text}"));
        for cell in ["s1", "up", "online", "LEADER", "1.1"] {
            assert!(leader_row.split(['│', ' ']).any(|w| w == cell), "{cell} cut in: {leader_row}");
        }
        assert!(screen.iter().any(|l| l.contains("s3") && l.contains("DOWN")), "{text}");
        assert!(text.contains("slot 6143: PUT a=1, GET b, +2 more"), "{text}");
        assert!(text.contains("applied/s: now"), "{text}");

        // Two more down: no majority, said in the first line.
        poll[1] = (addr, Err("refused".into()));
        model.update(poll, Instant::now(), "12:00:01.000");
        let screen = render(&model, 80, 24);
        assert!(
            screen[0].starts_with("NO QUORUM: writes will fail. acceptors reachable 2/5, 3 needed"),
            "{}",
            screen[0]
        );

        // A wide terminal shows every column with its full name.
        let wide = render(&model, 160, 30).join("\n");
        for column in prompt::PAXOS_STATUS_COLUMNS {
            assert!(wide.contains(column), "{column} missing at 160 columns:\n{wide}");
        }
    }
}
