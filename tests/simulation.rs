//! Deterministic simulation of sans-IO replicas (see `paxos_kv::sim`).

use paxos_kv::sim::{self, twopc, SimConfig};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_seeds(config: &SimConfig, seeds: std::ops::Range<u64>) {
    let mut chosen = 0;
    for seed in seeds {
        match sim::run(seed, config) {
            Ok(stats) => chosen += stats.slots_chosen,
            Err(violation) => panic!("{violation}"),
        }
    }
    assert!(chosen > 0, "the simulation chose nothing: the checks would be vacuous");
}

#[test]
fn three_replicas_keep_agreement_under_loss_duplication_delay_and_crashes() {
    run_seeds(&SimConfig::new(3), 0..500);
}

#[test]
fn five_replicas_keep_agreement_under_loss_duplication_delay_and_crashes() {
    run_seeds(&SimConfig::new(5), 10_000..10_500);
}

/// Acceptors that forget their promises and votes on restart (the course's
/// "won't have the same state") break agreement; the checker must see it.
#[test]
fn amnesiac_acceptors_break_agreement_within_a_bounded_number_of_seeds() {
    let mut config = SimConfig::new(3);
    config.amnesia = true;
    config.crash_per_10k_ticks = 200;
    config.downtime_ticks_max = 40;
    let found = (0..300).find_map(|seed| sim::run(seed, &config).err());
    let violation = found.expect("300 seeds with amnesiac acceptors and no violation: the checks are too weak");
    assert!(violation.contains("chosen two ways") || violation.contains("applied"), "{violation}");
    println!("amnesia found: {violation}");
}

/// Replays one seed (0 by default): PAXOS_SIM_SEED=N [PAXOS_SIM_REPLICAS=5] [PAXOS_SIM_AMNESIA=true].
#[test]
fn replay_seed() {
    let seed = env_u64("PAXOS_SIM_SEED").unwrap_or(0);
    let mut config = SimConfig::new(env_u64("PAXOS_SIM_REPLICAS").unwrap_or(3) as usize);
    config.amnesia = std::env::var("PAXOS_SIM_AMNESIA").is_ok_and(|v| v == "true");
    match sim::run(seed, &config) {
        Ok(stats) => println!("seed {seed}: ok {stats:?}"),
        Err(violation) => panic!("{violation}"),
    }
}

/// 2PC atomicity: every replica commits the same transactions, and none
/// applies one that was aborted, through loss, duplication, delay and crashes
/// of participants and coordinators.
#[test]
fn two_phase_commit_stays_atomic_under_loss_and_crashes() {
    let config = twopc::TwoPcSimConfig::new(3);
    let mut committed = 0;
    let mut aborted = 0;
    for seed in 0..300 {
        let stats = twopc::run(seed, &config).unwrap_or_else(|violation| panic!("{violation}"));
        committed += stats.committed;
        aborted += stats.aborted;
    }
    assert!(committed > 0 && aborted > 0, "committed {committed}, aborted {aborted}: the run must exercise both");
}

/// Replays one 2PC seed (0 by default): PAXOS_SIM_SEED=N.
#[test]
fn replay_twopc_seed() {
    let seed = env_u64("PAXOS_SIM_SEED").unwrap_or(0);
    match twopc::run(seed, &twopc::TwoPcSimConfig::new(env_u64("PAXOS_SIM_REPLICAS").unwrap_or(3) as usize)) {
        Ok(stats) => println!("seed {seed}: ok {stats:?}"),
        Err(violation) => panic!("{violation}"),
    }
}
