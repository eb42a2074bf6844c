//! The Paxos replica: proposer, acceptor and learner threads around the
//! sans-IO cores of `crate::paxos`, with the acceptor's durable log.

use super::{push_control, run_role, spawn_named, NodeStatus, Plumbing, Replica, RoleThread, ROLE_QUEUE_MAX};
use crate::config::{FailMode, ServerConfig};
use crate::kv::{Command, Reply, RequestError, RequestId};
use crate::mailbox::{Full, Mailbox, Weigh};
use crate::paxos::acceptor::{Acceptor, AcceptorOutbox, AcceptorRecord, AcceptorState};
use crate::paxos::learner::{Learner, LearnerConfig, LearnerOutbox};
use crate::paxos::messages::{SlotValue, SnapshotJob};
use crate::paxos::proposer::{Proposer, ProposerConfig, ProposerMode, ProposerOutbox, ProposerStatus, ReadBatch};
use crate::paxos::{Ballot, Envelope, Message, NodeId, Role, Slot};
use crate::storage::{self, fail_stop, AcceptorLog, Disk, FsDisk, Identity, SnapshotWriter};
use anyhow::Result;
use log::{debug, error, info, warn};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A Paxos replica's roles, as `STATUS` shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaxosStatus {
    pub node_id: NodeId,
    pub acceptor_online: bool,
    /// Rejoined after losing its disk: catching up, not voting yet.
    pub rebuilding: bool,
    pub promised: Ballot,
    pub accepted_slots: usize,
    pub log_start: Slot,
    pub proposer: ProposerStatus,
    pub learner_next_slot: Slot,
    /// Highest slot this replica knows decided (applied or waiting on a gap).
    pub decided_through: Option<Slot>,
    pub keys: usize,
    /// Bytes of keys and values in the store.
    #[serde(default)]
    pub store_bytes: u64,
    /// Decided values the learner holds for peers and for gaps, in bytes.
    #[serde(default)]
    pub learner_held_bytes: u64,
    /// The longest single step of the learner thread (one message applied or
    /// served, or the replies and hand-offs after a batch), in microseconds
    /// of wall-clock time: how long applying stood still.
    #[serde(default)]
    pub apply_pause_max_us: u64,
    /// The same step's longest CPU time on that thread: the pause less the
    /// time the thread waited to be scheduled.
    #[serde(default)]
    pub apply_pause_cpu_max_us: u64,
    /// What that step was doing.
    #[serde(default)]
    pub apply_pause_cause: String,
    /// Steps of the learner thread that took over 10 ms of wall-clock time,
    /// and of those the ones that also took over 10 ms of CPU time (the
    /// others were mostly waiting for a core).
    #[serde(default)]
    pub apply_pauses_over_10ms: u64,
    #[serde(default)]
    pub apply_pauses_over_10ms_cpu: u64,
    pub peers_connected: Vec<NodeId>,
    pub acceptor_failures: u64,
    pub commands_applied: u64,
    /// The last few applied slots, newest first.
    pub recent_decisions: Vec<(Slot, String)>,
}

pub enum ProposerInput {
    Message(Envelope),
    Client(Command),
    LearnerProgress(Slot),
    /// The local acceptor promised this ballot to another replica's proposer.
    CandidateSeen(Ballot),
    /// The local acceptor finished rebuilding; nothing it saw was above this ballot.
    Rebuilt(Ballot),
}

pub enum LearnerInput {
    Message(Envelope),
    /// Reads the proposer confirmed as leader, to answer at their read index.
    Reads(ReadBatch),
    /// This replica's applied state, not a linearizable read (for checks).
    LocalRead {
        request: RequestId,
        key: String,
    },
}

impl Weigh for ProposerInput {
    fn weight(&self) -> usize {
        match self {
            ProposerInput::Message(envelope) => envelope.weight(),
            ProposerInput::Client(command) => command.wire_bytes(),
            _ => 16,
        }
    }
}

impl Weigh for LearnerInput {
    fn weight(&self) -> usize {
        match self {
            LearnerInput::Message(envelope) => envelope.weight(),
            LearnerInput::LocalRead { key, .. } => 32 + key.len(),
            LearnerInput::Reads(batch) => batch.reads.iter().map(Command::wire_bytes).sum(),
        }
    }
}

