//! Frames and the codec: the only module that names bincode.
//!
//! A frame is a 4-byte big-endian body length, then a bincode body. The length
//! is checked against a maximum before anything is allocated for the body.

use crate::config::Protocol;
use crate::kv::{Command, Reply, RequestId};
use crate::node::NodeStatus;
use crate::paxos::NodeId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MAGIC: [u8; 4] = *b"PXKV";
pub const PROTOCOL_VERSION: u16 = 1;
pub const FRAME_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Hard cap on what the decoder may allocate, whatever a body claims inside.
const DECODE_BYTES_MAX: usize = 256 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// The first frame on every connection says who is speaking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 4],
    pub version: u16,
    pub speaker: Speaker,
}

impl Hello {
    pub fn new(speaker: Speaker) -> Self {
        Hello { magic: MAGIC, version: PROTOCOL_VERSION, speaker }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err(format!("bad magic {:?}", self.magic));
        }
        if self.version != PROTOCOL_VERSION {
            return Err(format!("protocol version {} (this server speaks {PROTOCOL_VERSION})", self.version));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Speaker {
    Client,
    /// A replica of a cluster running `protocol`; one of another protocol is refused.
    Replica {
        node_id: NodeId,
        protocol: Protocol,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    Execute(Command),
    Status,
    /// The replica's own copy of a key, outside the protocol: for checking
    /// that replicas agree, never a linearizable read.
    LocalGet {
        request_id: (u64, u64),
        key: String,
    },
    /// Several commands in one frame, each with its own request id (each on
    /// its own session, so that a retry of one never overtakes another):
    /// proposed together and answered by one `Replies` frame, by request id.
    ExecuteMany(Vec<Command>),
}

/// Commands one `ExecuteMany` frame may carry.
pub const PIPELINE_COMMANDS_MAX: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    Reply(Reply),
    Status(Box<NodeStatus>),
    /// The answers to an `ExecuteMany`, tagged with each command's request id.
    Replies(Vec<(RequestId, Reply)>),
}

/// Between replicas: every envelope queued for one peer since the last write.
pub type PeerFrame<T> = Vec<T>;

/// What a connection kept the reader waiting for when its deadline passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The first byte of a frame: the connection was idle.
    ForAFrame,
    /// The rest of a frame already begun.
    ForTheRest,
}

#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    Closed,
    TooLarge {
        bytes: usize,
        limit: usize,
    },
    Malformed(String),
    Io(io::Error),
    /// The peer was idle too long, or sent a frame too slowly.
    Deadline(Waited),
    /// Frames in flight on every connection together reached the replica's budget.
    OverBudget {
        limit: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed"),
            FrameError::TooLarge { bytes, limit } => write!(f, "frame of {bytes} bytes exceeds the limit of {limit}"),
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
            FrameError::Deadline(Waited::ForAFrame) => write!(f, "idle too long"),
            FrameError::Deadline(Waited::ForTheRest) => write!(f, "a frame arrived too slowly"),
            FrameError::OverBudget { limit } => {
                write!(f, "frames in flight on all connections reached the {limit}-byte budget")
            }
        }
    }
}

impl std::error::Error for FrameError {}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("encoding into a Vec cannot fail")
}

/// Appends the encoding of `value` to `buf`.
pub fn encode_into<T: Serialize>(value: &T, buf: &mut Vec<u8>) {
    bincode::serde::encode_into_std_write(value, buf, config()).expect("encoding into a Vec cannot fail");
}

/// Decodes a whole buffer; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    match bincode::serde::decode_from_slice(bytes, config()) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok((_, used)) => Err(FrameError::Malformed(format!("{} trailing bytes", bytes.len() - used))),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Encodes `value` as one frame (length prefix included). Callers bound what
/// they encode far below the prefix's 4 GiB; a frame beyond it is refused,
/// never truncated.
pub fn frame<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; 4];
    bincode::serde::encode_into_std_write(value, &mut bytes, config()).expect("encoding into a Vec cannot fail");
    let body = u32::try_from(bytes.len() - 4).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("a frame of {} bytes exceeds 4 GiB", bytes.len() - 4))
    })?;
    bytes[..4].copy_from_slice(&body.to_be_bytes());
    Ok(bytes)
}

pub fn write_frame<T: Serialize, W: Write>(writer: &mut W, value: &T) -> io::Result<()> {
    writer.write_all(&frame(value)?)
}

pub fn read_frame<T: DeserializeOwned, R: Read>(reader: &mut R, frame_bytes_max: usize) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    if let Err(e) = reader.read_exact(&mut prefix) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof { FrameError::Closed } else { FrameError::Io(e) });
    }
    let bytes = u32::from_be_bytes(prefix) as usize;
    if bytes > frame_bytes_max {
        return Err(FrameError::TooLarge { bytes, limit: frame_bytes_max });
    }
    let mut body = vec![0u8; bytes];
    reader.read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Malformed(format!("connection closed inside a {bytes}-byte frame"))
        } else {
            FrameError::Io(e)
        }
    })?;
    decode(&body)
}

