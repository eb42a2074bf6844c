//! How long the learner stands still applying one decision, measured on the
//! learner alone (no cluster, no other threads competing for the cores).
//!
//! A learner holding KEYS keys of VALUE_BYTES bytes applies DECISIONS
//! decisions, each a batch of BATCH PUTs to random keys, with the server's
//! snapshot settings: every snapshot it hands over pins the store version it
//! was taken from until a second thread has "written" it (dropped it), as the
//! server's snapshot writer does. Prints percentiles of the time of one step.
//!
//!     cargo run --release --example apply_steps -- [KEYS] [VALUE_BYTES] [BATCH] [DECISIONS]
//!
//! A benchmark, not a test: it prints figures and asserts nothing.

use paxos_kv::kv::{Command, KvStore, Op};
use paxos_kv::paxos::learner::{Learner, LearnerConfig, LearnerOutbox};
use paxos_kv::paxos::messages::{Decide, SlotValue, Snapshot};
use paxos_kv::paxos::Message;
use std::time::{Duration, Instant};

fn main() {
    let arg = |at: usize, default: u64| std::env::args().nth(at).map_or(default, |a| a.parse().expect("a number"));
    let (keys, value_bytes, batch, decisions) = (arg(1, 200_000), arg(2, 1024), arg(3, 32), arg(4, 20_000));
    let key = |k: u64| format!("key-{k:09}");
    let value = "v".repeat(value_bytes as usize);

    let mut store = KvStore::default();
    for k in 0..keys {
        store.execute(&Op::Put { key: key(k), value: value.clone() });
    }
    let mut learner = Learner::new(1, LearnerConfig::for_cluster(vec![1, 2, 3]), Snapshot { next_slot: 0, store });
    let (to_writer, writer_jobs) = std::sync::mpsc::channel::<Snapshot>();
    let writer = std::thread::spawn(move || writer_jobs.into_iter().for_each(drop));

    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut seq = 0;
    let mut steps = Vec::with_capacity(decisions as usize);
    for slot in 0..decisions {
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
        let started = Instant::now();
        learner.on_message(2, decide, &mut out);
        steps.push(started.elapsed());
        if let Some(job) = out.snapshot {
            to_writer.send(job.snapshot).expect("writer runs");
        }
    }
    drop(to_writer);
    writer.join().expect("writer ends");

    steps.sort();
    let at = |q: f64| steps[((steps.len() - 1) as f64 * q) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{decisions} decisions of {batch} PUTs ({value_bytes} B) over {keys} keys: step p50 {:.3} ms  p99 {:.3} ms  \
         p99.9 {:.3} ms  max {:.3} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(at(1.0))
    );
}
