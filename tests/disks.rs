//! What happens to one replica's disk stays with that replica: real server
//! processes whose files are damaged, lost or full (see README, "Disks and
//! recovery").

mod support;

use paxos_kv::kv::Reply;
use paxos_kv::storage::EXIT_STORAGE;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{wait_until, Cluster};

fn flip_byte(path: &Path, offset: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x10;
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// Every running replica holds the same value for `key`.
fn wait_until_all_agree(cluster: &Cluster, key: &str, timeout: Duration) -> Reply {
    let mut agreed = None;
    wait_until(&format!("every replica to hold the same {key}"), timeout, || {
        let values = cluster.local_values(key);
        let first = values[0].clone();
        agreed = first.clone().ok();
        first.is_ok() && values.iter().all(|v| *v == first)
    });
    agreed.unwrap()
}

fn wait_until_rebuilt(cluster: &Cluster, id: usize, client: &mut paxos_kv::client::Client) {
    // A rebuilding replica votes again after it has seen an instance decided:
    // keep writing until it has.
    let mut n = 0;
    wait_until(&format!("replica {id} to finish rebuilding"), Duration::from_secs(30), || {
        n += 1;
        client.put("rebuild-probe", &n.to_string()).unwrap();
        cluster.status(id).is_ok_and(|s| !s.rebuilding)
    });
}

#[test]
fn a_flipped_byte_in_the_acceptor_log_stops_the_replica_untouched_and_rejoin_brings_it_back() {
    let mut cluster = Cluster::start("flip-log", 3, &[]);
    let mut client = cluster.client();
    for i in 0..60 {
        client.put(&format!("k{i}"), &format!("v{i}")).unwrap();
    }
    cluster.kill(2);
    let log = cluster.data_dir(2).join("acceptor.log");
    // The middle of the data, not of the zeros reserved after it.
    let data_end = std::fs::read(&log).unwrap().iter().rposition(|&b| b != 0).unwrap() + 1;
    let damaged = flip_byte(&log, data_end / 2);

    let (code, output) = cluster.start_replica_refused(2, &[]);
    assert_eq!(code, EXIT_STORAGE, "a replica with a corrupt log must refuse to start: {output}");
    assert!(output.contains("acceptor.log is corrupt at byte"), "the refusal must name the file: {output}");
    assert!(output.contains("--rejoin"), "the refusal must say how to recover: {output}");
    assert_eq!(std::fs::read(&log).unwrap(), damaged, "the damaged log must be left untouched");
    client.put("while-refused", "still served").unwrap();

    cluster.start_replica_with(2, &["--rejoin"]);
    assert!(cluster.status(2).unwrap().rebuilding, "a rejoined replica must not vote at once");
    wait_until_rebuilt(&cluster, 2, &mut client);
    for key in ["k0", "k59", "while-refused"] {
        assert!(matches!(wait_until_all_agree(&cluster, key, Duration::from_secs(20)), Reply::Value(Some(_))));
    }
    let aside = std::fs::read_dir(cluster.data_dir(2)).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    assert_eq!(std::fs::read(aside.join("acceptor.log")).unwrap(), damaged, "--rejoin keeps the evidence");
}

/// Both snapshot files: the whole store (`snapshot.bin`, written again once
/// the changes outgrow it) and the changes since (`snapshot.changes`).
#[test]
fn a_flipped_byte_in_a_snapshot_or_its_changes_is_refused_and_never_spreads() {
    let mut cluster = Cluster::start("flip-snapshot", 3, &["--snapshot-interval-slots", "5"]);
    let mut client = cluster.client();
    let snapshot = cluster.data_dir(3).join("snapshot.bin");
    let changes = cluster.data_dir(3).join("snapshot.changes");
    // Writing the same keys again and again makes the changes outgrow the store.
    for round in 0..20 {
        for i in 0..60 {
            client.put(&format!("k{i}"), &"x".repeat(200)).unwrap();
        }
        if snapshot.exists() && round > 0 {
            break;
        }
    }
    wait_until("replica 3 to write its whole store, then changes after it", Duration::from_secs(10), || {
        snapshot.exists() && changes.exists() && std::fs::metadata(&changes).unwrap().len() > 500
    });
    cluster.kill(3);
    for (file, name) in [(&snapshot, "snapshot.bin"), (&changes, "snapshot.changes")] {
        let intact = std::fs::read(file).unwrap();
        // A third of the way in: with whole records after it, never a torn end.
        let damaged = flip_byte(file, intact.len() / 3);
        let (code, output) = cluster.start_replica_refused(3, &[]);
        assert_eq!(code, EXIT_STORAGE, "{output}");
        assert!(output.contains(&format!("{name} is corrupt")), "{output}");
        assert_eq!(std::fs::read(file).unwrap(), damaged, "the damaged file is left as it was");
        std::fs::write(file, &intact).unwrap();
    }
    // The others never saw the damage: they agree with each other.
    for i in [0, 30, 59] {
        let values = cluster.local_values(&format!("k{i}"));
        assert_eq!(values[0], values[1]);
        assert_eq!(values[0], Ok(Reply::Value(Some("x".repeat(200)))));
    }
    // Undamaged again, the replica starts from its snapshot and changes and holds every key.
    cluster.start_replica(3);
    for i in [0, 30, 59] {
        assert_eq!(
            wait_until_all_agree(&cluster, &format!("k{i}"), Duration::from_secs(20)),
            Reply::Value(Some("x".repeat(200)))
        );
    }
}

/// Every replica holds the last acknowledged value of every key, and the
/// cluster answers it.
fn assert_holds(cluster: &Cluster, client: &mut paxos_kv::client::Client, acknowledged: &[String]) {
    for (i, value) in acknowledged.iter().enumerate() {
        let key = format!("k{i}");
        assert_eq!(client.get(&key).unwrap(), Some(value.clone()), "{key} after a restart");
    }
    for i in [0, acknowledged.len() / 2, acknowledged.len() - 1] {
        let expected = Reply::Value(Some(acknowledged[i].clone()));
        assert_eq!(wait_until_all_agree(cluster, &format!("k{i}"), Duration::from_secs(20)), expected);
    }
}

/// 16 KiB: a store of 300 keys is several 1 MiB chunks, so rewriting it takes several snapshots.
fn rewrite_value(i: usize, round: usize) -> String {
    format!("{i}-{round}-").chars().cycle().take(16 << 10).collect()
}

/// Writes every key once more, noting each value as it is acknowledged;
/// stops early once `stop` says so, and returns whether it did.
fn overwrite_all(
    client: &mut paxos_kv::client::Client,
    acknowledged: &mut [String],
    round: usize,
    mut stop: impl FnMut() -> bool,
) -> bool {
    for (i, last) in acknowledged.iter_mut().enumerate() {
        *last = rewrite_value(i, round);
        client.put(&format!("k{i}"), last).unwrap();
        if stop() {
            return true;
        }
    }
    false
}

/// Once the changes outgrow the store, each replica writes it anew in steps
/// (`snapshot.bin.next`, and the sets meanwhile in `snapshot.changes.next`).
/// The whole cluster killed with -9 while a rewrite is half done, and again
/// after rewrites finished, loses nothing acknowledged.
#[test]
fn the_whole_cluster_killed_in_the_middle_of_rewriting_a_store_loses_nothing() {
    const KEYS: usize = 300;
    let mut cluster = Cluster::start("rewrite", 3, &["--snapshot-interval-slots", "5"]);
    let mut client = cluster.client();
    let mut acknowledged: Vec<String> = (0..KEYS).map(|i| rewrite_value(i, 0)).collect();
    for (i, v) in acknowledged.iter().enumerate() {
        client.put(&format!("k{i}"), v).unwrap();
    }
    let rewriting = |cluster: &Cluster| (1..=3).find(|&id| cluster.data_dir(id).join("snapshot.bin.next").exists());
    let mut round = 0;
    let caught = loop {
        let mut caught = None;
        wait_until("a replica to be half way through rewriting its store", Duration::from_secs(90), || {
            round += 1;
            overwrite_all(&mut client, &mut acknowledged, round, || {
                caught = rewriting(&cluster);
                caught.is_some()
            })
        });
        let caught = caught.unwrap();
        cluster.kill(caught);
        if cluster.data_dir(caught).join("snapshot.bin.next").exists() {
            break caught;
        }
        // The rewrite finished between looking and killing: try again.
        cluster.start_replica(caught);
    };
    for id in (1..=3).filter(|&id| id != caught) {
        cluster.kill(id);
    }
    let log_before = cluster.log_len(caught);
    for id in 1..=3 {
        cluster.start_replica(id);
    }
    let mut client = cluster.client();
    assert_holds(&cluster, &mut client, &acknowledged);
    assert!(
        cluster.log_since(caught, log_before).contains("removing an unfinished rewrite of the store"),
        "replica {caught} was killed with snapshot.bin.next in place"
    );

    // Rewrites finish, and the files they leave are read back too.
    let logs_before: Vec<usize> = (1..=3).map(|id| cluster.log_len(id)).collect();
    let rewritten = |cluster: &Cluster| {
        (1..=3).any(|id| cluster.log_since(id, logs_before[id - 1]).contains("store file rewritten"))
    };
    wait_until("a replica to finish rewriting its store", Duration::from_secs(90), || {
        round += 1;
        overwrite_all(&mut client, &mut acknowledged, round, || false);
        rewritten(&cluster)
    });
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_replica(id);
    }
    let mut client = cluster.client();
    assert_holds(&cluster, &mut client, &acknowledged);
}

