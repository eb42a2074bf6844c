//! The runtime of one replica: where the sans-IO roles meet threads, TCP,
//! disks and clocks.
//!
//! Threads: one per role (proposer, acceptor, learner), each owning its state
//! machine and draining a channel; a listener; one reader per inbound
//! connection; one writer per outbound peer link; and, when enabled, the
//! acceptor's failure thread. Roles never share state: they talk over
//! channels, whether the other role is local or on another replica.

use crate::config::{FailMode, ServerConfig};
use crate::fault;
use crate::kv::{Command, Reply, RequestError, RequestId};
use crate::mailbox::{Mailbox, ReplyCell};
use crate::paxos::acceptor::{Acceptor, AcceptorOutbox};
use crate::paxos::learner::{Learner, LearnerConfig, LearnerOutbox};
use crate::paxos::proposer::{Proposer, ProposerConfig, ProposerMode, ProposerOutbox, ProposerStatus};
use crate::paxos::{Ballot, Envelope, NodeId, Role, Slot};
use crate::storage::{self, AcceptorStorage, DiskLog};
use crate::transport::{self, Connected, PeerLink};
use crate::wire::{self, ClientRequest, ClientResponse, FrameError, Hello, PeerFrame, Speaker};
use anyhow::{Context, Result};
use log::{debug, error, info, warn};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What `STATUS` shows for one replica; answered even while its acceptor is offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub acceptor_online: bool,
    pub promised: Ballot,
    pub accepted_slots: usize,
    pub log_start: Slot,
    pub proposer: ProposerStatus,
    pub learner_next_slot: Slot,
    /// Highest slot this replica knows decided (applied or waiting on a gap).
    pub decided_through: Option<Slot>,
    pub keys: usize,
    pub peers_connected: Vec<NodeId>,
    pub acceptor_failures: u64,
}

const ROLE_QUEUE_MAX: usize = 200_000;
const HELLO_BYTES_MAX: usize = 1_024;
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

pub enum ProposerInput {
    Message(Envelope),
    Client(Command),
    LearnerProgress(Slot),
}

pub enum AcceptorInput {
    Message(Envelope),
    /// A durable snapshot holds every slot below this one.
    Truncate(Slot),
    /// From the failure thread: go offline, drop every message.
    Crash,
    /// From the failure thread: come back, from durable state only.
    Recover,
}

/// Requests waiting for their reply, sharded to keep each lock short. The
/// connection thread that submitted a request waits on its cell.
struct Pending {
    shards: Vec<Mutex<HashMap<RequestId, Arc<ReplyCell<Reply>>>>>,
}

impl Pending {
    fn new() -> Self {
        Pending { shards: (0..32).map(|_| Mutex::new(HashMap::new())).collect() }
    }
    fn shard(&self, id: RequestId) -> &Mutex<HashMap<RequestId, Arc<ReplyCell<Reply>>>> {
        &self.shards[(id.0 ^ id.1) as usize % self.shards.len()]
    }
    fn register(&self, id: RequestId) -> Arc<ReplyCell<Reply>> {
        let cell = Arc::new(ReplyCell::default());
        self.shard(id).lock().unwrap().insert(id, cell.clone());
        cell
    }
    /// Hands the reply to the connection waiting for `id`, if one waits here.
    fn complete(&self, id: RequestId, reply: Reply) {
        let cell = self.shard(id).lock().unwrap().remove(&id);
        if let Some(cell) = cell {
            cell.set(reply);
        }
    }
    fn cancel(&self, id: RequestId) {
        self.shard(id).lock().unwrap().remove(&id);
    }
}

struct Shared {
    config: ServerConfig,
    proposer_inbox: Arc<Mailbox<ProposerInput>>,
    acceptor_inbox: Arc<Mailbox<AcceptorInput>>,
    learner_inbox: Arc<Mailbox<Envelope>>,
    links: BTreeMap<NodeId, PeerLink>,
    pending: Pending,
    status: Mutex<NodeStatus>,
    connected: Connected,
}

