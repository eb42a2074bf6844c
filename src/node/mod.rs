//! The runtime of one replica: where the sans-IO protocol cores meet threads,
//! TCP, disks and clocks. This module holds what both protocols share: the
//! listener, connection handling, role threads and the waiting-request table.
//! [`paxos`] and [`twopc`] wire their own roles.
//!
//! Threads: one per role, each owning its state machine and draining a
//! mailbox; a listener; one reader per inbound connection; one writer per
//! outbound peer link; and, when enabled, the failure thread. Roles never
//! share state: they talk through mailboxes, locally or over a peer link.

pub mod paxos;
pub mod twopc;

use crate::config::{FailMode, Protocol, ServerConfig};
use crate::fault;
use crate::kv::{Command, Op, Reply, RequestError, RequestId};
use crate::mailbox::{Mailbox, ReplyCell, Weigh};
use crate::paxos::NodeId;
use crate::security::Stream;
use crate::trace::{TraceEvent, Tracer};
use crate::transport::{self, Connected, LinkEnds, LinkLimits, PeerLink};
use crate::wire::{
    self, ByteBudget, ClientRequest, ClientResponse, FrameDeadlines, FrameError, Hello, PeerFrame, Speaker,
};
use anyhow::{Context, Result};
use log::{debug, error, info, warn};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use self::paxos::PaxosStatus;
pub use self::twopc::TwoPcStatus;

/// What `STATUS` shows for one replica; answered even while its acceptor or
/// participant is offline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    Paxos(PaxosStatus),
    TwoPc(TwoPcStatus),
}

impl NodeStatus {
    pub fn paxos(&self) -> Option<&PaxosStatus> {
        match self {
            NodeStatus::Paxos(status) => Some(status),
            NodeStatus::TwoPc(_) => None,
        }
    }

    pub fn twopc(&self) -> Option<&TwoPcStatus> {
        match self {
            NodeStatus::TwoPc(status) => Some(status),
            NodeStatus::Paxos(_) => None,
        }
    }
}

pub(crate) const ROLE_QUEUE_MAX: usize = 200_000;
const HELLO_BYTES_MAX: usize = 1_024;
/// The TLS handshake and the hello together must arrive within this.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// A client's request, once its first byte arrived, must arrive whole within this.
const CLIENT_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Peer links send a keepalive every second when idle (`transport`): three
/// missed in a row mean the link is dead.
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const PEER_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// Says the replica is ready, whatever the log level: run_servers.sh waits
/// for this line (a port that answers may belong to another process).
fn announce(banner: &str) {
    if log::log_enabled!(log::Level::Info) {
        info!("{banner}");
    } else {
        eprintln!("{banner}");
    }
}

/// Starts a replica of the configured protocol and serves connections on the
/// calling thread; returns only if the listener fails.
pub fn serve(config: ServerConfig) -> Result<()> {
    config.validate()?;
    stop_on_panic();
    let listen = config.listen_address();
    if !config.security.is_tls() {
        warn!("INSECURE: plain TCP without certificates; anyone who can reach {listen} can speak as a replica");
    }
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let budget = config.memory_budget();
    let total: usize = budget.iter().map(|(_, bytes)| bytes).sum();
    let parts: Vec<String> = budget.iter().map(|(what, bytes)| format!("{what} {} MiB", bytes >> 20)).collect();
    info!(
        "memory budget beyond the store and the values decided since the last snapshot: {} MiB ({})",
        total >> 20,
        parts.join(", ")
    );
    let banner = format!(
        "replica {} of {} ({}) listening on {listen}; data in {}",
        config.id,
        config.replicas.len(),
        config.protocol,
        config.data_dir.display()
    );
    match config.protocol {
        Protocol::Paxos => {
            let replica = paxos::start(config)?;
            announce(&banner);
            accept_loop(listener, replica)
        }
        Protocol::TwoPc => {
            let replica = twopc::start(config)?;
            announce(&banner);
            accept_loop(listener, replica)
        }
    }
}

/// A panic is a broken invariant (TigerBeetle's assertions): a replica with
/// one role thread dead must not go on answering with the others.
fn stop_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        error!("FATAL {info}; stopping this replica");
        default_hook(info);
        std::process::exit(70);
    }));
}