/// Bytes of frames being read, shared by every connection of a replica.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Self {
        ByteBudget { used: AtomicUsize::new(0), limit }
    }

    fn take(&self, bytes: usize) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + bytes > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A reader whose next reads can be bounded in time.
pub trait TimedRead: Read {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bytes a read can return without touching the socket (no timeout needed then).
    fn buffered(&self) -> usize {
        0
    }
}

/// How long a connection may take: to start a frame, and to finish one once started.
#[derive(Clone, Copy, Debug)]
pub struct FrameDeadlines {
    pub idle: Duration,
    pub frame: Duration,
}

struct Held<'a> {
    budget: &'a ByteBudget,
    bytes: usize,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A read or write that ran out its socket timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The most a frame's body grows by per read: a peer that claims a large
/// frame must send it before the memory is taken.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Reads one frame within `deadlines`: the first byte within `idle`, the
/// whole frame within `frame` of its first byte, however the bytes dribble
/// in. The body buffer grows as bytes arrive, each byte counted against
/// `budget` until the frame is decoded, so declared lengths cost nothing.
pub fn read_frame_timed<T: DeserializeOwned, R: TimedRead>(
    reader: &mut R,
    frame_bytes_max: usize,
    deadlines: FrameDeadlines,
    budget: &ByteBudget,
) -> Result<T, FrameError> {
    let started = Instant::now();
    let mut deadline = started + deadlines.idle;
    let read_within = |reader: &mut R, buf: &mut [u8], deadline: Instant, waited: Waited| loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::Deadline(waited));
        }
        if reader.buffered() == 0 {
            reader.set_read_timeout(Some(left)).map_err(FrameError::Io)?;
        }
        match reader.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            // A TLS peer that closed without close_notify: between frames, just a close.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && waited == Waited::ForAFrame => return Ok(0),
            Err(e) => return Err(FrameError::Io(e)),
        }
    };
    let mut prefix = [0u8; 4];
    let mut have = 0;
    while have < 4 {
        let waited = if have == 0 { Waited::ForAFrame } else { Waited::ForTheRest };
        match read_within(reader, &mut prefix[have..], deadline, waited)? {
            0 if have == 0 => return Err(FrameError::Closed),
            0 => return Err(FrameError::Malformed("connection closed inside a length prefix".into())),
            n => {
                if have == 0 {
                    deadline = Instant::now() + deadlines.frame;
                }
                have += n;
            }
        }
    }
    let bytes = u32::from_be_bytes(prefix) as usize;
    if bytes > frame_bytes_max {
        return Err(FrameError::TooLarge { bytes, limit: frame_bytes_max });
    }
    let mut held = Held { budget, bytes: 0 };
    // Grown as bytes arrive, never to the size the prefix claims at once, and
    // zeroed only as far as it is read into (a fixed 64 KiB buffer zeroed
    // per frame cost the leader's connection threads a sixth of their time).
    let mut body = Vec::new();
    while body.len() < bytes {
        let start = body.len();
        body.resize(start + (bytes - start).min(READ_CHUNK_BYTES), 0);
        let n = read_within(reader, &mut body[start..], deadline, Waited::ForTheRest)?;
        body.truncate(start + n);
        if n == 0 {
            return Err(FrameError::Malformed(format!("connection closed inside a {bytes}-byte frame")));
        }
        if !budget.take(n) {
            return Err(FrameError::OverBudget { limit: budget.limit });
        }
        held.bytes += n;
    }
    decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Op;

    #[test]
    fn frames_round_trip() {
        let request = ClientRequest::Execute(Command { client_id: 7, seq: 9, op: Op::Get { key: "k".into() } });
        let bytes = frame(&request).unwrap();
        let decoded: ClientRequest = read_frame(&mut &bytes[..], 1024).unwrap();
        assert_eq!(decoded, request);
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading_the_body() {
        let bytes = u32::MAX.to_be_bytes();
        let result: Result<ClientRequest, _> = read_frame(&mut &bytes[..], 4 << 20);
        assert!(matches!(result, Err(FrameError::TooLarge { bytes: 4_294_967_295, .. })));
    }

    #[test]
    fn garbage_and_truncated_bodies_are_malformed_not_panics() {
        let mut garbage = 8u32.to_be_bytes().to_vec();
        garbage.extend([0xff; 8]);
        assert!(matches!(read_frame::<ClientRequest, _>(&mut &garbage[..], 1024), Err(FrameError::Malformed(_))));
        // A body claiming a huge string inside a small frame.
        let mut huge_claim = 10u32.to_be_bytes().to_vec();
        huge_claim.extend([0, 0, 0, 0, 252, 255, 255, 255, 127, 0]);
        assert!(read_frame::<ClientRequest, _>(&mut &huge_claim[..], 1024).is_err());
        let truncated = frame(&ClientRequest::Status).unwrap();
        let mut cut = truncated.clone();
        cut[3] += 5;
        assert!(matches!(read_frame::<ClientRequest, _>(&mut &cut[..], 1024), Err(FrameError::Malformed(_))));
        assert!(matches!(read_frame::<ClientRequest, _>(&mut &[][..], 1024), Err(FrameError::Closed)));
    }
}