impl Shared {
    fn id(&self) -> NodeId {
        self.config.id
    }

    /// Delivers to a local role's channel or queues for the peer's link.
    fn route(&self, envelope: Envelope) {
        if envelope.to != self.id() {
            if let Some(link) = self.links.get(&envelope.to) {
                link.send(envelope);
            }
            return;
        }
        let kind = envelope.msg.kind();
        let delivered = match envelope.msg.role() {
            Role::Proposer => self.proposer_inbox.push(ProposerInput::Message(envelope)).is_ok(),
            Role::Acceptor => self.acceptor_inbox.push(AcceptorInput::Message(envelope)).is_ok(),
            Role::Learner => self.learner_inbox.push(envelope).is_ok(),
        };
        if !delivered {
            warn!("local role queue full; dropped {kind}");
        }
    }

    fn node_status(&self) -> NodeStatus {
        let mut status = self.status.lock().unwrap().clone();
        status.peers_connected = self.connected.lock().unwrap().iter().copied().collect();
        status
    }
}

/// A role thread: feed it inputs and ticks; after each batch of inputs it
/// persists, then sends.
trait RoleThread {
    type Input;
    fn handle(&mut self, input: Self::Input);
    fn tick(&mut self);
    fn finish_batch(&mut self);
}

fn run_role<R: RoleThread>(mut role: R, inbox: Arc<Mailbox<R::Input>>, tick: Duration) -> ! {
    let mut next_tick = Instant::now() + tick;
    let mut inputs = VecDeque::new();
    loop {
        // Everything waiting is handled as one batch: one sync, one write per peer.
        inbox.take_all(&mut inputs, next_tick);
        for input in inputs.drain(..) {
            role.handle(input);
        }
        let now = Instant::now();
        if now >= next_tick {
            role.tick();
            next_tick += tick;
            if next_tick < now {
                next_tick = now + tick;
            }
        }
        role.finish_batch();
    }
}

struct ProposerThread {
    core: Proposer,
    out: ProposerOutbox,
    shared: Arc<Shared>,
}

impl RoleThread for ProposerThread {
    type Input = ProposerInput;

    fn handle(&mut self, input: ProposerInput) {
        match input {
            ProposerInput::Message(e) => self.core.on_message(e.from, e.msg, &mut self.out),
            ProposerInput::Client(command) => self.core.on_client_command(command, &mut self.out),
            ProposerInput::LearnerProgress(next_slot) => self.core.on_learner_progress(next_slot),
        }
    }

    fn tick(&mut self) {
        self.core.on_tick(&mut self.out);
    }

    fn finish_batch(&mut self) {
        self.core.flush(&mut self.out);
        let out = std::mem::take(&mut self.out);
        let mut may_send = true;
        if let Some(ballot) = out.persist_ballot {
            if let Err(e) = storage::save_ballot(&self.shared.config.data_dir, ballot) {
                // Without a durable ballot a restart could reuse it: stay silent.
                error!("cannot persist ballot {ballot}: {e:#}; not sending this round");
                may_send = false;
            }
        }
        if may_send {
            out.messages.into_iter().for_each(|e| self.shared.route(e));
        }
        for (id, reply) in out.replies {
            self.shared.pending.complete(id, reply);
        }
        self.shared.status.lock().unwrap().proposer = self.core.status();
    }
}

struct AcceptorThread {
    core: Acceptor,
    storage: DiskLog,
    online: bool,
    failures: u64,
    out: AcceptorOutbox,
    truncated: bool,
    shared: Arc<Shared>,
}

/// Compact the acceptor log once it is this much larger than its live state.
const COMPACT_BYTES_MIN: u64 = 8 << 20;