/// What the runtime needs to know of a protocol's envelope.
pub(crate) trait Addressed: Serialize + DeserializeOwned + Weigh + Send + 'static {
    fn from(&self) -> NodeId;
    fn to(&self) -> NodeId;
    fn trace(&self, node: NodeId, event: &str) -> TraceEvent;
}

impl Addressed for crate::paxos::Envelope {
    fn from(&self) -> NodeId {
        self.from
    }
    fn to(&self) -> NodeId {
        self.to
    }
    fn trace(&self, node: NodeId, event: &str) -> TraceEvent {
        TraceEvent::paxos(node, event, self)
    }
}

impl Addressed for crate::twopc::TxEnvelope {
    fn from(&self) -> NodeId {
        self.from
    }
    fn to(&self) -> NodeId {
        self.to
    }
    fn trace(&self, node: NodeId, event: &str) -> TraceEvent {
        TraceEvent::twopc(node, event, self)
    }
}

/// What both protocols' replicas share: links to the peers, the requests
/// waiting for replies, the message trace, the failure thread.
pub(crate) struct Plumbing<E> {
    pub config: ServerConfig,
    pub pending: Pending,
    links: BTreeMap<NodeId, PeerLink<E>>,
    connected: Connected,
    tracer: Option<Tracer>,
}

impl<E: Addressed> Plumbing<E> {
    pub fn start(config: ServerConfig) -> Result<Self> {
        let connected: Connected = Default::default();
        let id = config.id;
        let links = config
            .cluster()
            .into_iter()
            .filter(|&peer| peer != id)
            .map(|peer| {
                let ends = LinkEnds {
                    self_id: id,
                    protocol: config.protocol,
                    peer,
                    addr: config.address_of(peer),
                    security: config.security.connect(),
                };
                let limits =
                    LinkLimits { queue_bytes_max: config.queue_bytes_max, frame_bytes: config.link_frame_bytes() };
                (peer, transport::spawn_link(ends, limits, connected.clone()))
            })
            .collect();
        let tracer = match &config.trace {
            None => None,
            Some(path) => {
                info!("recording a message trace in {} (at most {} bytes)", path.display(), config.trace_bytes_max);
                let tracer = Tracer::start(id, path.clone(), config.trace_bytes_max)
                    .with_context(|| format!("opening trace {}", path.display()))?;
                Some(tracer)
            }
        };
        Ok(Plumbing { config, pending: Pending::new(), links, connected, tracer })
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// Queues `envelope` for its peer, or hands it back when it is for this replica.
    pub fn send(&self, envelope: E) -> Option<E> {
        let local = envelope.to() == self.id();
        if let Some(tracer) = &self.tracer {
            tracer.record(envelope.trace(self.id(), "send"));
            if local {
                tracer.record(envelope.trace(self.id(), "recv"));
            }
        }
        if local {
            return Some(envelope);
        }
        if let Some(link) = self.links.get(&envelope.to()) {
            link.send(envelope);
        }
        None
    }

    /// Checks that an envelope read from `peer`'s connection is from it and for us.
    pub fn receive(&self, peer: NodeId, envelope: E) -> Result<E, String> {
        if envelope.from() != peer || envelope.to() != self.id() {
            return Err(format!("replica {peer} sent an envelope from {} to {}", envelope.from(), envelope.to()));
        }
        if let Some(tracer) = &self.tracer {
            tracer.record(envelope.trace(self.id(), "recv"));
        }
        Ok(envelope)
    }

    pub fn peers_connected(&self) -> Vec<NodeId> {
        self.connected.lock().unwrap().iter().copied().collect()
    }

    /// Logs and traces the failing role going offline (`up == false`) or coming back.
    pub fn record_failure(&self, role: &str, up: bool, failures: u64) {
        if up {
            log_restart(self.config.failure.mode, role);
        } else {
            warn!("FAILURE {role} goes offline (failure #{failures})");
        }
        if let Some(tracer) = &self.tracer {
            tracer.record(TraceEvent::failure(self.id(), role, up));
        }
    }

    /// Starts the random-failure thread when failures are configured.
    pub fn spawn_failure_thread(&self, set_offline: impl Fn(bool) + Send + 'static) -> Result<()> {
        if self.config.failure.mtbf_ms.is_none() {
            return Ok(());
        }
        let (id, failure) = (self.id(), self.config.failure.clone());
        spawn_named(format!("s{id}/failure"), move || fault::run(id, failure, set_offline))
    }
}

/// What the shared connection handling needs from a protocol's runtime.
pub(crate) trait Replica: Send + Sync + 'static {
    type Envelope: DeserializeOwned;
    fn config(&self) -> &ServerConfig;
    /// Routes an envelope that arrived from `peer`; `Err` closes the connection.
    fn deliver(&self, peer: NodeId, envelope: Self::Envelope) -> Result<(), String>;
    /// Runs a validated command and waits for its reply.
    fn execute(&self, command: Command) -> Reply;
    /// Every command at once, each answered in the end (in order).
    fn execute_many(&self, commands: Vec<Command>) -> Vec<Reply> {
        commands.into_iter().map(|command| self.execute(command)).collect()
    }
    /// This replica's own value for `key`, bypassing the protocol (2PC still
    /// refuses a locked key). For consistency checks, not for users.
    fn local_get(&self, request: RequestId, key: String) -> Reply;
    fn status(&self) -> NodeStatus;
}