impl Weigh for AcceptorInput {
    fn weight(&self) -> usize {
        match self {
            AcceptorInput::Message(envelope) => envelope.weight(),
            _ => 16,
        }
    }
}

pub enum AcceptorInput {
    Message(Envelope),
    /// A durable snapshot holds every slot below this one.
    Truncate(Slot),
    /// The local learner applied every slot below this one (ends a rebuild).
    LearnerProgress(Slot),
    /// From the failure thread: go offline, drop every message.
    Crash,
    /// From the failure thread: come back, from durable state only.
    Recover,
}

pub(crate) struct PaxosReplica {
    plumbing: Plumbing<Envelope>,
    proposer_inbox: Arc<Mailbox<ProposerInput>>,
    acceptor_inbox: Arc<Mailbox<AcceptorInput>>,
    learner_inbox: Arc<Mailbox<LearnerInput>>,
    status: Mutex<PaxosStatus>,
    disk: Arc<dyn Disk>,
    identity: Identity,
    /// While the acceptor rebuilds, the learner reports its progress to it
    /// too; the rest of the time that would be a wake-up per batch for nothing.
    rebuilding: AtomicBool,
    /// Snapshots waiting for the writer thread, oldest first. The writer
    /// merges them (only the newest store is written, with every one's
    /// changes) and frees the store versions the older ones pinned: both
    /// cost time in proportion to what changed, which the learner must not spend.
    snapshot_to_write: (Mutex<Vec<SnapshotJob>>, Condvar),
    /// The last applied slots, newest first, described only when a status
    /// asks: describing them on every batch cost the learner much of its time.
    recent_values: Mutex<Vec<(Slot, SlotValue)>>,
}

impl PaxosReplica {
    fn id(&self) -> NodeId {
        self.plumbing.id()
    }

    /// Delivers to a local role's mailbox or queues for the peer's link.
    fn route(&self, envelope: Envelope) {
        if let Some(envelope) = self.plumbing.send(envelope) {
            self.deliver_locally(envelope);
        }
    }

    fn deliver_locally(&self, envelope: Envelope) {
        let kind = envelope.msg.kind();
        let delivered = match envelope.msg.role() {
            Role::Proposer => self.proposer_inbox.push(ProposerInput::Message(envelope)).is_ok(),
            Role::Acceptor => self.acceptor_inbox.push(AcceptorInput::Message(envelope)).is_ok(),
            Role::Learner => self.learner_inbox.push(LearnerInput::Message(envelope)).is_ok(),
        };
        if !delivered {
            warn!("local role queue full; dropped {kind}");
        }
    }
}

impl Replica for PaxosReplica {
    type Envelope = Envelope;

    fn config(&self) -> &ServerConfig {
        &self.plumbing.config
    }

    fn deliver(&self, peer: NodeId, envelope: Envelope) -> Result<(), String> {
        self.deliver_locally(self.plumbing.receive(peer, envelope)?);
        Ok(())
    }

    fn execute(&self, command: Command) -> Reply {
        let id = command.request_id();
        let push = || self.proposer_inbox.push(ProposerInput::Client(command)).is_ok();
        self.plumbing.pending.call(id, self.plumbing.request_timeout(), push)
    }

    fn execute_many(&self, commands: Vec<Command>) -> Vec<Reply> {
        let requests = commands.into_iter().map(|command| (command.request_id(), command)).collect();
        let submit = |command| self.proposer_inbox.push(ProposerInput::Client(command)).is_ok();
        self.plumbing.pending.call_many(requests, self.plumbing.request_timeout(), submit)
    }

    fn local_get(&self, request: RequestId, key: String) -> Reply {
        let push = || self.learner_inbox.push(LearnerInput::LocalRead { request, key }).is_ok();
        self.plumbing.pending.call(request, self.plumbing.request_timeout(), push)
    }

    fn status(&self) -> NodeStatus {
        let mut status = self.status.lock().unwrap().clone();
        status.peers_connected = self.plumbing.peers_connected();
        let recent = self.recent_values.lock().unwrap().clone();
        status.recent_decisions = recent.iter().map(|(slot, value)| (*slot, value.describe())).collect();
        NodeStatus::Paxos(status)
    }
}

struct ProposerThread {
    core: Proposer,
    out: ProposerOutbox,
    shared: Arc<PaxosReplica>,
}

impl RoleThread for ProposerThread {
    type Input = ProposerInput;

