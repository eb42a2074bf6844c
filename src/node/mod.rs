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
use crate::mailbox::{Mailbox, ReplyCell};
use crate::paxos::NodeId;
use crate::trace::{TraceEvent, Tracer};
use crate::transport::{self, Connected, PeerLink};
use crate::wire::{self, ClientRequest, ClientResponse, FrameError, Hello, PeerFrame, Speaker};
use anyhow::{Context, Result};
use log::{debug, error, info, warn};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
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
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Starts a replica of the configured protocol and serves connections on the
/// calling thread; returns only if the listener fails.
pub fn serve(config: ServerConfig) -> Result<()> {
    config.validate()?;
    stop_on_panic();
    let listen = config.address_of(config.id);
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
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
            info!("{banner}");
            accept_loop(listener, replica)
        }
        Protocol::TwoPc => {
            let replica = twopc::start(config)?;
            info!("{banner}");
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
pub(crate) trait Addressed: Serialize + DeserializeOwned + Send + 'static {
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
                (peer, transport::spawn_link(id, config.protocol, peer, config.address_of(peer), connected.clone()))
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
    /// This replica's own value for `key`, bypassing the protocol (2PC still
    /// refuses a locked key). For consistency checks, not for users.
    fn local_get(&self, request: RequestId, key: String) -> Reply;
    fn status(&self) -> NodeStatus;
}

fn accept_loop<R: Replica>(listener: TcpListener, replica: Arc<R>) -> Result<()> {
    let id = replica.config().id;
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
                // One thread per connection: bound them, so a flood of
                // connections costs refusals, not the replica.
                if open.load(Ordering::Relaxed) >= replica.config().connections_max {
                    warn!("refusing connection from {peer}: {} connections open", replica.config().connections_max);
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (replica, open_here) = (replica.clone(), open.clone());
                let spawned = spawn_named(format!("s{id}/conn"), move || {
                    if let Err(e) = serve_connection(&*replica, stream) {
                        warn!("closing connection from {peer}: {e}");
                    }
                    open_here.fetch_sub(1, Ordering::Relaxed);
                });
                if let Err(e) = spawned {
                    error!("{e:#}");
                }
            }
            Err(e) => warn!("accept failed: {e}"),
        }
    }
    Ok(())
}

fn serve_connection<R: Replica>(replica: &R, stream: TcpStream) -> Result<(), FrameError> {
    let config = replica.config();
    stream.set_nodelay(true).map_err(FrameError::Io)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT)).map_err(FrameError::Io)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone().map_err(FrameError::Io)?);
    let hello: Hello = match wire::read_frame(&mut reader, HELLO_BYTES_MAX) {
        // A port probe: connected and left without a word.
        Err(FrameError::Closed) => return Ok(()),
        other => other?,
    };
    hello.check().map_err(FrameError::Malformed)?;
    match hello.speaker {
        Speaker::Replica { node_id, protocol } => {
            let known = node_id >= 1 && node_id as usize <= config.replicas.len() && node_id != config.id;
            if !known {
                return Err(FrameError::Malformed(format!("hello from unknown replica {node_id}")));
            }
            if protocol != config.protocol {
                return Err(FrameError::Malformed(format!(
                    "replica {node_id} runs {protocol}, this one runs {}",
                    config.protocol
                )));
            }
            stream.set_read_timeout(None).map_err(FrameError::Io)?;
            debug!("replica {node_id} connected");
            loop {
                let frame: PeerFrame<R::Envelope> = match wire::read_frame(&mut reader, config.peer_frame_bytes_max) {
                    Err(FrameError::Closed) => return Ok(()),
                    other => other?,
                };
                for envelope in frame {
                    replica.deliver(node_id, envelope).map_err(FrameError::Malformed)?;
                }
            }
        }
        Speaker::Client => {
            stream.set_read_timeout(Some(CLIENT_IDLE_TIMEOUT)).map_err(FrameError::Io)?;
            // Replies are written by this thread: waking it costs less than
            // writing every client's socket from a role thread.
            let mut writer = BufWriter::new(stream);
            loop {
                let request: ClientRequest = match wire::read_frame(&mut reader, config.frame_bytes_max) {
                    Err(FrameError::Closed) => return Ok(()),
                    other => other?,
                };
                let response = match request {
                    ClientRequest::Status => ClientResponse::Status(Box::new(replica.status())),
                    ClientRequest::LocalGet { request_id, key } => {
                        ClientResponse::Reply(replica.local_get(request_id, key))
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
                wire::write_frame(&mut writer, &response).and_then(|()| writer.flush()).map_err(FrameError::Io)?;
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
        let cell = Arc::new(ReplyCell::default());
        self.shard(id).lock().unwrap().entry(id).or_default().push(cell.clone());
        let reply = if submit() {
            cell.wait(timeout).unwrap_or(Reply::Rejected(RequestError::Timeout))
        } else {
            Reply::Rejected(RequestError::Overloaded)
        };
        let mut shard = self.shard(id).lock().unwrap();
        if let Some(waiters) = shard.get_mut(&id) {
            waiters.retain(|waiting| !Arc::ptr_eq(waiting, &cell));
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

pub(crate) fn run_role<R: RoleThread>(mut role: R, inbox: Arc<Mailbox<R::Input>>, tick: Duration) -> ! {
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

pub(crate) fn spawn_named(name: String, body: impl FnOnce() + Send + 'static) -> Result<()> {
    thread::Builder::new().name(name.clone()).spawn(body).with_context(|| format!("spawning {name}"))?;
    Ok(())
}

/// Offline/restart toggles of the failure thread must not be lost to a
/// momentarily full mailbox.
pub(crate) fn push_control<T>(mailbox: &Mailbox<T>, mut input: T) {
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
