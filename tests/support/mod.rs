//! A cluster of real server processes on loopback for end-to-end tests.
//! Ports are free ones picked by the OS; every process is killed on drop,
//! also when a test panics.

#![allow(dead_code)]

use paxos_kv::client::{self, Client, ClientOptions};
use paxos_kv::node::{PaxosStatus, TwoPcStatus};
use paxos_kv::paxos::proposer::ProposerMode;
use paxos_kv::security::{self, ClientSecurity};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One certificate directory for every cluster of this test process: replica
/// `i` of each cluster holds `replica-i`'s certificate. It lives under Cargo's
/// temporary directory for tests; a static is never dropped, so the
/// directories of test processes that have ended are removed here instead.
pub fn certs_dir() -> &'static Path {
    static CERTS: OnceLock<PathBuf> = OnceLock::new();
    CERTS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ended = name
                .strip_prefix("certs-")
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if ended {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = root.join(format!("certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        security::issue(&dir, 7, &[]).expect("issue test certificates");
        dir
    })
}

pub fn client_security() -> ClientSecurity {
    static SECURITY: OnceLock<ClientSecurity> = OnceLock::new();
    SECURITY.get_or_init(|| ClientSecurity::from_dir(certs_dir()).expect("load the client certificate")).clone()
}

pub struct Cluster {
    pub addrs: Vec<SocketAddr>,
    pub dir: PathBuf,
    children: Vec<Option<Child>>,
    extra_args: Vec<String>,
    /// Flags for one replica only, replacing none of the shared ones.
    replica_args: Vec<Vec<String>>,
    /// Replicas started before: only a first start may create an empty state.
    started: Vec<bool>,
}

