//! TCP between replicas: one outbound link per peer, which connects, says
//! hello, reconnects with backoff and writes queued envelopes in batches. It
//! never interprets a message, and a dead peer never blocks a role: sends go
//! to a bounded queue and are dropped when it is full (Paxos tolerates loss).

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

pub struct PeerLink<T> {
    peer: NodeId,
    queue: Arc<Mailbox<T>>,
}

impl<T: Weigh> PeerLink<T> {
    /// Queues an envelope; returns false if it was dropped.
    pub fn send(&self, envelope: T) -> bool {
        match self.queue.push(envelope) {
            Ok(()) => true,
            Err(Full(_)) => {
                debug!("queue to replica {} full; dropping a message", self.peer);
                false
            }
        }
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

/// Starts the writer thread of the link between `ends`.
pub fn spawn_link<T: Serialize + Weigh + Send + 'static>(
    ends: LinkEnds,
    limits: LinkLimits,
    connected: Connected,
) -> PeerLink<T> {
    let queue = Arc::new(Mailbox::new(LINK_QUEUE_MAX, limits.queue_bytes_max));
    let link_queue = queue.clone();
    let peer = ends.peer;
    thread::Builder::new()
        .name(format!("s{}/link-{peer}", ends.self_id))
        .spawn(move || run_link(&ends, limits, &link_queue, connected))
        .expect("spawning a link thread");
    PeerLink { peer, queue }
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

fn connect(ends: &LinkEnds) -> std::io::Result<BufWriter<Stream>> {
    let tcp = connect_tcp(ends.addr, Duration::from_millis(500))?;
    tcp.set_nodelay(true)?;
    watch_link(&tcp)?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    tcp.set_read_timeout(Some(WRITE_TIMEOUT))?;
    let stream = ends.security.wrap(tcp, &security::replica_name(ends.peer))?;
    let mut writer = BufWriter::with_capacity(256 * 1024, stream);
    let hello = Hello::new(Speaker::Replica { node_id: ends.self_id, protocol: ends.protocol });
    wire::write_frame(&mut writer, &hello)?;
    writer.flush()?;
    Ok(writer)
}

fn run_link<T: Serialize + Weigh>(ends: &LinkEnds, limits: LinkLimits, queue: &Mailbox<T>, connected: Connected) -> ! {
    let (peer, addr) = (ends.peer, ends.addr);
    let mut writer: Option<BufWriter<Stream>> = None;
    let mut backoff_ms = BACKOFF_MS_MIN;
    let mut failures = 0u64;
    let mut warned = false;
    let mut ever_connected = false;
    let started = Instant::now();
    let mut batch = VecDeque::new();
    loop {
        if writer.is_none() {
            match connect(ends) {
                Ok(w) => {
                    info!("connected to replica {peer} at {addr}");
                    connected.lock().unwrap().insert(peer);
                    writer = Some(w);
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
        let idle = batch.is_empty() && queue.take_all(&mut batch, Instant::now() + KEEPALIVE) == 0;
        let w = writer.as_mut().expect("connected above");
        let mut result = if idle { wire::write_frame(w, &Vec::<T>::new()) } else { Ok(()) };
        while !batch.is_empty() && result.is_ok() {
            result = wire::write_frame(w, &next_frame(&mut batch, limits.frame_bytes));
        }
        batch.clear();
        if let Err(e) = result.and_then(|()| w.flush()) {
            warn!("lost connection to replica {peer}: {e}");
            connected.lock().unwrap().remove(&peer);
            writer = None;
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
}
