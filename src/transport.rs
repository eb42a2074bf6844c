//! TCP between replicas: one outbound link per peer, which connects, says
//! hello, reconnects with backoff and writes queued envelopes in batches. It
//! never interprets a message, and a dead peer never blocks a role: sends go
//! to a bounded queue and are dropped when it is full (Paxos tolerates loss).
//!
//! A send that finds the link idle (nothing queued, the writer free, the
//! socket's send queue nearly empty) is written at once by the sending role:
//! on a small machine each thread woken on a write's path costs tens of
//! microseconds, and a link thread woken per message is one more on every hop.
//! The socket has room, so that write cannot block the role; anything else
//! waits for the link thread, which keeps the order: it takes from the queue
//! only while holding the writer.

use crate::config::Protocol;
use crate::mailbox::{Full, Mailbox, Weigh};
use crate::paxos::NodeId;
use crate::security::{self, ClientSecurity, Stream};
use crate::wire::{self, Hello, Speaker};
use log::{debug, info, warn};
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LINK_QUEUE_MAX: usize = 100_000;
const BACKOFF_MS_MIN: u64 = 20;
/// How long after start a peer that was never reached is just not up yet.
const PEER_STARTUP_GRACE: Duration = Duration::from_secs(10);
const BACKOFF_MS_MAX: u64 = 500;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle link sends an empty frame this often, so the peer can tell a
/// quiet link from a dead one (it closes links silent for 3 s).
const KEEPALIVE: Duration = Duration::from_secs(1);
/// A role writes a message itself only if it and what the socket still holds
/// fit in this much of the socket's send buffer; far below the buffer, so the
/// write never waits. Larger messages go through the link thread.
const DIRECT_SHARE_OF_SEND_BUFFER: usize = 4;

pub struct PeerLink<T> {
    peer: NodeId,
    queue: Arc<Mailbox<T>>,
    writer: Arc<Mutex<Option<LinkWriter>>>,
    connected: Connected,
    written_directly: AtomicU64,
}

/// An open connection to the peer, written by whoever holds it.
struct LinkWriter {
    stream: BufWriter<Stream>,
    /// Bytes a role may write at once (see `DIRECT_SHARE_OF_SEND_BUFFER`).
    direct_bytes_max: usize,
}

impl LinkWriter {
    /// Whether `bytes` more can be written without waiting on the socket.
    fn has_room_for(&self, bytes: usize) -> bool {
        unsent_bytes(self.stream.get_ref().tcp()).is_some_and(|unsent| unsent + bytes <= self.direct_bytes_max)
    }
}

/// Bytes in the socket's send queue: not yet sent or not yet acknowledged.
#[cfg(target_os = "linux")]
fn unsent_bytes(tcp: &TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut bytes: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int for a TCP socket we own.
    let result = unsafe { libc::ioctl(tcp.as_raw_fd(), libc::TIOCOUTQ, &mut bytes) };
    (result == 0).then_some(bytes.max(0) as usize)
}

#[cfg(not(target_os = "linux"))]
fn unsent_bytes(_: &TcpStream) -> Option<usize> {
    None
}

impl<T: Weigh + Serialize> PeerLink<T> {
    /// Writes an envelope now if the link is idle, else queues it; returns
    /// false if it was dropped.
    pub fn send(&self, envelope: T) -> bool {
        let envelope = match self.try_write_now(envelope) {
            Ok(()) => return true,
            Err(envelope) => envelope,
        };
        match self.queue.push(envelope) {
            Ok(()) => true,
            Err(Full(_)) => {
                debug!("queue to replica {} full; dropping a message", self.peer);
                false
            }
        }
    }