    fn handle(&mut self, input: ProposerInput) {
        match input {
            ProposerInput::Message(e) => self.core.on_message(e.from, e.msg, &mut self.out),
            ProposerInput::Client(command) => self.core.on_client_command(command, &mut self.out),
            ProposerInput::LearnerProgress(next_slot) => self.core.on_learner_progress(next_slot),
            ProposerInput::CandidateSeen(ballot) => self.core.on_candidate_seen(ballot),
            ProposerInput::Rebuilt(ballot) => self.core.set_may_lead(true, ballot),
        }
    }

    fn tick(&mut self) {
        self.core.on_tick(&mut self.out);
    }

    fn finish_batch(&mut self) {
        self.core.flush(&mut self.out);
        let out = std::mem::take(&mut self.out);
        if let Some(ballot) = out.persist_ballot {
            // Without a durable ballot a restart could reuse it.
            if let Err(e) = storage::save_ballot(&*self.shared.disk, self.shared.identity, ballot) {
                fail_stop(&format!("cannot persist proposer ballot {ballot}"), &e);
            }
        }
        out.messages.into_iter().for_each(|e| self.shared.route(e));
        for (id, reply) in out.replies {
            self.shared.plumbing.pending.complete(id, reply);
        }
        for batch in out.reads {
            if let Err(Full(LearnerInput::Reads(batch))) = self.shared.learner_inbox.push(LearnerInput::Reads(batch)) {
                for read in batch.reads {
                    self.shared.plumbing.pending.complete(read.request_id(), Reply::Rejected(RequestError::Overloaded));
                }
            }
        }
        self.shared.status.lock().unwrap().proposer = self.core.status();
    }
}

struct AcceptorThread {
    core: Acceptor,
    storage: AcceptorLog,
    online: bool,
    failures: u64,
    out: AcceptorOutbox,
    truncated: bool,
    shared: Arc<PaxosReplica>,
}

/// Promises are cut into chunks of this size: each chunk is a round trip, and
/// each tells the other proposers that phase 1 is progressing.
fn promise_bytes_max(config: &ServerConfig) -> usize {
    (config.peer_frame_bytes_max / 4).min(2 << 20)
}

/// Decisions listed in a status answer.
const RECENT_DECISIONS: usize = 6;

/// Compact the acceptor log once it is this much larger than its live state.
const COMPACT_BYTES_MIN: u64 = 8 << 20;

fn acceptor_core(config: &ServerConfig, state: AcceptorState) -> Acceptor {
    // Silent for longer than any candidate's phase 1 can last (the longest
    // election timeout, twice), so a promise it forgot has expired.
    let quiet_ticks = 2 * 2 * ProposerConfig::for_cluster(config.cluster()).election_timeout_ticks;
    Acceptor::new(config.id, state, promise_bytes_max(config)).with_rebuild_quiet_ticks(quiet_ticks)
}

impl AcceptorThread {
    /// After a simulated failure: back from what the disk holds, nothing else.
    fn reload(&mut self) {
        let shared = &self.shared;
        match AcceptorLog::open_acceptor(shared.disk.clone(), shared.identity) {
            Ok((log, state, _)) => {
                self.storage = log;
                self.core = acceptor_core(&shared.plumbing.config, state);
            }
            Err(e) => fail_stop("cannot reload the acceptor log", &e),
        }
    }
}

impl RoleThread for AcceptorThread {
    type Input = AcceptorInput;

    fn handle(&mut self, input: AcceptorInput) {
        match input {
            AcceptorInput::Message(e) if self.online => self.core.on_message(e.from, e.msg, &mut self.out),
            AcceptorInput::Message(e) => debug!("offline: dropping {} from {}", e.msg.kind(), e.from),
            AcceptorInput::Truncate(log_start) if self.online => {
                self.core.truncate(log_start, &mut self.out);
                self.truncated = true;
            }
            AcceptorInput::Truncate(_) => {}
            AcceptorInput::LearnerProgress(next_slot) => self.core.on_learner_progress(next_slot, &mut self.out),
            AcceptorInput::Crash => {
                if self.online {
                    self.online = false;
                    self.failures += 1;
                    self.out = AcceptorOutbox::default();
                    self.shared.plumbing.record_failure("acceptor", false, self.failures);
                }
            }
            AcceptorInput::Recover => {
                if !self.online {
                    self.shared.plumbing.record_failure("acceptor", true, self.failures);
                    if self.shared.plumbing.config.failure.mode == FailMode::Amnesia {
                        if let Err(e) = self.storage.rewrite(std::iter::empty()) {
                            fail_stop("cannot wipe the acceptor log (amnesia mode)", &e);
                        }
                    }
                    self.online = true;
                    self.reload();
                }
            }
        }
    }

