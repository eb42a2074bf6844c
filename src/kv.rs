//! The key-value state machine: applies commands in log order and remembers
//! each client's last reply so a retried request is answered, not re-applied.
//! It knows nothing of Paxos, 2PC or sockets.

use crate::paxos::NodeId;
use imbl::OrdMap;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use std::fmt;
use std::sync::Arc;

/// `(client_id, seq)`: names one request across retries and replicas.
pub type RequestId = (u64, u64);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put { key: String, value: String },
    Get { key: String },
    Delete { key: String },
}

/// At most `max` characters of `text` on one line: control characters
/// escaped, a cut marked with an ellipsis.
fn short(text: &str, max: usize) -> String {
    // Escapes only what is shown: values can be megabytes long.
    let mut escaped = text.chars().flat_map(char::escape_debug);
    let mut shown: String = escaped.by_ref().take(max).collect();
    if escaped.next().is_some() {
        shown.push('…');
    }
    shown
}

impl Op {
    /// "PUT key=value", "GET key", "DELETE key", cut short for displays.
    pub fn describe(&self) -> String {
        match self {
            Op::Put { key, value } => format!("PUT {}={}", short(key, 12), short(value, 10)),
            Op::Get { key } => format!("GET {}", short(key, 12)),
            Op::Delete { key } => format!("DELETE {}", short(key, 12)),
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Delete { key } => key,
        }
    }

    /// Bytes of user data, used for batch and frame budgets.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Get { key } | Op::Delete { key } => key.len(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub client_id: u64,
    pub seq: u64,
    pub op: Op,
}

impl Command {
    pub fn request_id(&self) -> RequestId {
        (self.client_id, self.seq)
    }

    /// Upper bound of the encoded size: two varint ids, the operation's tag
    /// and two length prefixes around the payload.
    pub fn wire_bytes(&self) -> usize {
        40 + self.op.payload_bytes()
    }
}

