//! TCP between replicas: one outbound link per peer, which connects, says
//! hello, reconnects with backoff and writes queued envelopes in batches. It
//! never interprets a message, and a dead peer never blocks a role: sends go
//! to a bounded queue and are dropped when it is full (Paxos tolerates loss).

use crate::paxos::{Envelope, NodeId};
use crate::wire::{self, Hello, Speaker};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{debug, info, warn};
use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const LINK_QUEUE_MAX: usize = 100_000;
const BATCH_ENVELOPES_MAX: usize = 4_096;
const BACKOFF_MS_MIN: u64 = 20;
const BACKOFF_MS_MAX: u64 = 1_000;
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct PeerLink {
    tx: Sender<Envelope>,
}

impl PeerLink {
    /// Queues an envelope; returns false if it was dropped.
    pub fn send(&self, envelope: Envelope) -> bool {
        match self.tx.try_send(envelope) {
            Ok(()) => true,
            Err(TrySendError::Full(e)) => {
                debug!("queue to replica {} full; dropping {}", e.to, e.msg.kind());
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Peers this replica currently holds an open outbound connection to.
pub type Connected = Arc<Mutex<BTreeSet<NodeId>>>;

pub fn spawn_link(self_id: NodeId, peer: NodeId, addr: SocketAddr, connected: Connected) -> PeerLink {
    let (tx, rx) = crossbeam_channel::bounded(LINK_QUEUE_MAX);
    thread::Builder::new()
        .name(format!("s{self_id}/link-{peer}"))
        .spawn(move || run_link(self_id, peer, addr, rx, connected))
        .expect("spawning a link thread");
    PeerLink { tx }
}

fn connect(self_id: NodeId, addr: SocketAddr) -> std::io::Result<BufWriter<TcpStream>> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut writer = BufWriter::with_capacity(256 * 1024, stream);
    wire::write_frame(&mut writer, &Hello::new(Speaker::Replica { node_id: self_id }))?;
    writer.flush()?;
    Ok(writer)
}

fn run_link(self_id: NodeId, peer: NodeId, addr: SocketAddr, rx: Receiver<Envelope>, connected: Connected) {
    let mut writer: Option<BufWriter<TcpStream>> = None;
    let mut backoff_ms = BACKOFF_MS_MIN;
    let mut failures = 0u64;
    loop {
        if writer.is_none() {
            match connect(self_id, addr) {
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
                    // Wait out the backoff while dropping what queues up:
                    // stale protocol messages are useless after a reconnect.
                    match rx.recv_timeout(Duration::from_millis(backoff_ms)) {
                        Err(RecvTimeoutError::Disconnected) => return,
                        _ => while rx.try_recv().is_ok() {},
                    }
                    backoff_ms = (backoff_ms * 2).min(BACKOFF_MS_MAX);
                    continue;
                }
            }
        }
        let first = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(envelope) => envelope,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        while batch.len() < BATCH_ENVELOPES_MAX {
            match rx.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(_) => break,
            }
        }
        let w = writer.as_mut().expect("connected above");
        if let Err(e) = wire::write_frame(w, &batch).and_then(|()| w.flush()) {
            warn!("lost connection to replica {peer}: {e}");
            connected.lock().unwrap().remove(&peer);
            writer = None;
        }
    }
}