    /// Hands the envelope back unless it was written.
    fn try_write_now(&self, envelope: T) -> Result<(), T> {
        let Ok(mut held) = self.writer.try_lock() else { return Err(envelope) };
        let Some(writer) = held.as_mut() else { return Err(envelope) };
        if !self.queue.is_empty() || !writer.has_room_for(envelope.weight()) {
            return Err(envelope);
        }
        let written = wire::write_frame(&mut writer.stream, &std::slice::from_ref(&envelope))
            .and_then(|()| writer.stream.flush());
        if let Err(e) = written {
            // The stream may hold half a frame: it is closed, and the queued
            // envelope wakes the link thread to reconnect and send it.
            warn!("lost connection to replica {}: {e}", self.peer);
            self.connected.lock().unwrap().remove(&self.peer);
            *held = None;
            return Err(envelope);
        }
        self.written_directly.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Envelopes the senders wrote themselves.
    pub fn written_directly(&self) -> u64 {
        self.written_directly.load(Ordering::Relaxed)
    }
}

/// Peers this replica currently holds an open outbound connection to.
pub type Connected = Arc<Mutex<BTreeSet<NodeId>>>;

/// Who a link is from and to, and how it proves it.
pub struct LinkEnds {
    pub self_id: NodeId,
    pub protocol: Protocol,
    pub peer: NodeId,
    pub addr: SocketAddr,
    pub security: ClientSecurity,
}

/// How much a link holds and writes at once.
#[derive(Clone, Copy, Debug)]
pub struct LinkLimits {
    /// Bytes of envelopes waiting to be written; beyond it sends are dropped.
    pub queue_bytes_max: usize,
    /// Frames are cut at this many bytes (see `ServerConfig::link_frame_bytes`).
    pub frame_bytes: usize,
}

/// Starts the writer thread of the link between `ends`; it ends (closing its
/// connection) once the returned link is dropped.
pub fn spawn_link<T: Serialize + Weigh + Send + 'static>(
    ends: LinkEnds,
    limits: LinkLimits,
    connected: Connected,
) -> PeerLink<T> {
    let link = PeerLink {
        peer: ends.peer,
        queue: Arc::new(Mailbox::new(LINK_QUEUE_MAX, limits.queue_bytes_max)),
        writer: Arc::new(Mutex::new(None)),
        connected,
        written_directly: Default::default(),
    };
    let (queue, writer, connected) = (link.queue.clone(), link.writer.clone(), link.connected.clone());
    thread::Builder::new()
        .name(format!("s{}/link-{}", ends.self_id, ends.peer))
        .spawn(move || run_link(&ends, limits, &queue, &writer, connected))
        .expect("spawning a link thread");
    link
}

/// Takes the next frame's worth from the front of `batch`: envelopes whose
/// weights add up to at most `bytes_max`, or one heavier envelope alone.
pub fn next_frame<T: Weigh>(batch: &mut VecDeque<T>, bytes_max: usize) -> Vec<T> {
    let mut bytes = 0;
    let mut count = 0;
    for envelope in batch.iter() {
        let weight = envelope.weight();
        if count > 0 && bytes + weight > bytes_max {
            break;
        }
        bytes += weight;
        count += 1;
    }
    batch.drain(..count).collect()
}

/// Connects to `addr`, refusing a connection to itself: connecting to a
/// closed port in the ephemeral range can end in TCP's simultaneous open
/// with the very same port, which would then hold that port and keep the
/// replica that owns it from starting.
pub fn connect_tcp(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    if stream.local_addr()? == stream.peer_addr()? {
        // Reset rather than close: a closed socket would hold the port in TIME_WAIT.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        drop(stream);
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connected to itself; closed"));
    }
    Ok(stream)
}

/// Unacknowledged data older than this kills a replica link, so that a link
/// whose packets were lost in a partition reconnects at once when it heals,
/// instead of waiting out TCP's backed-off retransmissions (seconds); idle
/// links are probed as often.
pub const LINK_DEAD_AFTER: Duration = Duration::from_secs(3);

/// TCP keepalive and a bound on unacknowledged data, on both ends of a replica link.
pub fn watch_link(tcp: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    let probes = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    socket.set_tcp_keepalive(&probes)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(LINK_DEAD_AFTER))?;
    Ok(())
}