/// Logs a kind of refusal at most once per second, with how many were
/// refused since the last line: a flood must not turn into a log flood.
pub(crate) struct RateLimitedLog {
    what: &'static str,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimitedLog {
    pub(crate) const fn new(what: &'static str) -> Self {
        RateLimitedLog { what, state: Mutex::new((None, 0)) }
    }

    pub(crate) fn record(&self, detail: &str) {
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        if state.0.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            warn!("{}: {detail} ({} in the last second or so)", self.what, state.1);
            *state = (Some(Instant::now()), 0);
        }
    }
}

static REFUSED: RateLimitedLog = RateLimitedLog::new("refusing connections");
static CLOSED: RateLimitedLog = RateLimitedLog::new("closing connections");
/// Apart from client noise: with TLS only real replicas get this far.
static LINKS: RateLimitedLog = RateLimitedLog::new("closing replica links");

/// Connections by stage, each bounded on its own so that strangers stuck in
/// a handshake cannot crowd out clients, nor clients the replicas.
struct Admission {
    /// Connections still in the TLS handshake or hello, oldest first; when
    /// full, the oldest is shut down to make room (a Slowloris ages out).
    handshaking: Mutex<VecDeque<(u64, TcpStream)>>,
    next_id: AtomicU64,
    clients: AtomicUsize,
    replicas: AtomicUsize,
    /// Frames being received from clients and from connections still in
    /// their hello: what strangers can make a replica hold.
    budget: ByteBudget,
    /// Frames being received from authenticated replicas: kept apart, so
    /// that clients filling theirs never starve the cluster's own links.
    replica_budget: ByteBudget,
}

/// Decrements a counter when a connection ends, however it ends.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    fn admit(&self, stream: &TcpStream, limit: usize) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let clone = stream.try_clone().ok()?;
        let mut handshaking = self.handshaking.lock().unwrap();
        if handshaking.len() >= limit {
            if let Some((_, oldest)) = handshaking.pop_front() {
                let _ = oldest.shutdown(std::net::Shutdown::Both);
                REFUSED.record(&format!("{limit} connections in handshake; closed the oldest"));
            }
        }
        handshaking.push_back((id, clone));
        Some(id)
    }

    fn handshake_done(&self, id: u64) {
        self.handshaking.lock().unwrap().retain(|(pending, _)| *pending != id);
    }

    fn enter(&self, counter: &'static str, count: &AtomicUsize, limit: usize) -> Result<(), FrameError> {
        if count.fetch_add(1, Ordering::Relaxed) >= limit {
            count.fetch_sub(1, Ordering::Relaxed);
            REFUSED.record(&format!("{limit} {counter} connections open"));
            return Err(FrameError::Malformed(format!("too many {counter} connections")));
        }
        Ok(())
    }
}

