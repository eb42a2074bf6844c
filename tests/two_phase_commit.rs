//! The 2PC baseline with the real binaries: it needs every replica, and it
//! blocks when the coordinator is lost after its participants voted.

mod support;

use paxos_kv::client::ClientError;
use std::time::Duration;
use support::{wait_until, Cluster};

const SHORT: Duration = Duration::from_millis(2_500);

#[test]
fn one_participant_down_aborts_writes_cleanly_with_nothing_applied() {
    let mut cluster = Cluster::start_2pc("2pc-abort", 3, &[]);
    cluster.client().put("before", "1").unwrap();
    cluster.kill(3);
    match cluster.client_of(1, SHORT).put("during", "x") {
        Err(ClientError::Aborted(reason)) => assert!(reason.contains("3 did not vote"), "{reason}"),
        other => panic!("with a participant down, 2PC must abort; got {other:?}"),
    }
    cluster.start_replica(3);
    for id in 1..=3 {
        let mut client = cluster.client_of(id, SHORT);
        assert_eq!(client.get("during").unwrap(), None, "replica {id} applied an aborted write");
        assert_eq!(client.get("before").unwrap().as_deref(), Some("1"));
        assert_eq!(cluster.status_2pc(id).unwrap().prepared_count, 0, "replica {id} still holds a lock");
    }
    cluster.client().put("after", "2").unwrap();
}

#[test]
fn losing_the_coordinator_after_the_vote_blocks_participants_until_it_returns() {
    let mut cluster = Cluster::start_2pc("2pc-block", 3, &[&["--stall-coordinator", "after-vote-request"]]);
    cluster.client_of(2, SHORT).put("k", "old").unwrap();
    // Replica 1 coordinates this write, collects YES votes, and "crashes".
    assert!(cluster.client_of(1, Duration::from_millis(1_500)).put("k", "new").is_err());
    for id in 2..=3 {
        wait_until(&format!("replica {id} to block"), Duration::from_secs(10), || {
            cluster.status_2pc(id).is_ok_and(|s| s.prepared_count == 1 && s.prepared[0].1 == "k")
        });
    }
    cluster.kill(1);
    // Blocked: the participants voted YES and cannot decide alone.
    match cluster.client_of(2, Duration::from_millis(1_000)).get("k") {
        Err(ClientError::Blocked(_)) => {}
        other => panic!("a read of a locked key must block, not answer; got {other:?}"),
    }
    assert!(matches!(cluster.client_of(3, SHORT).put("k", "other"), Err(ClientError::Aborted(_))));
    assert_eq!(cluster.status_2pc(2).unwrap().prepared_count, 1, "still blocked while the coordinator is down");

    // The coordinator returns without a decision for the transaction: presumed abort, everywhere.
    cluster.set_replica_args(1, &[]);
    cluster.start_replica(1);
    for id in 1..=3 {
        wait_until(&format!("replica {id} to unblock"), Duration::from_secs(10), || {
            cluster.status_2pc(id).is_ok_and(|s| s.prepared_count == 0)
        });
        assert_eq!(cluster.client_of(id, SHORT).get("k").unwrap().as_deref(), Some("old"));
    }
}

#[test]
fn a_coordinator_restarted_after_its_decision_delivers_it_from_its_log() {
    let mut cluster = Cluster::start_2pc("2pc-redeliver", 3, &[&["--stall-coordinator", "after-decision"]]);
    // The decision (COMMIT) is durable at replica 1 but never sent.
    assert!(cluster.client_of(1, Duration::from_millis(1_500)).put("k", "committed").is_err());
    for id in 2..=3 {
        wait_until(&format!("replica {id} to block"), Duration::from_secs(10), || {
            cluster.status_2pc(id).is_ok_and(|s| s.prepared_count == 1)
        });
    }
    cluster.kill(1);
    cluster.set_replica_args(1, &[]);
    cluster.start_replica(1);
    for id in 1..=3 {
        wait_until(&format!("replica {id} to apply the recovered decision"), Duration::from_secs(10), || {
            cluster.status_2pc(id).is_ok_and(|s| s.prepared_count == 0)
        });
        assert_eq!(cluster.client_of(id, SHORT).get("k").unwrap().as_deref(), Some("committed"));
    }
}
