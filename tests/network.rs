//! Three replicas on three hosts: network namespaces joined by veth pairs to
//! a bridge (in a namespace of its own), TLS on, addresses 10.77.0.1-3. A
//! client runs in a fourth namespace. Partitions are made by taking a
//! replica's link down, and "bridge" partitions (two replicas that cannot
//! talk, both reaching the third) with blackhole routes. Needs root and
//! iproute2; without them it says why and skips.

mod support;

use paxos_kv::security;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REPLICAS: usize = 3;
const PORT: u16 = 5001;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn address(id: usize) -> String {
    format!("10.77.0.{id}:{PORT}")
}

/// The namespaces of one test run; deleted (with their links) on drop.
struct Hosts {
    prefix: String,
    created: Vec<String>,
}

impl Hosts {
    fn ns(&self, id: usize) -> String {
        format!("{}-{id}", self.prefix)
    }
    fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }
    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    fn create() -> Result<Hosts, String> {
        let mut hosts = Hosts { prefix: format!("pxkv{}", std::process::id()), created: Vec::new() };
        let bridge = hosts.bridge_ns();
        ip(&["netns", "add", &bridge])?;
        hosts.created.push(bridge.clone());
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        // Host 0 is the client's.
        for host in 0..=REPLICAS {
            let ns = if host == 0 { hosts.client_ns() } else { hosts.ns(host) };
            ip(&["netns", "add", &ns])?;
            hosts.created.push(ns.clone());
            let port = format!("p{host}");
            ip(&["-n", &bridge, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
            let octet = if host == 0 { 100 } else { host };
            ip(&["-n", &ns, "addr", "add", &format!("10.77.0.{octet}/24"), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// Takes replica `id`'s link down (`up == false`) or brings it back.
    fn link(&self, id: usize, up: bool) {
        ip(&["-n", &self.bridge_ns(), "link", "set", &format!("p{id}"), if up { "up" } else { "down" }]).unwrap();
    }

    /// Replicas `a` and `b` can no longer reach each other (`cut`), or can again.
    fn cut(&self, a: usize, b: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        ip(&["-n", &self.ns(a), "route", verb, "blackhole", &format!("10.77.0.{b}/32")]).unwrap();
        ip(&["-n", &self.ns(b), "route", verb, "blackhole", &format!("10.77.0.{a}/32")]).unwrap();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.created {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

struct Cluster<'a> {
    hosts: &'a Hosts,
    dir: PathBuf,
    certs: PathBuf,
    children: Vec<Option<Child>>,
    started: Vec<bool>,
}

impl<'a> Cluster<'a> {
    fn new(hosts: &'a Hosts, dir: &Path) -> Self {
        let certs = dir.join("certs");
        security::issue(&certs, REPLICAS as u32, &[]).unwrap();
        Cluster {
            hosts,
            dir: dir.to_path_buf(),
            certs,
            children: (0..REPLICAS).map(|_| None).collect(),
            started: vec![false; REPLICAS],
        }
    }

    fn servers(ids: &[usize]) -> String {
        ids.iter().map(|&id| address(id)).collect::<Vec<_>>().join(",")
    }

    fn start(&mut self, id: usize) {
        let state = if std::mem::replace(&mut self.started[id - 1], true) { "existing" } else { "new" };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("server-{id}.log")))
            .unwrap();
        let all: Vec<usize> = (1..=REPLICAS).collect();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.hosts.ns(id), env!("CARGO_BIN_EXE_server")])
            .args(["--id", &id.to_string(), "--replicas", &Self::servers(&all), "--listen", &address(id)])
            .args(["--cluster-state", state])
            .arg("--certs")
            .arg(&self.certs)
            .arg("--data-dir")
            .arg(self.dir.join(id.to_string()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[id - 1] = Some(child);
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) replica `id`; `ip netns exec` became the server.
    fn pause(&self, id: usize, pause: bool) {
        let pid = self.children[id - 1].as_ref().expect("started").id() as libc::pid_t;
        // SAFETY: a plain signal to a child process this test started.
        unsafe { libc::kill(pid, if pause { libc::SIGSTOP } else { libc::SIGCONT }) };
    }

    /// Connections in replica `id`'s namespace with bytes it has not read yet.
    fn unread_connections(&self, id: usize) -> usize {
        let Ok(out) = Command::new("ip").args(["netns", "exec", &self.hosts.ns(id), "cat", "/proc/net/tcp"]).output()
        else {
            return 0;
        };
        support::connections_with_unread_bytes(&String::from_utf8_lossy(&out.stdout), None)
    }

    fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs the client binary in the client's namespace against `ids`.
    fn client(&self, ids: &[usize], args: &[&str]) -> (i32, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.hosts.client_ns(), env!("CARGO_BIN_EXE_client")])
            .args(["--servers", &Self::servers(ids), "--certs"])
            .arg(&self.certs)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn put(&self, ids: &[usize], key: &str, value: &str, deadline_ms: u64) -> bool {
        self.client(ids, &["--deadline-ms", &deadline_ms.to_string(), "put", key, value]).0 == 0
    }

    /// `(leader id, its ballot)` as the replica `via` reports it, if it reports one leading.
    fn leader_seen_by(&self, via: usize) -> Option<(usize, String)> {
        let (_, out, _) = self.client(&[via], &["--timeout-ms", "500", "status"]);
        let row: Vec<&str> = out.lines().find(|l| l.starts_with('s'))?.split_whitespace().collect();
        // replica, address, state, acceptor, role, ballot, leader, ...
        (row.get(2) == Some(&"up")).then_some(())?;
        let leader = row.get(6)?.strip_prefix('s')?.parse().ok()?;
        Some((leader, row.get(5)?.to_string()))
    }

    /// The leader that every replica in `ids` reports, with the leader's own ballot.
    fn agreed_leader(&self, ids: &[usize]) -> Option<(usize, String)> {
        let views: Vec<_> = ids.iter().map(|&id| self.leader_seen_by(id)).collect::<Option<_>>()?;
        let leader = views[0].0;
        if !views.iter().all(|(l, _)| *l == leader) || !ids.contains(&leader) {
            return None;
        }
        let (_, ballot) = self.leader_seen_by(leader)?;
        Some((leader, ballot))
    }

    fn wait_for_leader(&self, ids: &[usize], timeout: Duration) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.agreed_leader(ids) {
                return found;
            }
            assert!(Instant::now() < deadline, "no leader agreed by {ids:?} within {timeout:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every replica holds the same value for `key` (`inspect` exits 0 and shows no DISAGREE).
    fn all_agree(&self, key: &str) -> bool {
        let all: Vec<usize> = (1..=REPLICAS).collect();
        let (code, out, _) = self.client(&all, &["inspect", key]);
        code == 0 && !out.contains("down")
    }

    /// The leader stays `leader` (same ballot) for `window`, while writes go on.
    fn assert_leader_stays(&self, leader: &(usize, String), window: Duration, what: &str) {
        let all: Vec<usize> = (1..=REPLICAS).collect();
        let until = Instant::now() + window;
        let mut n = 0;
        while Instant::now() < until {
            n += 1;
            assert!(self.put(&all, "steady", &n.to_string(), 4_000), "{what}: a write failed");
            let seen = self.leader_seen_by(leader.0);
            assert_eq!(seen.as_ref(), Some(leader), "{what}: the leadership changed");
        }
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The sockets as they stood, for diagnosis.
            for id in 1..=REPLICAS {
                if let Ok(out) = Command::new("ip").args(["netns", "exec", &self.hosts.ns(id), "ss", "-tni"]).output() {
                    let _ = std::fs::write(self.dir.join(format!("sockets-{id}.txt")), out.stdout);
                }
            }
            eprintln!("server logs kept in {}", self.dir.display());
        }
        for id in 1..=REPLICAS {
            self.kill(id);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_hosts_survive_a_leader_kill_partitions_and_heal_without_a_leader_change() {
    let hosts = match Hosts::create() {
        Ok(hosts) => hosts,
        Err(why) => {
            println!("skipped: network namespaces need root and iproute2 ({why})");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("paxos-kv-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = Cluster::new(&hosts, &dir);
    let all: Vec<usize> = (1..=REPLICAS).collect();
    for id in 1..=REPLICAS {
        cluster.start(id);
    }
    let leader = cluster.wait_for_leader(&all, Duration::from_secs(20));
    for i in 0..10 {
        assert!(cluster.put(&all, &format!("k{i}"), &format!("v{i}"), 5_000), "write k{i}");
    }

    // The leader dies: the others elect one and keep serving; it comes back and catches up.
    cluster.kill(leader.0);
    assert!(cluster.put(&all, "after-kill", "ok", 8_000), "no write after the leader was killed");
    cluster.start(leader.0);
    wait_until("the restarted replica to agree", Duration::from_secs(20), || cluster.all_agree("after-kill"));

    // A follower cut off: the majority serves, the minority refuses; on heal it
    // catches up and, thanks to pre-vote, the leader does not change.
    let leader = cluster.wait_for_leader(&all, Duration::from_secs(10));
    let follower = *all.iter().find(|&&id| id != leader.0).unwrap();
    hosts.link(follower, false);
    assert!(cluster.put(&all, "majority", "served", 5_000), "the majority must serve");
    assert!(!cluster.put(&[follower], "minority", "refused", 3_000), "a cut-off replica must refuse writes");
    // The partition lasts three seconds: several of its election timeouts, each a pre-vote nobody answers.
    std::thread::sleep(Duration::from_secs(3));
    hosts.link(follower, true);
    wait_until("the healed replica to hear the leader again", Duration::from_secs(20), || {
        cluster.leader_seen_by(follower).is_some_and(|(l, _)| l == leader.0)
    });
    wait_until("the healed replica to catch up", Duration::from_secs(20), || cluster.all_agree("majority"));
    cluster.assert_leader_stays(&leader, Duration::from_secs(3), "after the follower's partition healed");
    let (_, out, _) = cluster.client(&all, &["inspect", "minority"]);
    assert!(!out.contains("refused"), "the minority's write was applied: {out}");

    // A bridge partition: the leader and one follower cannot talk, both reach the third.
    let far = *all.iter().find(|&&id| id != leader.0 && id != follower).unwrap();
    hosts.cut(leader.0, far, true);
    cluster.assert_leader_stays(&leader, Duration::from_secs(4), "in a bridge partition");
    hosts.cut(leader.0, far, false);

    // The leader goes silent: clients move on within about an election timeout.
    hosts.link(leader.0, false);
    let began = Instant::now();
    assert!(cluster.put(&all, "leader-gone", "ok", 5_000), "clients must move on when the leader is cut off");
    println!("a write succeeded {:?} after the leader was cut off", began.elapsed());
    let others: Vec<usize> = all.iter().copied().filter(|&id| id != leader.0).collect();
    let new_leader = cluster.wait_for_leader(&others, Duration::from_secs(10));
    assert_ne!(new_leader.0, leader.0);
    hosts.link(leader.0, true);
    wait_until("the old leader to follow the new one", Duration::from_secs(20), || {
        cluster.leader_seen_by(leader.0).is_some_and(|(l, _)| l == new_leader.0)
    });
    wait_until("the old leader to catch up", Duration::from_secs(20), || cluster.all_agree("leader-gone"));
    cluster.assert_leader_stays(&new_leader, Duration::from_secs(3), "after the old leader's partition healed");

    // A leader frozen (as by SIGSTOP) and cut off from the others while they
    // elect another and take a write. It thaws still cut off, believing it
    // leads (its clock stood still), with reads waiting in its sockets: it must
    // not answer them from its own, older state.
    let frozen = new_leader.0;
    assert!(cluster.put(&all, "fresh", "old", 5_000));
    wait_until("every replica to hold the first value", Duration::from_secs(20), || cluster.all_agree("fresh"));
    cluster.pause(frozen, true);
    let others: Vec<usize> = all.iter().copied().filter(|&id| id != frozen).collect();
    others.iter().for_each(|&id| hosts.cut(frozen, id, true));
    assert!(cluster.put(&others, "fresh", "new", 10_000), "the others must elect a leader and serve");
    let answers: Vec<(i32, String, String)> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| cluster.client(&[frozen], &["--deadline-ms", "3000", "get", "fresh"])))
            .collect();
        wait_until("the reads to wait in the frozen replica's sockets", Duration::from_secs(10), || {
            cluster.unread_connections(frozen) >= 3
        });
        cluster.pause(frozen, false);
        readers.into_iter().map(|reader| reader.join().unwrap()).collect()
    });
    for (code, out, err) in &answers {
        assert!(out.trim() != "old", "a cut-off leader answered a read from its own state: {out}");
        println!("read at the thawed, cut-off leader: exit {code}, {} {}", out.trim(), err.trim());
    }
    others.iter().for_each(|&id| hosts.cut(frozen, id, false));
    wait_until("the thawed replica to catch up", Duration::from_secs(20), || cluster.all_agree("fresh"));
    for key in ["k0", "k9", "after-kill", "majority", "leader-gone"] {
        assert!(cluster.all_agree(key), "replicas disagree on {key}");
    }
}