fn accept_loop<R: Replica>(listener: TcpListener, replica: Arc<R>) -> Result<()> {
    let config = replica.config();
    let id = config.id;
    let admission = Arc::new(Admission {
        handshaking: Mutex::new(VecDeque::new()),
        next_id: AtomicU64::new(0),
        clients: AtomicUsize::new(0),
        replicas: AtomicUsize::new(0),
        budget: ByteBudget::new(config.inflight_bytes_max),
        replica_budget: ByteBudget::new(2 * config.replicas.len() * config.peer_frame_bytes_max),
    });
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                REFUSED.record(&format!("accept failed: {e}"));
                // Out of descriptors or memory: let connections drain.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Some(pending) = admission.admit(&stream, config.handshakes_max) else { continue };
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        let (replica, admission) = (replica.clone(), admission.clone());
        let spawned = spawn_named(format!("s{id}/conn"), move || {
            match serve_connection(&*replica, &admission, pending, stream) {
                Ok(()) | Err(FrameError::Closed) => {}
                Err(e) => CLOSED.record(&format!("from {peer}: {e}")),
            }
            admission.handshake_done(pending);
        });
        if let Err(e) = spawned {
            error!("{e:#}");
        }
    }
    Ok(())
}

impl wire::TimedRead for BufReader<Stream> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.get_ref().tcp().set_read_timeout(timeout)
    }

    fn buffered(&self) -> usize {
        self.buffer().len()
    }
}

