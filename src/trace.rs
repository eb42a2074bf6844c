//! Message traces: with `--trace PATH`, a replica records every protocol
//! message it sends and receives, and its failures, as JSON lines. Role
//! threads only queue events; a writer thread does the disk I/O and stops
//! recording at a size limit.

use crate::mailbox::{Mailbox, Weigh};
use crate::paxos::messages::SlotValue;
use crate::paxos::{Envelope, Message, NodeId, Role};
use crate::twopc::{TxEnvelope, TxMessage};
use log::{error, warn};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A vote a PROMISE reports for one slot: the acceptor's highest-numbered
/// accepted proposal there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportedVote {
    pub slot: u64,
    pub ballot: String,
    pub value: String,
}

/// The votes a PROMISE trace line keeps; the rest are counted.
const VOTES_RECORDED: usize = 64;
/// The keys an ACCEPT or DECIDE trace line keeps.
const KEYS_RECORDED: usize = 16;

/// One line of a trace file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Wall-clock time, microseconds since the Unix epoch.
    pub ts_us: u64,
    /// The replica that recorded the event.
    pub node: NodeId,
    /// `send`, `recv`, `offline` or `online`.
    pub event: String,
    pub from: NodeId,
    pub to: NodeId,
    pub from_role: String,
    pub to_role: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ballot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// For PREPARE and PROMISE: the first slot the promise covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_slot: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    /// What a value is, and a digest telling equal values apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// PROMISE: the votes it reports, slot by slot (at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub votes: Option<Vec<ReportedVote>>,
    /// PROMISE: votes reported but not recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub votes_omitted: Option<u64>,
    /// ACCEPT and DECIDE: the keys the value touches (at most 16), so that
    /// `timeline --key` can find a write's slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

fn value_text(value: &SlotValue) -> String {
    format!("{} #{}", value.describe(), digest(value))
}