    fn tick(&mut self) {
        if self.online {
            self.core.on_tick(&mut self.out);
        }
    }

    fn finish_batch(&mut self) {
        let out = std::mem::take(&mut self.out);
        // Nothing may leave that is not durable, and a failed sync is never
        // retried: the page cache may already call the lost pages clean.
        if let Err(e) = self.storage.append(&out.records) {
            fail_stop("acceptor log write failed", &e);
        }
        if out.records.contains(&AcceptorRecord::RebuildFinished) {
            self.shared.rebuilding.store(false, Ordering::Relaxed);
            let _ = self.shared.proposer_inbox.push(ProposerInput::Rebuilt(self.core.ballot_seen()));
        }
        // Every promise to another candidate (each chunk of a long phase 1
        // too) tells the local proposer to hold off its own election.
        let promised_to_candidate = out.messages.iter().rev().find_map(|e| match &e.msg {
            Message::Promise(promise) if e.to != self.shared.id() => Some(promise.ballot),
            _ => None,
        });
        if let Some(ballot) = promised_to_candidate {
            let _ = self.shared.proposer_inbox.push(ProposerInput::CandidateSeen(ballot));
        }
        out.messages.into_iter().for_each(|e| self.shared.route(e));
        if std::mem::take(&mut self.truncated) && self.storage.bytes() > COMPACT_BYTES_MIN {
            if let Err(e) = self.storage.compact(self.core.state()) {
                fail_stop("acceptor log compaction failed", &e);
            }
        }
        let state = self.core.state();
        let mut status = self.shared.status.lock().unwrap();
        status.acceptor_online = self.online;
        status.rebuilding = state.rebuilding;
        status.promised = state.promised;
        status.accepted_slots = state.accepted.len();
        status.log_start = state.log_start;
        status.acceptor_failures = self.failures;
    }
}

/// The longest single step of a role thread, in wall-clock time and in the
/// thread's CPU time (the difference is time spent waiting to be scheduled),
/// and what the step with the most CPU time was doing, with the slots it
/// applied (a step applies every slot its input made ready, in order).
#[derive(Default)]
struct LongestStep {
    wall: Duration,
    cpu: Duration,
    cause: &'static str,
    slots_applied: u64,
    over_10ms: u64,
    over_10ms_cpu: u64,
}

/// A learner step longer than this keeps applying and replying waiting too long.
const SLOW_STEP: Duration = Duration::from_millis(10);

impl LongestStep {
    fn record(&mut self, cause: &'static str, started: Instant, cpu_at_start: Duration, slots_applied: u64) {
        let wall = started.elapsed();
        let cpu = thread_cpu_time().saturating_sub(cpu_at_start);
        if wall > SLOW_STEP {
            self.over_10ms += 1;
            self.over_10ms_cpu += u64::from(cpu > SLOW_STEP);
        }
        self.wall = self.wall.max(wall);
        if cpu > self.cpu {
            (self.cpu, self.cause, self.slots_applied) = (cpu, cause, slots_applied);
            if cpu > SLOW_STEP {
                let step = self.describe();
                info!("longest learner step so far: {step}, {cpu:?} of CPU time ({wall:?} of wall clock)");
            }
        }
    }

    fn describe(&self) -> String {
        match self.slots_applied {
            0 => self.cause.to_string(),
            1 => format!("{}, 1 slot", self.cause),
            slots => format!("{}, {slots} slots", self.cause),
        }
    }
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec to write into; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

struct LearnerThread {
    core: Learner,
    out: LearnerOutbox,
    reported_next_slot: Slot,
    longest_step: LongestStep,
    shared: Arc<PaxosReplica>,
}

impl LearnerThread {
    /// Runs one step, noting its time and the slots it applied.
    fn timed(&mut self, cause: &'static str, step: impl FnOnce(&mut Self)) {
        let (started, cpu, next_slot) = (Instant::now(), thread_cpu_time(), self.core.next_slot());
        step(self);
        let slots_applied = self.core.next_slot().saturating_sub(next_slot);
        self.longest_step.record(cause, started, cpu, slots_applied);
    }
}

impl RoleThread for LearnerThread {
    type Input = LearnerInput;

