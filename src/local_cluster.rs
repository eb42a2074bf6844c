//! Clusters of real server processes that a client command starts for
//! itself (`compare`, `lesson`): free loopback ports, one working folder with
//! each replica's data, log and trace, replicas that can be killed, frozen,
//! wiped and restarted one by one; on drop every process is killed and the
//! folder removed.

use crate::client;
use crate::node::{NodeStatus, PaxosStatus};
use crate::paxos::proposer::ProposerMode;
use crate::security::ClientSecurity;
use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct LocalCluster {
    pub addrs: Vec<SocketAddr>,
    pub dir: PathBuf,
    server_binary: PathBuf,
    certs: PathBuf,
    /// Flags every replica gets, beyond its identity, data and certificates.
    common_args: Vec<String>,
    children: Vec<Option<Child>>,
}

impl LocalCluster {
    /// Picks `replicas` free ports; starts nothing. `certs` must hold the
    /// cluster's certificates.
    pub fn new(
        server_binary: &Path,
        dir: &Path,
        certs: &Path,
        replicas: usize,
        common_args: &[String],
    ) -> Result<Self> {
        let listeners: Vec<TcpListener> =
            (0..replicas).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr()).collect::<Result<_, _>>()?;
        drop(listeners);
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(LocalCluster {
            addrs,
            dir: dir.to_path_buf(),
            server_binary: server_binary.to_path_buf(),
            certs: certs.to_path_buf(),
            common_args: common_args.to_vec(),
            children: (0..replicas).map(|_| None).collect(),
        })
    }

    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.join(id.to_string())
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.dir.join(format!("server-{id}.log"))
    }

    /// Starts replica `id` (1-based) with `extra` flags (e.g. its
    /// `--cluster-state`); its log is appended to, so restarts keep the story.
    pub fn start_replica(&mut self, id: usize, extra: &[&str]) -> Result<()> {
        let replicas = self.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(id))?;
        let child = Command::new(&self.server_binary)
            .args(["--id", &id.to_string(), "--replicas", &replicas])
            .arg("--certs")
            .arg(&self.certs)
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(&self.common_args)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.server_binary.display()))?;
        self.children[id - 1] = Some(child);
        Ok(())
    }

    /// Waits until replica `id` accepts connections.
    pub fn wait_listening(&self, id: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while TcpStream::connect(self.addrs[id - 1]).is_err() {
            if Instant::now() > deadline {
                bail!("replica {id} did not start; see {}", self.log_path(id).display());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// kill -9.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.children[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (frozen: memory and sockets kept, nothing processed) or SIGCONT.
    pub fn freeze(&self, id: usize, frozen: bool) {
        if let Some(child) = &self.children[id - 1] {
            let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: signals a child process this cluster started and still owns.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// The replica's data directory removed, as if its disk were lost.
    pub fn wipe(&self, id: usize) -> Result<()> {
        let dir = self.data_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context(format!("removing {}", dir.display())),
            _ => Ok(()),
        }
    }

    /// The replica's exit status, if it has exited.
    pub fn exited(&mut self, id: usize) -> Option<std::process::ExitStatus> {
        self.children[id - 1].as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Replica `id`'s Paxos status, asked over the wire.
    pub fn paxos_status(&self, id: usize, security: &ClientSecurity) -> Result<PaxosStatus> {
        match client::status(self.addrs[id - 1], Duration::from_millis(500), security) {
            Ok(NodeStatus::Paxos(status)) => Ok(status),
            Ok(_) => bail!("s{id} is not a Paxos replica"),
            Err(e) => bail!("s{id} does not answer: {e}"),
        }
    }

    /// Waits until one of `among` leads and the others that answer follow it;
    /// returns its id.
    pub fn wait_for_leader(&self, among: &[usize], security: &ClientSecurity, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses: Vec<(usize, PaxosStatus)> =
                among.iter().filter_map(|&id| self.paxos_status(id, security).ok().map(|s| (id, s))).collect();
            let leader = statuses.iter().find(|(_, s)| s.proposer.mode == ProposerMode::Leading).map(|(id, _)| *id);
            if let Some(leader) = leader {
                let followers = statuses.iter().filter(|(_, s)| s.proposer.leader == Some(leader as u32)).count();
                if followers * 2 > self.addrs.len() {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader among replicas {among:?} after {timeout:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for id in 1..=self.children.len() {
            // A frozen process must be woken to die promptly and be reaped.
            self.freeze(id, false);
            self.kill(id);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
