//! TCP between replicas: one outbound link per peer, which connects, says
//! hello, reconnects with backoff and writes queued envelopes in batches. It
//! never interprets a message, and a dead peer never blocks a role: sends go
//! to a bounded queue and are dropped when it is full (Paxos tolerates loss).

use crate::config::Protocol;
use crate::mailbox::{Full, Mailbox};
use crate::paxos::NodeId;
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
const BATCH_ENVELOPES_MAX: usize = 4_096;
const BACKOFF_MS_MIN: u64 = 20;
const BACKOFF_MS_MAX: u64 = 500;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PeerLink<T> {
    peer: NodeId,
    queue: Arc<Mailbox<T>>,
}

impl<T> PeerLink<T> {
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

/// Starts the writer thread of the link from `self_id` to `peer`.
pub fn spawn_link<T: Serialize + Send + 'static>(
    self_id: NodeId,
    protocol: Protocol,
    peer: NodeId,
    addr: SocketAddr,
    connected: Connected,
) -> PeerLink<T> {
    let queue = Arc::new(Mailbox::new(LINK_QUEUE_MAX));
    let link_queue = queue.clone();
    thread::Builder::new()
        .name(format!("s{self_id}/link-{peer}"))
        .spawn(move || run_link(self_id, protocol, peer, addr, &link_queue, connected))
        .expect("spawning a link thread");
    PeerLink { peer, queue }
}

fn connect(self_id: NodeId, protocol: Protocol, addr: SocketAddr) -> std::io::Result<BufWriter<TcpStream>> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = BufWriter::with_capacity(256 * 1024, stream);
    wire::write_frame(&mut writer, &Hello::new(Speaker::Replica { node_id: self_id, protocol }))?;
    writer.flush()?;
    Ok(writer)
}

fn run_link<T: Serialize>(
    self_id: NodeId,
    protocol: Protocol,
    peer: NodeId,
    addr: SocketAddr,
    queue: &Mailbox<T>,
    connected: Connected,
) -> ! {
    let mut writer: Option<BufWriter<TcpStream>> = None;
    let mut backoff_ms = BACKOFF_MS_MIN;
    let mut failures = 0u64;
    let mut batch = VecDeque::new();
    loop {
        if writer.is_none() {
            match connect(self_id, protocol, addr) {
                Ok(w) => {
                    info!("connected to replica {peer} at {addr}");
                    connected.lock().unwrap().insert(peer);
                    writer = Some(w);
                    backoff_ms = BACKOFF_MS_MIN;
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        warn!("cannot reach replica {peer} at {addr}: {e}; retrying with backoff");
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
        if batch.is_empty() && queue.take_all(&mut batch, Instant::now() + Duration::from_millis(500)) == 0 {
            continue;
        }
        let w = writer.as_mut().expect("connected above");
        let mut result = Ok(());
        while !batch.is_empty() && result.is_ok() {
            let frame: Vec<T> = batch.drain(..batch.len().min(BATCH_ENVELOPES_MAX)).collect();
            result = wire::write_frame(w, &frame);
        }
        batch.clear();
        if let Err(e) = result.and_then(|()| w.flush()) {
            warn!("lost connection to replica {peer}: {e}");
            connected.lock().unwrap().remove(&peer);
            writer = None;
        }
    }
}