/// Why a request was refused; each variant carries what the caller needs next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestError {
    /// This replica does not lead; retry at `leader` (unknown while an election runs).
    NotLeader {
        leader: Option<NodeId>,
    },
    /// Fewer than a majority of acceptors answer; the request was not proposed.
    NoQuorum {
        reachable: usize,
        needed: usize,
    },
    /// The leader lost its leadership while the request was in flight: it may
    /// still be chosen. Retry at `leader` with the same sequence number.
    Abandoned {
        leader: Option<NodeId>,
    },
    /// No answer in time; the request may still take effect. Retrying with the
    /// same sequence number is safe (it is applied at most once).
    Timeout,
    /// Two-phase commit refused the write everywhere; nothing was applied.
    Aborted {
        reason: String,
    },
    /// A two-phase-commit transaction that has not been decided holds the
    /// key; its value may still be rolled back.
    Locked {
        txn: String,
    },
    /// This replica's participant is offline; another replica may answer.
    Offline,
    /// This replica is replacing its store with a snapshot from a peer and
    /// holds no consistent state to read from; another replica may answer.
    CatchingUp,
    /// The replica's queue is full; retry later.
    Overloaded,
    TooLarge {
        what: String,
        bytes: usize,
        limit: usize,
    },
    /// The client already received the reply of a later request.
    StaleRequest,
    Invalid(String),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotLeader { leader: Some(id) } => write!(f, "not the leader; replica {id} leads"),
            RequestError::NotLeader { leader: None } => write!(f, "not the leader; an election is in progress"),
            RequestError::NoQuorum { reachable, needed } => {
                write!(f, "no quorum: {reachable} acceptor(s) reachable, {needed} needed; the request was not applied")
            }
            RequestError::Abandoned { .. } => {
                write!(f, "leadership changed while the request was in flight; it may or may not have been applied")
            }
            RequestError::Timeout => write!(f, "timed out; the request may or may not have been applied"),
            RequestError::Aborted { reason } => write!(f, "aborted, nothing applied: {reason}"),
            RequestError::Locked { txn } => {
                write!(f, "blocked: the key is locked by undecided transaction {txn} (its coordinator must decide)")
            }
            RequestError::Offline => write!(f, "this replica is offline; try another"),
            RequestError::CatchingUp => {
                write!(f, "this replica is installing a snapshot from a peer; try another")
            }
            RequestError::Overloaded => write!(f, "replica overloaded; try again"),
            RequestError::TooLarge { what, bytes, limit } => {
                write!(f, "{what} too large: {bytes} bytes, limit {limit}")
            }
            RequestError::StaleRequest => {
                write!(f, "stale request: a later request of this client was already answered")
            }
            RequestError::Invalid(why) => write!(f, "invalid request: {why}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Stored,
    Value(Option<String>),
    Deleted { existed: bool },
    Rejected(RequestError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    seq: u64,
    /// The reply of the last write; `None` after a read, whose retry simply
    /// reads again (any point between a read's invocation and its reply is a
    /// valid place for it), so values read are never kept here.
    reply: Option<Reply>,
    /// Order of last use, to evict the idlest session when the table is full.
    last_used: u64,
}

/// Deterministic: every replica that applies the same commands holds the same value.
///
/// Persistent (copy-on-write) maps: a clone shares every node, so taking a
/// snapshot or starting a catch-up transfer costs O(1) on the thread that
/// applies, however large the store; the copy is then read at leisure by the
/// snapshot writer or chunk by chunk. Each write copies O(log n) nodes.
/// Values are reference-counted and keys are `SmolStr` (up to 23 bytes
/// inline, longer ones reference-counted): a node copied after a snapshot
/// copies pointers and short keys, not the strings it holds (with plain
/// strings each write to a large store copied about a hundred of them while a
/// snapshot was held, and PUT throughput fell with the store's size), and a
/// search compares short keys inside the node rather than behind a pointer
/// each (a decision of 64 PUTs at 2M keys: 0.22 ms against 0.31 ms).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    data: OrdMap<SmolStr, Arc<str>>,
    sessions: OrdMap<u64, Session>,
    /// Sessions by `last_used` (unique: the count of applied commands), so the
    /// idlest is found in O(log n).
    sessions_by_use: OrdMap<u64, u64>,
    /// Keys and values, in bytes.
    data_bytes: u64,
    applied_commands: u64,
}

/// Part of a store, for writing or sending it in bounded pieces: a snapshot,
/// compacted state or catch-up transfer is a sequence of chunks, none larger
/// than its reader accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreChunk {
    /// Shared with the store: a chunk costs a pointer per entry, not a copy of
    /// it, and encodes as strings.
    Data(Vec<(SmolStr, Arc<str>)>),
    Sessions(Vec<(u64, Session)>),
}

impl StoreChunk {
    /// Upper bound of the encoded size.
    pub fn wire_bytes(&self) -> usize {
        match self {
            StoreChunk::Data(entries) => 10 + entries.iter().map(|(k, v)| 20 + k.len() + v.len()).sum::<usize>(),
            StoreChunk::Sessions(sessions) => 10 + sessions.iter().map(|(_, s)| session_bytes(s)).sum::<usize>(),
        }
    }
}

/// What changed in a store since some point: the keys written or deleted,
/// with what each then held, and the clients whose session changed (or was
/// evicted). A snapshot then writes only these instead of the whole store again.
///
/// Noted as lists, with repeats, because the learner notes a key per write
/// and a set's rehash as it grows stalled applying for milliseconds; a list
/// grows by copying pointers. Each entry is 40 bytes (a long key and the
/// value are shared with the store), and the values it alone keeps (those
/// written over since) were decided since the last snapshot, which is bounded.
/// The values are noted so that writing them looks nothing up in a store
/// whose nodes are cold. Sorted and deduplicated only when written, off the
/// learner, so that what is written is the same on every run of a seed.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// In the order written: the last entry of a key is what it holds.
    keys: Vec<KeyChange>,
    clients: Vec<u64>,
}