/// The scenario that chose one slot two ways: a replica that lost its data
/// directory must not vote before it is rebuilt.
#[test]
fn a_replica_that_lost_its_data_directory_cannot_vote_until_rebuilt() {
    let mut cluster = Cluster::start("lost-dir", 5, &[]);
    let mut client = cluster.client();
    client.put("x", "0").unwrap();
    cluster.kill(4);
    cluster.kill(5);
    client.put("x", "X").unwrap();
    cluster.pause(1, true);
    cluster.pause(2, true);
    cluster.kill(3);
    std::fs::remove_dir_all(cluster.data_dir(3)).unwrap();

    let (code, output) = cluster.start_replica_refused(3, &[]);
    assert_eq!(code, EXIT_STORAGE, "an empty data directory of an existing cluster must be refused: {output}");
    assert!(output.contains("--rejoin"), "{output}");
    cluster.start_replica_with(3, &["--rejoin"]);
    cluster.start_replica(4);
    cluster.start_replica(5);
    let mut rebuilt_side = cluster.client_with_deadline(Duration::from_secs(4));
    let attempt = rebuilt_side.put("x", "Y");
    assert!(attempt.is_err(), "a write was acknowledged by a majority that counted a replica with no state");

    cluster.pause(1, false);
    cluster.pause(2, false);
    cluster.wait_for_leader();
    let value = wait_until_all_agree(&cluster, "x", Duration::from_secs(30));
    assert!(
        value == Reply::Value(Some("X".into())) || value == Reply::Value(Some("Y".into())),
        "x must hold the acknowledged X or the later Y: {value:?}"
    );
    let mut client = cluster.client();
    client.put("x", "Z").unwrap();
    assert_eq!(wait_until_all_agree(&cluster, "x", Duration::from_secs(20)), Reply::Value(Some("Z".into())));
    wait_until_rebuilt(&cluster, 3, &mut client);
}

