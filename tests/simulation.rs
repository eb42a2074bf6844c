//! Deterministic simulation of sans-IO replicas (see `paxos_kv::sim`).

use paxos_kv::sim::{self, SimConfig};

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