/// A key and what a write left in it (`None`: deleted).
pub type KeyChange = (SmolStr, Option<Arc<str>>);

impl Changes {
    fn note_key(&mut self, key: SmolStr, value: Option<Arc<str>>) {
        self.keys.push((key, value));
    }

    fn note_client(&mut self, client: u64) {
        if self.clients.last() != Some(&client) {
            self.clients.push(client);
        }
    }

    /// The keys in order, each once, with what it last held (`None`: deleted).
    pub fn latest(&self) -> Vec<&KeyChange> {
        let mut latest: Vec<(usize, &KeyChange)> = self.keys.iter().enumerate().collect();
        latest.sort_unstable_by(|(a_at, (a, _)), (b_at, (b, _))| a.cmp(b).then(b_at.cmp(a_at)));
        latest.dedup_by(|(_, (later, _)), (_, (kept, _))| later == kept);
        latest.into_iter().map(|(_, entry)| entry).collect()
    }

    /// The clients in order, each once.
    pub fn sorted_clients(&self) -> Vec<u64> {
        let mut clients = self.clients.clone();
        clients.sort_unstable();
        clients.dedup();
        clients
    }

    /// Both, `older` first, so that the later of two writes of a key stays last.
    pub fn absorb(&mut self, mut older: Changes) {
        older.keys.append(&mut self.keys);
        older.clients.append(&mut self.clients);
        *self = older;
    }
}

/// Part of the changes to a store: each key or client with what it now
/// holds (`None`: deleted, or session evicted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeChunk {
    Data(Vec<(SmolStr, Option<Arc<str>>)>),
    Sessions(Vec<(u64, Option<Session>)>),
}

/// Where a chunked read of a store resumes: data in key order, then sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreCursor {
    Start,
    AfterKey(String),
    SessionsStart,
    AfterClient(u64),
}

/// Beyond this many clients the idlest session is forgotten; a retry from it
/// after that would be applied again.
pub const SESSIONS_MAX: usize = 100_000;

impl KvStore {
    pub fn apply(&mut self, command: &Command) -> Reply {
        self.apply_noting(command, None)
    }

    /// [`KvStore::apply`], adding to `changes` every key and session it touched.
    pub fn apply_noting(&mut self, command: &Command, mut changes: Option<&mut Changes>) -> Reply {
        self.applied_commands += 1;
        let now = self.applied_commands;
        if let Some(changes) = changes.as_deref_mut() {
            changes.note_client(command.client_id);
        }
        if let Some(session) = self.sessions.get_mut(&command.client_id) {
            if command.seq < session.seq {
                return Reply::Rejected(RequestError::StaleRequest);
            }
            if command.seq == session.seq {
                let previous_use = std::mem::replace(&mut session.last_used, now);
                let reply = session.reply.clone();
                self.sessions_by_use.remove(&previous_use);
                self.sessions_by_use.insert(now, command.client_id);
                return match reply {
                    Some(reply) => reply,
                    None => self.execute_noting(&command.op, changes),
                };
            }
        }
        let reply = self.execute_noting(&command.op, changes.as_deref_mut());
        if self.sessions.len() >= SESSIONS_MAX && !self.sessions.contains_key(&command.client_id) {
            if let Some(evicted) = self.evict_idlest_session() {
                if let Some(changes) = changes {
                    changes.note_client(evicted);
                }
            }
        }
        let kept = (!matches!(command.op, Op::Get { .. })).then(|| reply.clone());
        let session = Session { seq: command.seq, reply: kept, last_used: now };
        if let Some(previous) = self.sessions.insert(command.client_id, session) {
            self.sessions_by_use.remove(&previous.last_used);
        }
        self.sessions_by_use.insert(now, command.client_id);
        reply
    }

