//! Deterministic simulation of sans-IO replicas (see `paxos_kv::sim`).

use paxos_kv::sim::paxos::{DiskFaultCounts, FlowCounts};
use paxos_kv::sim::{self, twopc, SimConfig};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_seeds(config: &SimConfig, seeds: std::ops::Range<u64>) {
    let (mut chosen, mut reads, mut partitions, mut freezes) = (0, 0, 0, 0);
    for seed in seeds {
        match sim::run(seed, config) {
            Ok(stats) => {
                chosen += stats.slots_chosen;
                reads += stats.reads_checked;
                partitions += stats.leader_partitions;
                freezes += stats.leader_freezes;
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    println!("{chosen} slots chosen, {reads} reads checked, {partitions} leaders cut off, {freezes} frozen");
    assert!(chosen > 0, "the simulation chose nothing: the checks would be vacuous");
    assert!(reads > 0, "no read was answered: linearizability went unchecked");
    assert!(partitions > 0, "no leader was ever cut off from the others");
    assert!(freezes > 0, "no leader was ever frozen");
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
    let config = SimConfig::profile("amnesia", 3).unwrap();
    let found = (0..300).find_map(|seed| sim::run(seed, &config).err().map(|v| (seed, v)));
    let (seed, violation) = found.expect("300 seeds with amnesiac acceptors and no violation: the checks are too weak");
    assert!(violation.contains("chosen two ways") || violation.contains("applied"), "{violation}");
    println!("amnesia found: {violation}");
    // The README tells students which seed to replay: it must be this one.
    let replay = format!("PAXOS_SIM_SEED={seed} PAXOS_SIM_REPLICAS=3 PAXOS_SIM_PROFILE=amnesia");
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(readme.contains(&replay), "README.md must name the seed the test finds: {replay}");
}

/// Whole replicas crash and their disks fail as real disks do: torn final
/// appends, lost un-synced writes, failing syncs (the replica stops), flipped
/// bits in a stopped replica's log or snapshot (it must refuse to start, not
/// forget), lost data directories (refused without `--rejoin`, rebuilt with
/// it). Agreement must hold throughout, every fault path must be reached.
#[test]
fn agreement_holds_under_disk_faults_and_every_fault_path_is_reached() {
    let mut reached = DiskFaultCounts::default();
    for (replicas, seeds) in [(3, 0..150), (5, 20_000..20_100)] {
        let config = SimConfig::profile("disk", replicas).unwrap();
        for seed in seeds {
            let stats = sim::run(seed, &config).unwrap_or_else(|violation| panic!("{violation}"));
            reached.add(&stats.disk);
        }
    }
    println!("disk fault paths reached: {reached:?}");
    assert!(reached.unreached().is_empty(), "never reached: {:?} ({reached:?})", reached.unreached());
}

/// A failure's message names its replay command, and the replay reproduces it.
/// Byte limits far below the data: promises, frames, catch-up replies and
/// snapshot transfers are all cut, lost and resumed in pieces. Agreement must
/// hold and every cut must be reached.
#[test]
fn agreement_holds_with_small_byte_limits_and_every_cut_is_reached() {
    let mut reached = FlowCounts::default();
    for (replicas, seeds) in [(3, 0..150), (5, 30_000..30_060)] {
        let config = SimConfig::profile("limits", replicas).unwrap();
        let mut chosen = 0;
        for seed in seeds {
            let stats = sim::run(seed, &config).unwrap_or_else(|violation| panic!("{violation}"));
            reached.add(&stats.flow);
            chosen += stats.slots_chosen;
        }
        assert!(chosen > 0, "nothing was chosen with {replicas} replicas");
    }
    println!("byte-limit cuts reached: {reached:?}");
    assert!(reached.unreached().is_empty(), "never reached: {:?} ({reached:?})", reached.unreached());
}

#[test]
fn a_failing_seed_replays_from_its_printed_command() {
    let config = SimConfig::profile("amnesia", 3).unwrap();
    let (seed, violation) = (0..300).find_map(|seed| sim::run(seed, &config).err().map(|v| (seed, v))).unwrap();
    assert!(violation.contains(&format!("PAXOS_SIM_SEED={seed} PAXOS_SIM_REPLICAS=3 PAXOS_SIM_PROFILE=amnesia")));
    let replayed = SimConfig::profile("amnesia", 3).unwrap();
    assert_eq!(sim::run(seed, &replayed).err(), Some(violation), "the replay must reproduce the failure exactly");
}

/// Replays one seed (0 by default):
/// PAXOS_SIM_SEED=N [PAXOS_SIM_REPLICAS=5] [PAXOS_SIM_PROFILE=default|amnesia|disk].
#[test]
fn replay_seed() {
    let seed = env_u64("PAXOS_SIM_SEED").unwrap_or(0);
    let replicas = env_u64("PAXOS_SIM_REPLICAS").unwrap_or(3) as usize;
    let profile = std::env::var("PAXOS_SIM_PROFILE").unwrap_or_else(|_| "default".into());
    let config = SimConfig::profile(&profile, replicas).unwrap_or_else(|| panic!("unknown profile {profile}"));
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