fn free_ports(n: usize) -> Vec<SocketAddr> {
    // Hold every listener until all are chosen so the ports differ.
    let listeners: Vec<_> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port")).collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    pub fn start(name: &str, n: usize, extra_args: &[&str]) -> Cluster {
        let cluster = Self::launch(name, n, extra_args);
        cluster.wait_for_leader();
        cluster
    }

    /// A two-phase-commit cluster; `replica_args[i]` goes to replica i+1 only.
    pub fn start_2pc(name: &str, n: usize, replica_args: &[&[&str]]) -> Cluster {
        let mut cluster = Self::launch_stopped(name, n, &["--protocol", "2pc"]);
        for (i, args) in replica_args.iter().enumerate() {
            cluster.replica_args[i] = args.iter().map(|s| s.to_string()).collect();
        }
        for id in 1..=n {
            cluster.start_replica(id);
        }
        cluster
    }

    fn launch(name: &str, n: usize, extra_args: &[&str]) -> Cluster {
        let mut cluster = Self::launch_stopped(name, n, extra_args);
        for id in 1..=n {
            cluster.start_replica(id);
        }
        cluster
    }

    fn launch_stopped(name: &str, n: usize, extra_args: &[&str]) -> Cluster {
        let dir = std::env::temp_dir().join(format!("paxos-kv-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Cluster {
            addrs: free_ports(n),
            dir,
            children: (0..n).map(|_| None).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            replica_args: vec![Vec::new(); n],
            started: vec![false; n],
        }
    }

    pub fn set_replica_args(&mut self, id: usize, args: &[&str]) {
        self.replica_args[id - 1] = args.iter().map(|s| s.to_string()).collect();
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.dir.join(format!("server-{id}.log"))
    }

    /// Bytes in replica `id`'s log so far (its starts append to one file).
    pub fn log_len(&self, id: usize) -> usize {
        std::fs::metadata(self.log_path(id)).map_or(0, |m| m.len() as usize)
    }

    /// What replica `id` logged after its log was `offset` bytes long.
    pub fn log_since(&self, id: usize, offset: usize) -> String {
        let log = std::fs::read(self.log_path(id)).unwrap_or_default();
        String::from_utf8_lossy(&log[offset.min(log.len())..]).into_owned()
    }

    pub fn start_replica(&mut self, id: usize) {
        assert!(self.children[id - 1].is_none(), "replica {id} already runs");
        let child = self.spawn_replica(id);
        self.children[id - 1] = Some(child);
        let addr = self.addrs[id - 1];
        wait_until(&format!("replica {id} to listen"), Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
    }

    fn spawn_replica(&mut self, id: usize) -> Child {
        let cluster_state = if std::mem::replace(&mut self.started[id - 1], true) { "existing" } else { "new" };
        let replicas = self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["--id", &id.to_string(), "--replicas", &replicas])
            // As run_servers.sh does: only a replica's first start may begin empty.
            .args(["--cluster-state", cluster_state])
            .arg("--data-dir")
            .arg(self.dir.join(id.to_string()))
            .args(self.certs_args())
            .args(&self.extra_args)
            .args(&self.replica_args[id - 1])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn server")
    }

    /// Starts replica `id` with `args` added, expecting it to refuse to start:
    /// returns its exit code and what it wrote to its log.
    pub fn start_replica_refused(&mut self, id: usize, args: &[&str]) -> (i32, String) {
        let log_before = self.log_len(id);
        let saved = self.replica_args[id - 1].clone();
        self.replica_args[id - 1].extend(args.iter().map(|s| s.to_string()));
        let mut child = self.spawn_replica(id);
        self.replica_args[id - 1] = saved;
        let deadline = Instant::now() + Duration::from_secs(20);
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("replica {id} did not refuse to start within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (code, self.log_since(id, log_before))
    }

    /// Starts replica `id` with `args` added for this start only.
    pub fn start_replica_with(&mut self, id: usize, args: &[&str]) {
        let saved = self.replica_args[id - 1].clone();
        self.replica_args[id - 1].extend(args.iter().map(|s| s.to_string()));
        self.start_replica(id);
        self.replica_args[id - 1] = saved;
    }

    fn insecure(&self) -> bool {
        self.extra_args.iter().any(|a| a == "--insecure")
    }

    fn certs_args(&self) -> Vec<std::ffi::OsString> {
        if self.insecure() {
            Vec::new()
        } else {
            vec!["--certs".into(), certs_dir().into()]
        }
    }

    /// How this cluster's clients connect: with the test client certificate, or plain TCP.
    pub fn security(&self) -> ClientSecurity {
        if self.insecure() {
            ClientSecurity::Insecure
        } else {
            client_security()
        }
    }

    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// SIGSTOP (`pause == true`) or SIGCONT: a replica that hangs, then resumes.
    pub fn pause(&mut self, id: usize, pause: bool) {
        let pid = self.children[id - 1].as_ref().expect("replica runs").id();
        let signal = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Every replica's own copy of `key` (outside the protocol).
    pub fn local_values(&self, key: &str) -> Vec<Result<paxos_kv::kv::Reply, String>> {
        self.addrs
            .iter()
            .map(|&addr| client::local_get(addr, key, Duration::from_millis(1_000), &self.security()))
            .collect()
    }

    pub fn pid(&self, id: usize) -> u32 {
        self.children[id - 1].as_ref().expect("replica runs").id()
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn client(&self) -> Client {
        self.client_with_deadline(Duration::from_millis(10_000))
    }

    pub fn client_with_deadline(&self, deadline: Duration) -> Client {
        let options = ClientOptions {
            timeout: Duration::from_millis(1_000),
            deadline,
            security: self.security(),
            ..ClientOptions::default()
        };
        Client::with_options(&self.addrs, options).unwrap()
    }

    pub fn status(&self, id: usize) -> Result<PaxosStatus, String> {
        let status = client::status(self.addrs[id - 1], Duration::from_millis(500), &self.security())?;
        status.paxos().cloned().ok_or_else(|| "not a Paxos replica".to_string())
    }

    pub fn status_2pc(&self, id: usize) -> Result<TwoPcStatus, String> {
        let status = client::status(self.addrs[id - 1], Duration::from_millis(500), &self.security())?;
        status.twopc().cloned().ok_or_else(|| "not a 2PC replica".to_string())
    }

    /// A client that talks to replica `id` only.
    pub fn client_of(&self, id: usize, deadline: Duration) -> Client {
        let options = ClientOptions {
            timeout: Duration::from_millis(1_000),
            deadline,
            security: self.security(),
            ..ClientOptions::default()
        };
        Client::with_options(&self.addrs[id - 1..id], options).unwrap()
    }

    pub fn leader(&self) -> Option<usize> {
        (1..=self.addrs.len()).find(|&id| self.status(id).is_ok_and(|s| s.proposer.mode == ProposerMode::Leading))
    }

    pub fn wait_for_leader(&self) -> usize {
        let mut leader = None;
        wait_until("a leader", Duration::from_secs(15), || {
            leader = self.leader();
            leader.is_some()
        });
        leader.unwrap()
    }

    pub fn servers_arg(&self) -> String {
        self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Runs the client binary; returns (exit code, stdout, stderr).
    pub fn run_client(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_client"))
            .args(["--servers", &self.servers_arg(), "--timeout-ms", "1000"])
            .args(if self.insecure() { vec!["--insecure".into()] } else { self.certs_args() })
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The client on a pseudo-terminal, so that it takes its interactive path
/// (line editor, banner); killed on drop.
pub struct Terminal {
    child: Child,
    master: std::fs::File,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Terminal {
    pub fn spawn(cluster: &Cluster) -> Terminal {
        use std::os::fd::{FromRawFd, OwnedFd};
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two new descriptors into the given integers.
        let rc =
            unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here alone.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let child = Command::new(env!("CARGO_BIN_EXE_client"))
            .args(["--servers", &cluster.servers_arg(), "--timeout-ms", "1000"])
            .args(if cluster.insecure() { vec!["--insecure".into()] } else { cluster.certs_args() })
            .env("HOME", &cluster.dir)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("spawn client");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut reader, sink) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 65_536];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Terminal { child, master, output }
    }

    /// Types `text` as a terminal paste (bracketed, the way terminals deliver
    /// pastes to an editor that asks for it), then Enter.
    pub fn paste_line(&mut self, text: &str) {
        use std::io::Write;
        let mut writer = self.master.try_clone().unwrap();
        let text = format!("\x1b[200~{text}\x1b[201~\r");
        // From a thread: the echo must be read while a long paste is written.
        std::thread::spawn(move || writer.write_all(text.as_bytes())).join().unwrap().unwrap();
    }

    pub fn type_line(&mut self, text: &str) {
        use std::io::Write;
        self.master.write_all(format!("{text}\r").as_bytes()).unwrap();
    }

    /// Everything printed so far, escape sequences included.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output holds `text` (after `after` bytes of it); returns where it ends.
    pub fn wait_for(&self, text: &str, after: usize, timeout: Duration) -> usize {
        let mut found = None;
        wait_until(&format!("{text:?} on the terminal"), timeout, || {
            let output = self.output();
            found = output.get(after..).and_then(|rest| rest.find(text)).map(|i| after + i + text.len());
            found.is_some()
        });
        found.unwrap()
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=self.children.len() {
            self.kill(id);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("server logs kept in {}", self.dir.display());
        }
    }
}

/// Established connections in a `/proc/net/tcp` table (on `local_port`, if
/// given) holding received bytes their process has not read yet.
pub fn connections_with_unread_bytes(table: &str, local_port: Option<u16>) -> usize {
    const ESTABLISHED: &str = "01";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            let unread = fields.get(4).and_then(|q| q.rsplit(':').next()).and_then(|q| u64::from_str_radix(q, 16).ok());
            fields.get(3) == Some(&ESTABLISHED)
                && local_port.is_none_or(|wanted| port == Some(wanted))
                && unread.is_some_and(|bytes| bytes > 0)
        })
        .count()
}