fn keys_of(value: &SlotValue) -> Option<Vec<String>> {
    match value {
        SlotValue::Noop => None,
        SlotValue::Batch(commands) => {
            Some(commands.iter().take(KEYS_RECORDED).map(|c| c.op.key().chars().take(256).collect()).collect())
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Proposer => "proposer",
        Role::Acceptor => "acceptor",
        Role::Learner => "learner",
    }
}

fn digest<T: Serialize>(value: &T) -> String {
    format!("{:08x}", crc32fast::hash(&crate::wire::encode(value)))
}

impl TraceEvent {
    pub fn paxos(node: NodeId, event: &str, envelope: &Envelope) -> Self {
        let msg = &envelope.msg;
        let (ballot, slot, first_slot, value) = match msg {
            Message::Prepare(m) => (Some(m.ballot), None, Some(m.first_slot), None),
            Message::Promise(m) => (Some(m.ballot), None, Some(m.first_slot), None),
            Message::Nack(m) => (Some(m.ballot), None, None, Some(format!("promised {}", m.promised))),
            Message::Accept(m) => (Some(m.ballot), Some(m.slot), None, Some(value_text(&m.value))),
            Message::Accepted(m) => (Some(m.ballot), Some(m.slot), None, None),
            Message::Decide(m) | Message::Handoff(m) => (None, Some(m.slot), None, Some(value_text(&m.value))),
            Message::Chosen(m) => (Some(m.ballot), Some(m.slot), None, None),
            Message::Heartbeat(m) => (Some(m.ballot), None, None, None),
            Message::HeartbeatAck(m) => (Some(m.ballot), None, None, None),
            Message::LeaderAlive(m) => (Some(m.ballot), None, None, None),
            Message::PreVote(m) => (Some(m.ballot), None, None, None),
            Message::PreVoteReply(m) => {
                (Some(m.ballot), None, None, Some(if m.granted { "granted" } else { "denied" }.to_string()))
            }
            Message::CatchupRequest(m) => (None, None, Some(m.next_slot), None),
            Message::CatchupReply(m) => (None, None, m.entries.first().map(|(s, _)| *s), None),
        };
        let (votes, votes_omitted) = match msg {
            Message::Promise(m) => (
                Some(
                    m.accepted
                        .iter()
                        .take(VOTES_RECORDED)
                        .map(|e| ReportedVote {
                            slot: e.slot,
                            ballot: e.ballot.to_string(),
                            value: value_text(&e.value),
                        })
                        .collect(),
                ),
                m.accepted.len().checked_sub(VOTES_RECORDED).filter(|n| *n > 0).map(|n| n as u64),
            ),
            _ => (None, None),
        };
        let keys = match msg {
            Message::Accept(m) => keys_of(&m.value),
            Message::Decide(m) | Message::Handoff(m) => keys_of(&m.value),
            _ => None,
        };
        TraceEvent {
            ts_us: now_us(),
            node,
            event: event.to_string(),
            from: envelope.from,
            to: envelope.to,
            from_role: role_name(msg.sender_role()).to_string(),
            to_role: role_name(msg.role()).to_string(),
            kind: msg.kind().to_string(),
            ballot: ballot.map(|b| b.to_string()),
            slot,
            first_slot,
            value,
            votes,
            votes_omitted,
            keys,
            ..TraceEvent::default()
        }
    }

    pub fn twopc(node: NodeId, event: &str, envelope: &TxEnvelope) -> Self {
        let (txn, value, to_participant) = match &envelope.msg {
            TxMessage::VoteRequest(m) => (m.txn, Some(format!("{:?}", m.command.op.key())), true),
            TxMessage::Vote(m) => (m.txn, Some(if m.yes { "YES".into() } else { format!("NO {:?}", m.reason) }), false),
            TxMessage::Decision(m) => (m.txn, None, true),
            TxMessage::Ack(m) => (m.txn, None, false),
        };
        let (from_role, to_role) =
            if to_participant { ("coordinator", "participant") } else { ("participant", "coordinator") };
        TraceEvent {
            ts_us: now_us(),
            node,
            event: event.to_string(),
            from: envelope.from,
            to: envelope.to,
            from_role: from_role.into(),
            to_role: to_role.into(),
            kind: envelope.msg.kind().to_string(),
            txn: Some(txn.to_string()),
            value,
            ..TraceEvent::default()
        }
    }

    /// A role of `node` went offline (`up == false`) or came back.
    pub fn failure(node: NodeId, role: &str, up: bool) -> Self {
        TraceEvent {
            ts_us: now_us(),
            node,
            event: if up { "online" } else { "offline" }.to_string(),
            from: node,
            to: node,
            from_role: role.to_string(),
            to_role: role.to_string(),
            kind: if up { "RESTART" } else { "FAILURE" }.to_string(),
            ..TraceEvent::default()
        }
    }

    /// The replica process started (the first line of each run of it).
    pub fn start(node: NodeId) -> Self {
        TraceEvent {
            ts_us: now_us(),
            node,
            event: "start".into(),
            from: node,
            to: node,
            kind: "START".into(),
            ..TraceEvent::default()
        }
    }
}

/// Queues events for the writer thread; never blocks a role.
#[derive(Clone)]
pub struct Tracer {
    queue: Arc<Mailbox<TraceEvent>>,
}

const TRACE_QUEUE_MAX: usize = 100_000;
const TRACE_QUEUE_BYTES_MAX: usize = 16 << 20;

impl Weigh for TraceEvent {
    fn weight(&self) -> usize {
        200 + self.value.as_ref().map_or(0, String::len)
            + self.votes.as_ref().map_or(0, |v| v.iter().map(|v| 40 + v.value.len()).sum())
            + self.keys.as_ref().map_or(0, |k| k.iter().map(|k| 8 + k.len()).sum())
    }
}

impl Tracer {
    pub fn start(node: NodeId, path: PathBuf, bytes_max: u64) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let queue = Arc::new(Mailbox::new(TRACE_QUEUE_MAX, TRACE_QUEUE_BYTES_MAX));
        let writer_queue = queue.clone();
        std::thread::Builder::new().name(format!("s{node}/trace")).spawn(move || {
            let mut out = BufWriter::new(file);
            let mut written = 0u64;
            let mut events = VecDeque::new();
            loop {
                writer_queue.take_all(&mut events, Instant::now() + Duration::from_millis(200));
                for event in events.drain(..) {
                    if written >= bytes_max {
                        continue;
                    }
                    let mut line = serde_json::to_vec(&event).expect("a trace event always serializes");
                    line.push(b'\n');
                    written += line.len() as u64;
                    if written >= bytes_max {
                        warn!("trace {} reached {bytes_max} bytes; recording stops", path.display());
                    }
                    if let Err(e) = out.write_all(&line) {
                        error!("cannot write trace {}: {e}", path.display());
                        return;
                    }
                }
                let _ = out.flush();
            }
        })?;
        let tracer = Tracer { queue };
        tracer.record(TraceEvent::start(node));
        Ok(tracer)
    }

    pub fn record(&self, event: TraceEvent) {
        let _ = self.queue.push(event);
    }
}
