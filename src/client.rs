//! The remote stub: `put`, `get` and `delete` look like local calls and hide
//! leader discovery, redirects, timeouts and retries. Each call carries
//! `(client_id, seq)`; a retry reuses them, so the store applies it once.

use crate::kv::{Command, Op, Reply, RequestError};
use crate::node::NodeStatus;
use crate::security::{ClientSecurity, Stream, ANY_REPLICA};
use crate::transport;
use crate::wire::{self, ClientRequest, ClientResponse, FrameError, Hello, Speaker};
use std::fmt;
use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// No replica answered in time; the request may or may not have been applied.
    Timeout,
    /// The replicas that answered cannot reach a majority; nothing was applied.
    NoQuorum {
        reachable: usize,
        needed: usize,
    },
    TooLarge {
        what: String,
        bytes: usize,
        limit: usize,
    },
    Invalid(String),
    /// No replica could be reached at all.
    Unreachable(String),
    /// 2PC refused the write at every replica; nothing was applied.
    Aborted(String),
    /// 2PC: an undecided transaction kept the key locked until the deadline.
    Blocked(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Timeout => write!(f, "{}", RequestError::Timeout),
            ClientError::NoQuorum { reachable, needed } => {
                write!(f, "{}", RequestError::NoQuorum { reachable: *reachable, needed: *needed })
            }
            ClientError::TooLarge { what, bytes, limit } => {
                write!(f, "{}", RequestError::TooLarge { what: what.clone(), bytes: *bytes, limit: *limit })
            }
            ClientError::Invalid(why) => write!(f, "invalid request: {why}"),
            ClientError::Unreachable(why) => write!(f, "no replica reachable: {why}"),
            ClientError::Aborted(reason) => write!(f, "aborted, nothing applied: {reason}"),
            ClientError::Blocked(txn) => write!(
                f,
                "blocked: the key is locked by undecided transaction {txn}; its coordinator must come back and decide"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How long one attempt at one replica may take before trying another:
    /// about one election timeout, so a client whose replica went silent
    /// moves on about when a new leader is elected.
    pub timeout: Duration,
    /// How long one call may take in all, across retries.
    pub deadline: Duration,
    /// The largest frame either side accepts (the server's `--frame-bytes-max`):
    /// larger requests are refused before they are sent.
    pub frame_bytes_max: usize,
    /// The client certificate (mutual TLS), or plain TCP.
    pub security: ClientSecurity,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_millis(1_000),
            deadline: Duration::from_millis(5_000),
            frame_bytes_max: wire::FRAME_BYTES_MAX_DEFAULT,
            security: ClientSecurity::Insecure,
        }
    }
}

struct Connection {
    stream: BufReader<Stream>,
    /// The socket's read and write timeout as last set.
    timeout: Duration,
}

impl Connection {
    /// Clients check that the server is a replica of the cluster (its
    /// certificate chains to the CA and names `replica.paxos-kv`); which
    /// replica it is matters to links between replicas, not to clients.
    fn open(addr: SocketAddr, timeout: Duration, security: &ClientSecurity) -> std::io::Result<Self> {
        let tcp = transport::connect_tcp(addr, timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let mut stream = security.wrap(tcp, ANY_REPLICA)?;
        stream.write_all(&wire::frame(&Hello::new(Speaker::Client))?)?;
        Ok(Connection { stream: BufReader::new(stream), timeout })
    }

    fn call(&mut self, request: &ClientRequest, frame_bytes_max: usize) -> Result<ClientResponse, FrameError> {
        self.call_tracking_send(request, frame_bytes_max).map_err(|(e, _)| e)
    }

    /// On error, also says whether the request had been sent in full.
    fn call_tracking_send(
        &mut self,
        request: &ClientRequest,
        frame_bytes_max: usize,
    ) -> Result<ClientResponse, (FrameError, bool)> {
        let stream = self.stream.get_mut();
        wire::frame(request)
            .and_then(|frame| stream.write_all(&frame))
            .and_then(|()| stream.flush())
            .map_err(|e| (FrameError::Io(e), false))?;
        wire::read_frame(&mut self.stream, frame_bytes_max).map_err(|e| (e, true))
    }
}

pub struct Client {
    replicas: Vec<SocketAddr>,
    options: ClientOptions,
    client_id: u64,
    seq: u64,
    target: usize,
    connection: Option<(usize, Connection)>,
}

impl Client {
    /// A stub for the cluster at `replicas`; connections open lazily, so this
    /// succeeds while replicas are down.
    pub fn connect(replicas: &[SocketAddr]) -> Result<Self, ClientError> {
        Self::with_options(replicas, ClientOptions::default())
    }