/// A full disk stops its replica with a clear message, the others carry on,
/// and once space returns it restarts with nothing acknowledged lost.
#[test]
fn a_full_disk_stops_its_replica_the_cluster_carries_on_and_it_comes_back() {
    let mount_point = std::env::temp_dir().join(format!("paxos-kv-full-disk-{}", std::process::id()));
    std::fs::create_dir_all(&mount_point).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount_point)
        .output()
        .is_ok_and(|out| out.status.success());
    if !mounted {
        println!("skipped: mounting a small tmpfs needs root and mount(8); this machine cannot");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _unmount = Unmount(mount_point.clone());

    let mut cluster = Cluster::start("full-disk", 3, &[]);
    cluster.kill(3);
    // Replica 3's data moves to the small disk.
    let small = mount_point.join("3");
    Command::new("cp").arg("-a").arg(cluster.data_dir(3)).arg(&small).status().unwrap();
    std::fs::remove_dir_all(cluster.data_dir(3)).unwrap();
    std::os::unix::fs::symlink(&small, cluster.data_dir(3)).unwrap();
    cluster.start_replica(3);

    let mut client = cluster.client();
    let value = "v".repeat(16 * 1024);
    let mut acknowledged = 0;
    // Up to 32 MB: replica 3's acceptor is asked for only some slots (a
    // majority is asked first), but its learner keeps every one.
    for i in 0..2_000 {
        client.put(&format!("k{i}"), &value).unwrap();
        acknowledged = i + 1;
        if cluster.status(3).is_err() {
            break;
        }
    }
    wait_until("replica 3 to stop on the full disk", Duration::from_secs(10), || cluster.status(3).is_err());
    let log = std::fs::read_to_string(cluster.log_path(3)).unwrap();
    let stopped = log.lines().find(|line| line.contains("FATAL")).unwrap_or_else(|| panic!("no FATAL line: {log}"));
    let why = ["acceptor log write failed", "cannot write a snapshot"];
    assert!(why.iter().any(|w| stopped.contains(w)), "the stop must say why: {stopped}");
    assert!(stopped.contains("No space left on device"), "the stop must name the cause: {stopped}");
    for i in acknowledged..acknowledged + 20 {
        client.put(&format!("k{i}"), &value).unwrap();
    }
    cluster.kill(3);

    let grown = Command::new("mount").args(["-o", "remount,size=64m"]).arg(&mount_point).status().unwrap();
    assert!(grown.success());
    cluster.start_replica(3);
    for i in [0, acknowledged - 1, acknowledged + 19] {
        let key = format!("k{i}");
        assert_eq!(wait_until_all_agree(&cluster, &key, Duration::from_secs(30)), Reply::Value(Some(value.clone())));
    }
}
