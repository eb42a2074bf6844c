//! The scripts a user starts with: run_servers.sh and run_client.sh, on free
//! ports, with data and logs in a temporary directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `n` consecutive free ports (the scripts number replicas from BASE_PORT).
fn free_consecutive_ports(n: u16) -> u16 {
    for attempt in 0..200u32 {
        // Below 32768, where the kernel's ephemeral ports begin.
        let base = 20_000 + ((std::process::id() * 7 + attempt * 131) % 12_000) as u16;
        let listeners: Vec<_> = (0..n).map_while(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if listeners.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} consecutive free ports found");
}

struct Scripts {
    dir: PathBuf,
    base_port: u16,
}

impl Scripts {
    fn command(&self, program: &str) -> Command {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_server")).parent().unwrap();
        let mut command = Command::new(program);
        command
            .env("BASE_PORT", self.base_port.to_string())
            .env("PAXOS_KV_DATA", self.dir.join("data"))
            .env("PAXOS_KV_LOGS", self.dir.join("logs"))
            .env("PAXOS_KV_BIN_DIR", bin_dir);
        command
    }

    fn run(&self, script: &str, args: &[&str]) -> Output {
        self.command(&format!("./{script}")).args(args).output().expect("run script")
    }

    /// Runs a shell pipeline with the scripts' environment.
    fn shell(&self, pipeline: &str) -> Output {
        self.command("bash").args(["-c", pipeline]).output().expect("run bash")
    }

    fn ok(&self, script: &str, args: &[&str]) -> String {
        let out = self.run(script, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{script} {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn pid(&self, id: u32) -> String {
        std::fs::read_to_string(self.dir.join(format!("data/{id}/server.pid"))).unwrap().trim().to_string()
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        let _ = self.run("run_servers.sh", &["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: &str) -> bool {
    Command::new("kill").args(["-0", pid]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn start_use_kill_restart_and_stop_a_cluster_with_the_scripts() {
    let dir = std::env::temp_dir().join(format!("paxos-kv-scripts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scripts = Scripts { dir, base_port: free_consecutive_ports(3) };

    let started = scripts.ok("run_servers.sh", &["3"]);
    assert!(started.contains("cluster of 3 paxos replicas up"), "{started}");
    // Peers that are still starting are not worth a warning.
    for id in 1..=3 {
        let log = std::fs::read_to_string(scripts.dir.join(format!("logs/server-{id}.log"))).unwrap();
        assert!(!log.contains("WARN cannot reach replica"), "replica {id} warned at a normal start:\n{log}");
    }
    assert_eq!(scripts.ok("run_client.sh", &["put", "greeting", "hello world"]), "OK\n");
    assert_eq!(scripts.ok("run_client.sh", &["get", "greeting"]), "hello world\n");

    // kill -9 one replica; running the script again brings back exactly that one.
    let victim = scripts.pid(2);
    assert!(Command::new("kill").args(["-9", &victim]).status().unwrap().success());
    let restarted = scripts.ok("run_servers.sh", &["3"]);
    assert!(restarted.contains("replica 1 already running") && restarted.contains("started replica 2"), "{restarted}");
    assert_ne!(scripts.pid(2), victim);
    assert_eq!(scripts.ok("run_client.sh", &["get", "greeting"]), "hello world\n");
    let missing = scripts.run("run_client.sh", &["get", "nothing-here"]);
    assert_eq!(missing.status.code(), Some(1));

    // Pipe mode: one line per command, and exit 1 when any command failed.
    let piped = scripts.shell("printf 'put a 1\\nfrob\\nget a\\n' | ./run_client.sh");
    assert_eq!(piped.status.code(), Some(1), "{piped:?}");
    let lines = String::from_utf8_lossy(&piped.stdout).lines().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0] == "OK" && lines[1].starts_with("ERROR") && lines[2] == "1", "{lines:?}");
    assert_eq!(scripts.shell("printf 'put a 2\\nget a\\n' | ./run_client.sh").status.code(), Some(0));
    // Output into a closed pipe ends the client quietly.
    let head = scripts.shell("./run_client.sh inspect $(seq -f k%g 1 3000) | head -1");
    let stderr = String::from_utf8_lossy(&head.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(scripts.run("run_client.sh", &["status"]).status.code(), Some(0));

    // stop exactly the replicas named, then the rest.
    let one = scripts.pid(1);
    assert!(scripts.ok("run_servers.sh", &["stop", "1"]).contains("stopped replica 1"));
    assert!(!alive(&one));
    let status = scripts.ok("run_servers.sh", &["status"]);
    assert!(status.contains("replica 2: running") && !status.contains("replica 1: running"), "{status}");
    let (two, three) = (scripts.pid(2), scripts.pid(3));
    scripts.ok("run_servers.sh", &["stop"]);
    assert!(!alive(&two) && !alive(&three));
    // (run_client.sh would start a cluster here: ask the client itself.)
    let servers: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", scripts.base_port + i)).collect();
    let down = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--insecure", "--servers", &servers.join(","), "status"])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(2), "status with no replica up must fail: {down:?}");
}

#[test]
fn help_answers_with_usage_and_changes_nothing_and_usage_errors_exit_2() {
    let dir = std::env::temp_dir().join(format!("paxos-kv-help-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scripts = Scripts { dir: dir.clone(), base_port: 20_000 };
    for (script, expected) in [("run_servers.sh", "run_servers.sh [N]"), ("scripts/soak.sh", "soak.sh [ROUNDS]")] {
        for flag in ["--help", "-h"] {
            let out = scripts.run(script, &[flag]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && stdout.contains(expected), "{script} {flag}: {out:?}");
        }
    }
    assert!(!dir.join("data").exists() && !dir.join("logs").exists(), "--help must not create data or logs");
    assert_eq!(scripts.run("run_servers.sh", &["--frob"]).status.code(), Some(2));
    assert_eq!(scripts.run("scripts/soak.sh", &["many"]).status.code(), Some(2));
}
