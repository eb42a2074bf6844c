//! `client lesson amnesia`: on a real five-replica cluster of its own, a
//! fixed choreography of kills, freezes, restarts and writes after which one
//! log slot has been chosen two ways — when acceptors restart empty. With
//! `--durable` the same choreography ends with every replica equal.
//!
//! Why it is deterministic: after the first write only three replicas ever
//! saw it (the other two were dead), the leader that learned it is frozen,
//! and the two others restart empty (amnesia) or from their disks (durable).
//! The new majority is then built of replicas that know nothing of the write
//! (amnesia) or that must include one that remembers its vote (durable): two
//! majorities of five always share a replica, and that replica's memory is
//! the whole difference.

use crate::client::{self, Client, ClientOptions};
use crate::kv::Reply;
use crate::local_cluster::LocalCluster;
use crate::node::PaxosStatus;
use crate::security::{self, ClientSecurity};
use crate::timeline;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REPLICAS: usize = 5;
pub const KEY: &str = "lesson";
pub const FIRST: &str = "first";
pub const SECOND: &str = "second";

#[derive(Clone, Debug)]
pub struct LessonOptions {
    pub server_binary: PathBuf,
    /// Acceptors restart from their disks (safe) instead of empty.
    pub durable: bool,
    pub work_dir: PathBuf,
    /// Where the timelines go.
    pub out: PathBuf,
}

/// What one replica holds at the end.
#[derive(Clone, Debug)]
pub struct ReplicaView {
    pub id: usize,
    /// The value of `KEY` in its own store.
    pub value: Option<String>,
    /// What its learner says the contested slot holds.
    pub slot_holds: Option<String>,
    pub note: String,
}

#[derive(Debug)]
pub struct LessonOutcome {
    /// The slot the first write was chosen in.
    pub slot: u64,
    pub replicas: Vec<ReplicaView>,
    /// Every replica holds the same value for `KEY` and the same slot.
    pub agree: bool,
    pub timelines: Vec<PathBuf>,
}

/// What replica `id` says slot `slot` holds, if it still keeps it in view.
fn slot_holds(status: &PaxosStatus, slot: u64) -> Option<String> {
    status.recent_decisions.iter().find(|(s, _)| *s == slot).map(|(_, value)| value.clone())
}

fn local_value(cluster: &LocalCluster, id: usize, security: &ClientSecurity) -> Result<Option<String>> {
    match client::local_get(cluster.addrs[id - 1], KEY, Duration::from_secs(1), security) {
        Ok(Reply::Value(value)) => Ok(value),
        Ok(other) => bail!("s{id} answered {other:?}"),
        Err(e) => bail!("s{id} does not answer: {e}"),
    }
}