    fn handle(&mut self, input: LearnerInput) {
        let cause = match &input {
            LearnerInput::Message(e) => match &e.msg {
                Message::CatchupReply(reply) if reply.snapshot.is_some() => "a snapshot chunk",
                Message::CatchupReply(_) => "catch-up entries",
                Message::CatchupRequest(_) => "serving catch-up",
                Message::Decide(_) | Message::Handoff(_) => "a decision",
                _ => "another message",
            },
            LearnerInput::LocalRead { .. } => "a local read",
            LearnerInput::Reads(_) => "reads",
        };
        self.timed(cause, |this| match input {
            LearnerInput::Message(e) => this.core.on_message(e.from, e.msg, &mut this.out),
            LearnerInput::Reads(batch) => this.core.on_reads(batch, &mut this.out),
            LearnerInput::LocalRead { request, key } => {
                let reply = match this.core.consistent_store() {
                    Some(store) => Reply::Value(store.get(&key).map(str::to_string)),
                    None => Reply::Rejected(RequestError::CatchingUp),
                };
                this.shared.plumbing.pending.complete(request, reply);
            }
        });
    }

    fn tick(&mut self) {
        self.timed("a tick", |this| this.core.on_tick(&mut this.out));
    }

    fn finish_batch(&mut self) {
        let step = Instant::now();
        let cpu = thread_cpu_time();
        let out = std::mem::take(&mut self.out);
        if let Some(violation) = &out.violation {
            // An invariant of Paxos is broken: applying on would spread it.
            error!("FATAL {violation}: stopping this replica");
            std::process::exit(70);
        }
        for (id, reply) in out.replies {
            self.shared.plumbing.pending.complete(id, reply);
        }
        if !out.retired_copies.is_empty() {
            let copies = out.retired_copies;
            let _ = std::thread::Builder::new().name("retired-copies".into()).spawn(move || {
                drop(copies);
                crate::heap::release_free_memory();
            });
        }
        if let Some(job) = out.snapshot {
            // Written off this thread so that applying (and replying) never waits for the disk.
            let (lock, ready) = &self.shared.snapshot_to_write;
            lock.lock().unwrap().push(job);
            ready.notify_one();
        }
        out.messages.into_iter().for_each(|e| self.shared.route(e));
        let next_slot = self.core.next_slot();
        if next_slot != self.reported_next_slot {
            self.reported_next_slot = next_slot;
            *self.shared.recent_values.lock().unwrap() = self.core.recent_decisions(RECENT_DECISIONS);
            let _ = self.shared.proposer_inbox.push(ProposerInput::LearnerProgress(next_slot));
            if self.shared.rebuilding.load(Ordering::Relaxed) {
                let _ = self.shared.acceptor_inbox.push(AcceptorInput::LearnerProgress(next_slot));
            }
        }
        self.longest_step.record("replying, routing and reporting", step, cpu, 0);
        let mut status = self.shared.status.lock().unwrap();
        status.learner_next_slot = next_slot;
        status.store_bytes = self.core.store().data_bytes();
        status.learner_held_bytes = self.core.held_bytes() as u64;
        status.apply_pause_max_us = self.longest_step.wall.as_micros() as u64;
        status.apply_pause_cpu_max_us = self.longest_step.cpu.as_micros() as u64;
        status.apply_pause_cause = self.longest_step.describe();
        status.apply_pauses_over_10ms = self.longest_step.over_10ms;
        status.apply_pauses_over_10ms_cpu = self.longest_step.over_10ms_cpu;
        status.decided_through = self.core.decided_through();
        status.keys = self.core.store().len();
        status.commands_applied = self.core.store().applied_commands();
    }
}

/// Writes each snapshot the learner hands over, then lets the acceptor forget
/// the slots it covers: only what a durable snapshot holds may be forgotten.
/// Between jobs it rewrites the store file a step at a time, spreading the
/// steps a job earned over about the time the last job took to come, so that
/// the disk sees an even load rather than the whole store at once.
fn write_snapshots(replica: &PaxosReplica, mut writer: SnapshotWriter) -> ! {
    super::run_in_background();
    let (lock, ready) = &replica.snapshot_to_write;
    let mut last_job_at = Instant::now();
    let mut step_pause = Duration::ZERO;
    let mut next_step_at = Instant::now();
    let mut rewrite_started: Option<Instant> = None;
    loop {
        let mut waiting = {
            let jobs = lock.lock().unwrap();
            let mut jobs = if writer.rewrite_pending() {
                let until_step = next_step_at.saturating_duration_since(Instant::now());
                ready.wait_timeout_while(jobs, until_step, |jobs| jobs.is_empty()).unwrap().0
            } else {
                ready.wait_while(jobs, |jobs| jobs.is_empty()).unwrap()
            };
            std::mem::take(&mut *jobs)
        };
        if let Some(mut job) = waiting.pop() {
            while let Some(older) = waiting.pop() {
                job.absorb(older);
            }
            let slot = job.snapshot.next_slot;
            match writer.write(&job) {
                Ok(written) => {
                    info!("snapshot at slot {slot} ({} keys): {written:?}", job.snapshot.store.len());
                    if replica.acceptor_inbox.push(AcceptorInput::Truncate(slot)).is_err() {
                        warn!("acceptor queue full; it keeps slots below {slot} until the next snapshot");
                    }
                }
                Err(e) => fail_stop("cannot write a snapshot", &e),
            }
            // The store's versions this job pinned are freed here, off the learner.
            drop(job);
            let since_last_job = last_job_at.elapsed().min(MAX_REWRITE_SPREAD);
            last_job_at = Instant::now();
            let steps = writer.rewrite_credit().div_ceil(writer.step_bytes()).max(1);
            step_pause = since_last_job / u32::try_from(steps).unwrap_or(u32::MAX);
        }
        // Checked after every job too, so that jobs coming faster than the pause cannot starve the rewrite.
        if writer.rewrite_pending() && Instant::now() >= next_step_at {
            let started = *rewrite_started.get_or_insert_with(Instant::now);
            match writer.rewrite_step() {
                Ok(Some(done)) => {
                    info!(
                        "store file rewritten at slot {} ({} bytes in {} steps over {:.1} s)",
                        done.slot,
                        done.bytes,
                        done.steps,
                        started.elapsed().as_secs_f64()
                    );
                    rewrite_started = None;
                }
                Ok(None) => {}
                Err(e) => fail_stop("cannot rewrite the store file", &e),
            }
            next_step_at = Instant::now() + step_pause;
        }
    }
}

/// A rewrite's steps are spread over at most this long after the job that earned them.
const MAX_REWRITE_SPREAD: Duration = Duration::from_secs(10);

/// Recovers durable state and starts the role, link and failure threads.
pub(crate) fn start(config: ServerConfig) -> Result<Arc<PaxosReplica>> {
    let id = config.id;
    let identity = config.identity();
    let disk: Arc<dyn Disk> = Arc::new(FsDisk::open(&config.data_dir)?);

    let storage::PaxosFiles { opened, acceptor_log, acceptor_state, last_ballot, snapshot, snapshot_chain, .. } =
        storage::open_paxos(disk.clone(), identity, config.cluster_state, config.rejoin)?;
    info!(
        "{identity} ({opened:?}): last ballot {last_ballot}; snapshot at slot {} (the whole store at slot {}, \
         then {} bytes of changes)",
        snapshot.next_slot,
        snapshot_chain.base_slot,
        snapshot_chain.log_bytes()
    );
    // Loading decoded the files into buffers now freed, between the store's own allocations.
    crate::heap::release_free_memory();
    let snapshot_writer = SnapshotWriter::new(disk.clone(), identity, snapshot_chain, &config.cluster());
    if acceptor_state.rebuilding {
        warn!("REBUILDING: this replica lost its state; it catches up without voting or leading until it is safe");
    }

    let proposer_inbox = Arc::new(Mailbox::new(ROLE_QUEUE_MAX, config.queue_bytes_max));
    let acceptor_inbox = Arc::new(Mailbox::new(ROLE_QUEUE_MAX, config.queue_bytes_max));
    let learner_inbox = Arc::new(Mailbox::new(ROLE_QUEUE_MAX, config.queue_bytes_max));
    let cluster = config.cluster();
    let mut proposer_config = ProposerConfig::for_cluster(cluster.clone());
    proposer_config.window_slots = config.window_slots;
    proposer_config.batch_bytes_max = config.frame_bytes_max / 4;
    proposer_config.inflight_bytes_max = config.queue_bytes_max / 4;
    proposer_config.queue_bytes_max = config.queue_bytes_max;
    let mut learner_config = LearnerConfig::for_cluster(cluster);
    learner_config.snapshot_interval_slots = config.snapshot_interval_slots;
    learner_config.retain_slots = config.snapshot_interval_slots;
    learner_config.snapshot_log_bytes = config.snapshot_log_bytes;
    learner_config.buffer_bytes_max = config.queue_bytes_max;
    // A quarter of a link frame: serving one chunk (copying it out of the
    // store and checksumming it) stays a few milliseconds of the learner's time.
    learner_config.catchup_bytes_max = config.link_frame_bytes() / 4;

    let initial_status = PaxosStatus {
        node_id: id,
        acceptor_online: true,
        rebuilding: acceptor_state.rebuilding,
        promised: acceptor_state.promised,
        accepted_slots: acceptor_state.accepted.len(),
        log_start: acceptor_state.log_start,
        proposer: ProposerStatus {
            mode: ProposerMode::Follower,
            ballot: last_ballot,
            leader: None,
            next_slot: 0,
            slots_in_flight: 0,
            queued_commands: 0,
            reachable_acceptors: 0,
        },
        learner_next_slot: snapshot.next_slot,
        decided_through: snapshot.next_slot.checked_sub(1),
        keys: snapshot.store.len(),
        store_bytes: snapshot.store.data_bytes(),
        learner_held_bytes: 0,
        apply_pause_max_us: 0,
        apply_pause_cpu_max_us: 0,
        apply_pause_cause: String::new(),
        apply_pauses_over_10ms: 0,
        apply_pauses_over_10ms_cpu: 0,
        peers_connected: Vec::new(),
        acceptor_failures: 0,
        commands_applied: snapshot.store.applied_commands(),
        recent_decisions: Vec::new(),
    };
    let shared = Arc::new(PaxosReplica {
        plumbing: Plumbing::start(config.clone())?,
        proposer_inbox: proposer_inbox.clone(),
        acceptor_inbox: acceptor_inbox.clone(),
        learner_inbox: learner_inbox.clone(),
        status: Mutex::new(initial_status),
        disk,
        identity,
        rebuilding: AtomicBool::new(acceptor_state.rebuilding),
        snapshot_to_write: Default::default(),
        recent_values: Default::default(),
    });
    let tick = Duration::from_millis(config.tick_ms);

    let mut proposer_core =
        Proposer::new(id, proposer_config, last_ballot, StdRng::seed_from_u64(config.seed ^ u64::from(id)));
    if acceptor_state.rebuilding {
        proposer_core.set_may_lead(false, Ballot::ZERO);
    }
    // Slots below the snapshot are decided: the first election starts after them.
    proposer_core.on_learner_progress(snapshot.next_slot);
    let proposer = ProposerThread { core: proposer_core, out: Default::default(), shared: shared.clone() };
    spawn_named(format!("s{id}/proposer"), move || run_role(proposer, proposer_inbox, tick))?;
    let acceptor = AcceptorThread {
        core: acceptor_core(&config, acceptor_state),
        storage: acceptor_log,
        online: true,
        failures: 0,
        out: Default::default(),
        truncated: false,
        shared: shared.clone(),
    };
    spawn_named(format!("s{id}/acceptor"), move || run_role(acceptor, acceptor_inbox, tick))?;
    let learner = LearnerThread {
        reported_next_slot: snapshot.next_slot,
        longest_step: LongestStep::default(),
        core: Learner::new(id, learner_config, snapshot),
        out: Default::default(),
        shared: shared.clone(),
    };
    spawn_named(format!("s{id}/learner"), move || run_role(learner, learner_inbox, tick))?;
    let writer = shared.clone();
    spawn_named(format!("s{id}/snapshots"), move || write_snapshots(&writer, snapshot_writer))?;
    let acceptor_inbox = shared.acceptor_inbox.clone();
    shared.plumbing.spawn_failure_thread(move |offline| {
        push_control(&acceptor_inbox, if offline { AcceptorInput::Crash } else { AcceptorInput::Recover })
    })?;
    Ok(shared)
}