    pub fn with_options(replicas: &[SocketAddr], options: ClientOptions) -> Result<Self, ClientError> {
        if replicas.is_empty() {
            return Err(ClientError::Invalid("no replica addresses given".into()));
        }
        let client_id = rand::random::<u64>() | 1;
        Ok(Client {
            target: (client_id % replicas.len() as u64) as usize,
            replicas: replicas.to_vec(),
            options,
            client_id,
            seq: 0,
            connection: None,
        })
    }

    pub fn put(&mut self, key: &str, value: &str) -> Result<(), ClientError> {
        match self.execute(Op::Put { key: key.into(), value: value.into() })? {
            Reply::Stored => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub fn get(&mut self, key: &str) -> Result<Option<String>, ClientError> {
        match self.execute(Op::Get { key: key.into() })? {
            Reply::Value(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// Returns whether the key existed.
    pub fn delete(&mut self, key: &str) -> Result<bool, ClientError> {
        match self.execute(Op::Delete { key: key.into() })? {
            Reply::Deleted { existed } => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    /// Runs one command (a write through the log, a read at the leader's
    /// read index), retrying across replicas until the deadline. Every retry
    /// carries the same sequence number.
    pub fn execute(&mut self, op: Op) -> Result<Reply, ClientError> {
        self.seq += 1;
        self.execute_command(Command { client_id: self.client_id, seq: self.seq, op })
    }

    /// [`Client::execute`] of a command numbered by the caller.
    fn execute_command(&mut self, command: Command) -> Result<Reply, ClientError> {
        let request = ClientRequest::Execute(command);
        // A frame over the server's limit would only get the connection
        // closed, again at every replica: refuse it here, at once.
        let bytes = wire::encode(&request).len();
        if bytes > self.options.frame_bytes_max {
            let what = match &request {
                ClientRequest::Execute(Command { op: Op::Put { .. }, .. }) => "value",
                _ => "request",
            };
            return Err(ClientError::TooLarge { what: what.into(), bytes, limit: self.options.frame_bytes_max });
        }
        let deadline = Instant::now() + self.options.deadline;
        let mut last_error = ClientError::Unreachable("no attempt made".into());
        // Replicas that, since the last other answer, said "no quorum" or were unreachable.
        let mut hopeless = vec![false; self.replicas.len()];
        let mut no_quorum = None;
        // Once an attempt may have reached the log, "not applied" can no longer be promised.
        let mut maybe_applied = false;
        while Instant::now() < deadline {
            if hopeless.iter().all(|h| *h) {
                // Every replica refused or is down: rest, then sweep again until the deadline.
                hopeless.fill(false);
                self.pause(Duration::from_millis(100), deadline);
                continue;
            }
            let target = self.target;
            let response = self.call_target(&request, deadline);
            let reply = match response {
                Ok(ClientResponse::Reply(reply)) => reply,
                Ok(ClientResponse::Status(_) | ClientResponse::Replies(_)) => {
                    last_error = ClientError::Invalid("server answered a request with another kind of response".into());
                    self.next_target();
                    continue;
                }
                Err((e, sent)) => {
                    // A replica that received the request may have proposed it.
                    maybe_applied |= sent;
                    last_error = match e {
                        FrameError::Io(ref io) if wire::is_timeout(io) => ClientError::Timeout,
                        _ => ClientError::Unreachable(format!("{}: {e}", self.replicas[target])),
                    };
                    hopeless[target] = true;
                    self.next_target();
                    continue;
                }
            };
            match reply {
                Reply::Rejected(error @ RequestError::NotLeader { leader: Some(leader) })
                    if (leader as usize) >= 1 && (leader as usize) <= self.replicas.len() =>
                {
                    last_error = ClientError::Unreachable(format!("{}: {error}", self.replicas[target]));
                    let leader_index = leader as usize - 1;
                    if hopeless[leader_index] {
                        // It defers to a leader that cannot reach a quorum either.
                        hopeless[target] = true;
                        self.next_target();
                        continue;
                    }
                    if leader_index == target {
                        self.pause(Duration::from_millis(20), deadline);
                    }
                    self.target = leader_index;
                }
                Reply::Rejected(RequestError::Abandoned { leader }) => {
                    maybe_applied = true;
                    match leader {
                        Some(leader) if (leader as usize) >= 1 && (leader as usize) <= self.replicas.len() => {
                            self.target = leader as usize - 1
                        }
                        _ => self.next_target(),
                    }
                }
                Reply::Rejected(error @ RequestError::NotLeader { .. }) => {
                    // A leader this client has no address for, or none yet.
                    last_error = ClientError::Unreachable(format!("{}: {error}", self.replicas[target]));
                    self.next_target();
                    self.pause(Duration::from_millis(50), deadline);
                }
                Reply::Rejected(RequestError::NoQuorum { reachable, needed }) => {
                    no_quorum = Some((reachable, needed));
                    hopeless[target] = true;
                    self.next_target();
                }
                Reply::Rejected(RequestError::Timeout) => {
                    maybe_applied = true;
                    last_error = ClientError::Timeout;
                    self.next_target();
                }
                Reply::Rejected(RequestError::Overloaded) => self.pause(Duration::from_millis(10), deadline),
                Reply::Rejected(error @ (RequestError::Offline | RequestError::CatchingUp)) => {
                    last_error = ClientError::Unreachable(format!("{}: {error}", self.replicas[target]));
                    self.next_target();
                }
                Reply::Rejected(error @ (RequestError::Aborted { .. } | RequestError::StaleRequest)) => {
                    return Err(final_error(error).expect("final"))
                }
                Reply::Rejected(RequestError::Locked { txn }) => {
                    // Wait for the decision rather than read a value that may be rolled back.
                    last_error = ClientError::Blocked(txn);
                    self.pause(Duration::from_millis(50), deadline);
                }
                Reply::Rejected(error @ (RequestError::TooLarge { .. } | RequestError::Invalid(_))) => {
                    return Err(final_error(error).expect("final"))
                }
                reply => return Ok(reply),
            }
        }
        match no_quorum {
            Some((reachable, needed)) if !maybe_applied => Err(ClientError::NoQuorum { reachable, needed }),
            Some(_) => Err(ClientError::Timeout),
            None => Err(last_error),
        }
    }

    /// One attempt at the current target, cut short at `deadline`: a call
    /// never outlasts the deadline by more than a millisecond or so.
    fn call_target(
        &mut self,
        request: &ClientRequest,
        deadline: Instant,
    ) -> Result<ClientResponse, (FrameError, bool)> {
        let target = self.target;
        let timeout =
            self.options.timeout.min(deadline.saturating_duration_since(Instant::now())).max(Duration::from_millis(1));
        if self.connection.as_ref().is_none_or(|(index, _)| *index != target) {
            self.connection = None;
            let connection = Connection::open(self.replicas[target], timeout, &self.options.security)
                .map_err(|e| (FrameError::Io(e), false))?;
            self.connection = Some((target, connection));
        }
        let (_, connection) = self.connection.as_mut().expect("opened above");
        if connection.timeout != timeout {
            let tcp = connection.stream.get_ref().tcp();
            tcp.set_read_timeout(Some(timeout))
                .and_then(|()| tcp.set_write_timeout(Some(timeout)))
                .map_err(|e| (FrameError::Io(e), false))?;
            connection.timeout = timeout;
        }
        let result = connection.call_tracking_send(request, self.options.frame_bytes_max);
        if result.is_err() {
            self.connection = None;
        }
        result
    }

    fn next_target(&mut self) {
        self.target = (self.target + 1) % self.replicas.len();
    }

    fn pause(&self, pause: Duration, deadline: Instant) {
        thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
    }

    pub fn replicas(&self) -> &[SocketAddr] {
        &self.replicas
    }
}

/// Several requests in flight on one connection. Each lane is a session of
/// its own (a client id with its own sequence numbers), so that retrying one
/// request never overtakes another's sequence number and exactly-once holds
/// per lane; the requests travel in one `ExecuteMany` frame and the replies
/// come back in one frame, tagged with each request's id.
pub struct Pipeline {
    client: Client,
    /// Each lane's client id and last sequence number.
    lanes: Vec<(u64, u64)>,
}

/// How many times a pipeline sends its whole batch (following the leader's
/// redirect) before it retries what is left one request at a time.
const PIPELINE_ROUNDS: usize = 3;

impl Pipeline {
    pub fn new(replicas: &[SocketAddr], options: ClientOptions, lanes: usize) -> Result<Self, ClientError> {
        if lanes == 0 || lanes > wire::PIPELINE_COMMANDS_MAX {
            return Err(ClientError::Invalid(format!("lanes must be 1 to {}", wire::PIPELINE_COMMANDS_MAX)));
        }
        let client = Client::with_options(replicas, options)?;
        let lanes = (0..lanes).map(|_| (rand::random::<u64>() | 1, 0)).collect();
        Ok(Pipeline { client, lanes })
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Runs `ops[i]` on lane `i` (at most one per lane), all at once; each
    /// result is what [`Client::execute`] returns for its request. Requests
    /// refused for now (a follower, an election, an overload) are sent again
    /// together once the leader is known, then one by one with the stub's
    /// retries, always with their own sequence numbers.
    pub fn run(&mut self, ops: Vec<Op>) -> Vec<Result<Reply, ClientError>> {
        assert!(ops.len() <= self.lanes.len(), "{} requests for {} lanes", ops.len(), self.lanes.len());
        let commands: Vec<Command> = ops
            .into_iter()
            .zip(&mut self.lanes)
            .map(|(op, (client_id, seq))| {
                *seq += 1;
                Command { client_id: *client_id, seq: *seq, op }
            })
            .collect();
        let mut results: Vec<Option<Result<Reply, ClientError>>> = commands.iter().map(|_| None).collect();
        let deadline = Instant::now() + self.client.options.deadline;
        for _ in 0..PIPELINE_ROUNDS {
            let waiting: Vec<usize> = (0..commands.len()).filter(|&i| results[i].is_none()).collect();
            if waiting.is_empty() || Instant::now() >= deadline {
                break;
            }
            let request = ClientRequest::ExecuteMany(waiting.iter().map(|&i| commands[i].clone()).collect());
            let replies = match self.client.call_target(&request, deadline) {
                Ok(ClientResponse::Replies(replies)) if replies.len() == waiting.len() => replies,
                Ok(ClientResponse::Reply(Reply::Rejected(RequestError::Invalid(why)))) => {
                    waiting.iter().for_each(|&i| results[i] = Some(Err(ClientError::Invalid(why.clone()))));
                    break;
                }
                _ => {
                    self.client.next_target();
                    break;
                }
            };
            let mut leader = None;
            for (&index, (id, reply)) in waiting.iter().zip(replies) {
                if id != commands[index].request_id() {
                    continue;
                }
                match reply {
                    Reply::Rejected(RequestError::NotLeader { leader: Some(l) }) => leader = Some(l as usize),
                    Reply::Rejected(error) => results[index] = final_error(error).map(Err),
                    reply => results[index] = Some(Ok(reply)),
                }
            }
            match leader {
                Some(l) if (1..=self.client.replicas.len()).contains(&l) && l - 1 != self.client.target => {
                    self.client.target = l - 1
                }
                _ => break,
            }
        }
        commands
            .into_iter()
            .zip(results)
            .map(|(command, result)| result.unwrap_or_else(|| self.client.execute_command(command)))
            .collect()
    }
}

/// A refusal that retrying the same request cannot change.
fn final_error(error: RequestError) -> Option<ClientError> {
    match error {
        RequestError::Aborted { reason } => Some(ClientError::Aborted(reason)),
        RequestError::TooLarge { what, bytes, limit } => Some(ClientError::TooLarge { what, bytes, limit }),
        RequestError::Invalid(why) => Some(ClientError::Invalid(why)),
        RequestError::StaleRequest => Some(ClientError::Invalid("stale request".into())),
        _ => None,
    }
}

fn unexpected(reply: Reply) -> ClientError {
    ClientError::Invalid(format!("unexpected reply {reply:?}"))
}

/// One replica's own copy of `key`, outside the protocol (see `ClientRequest::LocalGet`).
pub fn local_get(addr: SocketAddr, key: &str, timeout: Duration, security: &ClientSecurity) -> Result<Reply, String> {
    let mut connection = Connection::open(addr, timeout, security).map_err(|e| e.to_string())?;
    let request = ClientRequest::LocalGet { request_id: (rand::random::<u64>() | 1, 1), key: key.to_string() };
    match connection.call(&request, wire::FRAME_BYTES_MAX_DEFAULT) {
        Ok(ClientResponse::Reply(reply)) => Ok(reply),
        Ok(other) => Err(format!("unexpected response {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Asks one replica for its status.
pub fn status(addr: SocketAddr, timeout: Duration, security: &ClientSecurity) -> Result<NodeStatus, String> {
    let mut connection = Connection::open(addr, timeout, security).map_err(|e| e.to_string())?;
    match connection.call(&ClientRequest::Status, wire::FRAME_BYTES_MAX_DEFAULT) {
        Ok(ClientResponse::Status(status)) => Ok(*status),
        Ok(other) => Err(format!("unexpected response {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Asks every replica at once; a down replica gives an `Err`.
pub fn status_all(
    replicas: &[SocketAddr],
    timeout: Duration,
    security: &ClientSecurity,
) -> Vec<(SocketAddr, Result<NodeStatus, String>)> {
    let handles: Vec<_> = replicas
        .iter()
        .map(|&addr| {
            let security = security.clone();
            (addr, thread::spawn(move || status(addr, timeout, &security)))
        })
        .collect();
    handles
        .into_iter()
        .map(|(addr, h)| (addr, h.join().unwrap_or_else(|_| Err("status thread panicked".into()))))
        .collect()
}