    fn execute_noting(&mut self, op: &Op, changes: Option<&mut Changes>) -> Reply {
        match (op, changes) {
            (Op::Put { key, value }, Some(changes)) => {
                let (key, value) = (SmolStr::new(key), Arc::<str>::from(value.as_str()));
                changes.note_key(key.clone(), Some(value.clone()));
                self.put(key, value)
            }
            (Op::Delete { key }, Some(changes)) => {
                changes.note_key(SmolStr::new(key), None);
                self.delete(key)
            }
            _ => self.execute(op),
        }
    }

    fn put(&mut self, key: SmolStr, value: Arc<str>) -> Reply {
        let key_bytes = key.len() as u64;
        self.data_bytes += key_bytes + value.len() as u64;
        if let Some(old) = self.data.insert(key, value) {
            self.data_bytes -= key_bytes + old.len() as u64;
        }
        Reply::Stored
    }

    fn delete(&mut self, key: &str) -> Reply {
        let old = self.data.remove(key);
        if let Some(old) = &old {
            self.data_bytes -= (key.len() + old.len()) as u64;
        }
        Reply::Deleted { existed: old.is_some() }
    }

    /// Runs an operation with no exactly-once bookkeeping: for a protocol
    /// that applies commands in different orders at different replicas (2PC),
    /// where a per-client "last sequence number" would diverge.
    pub fn execute(&mut self, op: &Op) -> Reply {
        match op {
            Op::Put { key, value } => self.put(SmolStr::new(key), Arc::from(value.as_str())),
            Op::Get { key } => Reply::Value(self.get(key).map(str::to_string)),
            Op::Delete { key } => self.delete(key),
        }
    }

    fn evict_idlest_session(&mut self) -> Option<u64> {
        let (last_used, client) = self.sessions_by_use.get_min().map(|(last_used, client)| (*last_used, *client))?;
        self.sessions_by_use.remove(&last_used);
        self.sessions.remove(&client);
        Some(client)
    }

    /// The chunk of about `bytes_max` bytes that follows `cursor` (one entry
    /// larger than that makes a chunk of its own), and where the next one
    /// starts: `None` after the last. Costs O(chunk + log n).
    pub fn chunk_after(&self, cursor: &StoreCursor, bytes_max: usize) -> (StoreChunk, Option<StoreCursor>) {
        use std::ops::Bound::{Excluded, Unbounded};
        match cursor {
            StoreCursor::Start | StoreCursor::AfterKey(_) => {
                let mut range = match cursor {
                    StoreCursor::AfterKey(key) => self.data.range::<_, str>((Excluded(key.as_str()), Unbounded)),
                    _ => self.data.range::<_, str>(..),
                }
                .peekable();
                let (mut entries, mut bytes) = (Vec::new(), 0);
                while let Some((key, value)) = range.peek() {
                    let size = 20 + key.len() + value.len();
                    if !entries.is_empty() && bytes + size > bytes_max {
                        break;
                    }
                    bytes += size;
                    entries.push(((*key).clone(), (*value).clone()));
                    range.next();
                }
                let next = match entries.last() {
                    Some((key, _)) if range.peek().is_some() => Some(StoreCursor::AfterKey(key.to_string())),
                    _ if !self.sessions.is_empty() => Some(StoreCursor::SessionsStart),
                    _ => None,
                };
                (StoreChunk::Data(entries), next)
            }
            StoreCursor::SessionsStart | StoreCursor::AfterClient(_) => {
                let mut range = match cursor {
                    StoreCursor::AfterClient(client) => self.sessions.range((Excluded(*client), Unbounded)),
                    _ => self.sessions.range::<_, u64>(..),
                }
                .peekable();
                let (mut sessions, mut bytes) = (Vec::new(), 0);
                while let Some((client, session)) = range.peek() {
                    let size = session_bytes(session);
                    if !sessions.is_empty() && bytes + size > bytes_max {
                        break;
                    }
                    bytes += size;
                    sessions.push((**client, (*session).clone()));
                    range.next();
                }
                let next = match sessions.last() {
                    Some((client, _)) if range.peek().is_some() => Some(StoreCursor::AfterClient(*client)),
                    _ => None,
                };
                (StoreChunk::Sessions(sessions), next)
            }
        }
    }