impl AcceptorThread {
    fn reload(&mut self) {
        let id = self.shared.id();
        let state = match self.storage.load() {
            Ok(state) => state,
            Err(e) => {
                error!("cannot reload acceptor state: {e:#}; staying offline");
                self.online = false;
                return;
            }
        };
        self.core = Acceptor::new(id, state, self.shared.config.frame_bytes_max / 2);
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
            AcceptorInput::Crash => {
                if self.online {
                    self.online = false;
                    self.failures += 1;
                    self.out = AcceptorOutbox::default();
                    warn!("FAILURE acceptor goes offline (failure #{})", self.failures);
                }
            }
            AcceptorInput::Recover => {
                if !self.online {
                    if self.shared.config.failure.mode == FailMode::Amnesia {
                        warn!("RESTART acceptor with EMPTY state (amnesia mode: unsafe by design)");
                        if let Err(e) = self.storage.wipe() {
                            error!("cannot wipe acceptor log: {e:#}");
                        }
                    } else {
                        info!("RESTART acceptor from durable state");
                    }
                    self.online = true;
                    self.reload();
                }
            }
        }
    }

    fn tick(&mut self) {}

    fn finish_batch(&mut self) {
        let out = std::mem::take(&mut self.out);
        if let Err(e) = self.storage.append(&out.records) {
            // Nothing may leave that is not durable; memory must match disk.
            error!("acceptor log write failed: {e:#}; dropping {} replies", out.messages.len());
            self.reload();
            return;
        }
        out.messages.into_iter().for_each(|e| self.shared.route(e));
        if std::mem::take(&mut self.truncated) && self.storage.bytes() > COMPACT_BYTES_MIN {
            if let Err(e) = self.storage.compact(self.core.state()) {
                error!("acceptor log compaction failed: {e:#}");
            }
        }
        let state = self.core.state();
        let mut status = self.shared.status.lock().unwrap();
        status.acceptor_online = self.online;
        status.promised = state.promised;
        status.accepted_slots = state.accepted.len();
        status.log_start = state.log_start;
        status.acceptor_failures = self.failures;
    }
}

struct LearnerThread {
    core: Learner,
    out: LearnerOutbox,
    reported_next_slot: Slot,
    shared: Arc<Shared>,
}

impl RoleThread for LearnerThread {
    type Input = Envelope;

    fn handle(&mut self, e: Envelope) {
        self.core.on_message(e.from, e.msg, &mut self.out);
    }

    fn tick(&mut self) {
        self.core.on_tick(&mut self.out);
    }

    fn finish_batch(&mut self) {
        let out = std::mem::take(&mut self.out);
        for (id, reply) in out.replies {
            self.shared.pending.complete(id, reply);
        }
        if let Some(snapshot) = out.snapshot {
            match storage::save_snapshot(&self.shared.config.data_dir, &snapshot) {
                Ok(()) => {
                    info!("snapshot written at slot {} ({} keys)", snapshot.next_slot, snapshot.store.len());
                    if self.shared.acceptor_inbox.push(AcceptorInput::Truncate(snapshot.next_slot)).is_err() {
                        warn!(
                            "acceptor queue full; it keeps slots below {} until the next snapshot",
                            snapshot.next_slot
                        );
                    }
                }
                Err(e) => error!("cannot write snapshot: {e:#}"),
            }
        }
        out.messages.into_iter().for_each(|e| self.shared.route(e));
        let next_slot = self.core.next_slot();
        if next_slot != self.reported_next_slot {
            self.reported_next_slot = next_slot;
            let _ = self.shared.proposer_inbox.push(ProposerInput::LearnerProgress(next_slot));
        }
        let mut status = self.shared.status.lock().unwrap();
        status.learner_next_slot = next_slot;
        status.decided_through = self.core.decided_through();
        status.keys = self.core.store().len();
    }
}

fn spawn_named(name: String, body: impl FnOnce() + Send + 'static) -> Result<()> {
    thread::Builder::new().name(name.clone()).spawn(body).with_context(|| format!("spawning {name}"))?;
    Ok(())
}

