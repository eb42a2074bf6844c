//! The random-failure thread of an acceptor (or, under 2PC, a participant).
//! It only sends offline and restart commands to that role's thread; it never
//! touches role state. Gaps between failures are
//! exponential with mean `mtbf_ms`; downtimes are exponential with mean
//! `downtime_ms`. One seed (mixed with the replica id) decides the schedule.

use crate::config::FailureConfig;
use crate::paxos::NodeId;
use log::info;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::thread;
use std::time::Duration;

/// Draws from an exponential distribution with the given mean, capped at
/// ten means so one unlucky draw cannot stall a run.
pub fn exponential_ms(rng: &mut StdRng, mean_ms: u64) -> u64 {
    let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
    ((-uniform.ln()) * mean_ms as f64).min(10.0 * mean_ms as f64).max(1.0) as u64
}

/// The failure schedule of one replica: (up for, down for) pairs in ms.
pub fn schedule(id: NodeId, config: &FailureConfig) -> impl Iterator<Item = (u64, u64)> {
    let mut rng = StdRng::seed_from_u64(config.seed ^ (u64::from(id) << 32));
    let mtbf = config.mtbf_ms.unwrap_or(u64::MAX / 16);
    let downtime = config.downtime_ms;
    (0..config.failures_max).map(move |_| (exponential_ms(&mut rng, mtbf), exponential_ms(&mut rng, downtime)))
}

/// `set_offline(true)` takes the role offline, `set_offline(false)` restarts it.
pub fn run(id: NodeId, config: FailureConfig, set_offline: impl Fn(bool)) {
    info!(
        "failure thread on: mtbf {:?} ms, mean downtime {} ms, seed {}, mode {:?}, at most {} failures",
        config.mtbf_ms, config.downtime_ms, config.seed, config.mode, config.failures_max
    );
    for (up_ms, down_ms) in schedule(id, &config) {
        thread::sleep(Duration::from_millis(up_ms));
        info!("FAILURE injected: acceptor down for {down_ms} ms");
        set_offline(true);
        thread::sleep(Duration::from_millis(down_ms));
        set_offline(false);
    }
    info!("failure thread done after {} failures", config.failures_max);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FailMode;

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_replicas_differ() {
        let config = FailureConfig {
            mtbf_ms: Some(1_000),
            downtime_ms: 200,
            seed: 42,
            mode: FailMode::Durable,
            failures_max: 50,
        };
        let a: Vec<_> = schedule(1, &config).collect();
        assert_eq!(a, schedule(1, &config).collect::<Vec<_>>());
        assert_ne!(a, schedule(2, &config).collect::<Vec<_>>());
        assert_eq!(a.len(), 50);
        let mean_up = a.iter().map(|(up, _)| *up).sum::<u64>() / 50;
        assert!((300..3_000).contains(&mean_up), "mean gap {mean_up} ms is far from 1000");
    }
}