/// Waits until replica `id` has applied slot `slot`.
fn wait_applied(cluster: &LocalCluster, id: usize, slot: u64, security: &ClientSecurity) -> Result<PaxosStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(status) = cluster.paxos_status(id, security) {
            if status.learner_next_slot > slot {
                return Ok(status);
            }
        }
        if Instant::now() > deadline {
            bail!("s{id} did not apply slot {slot} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PUT through the replicas `among`. The client addresses replicas by id,
/// so the others keep their places in its list, at a port where nothing
/// listens (a frozen replica would hold a request until it wakes).
fn put(cluster: &LocalCluster, among: &[usize], value: &str, security: &ClientSecurity) -> Result<()> {
    let closed: std::net::SocketAddr = "127.0.0.1:1".parse().expect("a valid address");
    let addrs: Vec<_> =
        (1..=cluster.addrs.len()).map(|id| if among.contains(&id) { cluster.addrs[id - 1] } else { closed }).collect();
    let options = ClientOptions {
        timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(20),
        security: security.clone(),
        ..ClientOptions::default()
    };
    let mut client = Client::with_options(&addrs, options).map_err(|e| anyhow::anyhow!("{e}"))?;
    client.put(KEY, value).map_err(|e| anyhow::anyhow!("PUT {KEY}={value}: {e}"))
}

/// Renders slot `slot` from the traces of `ids` alone into `out`.
fn render_side(cluster_dir: &Path, ids: &[usize], slot: u64, out: &Path) -> Result<()> {
    let side = cluster_dir.join(format!("side-{}", ids.iter().map(|i| i.to_string()).collect::<String>()));
    std::fs::create_dir_all(&side)?;
    for id in ids {
        let name = format!("trace-{id}.jsonl");
        let _ = std::fs::copy(cluster_dir.join(&name), side.join(&name));
    }
    let round = timeline::load_traces(&side).and_then(|t| timeline::select(&t, &timeline::Selection::Slot(slot)))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, round.render_html()).with_context(|| format!("writing {}", out.display()))
}

/// Plays the choreography, telling each step through `say`.
pub fn run(options: &LessonOptions, say: &mut dyn FnMut(&str)) -> Result<LessonOutcome> {
    let certs = options.work_dir.join("certs");
    security::issue(&certs, REPLICAS as u32, &[])?;
    let security = ClientSecurity::from_dir(&certs)?;
    let cluster_dir = options.work_dir.join("cluster");
    let trace_arg = |id: usize| cluster_dir.join(format!("trace-{id}.jsonl")).display().to_string();
    let mut cluster = LocalCluster::new(&options.server_binary, &cluster_dir, &certs, REPLICAS, &[])?;
    for id in 1..=REPLICAS {
        cluster.start_replica(id, &["--cluster-state", "new", "--trace", &trace_arg(id)])?;
    }
    for id in 1..=REPLICAS {
        cluster.wait_listening(id, Duration::from_secs(10))?;
    }
    let all: Vec<usize> = (1..=REPLICAS).collect();
    let leader = cluster.wait_for_leader(&all, &security, Duration::from_secs(20))?;
    let others: Vec<usize> = all.iter().copied().filter(|&id| id != leader).collect();
    let (voters, absent) = ([others[0], others[1]], [others[2], others[3]]);
    let old_ballot = cluster.paxos_status(leader, &security)?.proposer.ballot;
    say(&format!(
        "1. Five replicas start; s{leader} is elected leader with ballot {old_ballot} (ballots read round.replica)."
    ));

    for id in absent {
        cluster.kill(id);
    }
    say(&format!("2. s{} and s{} crash (kill -9). Three of five remain: still a majority.", absent[0], absent[1]));

    let majority_then = [leader, voters[0], voters[1]];
    put(&cluster, &majority_then, FIRST, &security)?;
    // The leader answered once it applied the write; should leadership have
    // moved meanwhile, wait until the frozen-to-be replica applied it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while local_value(&cluster, leader, &security).ok().flatten().as_deref() != Some(FIRST) {
        if Instant::now() > deadline {
            bail!("s{leader} did not apply PUT {KEY}={FIRST} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let leader_status = cluster.paxos_status(leader, &security)?;
    let slot = leader_status.learner_next_slot.checked_sub(1).context("the leader applied nothing")?;
    let first_value = local_value(&cluster, leader, &security)?;
    let first_slot_holds = slot_holds(&leader_status, slot);
    say(&format!(
        "3. PUT {KEY}={FIRST} is chosen in slot {slot}: s{leader}, s{} and s{} accepted it with ballot {old_ballot}, \
         3 of 5, a majority. The client is told OK.",
        voters[0], voters[1]
    ));

    cluster.freeze(leader, true);
    say(&format!(
        "4. s{leader} freezes (SIGSTOP), still holding what it learned: slot {slot} = {}.",
        first_slot_holds.as_deref().unwrap_or("?")
    ));

    for id in voters {
        cluster.kill(id);
        if options.durable {
            cluster.start_replica(id, &["--cluster-state", "existing", "--trace", &trace_arg(id)])?;
        } else {
            // The unsafe act: a lost disk treated as a new replica. The product
            // refuses this (an empty directory needs `--rejoin`); the lesson
            // forces it to show why.
            cluster.wipe(id)?;
            cluster.start_replica(id, &["--cluster-state", "new", "--trace", &trace_arg(id)])?;
        }
    }
    if options.durable {
        say(&format!(
            "5. s{} and s{} crash and restart from their disks: each acceptor still knows it promised ballot \
             {old_ballot} and voted for slot {slot}.",
            voters[0], voters[1]
        ));
    } else {
        say(&format!(
            "5. s{} and s{} crash and restart EMPTY (amnesia): their acceptors forget their promise and their vote \
             for slot {slot}.",
            voters[0], voters[1]
        ));
    }
    for id in absent {
        cluster.start_replica(id, &["--cluster-state", "existing", "--trace", &trace_arg(id)])?;
    }
    say(&format!(
        "6. s{} and s{} come back from their disks; they never saw slot {slot}. s{leader} stays frozen.",
        absent[0], absent[1]
    ));

    let majority_now = [voters[0], voters[1], absent[0], absent[1]];
    for id in majority_now {
        cluster.wait_listening(id, Duration::from_secs(10))?;
    }
    let new_leader = cluster.wait_for_leader(&majority_now, &security, Duration::from_secs(30))?;
    let new_ballot = cluster.paxos_status(new_leader, &security)?.proposer.ballot;
    put(&cluster, &majority_now, SECOND, &security)?;
    let new_status = wait_applied(&cluster, new_leader, slot, &security)?;
    let now_holds = slot_holds(&new_status, slot).unwrap_or_else(|| "?".into());
    // Told from what happened, not from the mode.
    let reproposed = now_holds.contains(&format!("{KEY}={FIRST}"));
    say(&format!(
        "7. s{new_leader} is elected with ballot {new_ballot} and runs phase 1 (PREPARE) from slot {slot}. Its \
         majority's PROMISEs {}; then PUT {KEY}={SECOND} is chosen. Slot {slot} now holds: {now_holds}.",
        if reproposed {
            format!("include the vote for slot {slot} with ballot {old_ballot}, so it proposes that value again")
        } else {
            format!("report no vote for slot {slot}: nothing stops it from putting a new value there")
        }
    ));

    // Every live replica applied what the new majority decided.
    let decided_now = new_status.learner_next_slot - 1;
    let mut replicas = vec![ReplicaView {
        id: leader,
        value: first_value,
        slot_holds: first_slot_holds,
        note: "frozen since step 4 (read before it froze)".into(),
    }];
    for id in majority_now {
        let status = wait_applied(&cluster, id, decided_now, &security)?;
        replicas.push(ReplicaView {
            id,
            value: local_value(&cluster, id, &security)?,
            slot_holds: slot_holds(&status, slot),
            note: String::new(),
        });
    }

    let timelines = vec![
        options.out.join(format!("lesson-slot-{slot}-leader-s{leader}.html")),
        options.out.join(format!("lesson-slot-{slot}-new-majority.html")),
        options.out.join(format!("lesson-slot-{slot}-all.html")),
    ];
    render_side(&cluster_dir, &[leader], slot, &timelines[0])?;
    render_side(&cluster_dir, &majority_now, slot, &timelines[1])?;
    render_side(&cluster_dir, &all, slot, &timelines[2])?;

    // The frozen leader wakes: it either catches up (durable) or meets the
    // other value of its slot and stops.
    cluster.freeze(leader, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut woke = String::from("did not settle within 10 s");
    while Instant::now() < deadline {
        let log = std::fs::read_to_string(cluster.log_path(leader)).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("AGREEMENT VIOLATED")) {
            woke = format!("stopped: {}", line[line.find("AGREEMENT").unwrap_or(0)..].trim());
            break;
        }
        // Caught up: through the majority's last slot, with the same value in the contested one.
        let status = cluster.paxos_status(leader, &security).ok();
        let caught_up = status.as_ref().filter(|s| {
            s.learner_next_slot > decided_now && slot_holds(s, slot).as_deref() == Some(now_holds.as_str())
        });
        if let (Some(status), Ok(value)) = (caught_up, local_value(&cluster, leader, &security)) {
            woke = format!("caught up: {KEY}={}", value.as_deref().unwrap_or("(none)"));
            replicas[0].value = value;
            replicas[0].slot_holds = slot_holds(status, slot);
            replicas[0].note = "woke and caught up".into();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(&format!("8. s{leader} wakes (SIGCONT): {woke}."));

    let agree = replicas.windows(2).all(|w| w[0].value == w[1].value && w[0].slot_holds == w[1].slot_holds);
    Ok(LessonOutcome { slot, replicas, agree, timelines })
}

/// The closing explanation, tied to *Paxos Made Simple*.
pub fn explanation(outcome: &LessonOutcome, durable: bool) -> String {
    if durable {
        format!(
            "Every replica agrees: slot {} was chosen once. The two acceptors that restarted remembered their \
             promise and their vote, and any majority the new leader could gather had to include one of them \
             (two majorities of five share a replica). Its PROMISE carried the vote, and phase 2 re-proposed \
             that value. This is the rule of Paxos Made Simple (section 2.2): an acceptor must remember the \
             highest-numbered proposal it accepted and the highest prepare it answered, even if it fails and \
             restarts; section 2.5 adds that it records its response in stable storage before sending it, \
             which is what every acceptor here does (fsync before PROMISE or ACCEPTED).",
            outcome.slot
        )
    } else {
        format!(
            "Slot {} was chosen twice: once by s{}'s majority and again by the new one. The new majority shared \
             two replicas with the old one, but their acceptors had forgotten their vote, so their PROMISEs said \
             \"no value\", and the new leader was free to choose another. Paxos Made Simple (section 2.2) \
             requires that an acceptor remember the highest-numbered proposal it accepted and the highest \
             prepare it answered, even if it fails and restarts; that memory is what makes any two majorities \
             agree. Run it again with --durable: the same steps, acceptors that remember, and every replica \
             equal. (The product itself refuses to start a replica from an empty directory unless it rejoins \
             without voting until it is safe: see ./run_servers.sh rejoin.)",
            outcome.slot, outcome.replicas[0].id
        )
    }
}