fn serve_connection<R: Replica>(
    replica: &R,
    admission: &Admission,
    pending: u64,
    tcp: TcpStream,
) -> Result<(), FrameError> {
    let config = replica.config();
    tcp.set_nodelay(true).map_err(FrameError::Io)?;
    // The handshake and the hello together must finish within this.
    let hello_deadline = Instant::now() + HELLO_TIMEOUT;
    tcp.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(FrameError::Io)?;
    tcp.set_write_timeout(Some(HELLO_TIMEOUT)).map_err(FrameError::Io)?;
    let stream = config.security.accept(tcp, hello_deadline).map_err(|e| match e.kind() {
        // A port probe, or a stranger without a certificate.
        std::io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Malformed(format!("TLS handshake failed: {e}")),
    })?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let left = hello_deadline.saturating_duration_since(Instant::now());
    let deadlines = FrameDeadlines { idle: left, frame: left };
    let hello: Hello = wire::read_frame_timed(&mut reader, HELLO_BYTES_MAX, deadlines, &admission.budget)?;
    admission.handshake_done(pending);
    hello.check().map_err(FrameError::Malformed)?;
    match hello.speaker {
        Speaker::Replica { node_id, protocol } => {
            let known = node_id >= 1 && node_id as usize <= config.replicas.len() && node_id != config.id;
            if !known {
                return Err(FrameError::Malformed(format!("hello from unknown replica {node_id}")));
            }
            config
                .security
                .may_speak_as_replica(reader.get_ref(), node_id)
                .map_err(|e| FrameError::Malformed(format!("hello claims replica {node_id}, but {e:#}")))?;
            if protocol != config.protocol {
                return Err(FrameError::Malformed(format!(
                    "replica {node_id} runs {protocol}, this one runs {}",
                    config.protocol
                )));
            }
            // A reconnecting peer may briefly hold two connections.
            admission.enter("replica", &admission.replicas, 2 * config.replicas.len())?;
            let _counted = Counted(&admission.replicas);
            transport::watch_link(reader.get_ref().tcp()).map_err(FrameError::Io)?;
            debug!("replica {node_id} connected");
            // Links send a keepalive when idle: silence this long means a dead peer.
            let deadlines = FrameDeadlines { idle: PEER_IDLE_TIMEOUT, frame: PEER_FRAME_TIMEOUT };
            let mut receive = || -> Result<std::convert::Infallible, FrameError> {
                loop {
                    let frame: PeerFrame<R::Envelope> = wire::read_frame_timed(
                        &mut reader,
                        config.peer_frame_bytes_max,
                        deadlines,
                        &admission.replica_budget,
                    )?;
                    for envelope in frame {
                        replica.deliver(node_id, envelope).map_err(FrameError::Malformed)?;
                    }
                }
            };
            // Replicas are few and authenticated: every closed link is worth a line.
            match receive() {
                Err(FrameError::Closed) => info!("replica {node_id} closed its link"),
                Err(e) => LINKS.record(&format!("from replica {node_id}: {e}")),
                Ok(never) => match never {},
            }
            Ok(())
        }
        Speaker::Client => {
            admission.enter("client", &admission.clients, config.connections_max)?;
            let _counted = Counted(&admission.clients);
            let deadlines = FrameDeadlines {
                idle: Duration::from_millis(config.client_idle_timeout_ms),
                frame: CLIENT_FRAME_TIMEOUT,
            };
            reader.get_ref().tcp().set_write_timeout(Some(CLIENT_WRITE_TIMEOUT)).map_err(FrameError::Io)?;
            loop {
                let request: ClientRequest =
                    match wire::read_frame_timed(&mut reader, config.frame_bytes_max, deadlines, &admission.budget) {
                        Err(FrameError::Closed) => return Ok(()),
                        Err(FrameError::Deadline(wire::Waited::ForAFrame)) => {
                            debug!("closing a client connection idle for {:?}", deadlines.idle);
                            return Ok(());
                        }
                        other => other?,
                    };
                let response = match request {
                    ClientRequest::Status => ClientResponse::Status(Box::new(replica.status())),
                    ClientRequest::LocalGet { request_id, key } => {
                        ClientResponse::Reply(replica.local_get(request_id, key))
                    }
                    ClientRequest::ExecuteMany(commands) if commands.len() > wire::PIPELINE_COMMANDS_MAX => {
                        let why = format!(
                            "{} commands in one frame; at most {}",
                            commands.len(),
                            wire::PIPELINE_COMMANDS_MAX
                        );
                        info!("CLIENT pipeline refused: {why}");
                        ClientResponse::Reply(Reply::Rejected(RequestError::Invalid(why)))
                    }
                    ClientRequest::ExecuteMany(commands) => {
                        let mut replies: Vec<(RequestId, Option<Reply>)> = Vec::with_capacity(commands.len());
                        let mut valid = Vec::with_capacity(commands.len());
                        for command in commands {
                            match validate(config, &command) {
                                Ok(()) => {
                                    replies.push((command.request_id(), None));
                                    valid.push(command);
                                }
                                Err(error) => replies.push((command.request_id(), Some(Reply::Rejected(error)))),
                            }
                        }
                        let mut answers = replica.execute_many(valid).into_iter();
                        let replies = replies
                            .into_iter()
                            .map(|(id, refused)| {
                                (id, refused.or_else(|| answers.next()).expect("one answer per command"))
                            })
                            .collect();
                        ClientResponse::Replies(replies)
                    }
                    ClientRequest::Execute(command) => {
                        let id = command.request_id();
                        let reply = match validate(config, &command) {
                            Ok(()) => {
                                debug!("CLIENT request {id:?} {:?}", command.op);
                                replica.execute(command)
                            }
                            Err(error) => {
                                info!("CLIENT request {id:?} refused: {error}");
                                Reply::Rejected(error)
                            }
                        };
                        debug!("CLIENT reply {id:?} {reply:?}");
                        ClientResponse::Reply(reply)
                    }
                };
                // Replies are written by this thread: waking it costs less than
                // writing every client's socket from a role thread.
                let writer = reader.get_mut();
                wire::frame(&response)
                    .and_then(|frame| writer.write_all(&frame))
                    .and_then(|()| writer.flush())
                    .map_err(FrameError::Io)?;
            }
        }
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
    if let Op::Put { value, .. } = &command.op {
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

/// Requests waiting for their reply, sharded to keep each lock short. The
/// connection thread that submitted a request waits on its cell. A retry of
/// a request still in progress waits beside the first attempt: both get the
/// reply, and each attempt removes only its own cell.
pub(crate) struct Pending {
    shards: Vec<Mutex<Waiters>>,
}

type Waiters = HashMap<RequestId, Vec<Arc<ReplyCell<Reply>>>>;

impl Pending {
    pub(crate) fn new() -> Self {
        Pending { shards: (0..32).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, id: RequestId) -> &Mutex<Waiters> {
        &self.shards[(id.0 ^ id.1) as usize % self.shards.len()]
    }

    /// Registers `id`, lets `submit` hand the request to a role, and waits for
    /// the reply until `timeout`.
    pub(crate) fn call(&self, id: RequestId, timeout: Duration, submit: impl FnOnce() -> bool) -> Reply {
        let deadline = Instant::now() + timeout;
        let cell = self.register(id);
        let submitted = submit();
        self.collect(id, &cell, submitted, deadline)
    }

    /// [`Pending::call`] for several requests at once: all are registered and
    /// submitted before any is waited for, and all share one deadline.
    pub(crate) fn call_many<T>(
        &self,
        requests: Vec<(RequestId, T)>,
        timeout: Duration,
        mut submit: impl FnMut(T) -> bool,
    ) -> Vec<Reply> {
        let deadline = Instant::now() + timeout;
        let cells: Vec<_> = requests
            .into_iter()
            .map(|(id, request)| {
                let cell = self.register(id);
                (id, cell, submit(request))
            })
            .collect();
        cells.into_iter().map(|(id, cell, submitted)| self.collect(id, &cell, submitted, deadline)).collect()
    }

    fn register(&self, id: RequestId) -> Arc<ReplyCell<Reply>> {
        let cell = Arc::new(ReplyCell::default());
        self.shard(id).lock().unwrap().entry(id).or_default().push(cell.clone());
        cell
    }

    /// The reply `cell` gets by `deadline` (if its request was submitted);
    /// then `cell` is no longer waiting.
    fn collect(&self, id: RequestId, cell: &Arc<ReplyCell<Reply>>, submitted: bool, deadline: Instant) -> Reply {
        let reply = if submitted {
            cell.wait(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or(Reply::Rejected(RequestError::Timeout))
        } else {
            Reply::Rejected(RequestError::Overloaded)
        };
        let mut shard = self.shard(id).lock().unwrap();
        if let Some(waiters) = shard.get_mut(&id) {
            waiters.retain(|waiting| !Arc::ptr_eq(waiting, cell));
            if waiters.is_empty() {
                shard.remove(&id);
            }
        }
        reply
    }

    /// Hands the reply to every connection waiting for `id` here.
    pub(crate) fn complete(&self, id: RequestId, reply: Reply) {
        let waiters = self.shard(id).lock().unwrap().remove(&id);
        for cell in waiters.into_iter().flatten() {
            cell.set(reply.clone());
        }
    }
}

/// A role thread: feed it inputs and ticks; after each batch of inputs it
/// persists, then sends.
pub(crate) trait RoleThread {
    type Input;
    fn handle(&mut self, input: Self::Input);
    fn tick(&mut self);
    fn finish_batch(&mut self);
}

pub(crate) fn run_role<R: RoleThread<Input: Weigh>>(mut role: R, inbox: Arc<Mailbox<R::Input>>, tick: Duration) -> ! {
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

/// Marks the calling thread as background work (nice 10): on a busy machine
/// the role threads go first. Failure only leaves the priority as it was.
pub(crate) fn run_in_background() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain syscall on the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

pub(crate) fn spawn_named(name: String, body: impl FnOnce() + Send + 'static) -> Result<()> {
    thread::Builder::new().name(name.clone()).spawn(body).with_context(|| format!("spawning {name}"))?;
    Ok(())
}

/// Offline/restart toggles of the failure thread must not be lost to a
/// momentarily full mailbox.
pub(crate) fn push_control<T: Weigh>(mailbox: &Mailbox<T>, mut input: T) {
    for _ in 0..1_000 {
        match mailbox.push(input) {
            Ok(()) => return,
            Err(crate::mailbox::Full(back)) => input = back,
        }
        thread::sleep(Duration::from_millis(1));
    }
    error!("role mailbox stayed full for a second; a failure toggle was skipped");
}

/// Logs what a restart of the failing role means in the configured mode.
fn log_restart(mode: FailMode, role: &str) {
    match mode {
        FailMode::Amnesia => warn!("RESTART {role} with EMPTY state (amnesia mode: unsafe by design)"),
        FailMode::Durable => info!("RESTART {role} from durable state"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_waiting_beside_its_first_attempt_gets_the_reply_after_the_first_times_out() {
        let pending = Arc::new(Pending::new());
        let id = (7, 1);
        let first = {
            let pending = pending.clone();
            thread::spawn(move || pending.call(id, Duration::from_millis(100), || true))
        };
        let retry = {
            let pending = pending.clone();
            thread::spawn(move || pending.call(id, Duration::from_secs(20), || true))
        };
        assert_eq!(first.join().unwrap(), Reply::Rejected(RequestError::Timeout));
        // The first attempt's timeout must not have unregistered the retry.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !retry.is_finished() && Instant::now() < deadline {
            pending.complete(id, Reply::Stored);
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(retry.join().unwrap(), Reply::Stored);
    }
}