/// Starts every thread of the replica and serves connections on the calling
/// thread; returns only if the listener fails.
pub fn serve(config: ServerConfig) -> Result<()> {
    config.validate()?;
    let id = config.id;
    let listen = config.address_of(id);
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;

    let mut acceptor_log = DiskLog::open(&data_dir)?;
    let acceptor_state = acceptor_log.load()?;
    let last_ballot = storage::load_ballot(&data_dir)?;
    let snapshot = storage::load_snapshot(&data_dir)?;
    info!(
        "replica {id} of {} listening on {listen}; data in {}; last ballot {last_ballot}; snapshot at slot {}",
        config.replicas.len(),
        data_dir.display(),
        snapshot.next_slot
    );

    let proposer_inbox = Arc::new(Mailbox::new(ROLE_QUEUE_MAX));
    let acceptor_inbox = Arc::new(Mailbox::new(ROLE_QUEUE_MAX));
    let learner_inbox = Arc::new(Mailbox::new(ROLE_QUEUE_MAX));
    let connected: Connected = Default::default();
    let links = config
        .cluster()
        .into_iter()
        .filter(|&peer| peer != id)
        .map(|peer| (peer, transport::spawn_link(id, peer, config.address_of(peer), connected.clone())))
        .collect();
    let cluster = config.cluster();
    let mut proposer_config = ProposerConfig::for_cluster(cluster.clone());
    proposer_config.window_slots = config.window_slots;
    proposer_config.batch_bytes_max = config.frame_bytes_max / 4;
    let mut learner_config = LearnerConfig::for_cluster(cluster);
    learner_config.snapshot_interval_slots = config.snapshot_interval_slots;
    learner_config.retain_slots = config.snapshot_interval_slots;
    learner_config.catchup_bytes_max = config.frame_bytes_max / 2;

    let initial_status = NodeStatus {
        node_id: id,
        acceptor_online: true,
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
        peers_connected: Vec::new(),
        acceptor_failures: 0,
    };
    let shared = Arc::new(Shared {
        proposer_inbox: proposer_inbox.clone(),
        acceptor_inbox: acceptor_inbox.clone(),
        learner_inbox: learner_inbox.clone(),
        links,
        pending: Pending::new(),
        status: Mutex::new(initial_status),
        connected,
        config: config.clone(),
    });
    let tick = Duration::from_millis(config.tick_ms);

    let proposer = ProposerThread {
        core: Proposer::new(id, proposer_config, last_ballot, StdRng::seed_from_u64(config.seed ^ u64::from(id))),
        out: Default::default(),
        shared: shared.clone(),
    };
    spawn_named(format!("s{id}/proposer"), move || run_role(proposer, proposer_inbox, tick))?;
    let acceptor = AcceptorThread {
        core: Acceptor::new(id, acceptor_state, config.frame_bytes_max / 2),
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
        core: Learner::new(id, learner_config, snapshot),
        out: Default::default(),
        shared: shared.clone(),
    };
    spawn_named(format!("s{id}/learner"), move || run_role(learner, learner_inbox, tick))?;
    if config.failure.mtbf_ms.is_some() {
        let failure = config.failure.clone();
        let acceptor_inbox = shared.acceptor_inbox.clone();
        spawn_named(format!("s{id}/failure"), move || fault::run(id, failure, &acceptor_inbox))?;
    }

    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let shared = shared.clone();
                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
                if let Err(e) = spawn_named(format!("s{id}/conn"), move || {
                    if let Err(e) = serve_connection(&shared, stream) {
                        warn!("closing connection from {peer}: {e}");
                    }
                }) {
                    error!("{e:#}");
                }
            }
            Err(e) => warn!("accept failed: {e}"),
        }
    }
    Ok(())
}