    /// The whole store as chunks of about `bytes_max` bytes, produced as they
    /// are consumed.
    pub fn chunks(&self, bytes_max: usize) -> impl Iterator<Item = StoreChunk> + '_ {
        let mut cursor = Some(StoreCursor::Start);
        std::iter::from_fn(move || {
            let (chunk, next) = self.chunk_after(cursor.as_ref()?, bytes_max);
            cursor = next;
            Some(chunk)
        })
    }

    /// Adds one chunk written by [`KvStore::chunks`] or [`KvStore::chunk_after`].
    pub fn restore_chunk(&mut self, chunk: StoreChunk) {
        match chunk {
            StoreChunk::Data(entries) => {
                for (key, value) in entries {
                    self.put(key, value);
                }
            }
            StoreChunk::Sessions(sessions) => {
                for (client, session) in sessions {
                    self.sessions_by_use.insert(session.last_used, client);
                    if let Some(previous) = self.sessions.insert(client, session) {
                        self.sessions_by_use.remove(&previous.last_used);
                    }
                }
            }
        }
    }

    /// Makes the part of this store that `chunk` covers (from `after` to where
    /// `next` resumes, or to the end) equal to it: keys and sessions there that
    /// the chunk lacks are removed, the chunk's are written. Applied to every
    /// chunk of a snapshot in order, this turns any store into that snapshot
    /// in place, so a replica catching up never holds two stores at once; in
    /// between, the store matches no slot and must not be read.
    pub fn replace_range(&mut self, after: &StoreCursor, chunk: StoreChunk, next: Option<&StoreCursor>) {
        use std::collections::HashSet;
        use std::ops::Bound::{Excluded, Included, Unbounded};
        match chunk {
            StoreChunk::Data(entries) => {
                let lower = match after {
                    StoreCursor::AfterKey(key) => Excluded(key.as_str()),
                    _ => Unbounded,
                };
                let upper = match next {
                    Some(StoreCursor::AfterKey(key)) => Included(key.as_str()),
                    _ => Unbounded,
                };
                let kept: HashSet<&str> = entries.iter().map(|(key, _)| key.as_str()).collect();
                let gone: Vec<String> = self
                    .data
                    .range::<_, str>((lower, upper))
                    .map(|(key, _)| key)
                    .filter(|key| !kept.contains(&***key))
                    .map(|key| key.to_string())
                    .collect();
                for key in gone {
                    self.delete(&key);
                }
                for (key, value) in entries {
                    self.put(key, value);
                }
                if next.is_none() {
                    // The snapshot has no sessions.
                    self.sessions = OrdMap::new();
                    self.sessions_by_use = OrdMap::new();
                }
            }
            StoreChunk::Sessions(sessions) => {
                let lower = match after {
                    StoreCursor::AfterClient(client) => Excluded(*client),
                    _ => Unbounded,
                };
                let upper = match next {
                    Some(StoreCursor::AfterClient(client)) => Included(*client),
                    _ => Unbounded,
                };
                let kept: HashSet<u64> = sessions.iter().map(|(client, _)| *client).collect();
                let gone: Vec<u64> = self
                    .sessions
                    .range((lower, upper))
                    .map(|(client, _)| *client)
                    .filter(|c| !kept.contains(c))
                    .collect();
                for client in gone {
                    if let Some(old) = self.sessions.remove(&client) {
                        self.forget_use(old.last_used, client);
                    }
                }
                for (client, session) in sessions {
                    let last_used = session.last_used;
                    if let Some(old) = self.sessions.insert(client, session) {
                        self.forget_use(old.last_used, client);
                    }
                    self.sessions_by_use.insert(last_used, client);
                }
            }
        }
    }

    /// Drops `client`'s entry in the use index, unless another session's
    /// (written over it while a store is replaced in place) now holds it.
    fn forget_use(&mut self, last_used: u64, client: u64) {
        if self.sessions_by_use.get(&last_used) == Some(&client) {
            self.sessions_by_use.remove(&last_used);
        }
    }

    /// `changes` as they stand in this store, in chunks of about `bytes_max`
    /// bytes, produced as they are consumed.
    pub fn change_chunks<'a>(
        &'a self,
        changes: &'a Changes,
        bytes_max: usize,
    ) -> impl Iterator<Item = ChangeChunk> + 'a {
        let mut keys = changes.latest().into_iter().peekable();
        let mut clients = changes.sorted_clients().into_iter().peekable();
        std::iter::from_fn(move || {
            let mut bytes = 0;
            if keys.peek().is_some() {
                let mut entries = Vec::new();
                while let Some((key, value)) = keys.peek() {
                    let size = 20 + key.len() + value.as_ref().map_or(0, |value| value.len());
                    if !entries.is_empty() && bytes + size > bytes_max {
                        break;
                    }
                    bytes += size;
                    entries.push((key.clone(), value.clone()));
                    keys.next();
                }
                return Some(ChangeChunk::Data(entries));
            }
            clients.peek()?;
            let mut sessions = Vec::new();
            while let Some(client) = clients.peek() {
                let session = self.sessions.get(client).cloned();
                let size = 8 + session.as_ref().map_or(0, session_bytes);
                if !sessions.is_empty() && bytes + size > bytes_max {
                    break;
                }
                bytes += size;
                sessions.push((*client, session));
                clients.next();
            }
            Some(ChangeChunk::Sessions(sessions))
        })
    }

    /// Applies one chunk written by [`KvStore::change_chunks`].
    pub fn restore_changes(&mut self, chunk: ChangeChunk) {
        match chunk {
            ChangeChunk::Data(entries) => {
                for (key, value) in entries {
                    match value {
                        Some(value) => self.put(key, value),
                        None => self.delete(&key),
                    };
                }
            }
            ChangeChunk::Sessions(sessions) => {
                for (client, session) in sessions {
                    if let Some(previous) = self.sessions.remove(&client) {
                        self.sessions_by_use.remove(&previous.last_used);
                    }
                    if let Some(session) = session {
                        self.restore_chunk(StoreChunk::Sessions(vec![(client, session)]));
                    }
                }
            }
        }
    }

    /// Bytes of keys and values held.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn set_applied_commands(&mut self, applied_commands: u64) {
        self.applied_commands = applied_commands;
    }

    /// Commands applied through `apply` (retries answered from the session table included).
    pub fn applied_commands(&self) -> u64 {
        self.applied_commands
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.data.get(key).map(|value| &**value)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn session_bytes(session: &Session) -> usize {
    48 + session.reply.as_ref().map_or(0, reply_bytes)
}

fn reply_bytes(reply: &Reply) -> usize {
    match reply {
        Reply::Value(Some(value)) => value.len(),
        Reply::Rejected(error) => error.to_string().len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(client_id: u64, seq: u64, op: Op) -> Command {
        Command { client_id, seq, op }
    }
    fn put(k: &str, v: &str) -> Op {
        Op::Put { key: k.into(), value: v.into() }
    }

    #[test]
    fn a_batch_is_described_by_its_first_commands_on_one_line() {
        use crate::paxos::messages::SlotValue;
        let batch = SlotValue::batch(vec![
            cmd(1, 1, put("a", "1")),
            cmd(1, 2, Op::Get { key: "b".into() }),
            cmd(2, 1, Op::Delete { key: "c".into() }),
            cmd(3, 1, put("d", "4")),
        ]);
        assert_eq!(batch.describe(), "PUT a=1, GET b, +2 more");
        let long = SlotValue::batch(vec![cmd(1, 1, put(&"k".repeat(100), "line\nbreak and more"))]);
        assert_eq!(long.describe(), "PUT kkkkkkkkkkkk…=line\\nbrea…");
        assert_eq!(SlotValue::Noop.describe(), "noop");
    }

    /// Chunks share their strings with the store, but files and peers hold
    /// them as plain strings: the encoding must be the same.
    #[test]
    fn chunks_encode_as_plain_strings() {
        use crate::wire;
        #[derive(Serialize)]
        enum PlainStoreChunk {
            Data(Vec<(String, String)>),
        }
        #[derive(Serialize)]
        enum PlainChangeChunk {
            Data(Vec<(String, Option<String>)>),
        }
        let long_key = "k".repeat(40);
        let store =
            StoreChunk::Data(vec![("a".into(), "1".into()), (long_key.as_str().into(), "x".repeat(300).into())]);
        let plain = PlainStoreChunk::Data(vec![("a".into(), "1".into()), (long_key.clone(), "x".repeat(300))]);
        assert_eq!(wire::encode(&store), wire::encode(&plain));
        let changes = ChangeChunk::Data(vec![("a".into(), Some("1".into())), (long_key.as_str().into(), None)]);
        let plain = PlainChangeChunk::Data(vec![("a".into(), Some("1".into())), (long_key, None)]);
        assert_eq!(wire::encode(&changes), wire::encode(&plain));
        assert_eq!(wire::decode::<StoreChunk>(&wire::encode(&store)).unwrap(), store);
    }

    #[test]
    fn put_get_delete() {
        let mut kv = KvStore::default();
        assert_eq!(kv.apply(&cmd(1, 1, put("a", "1"))), Reply::Stored);
        assert_eq!(kv.apply(&cmd(1, 2, Op::Get { key: "a".into() })), Reply::Value(Some("1".into())));
        assert_eq!(kv.apply(&cmd(1, 3, Op::Delete { key: "a".into() })), Reply::Deleted { existed: true });
        assert_eq!(kv.apply(&cmd(1, 4, Op::Delete { key: "a".into() })), Reply::Deleted { existed: false });
        assert_eq!(kv.apply(&cmd(1, 5, Op::Get { key: "a".into() })), Reply::Value(None));
    }

    #[test]
    fn a_retried_request_is_answered_as_the_first_time_and_applied_once() {
        let mut kv = KvStore::default();
        kv.apply(&cmd(1, 1, put("a", "1")));
        kv.apply(&cmd(2, 1, put("a", "2")));
        // Client 1 retries seq 1: must not overwrite client 2's later write.
        assert_eq!(kv.apply(&cmd(1, 1, put("a", "1"))), Reply::Stored);
        assert_eq!(kv.get("a"), Some("2"));
        kv.apply(&cmd(1, 2, Op::Delete { key: "a".into() }));
        assert_eq!(kv.apply(&cmd(1, 2, Op::Delete { key: "a".into() })), Reply::Deleted { existed: true });
        assert_eq!(kv.apply(&cmd(1, 1, put("a", "1"))), Reply::Rejected(RequestError::StaleRequest));
        assert!(kv.get("a").is_none());
    }

    #[test]
    fn changes_name_every_key_and_session_touched_and_replay_onto_an_older_copy() {
        let mut kv = KvStore::default();
        for client in 0..SESSIONS_MAX as u64 {
            kv.apply(&cmd(client, 1, Op::Get { key: "a".into() }));
        }
        kv.apply(&cmd(7, 2, put("gone", "soon")));
        let older = kv.clone();
        let mut changes = Changes::default();
        kv.apply_noting(&cmd(7, 3, put("a", "1")), Some(&mut changes));
        kv.apply_noting(&cmd(7, 4, Op::Delete { key: "gone".into() }), Some(&mut changes));
        // A new client when the table is full evicts the idlest (client 0).
        kv.apply_noting(&cmd(SESSIONS_MAX as u64, 1, put("b", "2")), Some(&mut changes));
        let latest = |changes: &Changes| -> Vec<(String, Option<String>)> {
            changes
                .latest()
                .iter()
                .map(|(key, value)| (key.to_string(), value.as_ref().map(|v| v.to_string())))
                .collect()
        };
        let expected = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
            pairs.iter().map(|(key, value)| (key.to_string(), value.map(str::to_string))).collect()
        };
        assert_eq!(latest(&changes), expected(&[("a", Some("1")), ("b", Some("2")), ("gone", None)]));
        // A key written again, and again in a later list absorbed over it: the last write is what counts.
        let mut later = Changes::default();
        kv.apply_noting(&cmd(7, 5, put("a", "3")), Some(&mut changes));
        kv.apply_noting(&cmd(7, 6, put("gone", "back")), Some(&mut later));
        kv.apply_noting(&cmd(7, 7, put("a", "4")), Some(&mut later));
        later.absorb(changes);
        let changes = later;
        assert_eq!(latest(&changes), expected(&[("a", Some("4")), ("b", Some("2")), ("gone", Some("back"))]));
        assert_eq!(changes.sorted_clients(), [0, 7, SESSIONS_MAX as u64]);

        let mut replayed = older;
        for chunk in kv.change_chunks(&changes, 40) {
            replayed.restore_changes(chunk);
        }
        replayed.set_applied_commands(kv.applied_commands());
        assert_eq!(replayed, kv, "the older copy with the changes applied is the store");
        assert!(!replayed.sessions.contains_key(&0), "the evicted session is gone from the copy too");
    }

    #[test]
    fn a_retried_read_reads_again_and_no_value_read_is_kept_in_the_session_table() {
        let mut kv = KvStore::default();
        kv.apply(&cmd(1, 1, put("a", &"x".repeat(1_000))));
        let read = cmd(2, 1, Op::Get { key: "a".into() });
        assert_eq!(kv.apply(&read), Reply::Value(Some("x".repeat(1_000))));
        assert_eq!(kv.sessions[&2].reply, None, "a read's value must not be cached");
        kv.apply(&cmd(1, 2, put("a", "y")));
        // The retry lands later in the log: it reads what is there now.
        assert_eq!(kv.apply(&read), Reply::Value(Some("y".into())));
        assert_eq!(kv.apply(&cmd(2, 0, Op::Get { key: "a".into() })), Reply::Rejected(RequestError::StaleRequest));
    }

    fn random_store(rng: &mut impl rand::Rng) -> KvStore {
        let commands = rng.random_range(0..300);
        let mut kv = KvStore::default();
        for seq in 1..=commands as u64 {
            let key = format!("k{}", rng.random_range(0..60));
            let op = match rng.random_range(0..4) {
                0 => Op::Delete { key },
                1 => Op::Get { key },
                _ => put(&key, &"v".repeat(rng.random_range(0..30))),
            };
            kv.apply(&cmd(rng.random_range(0..25), seq, op));
        }
        kv
    }

    #[test]
    fn a_snapshot_written_over_any_store_chunk_by_chunk_becomes_that_snapshot_even_after_a_dropped_transfer() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut held = random_store(&mut rng);
            let abandoned = random_store(&mut rng);
            let snapshot = random_store(&mut rng);
            let chunk_bytes = rng.random_range(1..400);
            // A transfer dropped part-way leaves a mix; a whole one from the start mends it.
            let mut cursor = Some(StoreCursor::Start);
            for _ in 0..rng.random_range(0..4) {
                let Some(after) = cursor.take() else { break };
                let (chunk, next) = abandoned.chunk_after(&after, chunk_bytes);
                held.replace_range(&after, chunk, next.as_ref());
                cursor = next;
            }
            let mut cursor = Some(StoreCursor::Start);
            while let Some(after) = cursor.take() {
                let (chunk, next) = snapshot.chunk_after(&after, chunk_bytes);
                held.replace_range(&after, chunk, next.as_ref());
                cursor = next;
            }
            held.set_applied_commands(snapshot.applied_commands());
            assert_eq!(held, snapshot, "seed {seed}: keys, sessions, their use index and byte count");
        }
    }
}
