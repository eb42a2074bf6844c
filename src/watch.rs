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
use ratatui::widgets::{Block, Borders, List, ListItem, Row, Sparkline, Table};
use ratatui::Frame;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const EVENTS_KEPT: usize = 100;
const SAMPLES_KEPT: usize = 240;

pub type Poll = Vec<(SocketAddr, Result<NodeStatus, String>)>;

#[derive(Default)]
pub struct WatchModel {
    latest: Poll,
    /// Newest first, each with its wall-clock time.
    pub events: VecDeque<String>,
    /// Operations per second, oldest first.
    pub throughput: VecDeque<u64>,
    previous_leader: Option<usize>,
    previous_total: Option<(Instant, u64)>,
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
                            found.push(format!("{name} acceptor OFFLINE (failure #{})", a.acceptor_failures));
                        } else if !b.acceptor_online && a.acceptor_online {
                            found.push(format!("{name} acceptor restarted from durable state"));
                        }
                    }
                    (Ok(NodeStatus::TwoPc(b)), Ok(NodeStatus::TwoPc(a))) => {
                        if b.participant_online && !a.participant_online {
                            found.push(format!("{name} participant OFFLINE (failure #{})", a.participant_failures));
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
        for event in found {
            self.events.push_front(format!("{clock}  {event}"));
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

    fn rows(&self) -> (&'static [&'static str], Vec<Row<'static>>) {
        let red = Style::default().fg(Color::Red).add_modifier(Modifier::BOLD);
        let green = Style::default().fg(Color::Green).add_modifier(Modifier::BOLD);
        let yellow = Style::default().fg(Color::Yellow);
        let rows = self
            .latest
            .iter()
            .enumerate()
            .map(|(i, (addr, status))| {
                let row = Row::new(prompt::status_cells(i, addr, status));
                match status {
                    Err(_) => row.style(red),
                    Ok(NodeStatus::Paxos(s)) if !s.acceptor_online => row.style(yellow),
                    Ok(NodeStatus::Paxos(s)) if s.proposer.mode == ProposerMode::Leading => row.style(green),
                    Ok(NodeStatus::TwoPc(s)) if !s.participant_online || s.prepared_count > 0 => row.style(yellow),
                    Ok(_) => row,
                }
            })
            .collect();
        (prompt::status_columns(&self.latest), rows)
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

    pub fn draw(&self, frame: &mut Frame, title: &str) {
        let (header, rows) = self.rows();
        let areas = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Length(self.latest.len() as u16 + 3), Constraint::Length(7), Constraint::Min(6)])
            .split(frame.area());
        let widths: Vec<Constraint> = header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 1 { Constraint::Length(16) } else { Constraint::Min(6) })
            .collect();
        let table = Table::new(rows, widths)
            .header(Row::new(header.to_vec()).style(Style::default().add_modifier(Modifier::BOLD)))
            .block(Block::default().borders(Borders::ALL).title(title.to_string()));
        frame.render_widget(table, areas[0]);

        let samples: Vec<u64> = self.throughput.iter().copied().collect();
        let current = samples.last().copied().unwrap_or(0);
        let width = areas[1].width.saturating_sub(2) as usize;
        let shown = &samples[samples.len().saturating_sub(width)..];
        let sparkline = Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(format!("requests applied per second: {current}")))
            .data(shown)
            .style(Style::default().fg(Color::Cyan));
        frame.render_widget(sparkline, areas[1]);

        let bottom = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
            .split(areas[2]);
        let (recent_title, recent) = self.recent();
        let recent = List::new(recent.into_iter().map(ListItem::new).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(recent_title));
        frame.render_widget(recent, bottom[0]);
        let events: Vec<ListItem> = self
            .events
            .iter()
            .map(|e| {
                let style = if e.contains("DOWN") || e.contains("OFFLINE") || e.contains("BLOCKED") {
                    Style::default().fg(Color::Red)
                } else {
                    Style::default()
                };
                ListItem::new(Line::from(Span::styled(e.clone(), style)))
            })
            .collect();
        frame.render_widget(List::new(events).block(Block::default().borders(Borders::ALL).title("events")), bottom[1]);
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
    let mut model = WatchModel::default();
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
        assert_eq!(model.events.len(), 1, "{:?}", model.events);
        assert!(model.events[0].contains("s1 leads"));
        let mut late = WatchModel::default();
        late.update(vec![(addr, Err("refused".into())), (addr, paxos(2, true, false, 0))], start, "t0");
        assert!(late.events.iter().any(|e| e.contains("s1 DOWN")), "{:?}", late.events);
        assert!(late.events.iter().any(|e| e.contains("s2 acceptor OFFLINE")), "{:?}", late.events);
        model.update(
            vec![(addr, Err("refused".into())), (addr, paxos(2, false, false, 100))],
            start + Duration::from_secs(1),
            "t1",
        );
        let events: Vec<&String> = model.events.iter().collect();
        assert!(events.iter().any(|e| e.contains("s1 DOWN")), "{events:?}");
        assert!(events.iter().any(|e| e.contains("s2 acceptor OFFLINE")), "{events:?}");
        assert!(events.iter().any(|e| e.contains("no leader")), "{events:?}");
        assert_eq!(model.throughput.back(), Some(&100));
        model.update(
            vec![(addr, paxos(1, false, true, 0)), (addr, paxos(2, true, true, 300))],
            start + Duration::from_secs(2),
            "t2",
        );
        assert!(model.events[0].starts_with("t2") && model.events.iter().any(|e| e.contains("s2 leads")));
        assert!(model.events.iter().any(|e| e.contains("s1 is back up")));
        assert_eq!(model.throughput.back(), Some(&200));
    }
}