fn serve_connection(shared: &Shared, stream: TcpStream) -> Result<(), FrameError> {
    stream.set_nodelay(true).map_err(FrameError::Io)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(FrameError::Io)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone().map_err(FrameError::Io)?);
    let hello: Hello = wire::read_frame(&mut reader, HELLO_BYTES_MAX)?;
    hello.check().map_err(FrameError::Malformed)?;
    match hello.speaker {
        Speaker::Replica { node_id } => {
            let known = node_id >= 1 && node_id as usize <= shared.config.replicas.len() && node_id != shared.id();
            if !known {
                return Err(FrameError::Malformed(format!("hello from unknown replica {node_id}")));
            }
            stream.set_read_timeout(None).map_err(FrameError::Io)?;
            serve_replica(shared, node_id, &mut reader)
        }
        Speaker::Client => {
            stream.set_read_timeout(Some(CLIENT_IDLE_TIMEOUT)).map_err(FrameError::Io)?;
            serve_client(shared, reader, stream)
        }
    }
}

fn serve_replica(shared: &Shared, peer: NodeId, reader: &mut BufReader<TcpStream>) -> Result<(), FrameError> {
    debug!("replica {peer} connected");
    loop {
        let frame: PeerFrame = match wire::read_frame(reader, shared.config.peer_frame_bytes_max) {
            Err(FrameError::Closed) => return Ok(()),
            other => other?,
        };
        for envelope in frame {
            if envelope.from != peer || envelope.to != shared.id() {
                return Err(FrameError::Malformed(format!(
                    "replica {peer} sent an envelope from {} to {}",
                    envelope.from, envelope.to
                )));
            }
            shared.route(envelope);
        }
    }
}

fn serve_client(shared: &Shared, mut reader: BufReader<TcpStream>, stream: TcpStream) -> Result<(), FrameError> {
    // Replies are written by this thread: waking it costs less than writing
    // every client's socket from the learner thread.
    let mut writer = BufWriter::new(stream);
    loop {
        let request: ClientRequest = match wire::read_frame(&mut reader, shared.config.frame_bytes_max) {
            Err(FrameError::Closed) => return Ok(()),
            other => other?,
        };
        let response = match request {
            ClientRequest::Status => ClientResponse::Status(Box::new(shared.node_status())),
            ClientRequest::Execute(command) => ClientResponse::Reply(execute(shared, command)),
        };
        wire::write_frame(&mut writer, &response).and_then(|()| writer.flush()).map_err(FrameError::Io)?;
    }
}

fn validate(config: &ServerConfig, command: &Command) -> Result<(), RequestError> {
    let key = command.op.key();
    if key.is_empty() {
        return Err(RequestError::Invalid("empty key".into()));
    }
    if key.len() > config.key_bytes_max {
        return Err(RequestError::TooLarge { what: "key".into(), bytes: key.len(), limit: config.key_bytes_max });
    }
    if let crate::kv::Op::Put { value, .. } = &command.op {
        if value.len() > config.value_bytes_max {
            return Err(RequestError::TooLarge {
                what: "value".into(),
                bytes: value.len(),
                limit: config.value_bytes_max,
            });
        }
    }
    Ok(())
}

fn execute(shared: &Shared, command: Command) -> Reply {
    let id = command.request_id();
    if let Err(error) = validate(&shared.config, &command) {
        info!("CLIENT request {id:?} refused: {error}");
        return Reply::Rejected(error);
    }
    debug!("CLIENT request {id:?} {:?}", command.op);
    let reply_cell = shared.pending.register(id);
    if shared.proposer_inbox.push(ProposerInput::Client(command)).is_err() {
        shared.pending.cancel(id);
        return Reply::Rejected(RequestError::Overloaded);
    }
    let reply = reply_cell
        .wait(Duration::from_millis(shared.config.request_timeout_ms))
        .unwrap_or(Reply::Rejected(RequestError::Timeout));
    shared.pending.cancel(id);
    debug!("CLIENT reply {id:?} {reply:?}");
    reply
}
