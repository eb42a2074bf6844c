//! How long the learner stands still in one step, measured on the learner
//! alone (no cluster, no other threads competing for the cores).
//!
//! Learner 1 holds KEYS keys of VALUE_BYTES bytes and applies DECISIONS
//! decisions, each a batch of BATCH PUTs to random keys, with the server's
//! snapshot settings: every snapshot it hands over pins the store version it
//! was taken from until a second thread has "written" it (dropped it), as the
//! server's snapshot writer does. Between decisions it serves learner 2, which
//! starts empty, one catch-up reply at a time: the chunks of a snapshot, then
//! the decisions since. Prints percentiles of each kind of step.
//!
//!     cargo run --release --example apply_steps -- [KEYS] [VALUE_BYTES] [BATCH] [DECISIONS]
//!
//! A benchmark, not a test: it prints figures and asserts nothing.

use paxos_kv::kv::{Command, KvStore, Op};
use paxos_kv::paxos::learner::{Learner, LearnerConfig, LearnerOutbox};
use paxos_kv::paxos::messages::{Decide, SlotValue, Snapshot};
use paxos_kv::paxos::{Envelope, Message};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Steps(Vec<Duration>);

impl Steps {
    fn time(&mut self, step: impl FnOnce()) {
        let started = Instant::now();
        step();
        self.0.push(started.elapsed());
    }

    fn print(mut self, what: &str) {
        if self.0.is_empty() {
            return println!("{what}: none");
        }
        self.0.sort();
        let at = |q: f64| self.0[((self.0.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
        println!(
            "{what} ({}): p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
            self.0.len(),
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
}

fn main() {
    let arg = |at: usize, default: u64| std::env::args().nth(at).map_or(default, |a| a.parse().expect("a number"));
    let (keys, value_bytes, batch, decisions) = (arg(1, 200_000), arg(2, 1024), arg(3, 32), arg(4, 20_000));
    let key = |k: u64| format!("key-{k:09}");
    let value = "v".repeat(value_bytes as usize);

    let mut store = KvStore::default();
    for k in 0..keys {
        store.execute(&Op::Put { key: key(k), value: value.clone() });
    }
    let mut config = LearnerConfig::for_cluster(vec![1, 2]);
    // As the server sets it with the default frame limits: a quarter of a link frame.
    config.catchup_bytes_max = 256 << 10;
    let mut leader = Learner::new(1, config.clone(), Snapshot { next_slot: 1, store });
    let mut lagging = Learner::new(2, config, Snapshot { next_slot: 0, store: KvStore::default() });
    let (to_writer, writer_jobs) = std::sync::mpsc::channel::<KvStore>();
    let writer = std::thread::spawn(move || writer_jobs.into_iter().for_each(drop));
    let keep_off_thread = |out: LearnerOutbox| -> Vec<Envelope> {
        if let Some(job) = out.snapshot {
            to_writer.send(job.snapshot.store).expect("writer runs");
        }
        out.retired_copies.into_iter().for_each(|copy| to_writer.send(copy).expect("writer runs"));
        out.messages
    };

    let (mut decided, mut served, mut received) = (Steps::default(), Steps::default(), Steps::default());
    let mut to_leader: Vec<Envelope> = Vec::new();
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut seq = 0;
    for slot in 1..=decisions {
        let commands = (0..batch)
            .map(|client| {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                seq += 1;
                Command { client_id: client, seq, op: Op::Put { key: key(random % keys), value: value.clone() } }
            })
            .collect();
        let decide = Message::Decide(Decide { slot, value: SlotValue::batch(commands) });
        let mut out = LearnerOutbox::default();
        decided.time(|| leader.on_message(2, decide, &mut out));
        keep_off_thread(out);

        // One catch-up exchange per decision: a request served, its reply received.
        if to_leader.is_empty() {
            let mut out = LearnerOutbox::default();
            lagging.on_tick(&mut out);
            to_leader = keep_off_thread(out);
        }
        for request in std::mem::take(&mut to_leader) {
            let mut out = LearnerOutbox::default();
            served.time(|| leader.on_message(request.from, request.msg, &mut out));
            for reply in keep_off_thread(out) {
                let mut out = LearnerOutbox::default();
                received.time(|| lagging.on_message(reply.from, reply.msg, &mut out));
                to_leader.extend(keep_off_thread(out));
            }
        }
    }
    drop(to_writer);
    writer.join().expect("writer ends");

    println!(
        "{decisions} decisions of {batch} PUTs ({value_bytes} B each) over {keys} keys; learner 2 at slot {}:",
        lagging.next_slot()
    );
    decided.print("  applying a decision");
    served.print("  serving a catch-up reply");
    received.print("  receiving one (a snapshot chunk or decisions)");
}