fn connect(ends: &LinkEnds) -> std::io::Result<LinkWriter> {
    let tcp = connect_tcp(ends.addr, Duration::from_millis(500))?;
    tcp.set_nodelay(true)?;
    watch_link(&tcp)?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    tcp.set_read_timeout(Some(WRITE_TIMEOUT))?;
    let direct_bytes_max = socket2::SockRef::from(&tcp).send_buffer_size()? / DIRECT_SHARE_OF_SEND_BUFFER;
    let stream = ends.security.wrap(tcp, &security::replica_name(ends.peer))?;
    let mut stream = BufWriter::with_capacity(256 * 1024, stream);
    let hello = Hello::new(Speaker::Replica { node_id: ends.self_id, protocol: ends.protocol });
    wire::write_frame(&mut stream, &hello)?;
    stream.flush()?;
    Ok(LinkWriter { stream, direct_bytes_max })
}

fn run_link<T: Serialize + Weigh>(
    ends: &LinkEnds,
    limits: LinkLimits,
    queue: &Arc<Mailbox<T>>,
    shared_writer: &Mutex<Option<LinkWriter>>,
    connected: Connected,
) {
    let (peer, addr) = (ends.peer, ends.addr);
    let mut backoff_ms = BACKOFF_MS_MIN;
    let mut failures = 0u64;
    let mut warned = false;
    let mut ever_connected = false;
    let started = Instant::now();
    let mut batch = VecDeque::new();
    // Only this thread's handle is left once the link was dropped.
    while Arc::strong_count(queue) > 1 {
        if shared_writer.lock().unwrap().is_none() {
            match connect(ends) {
                Ok(w) => {
                    info!("connected to replica {peer} at {addr}");
                    *shared_writer.lock().unwrap() = Some(w);
                    connected.lock().unwrap().insert(peer);
                    backoff_ms = BACKOFF_MS_MIN;
                    failures = 0;
                    warned = false;
                    ever_connected = true;
                }
                Err(e) => {
                    failures += 1;
                    // Peers of a cluster starting together come up over a
                    // few seconds: only a peer still missing after that, or
                    // one that was reached before, is worth a warning.
                    let expected = !ever_connected && started.elapsed() < PEER_STARTUP_GRACE;
                    if expected && failures == 1 {
                        info!("replica {peer} at {addr} is not up yet ({e}); retrying");
                    } else if !expected && !warned {
                        warn!("cannot reach replica {peer} at {addr}: {e}; retrying with backoff");
                        warned = true;
                    }
                    // Drop what could not be sent (the protocols retransmit
                    // what matters), then wait for the backoff or for new
                    // messages, which are kept for the next attempt.
                    batch.clear();
                    queue.take_all(&mut batch, Instant::now() + Duration::from_millis(backoff_ms));
                    backoff_ms = (backoff_ms * 2).min(BACKOFF_MS_MAX);
                    continue;
                }
            }
        }
        let idle = batch.is_empty() && !queue.wait_for_items(Instant::now() + KEEPALIVE);
        let mut held = shared_writer.lock().unwrap();
        let Some(w) = held.as_mut() else { continue };
        // Taken while holding the writer, so no role's direct write overtakes them.
        queue.take_all(&mut batch, Instant::now());
        let w = &mut w.stream;
        let mut result = if idle && batch.is_empty() { wire::write_frame(w, &Vec::<T>::new()) } else { Ok(()) };
        while !batch.is_empty() && result.is_ok() {
            result = wire::write_frame(w, &next_frame(&mut batch, limits.frame_bytes));
        }
        batch.clear();
        if let Err(e) = result.and_then(|()| w.flush()) {
            warn!("lost connection to replica {peer}: {e}");
            connected.lock().unwrap().remove(&peer);
            *held = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Op};
    use crate::paxos::messages::{Accept, Envelope, Message, SlotValue};
    use crate::paxos::Ballot;

    fn accept(slot: u64, value_bytes: usize) -> Envelope {
        let op = Op::Put { key: format!("k{slot}"), value: "v".repeat(value_bytes) };
        let value = SlotValue::batch(vec![Command { client_id: u64::MAX, seq: u64::MAX, op }]);
        Envelope {
            from: 1,
            to: 2,
            msg: Message::Accept(Accept { ballot: Ballot::new(u64::MAX >> 16, 9), slot, value }),
        }
    }

    #[test]
    fn frames_are_cut_by_encoded_bytes_and_a_weight_bounds_the_encoding() {
        let mut batch: VecDeque<Envelope> = (0..700).map(|slot| accept(slot, 60_000)).collect();
        let mut frames = 0;
        while !batch.is_empty() {
            let frame = next_frame(&mut batch, 1 << 20);
            let encoded = wire::frame(&frame).unwrap().len();
            assert!(encoded <= (1 << 20) + 4, "a frame of {encoded} bytes exceeds the 1 MiB cut");
            frames += 1;
        }
        assert!(frames >= 40, "700 values of 60 kB need at least 40 frames of 1 MiB, got {frames}");
        for bytes in [0, 1, 127, 128, 16_383, 16_384, 1 << 20] {
            let envelope = accept(u64::MAX, bytes);
            assert!(wire::encode(&envelope).len() <= envelope.weight(), "weight below the encoding at {bytes}");
        }
        let mut heavy: VecDeque<Envelope> = [accept(1, 2 << 20), accept(2, 10)].into();
        assert_eq!(next_frame(&mut heavy, 1 << 20).len(), 1, "a heavy envelope travels alone");
    }

    /// A link to a listener of this test; returns it once connected, with the
    /// accepted socket (the hello already read).
    fn connected_link(queue_bytes_max: usize) -> (PeerLink<Envelope>, std::io::BufReader<TcpStream>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ends = LinkEnds {
            self_id: 1,
            protocol: Protocol::Paxos,
            peer: 2,
            addr: listener.local_addr().unwrap(),
            security: ClientSecurity::Insecure,
        };
        let connected = Connected::default();
        let link = spawn_link(ends, LinkLimits { queue_bytes_max, frame_bytes: 1 << 20 }, connected.clone());
        let mut reader = std::io::BufReader::new(listener.accept().unwrap().0);
        let _: Hello = wire::read_frame(&mut reader, 1 << 20).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !connected.lock().unwrap().contains(&2) {
            assert!(Instant::now() < deadline, "the link never counted itself connected");
            thread::sleep(Duration::from_millis(5));
        }
        (link, reader)
    }

    #[test]
    fn envelopes_arrive_in_order_whether_the_sender_or_the_link_thread_writes_them() {
        let (link, mut reader) = connected_link(256 << 20);
        // Small envelopes go straight out while the link is idle; every 7th is
        // too large for that and queues, and the small ones after it queue
        // behind it until the link thread has written it.
        let sent: Vec<u64> = (0..3_000).collect();
        for &slot in &sent {
            assert!(link.send(accept(slot, if slot % 7 == 0 { 64 << 10 } else { 100 })));
        }
        let mut received = Vec::new();
        while received.len() < sent.len() {
            let frame: Vec<Envelope> = wire::read_frame(&mut reader, 16 << 20).unwrap();
            received.extend(frame.into_iter().map(|e| match e.msg {
                Message::Accept(accept) => accept.slot,
                other => panic!("unexpected {other:?}"),
            }));
        }
        assert_eq!(received, sent);
        let direct = link.written_directly();
        assert!(direct > 0 && direct < sent.len() as u64, "{direct} of {} written directly", sent.len());
    }

    #[test]
    fn a_peer_that_stops_reading_never_makes_a_sender_wait_on_its_socket() {
        let (link, _silent_reader) = connected_link(64 << 20);
        let mut longest = Duration::ZERO;
        let count = 4_000u64;
        for slot in 0..count {
            let started = Instant::now();
            link.send(accept(slot, 2_000));
            longest = longest.max(started.elapsed());
        }
        // 8 MB into a socket nobody reads fills its buffers: from then on a
        // write would wait out the write timeout, so the sender must queue.
        assert!(longest < WRITE_TIMEOUT, "a send waited {longest:?} for the socket");
        assert!(link.written_directly() < count, "every envelope was written by its sender");
    }

    #[test]
    fn a_dropped_link_ends_its_thread_and_closes_its_connection() {
        let (link, mut reader) = connected_link(1 << 20);
        drop(link);
        // Keepalives may still arrive; then the end of the stream.
        reader.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "the connection was not closed within 10 s");
            match std::io::Read::read(&mut reader, &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading the dropped link's connection: {e}"),
            }
        }
    }
}
