//! The scripts a user starts with: run_servers.sh and run_client.sh, on free
//! ports, with data and logs in a temporary directory.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `n` consecutive free ports (the scripts number replicas from BASE_PORT).
/// Each call starts its search elsewhere, so tests running at once in this
/// process do not pick the same ports before either binds them.
fn free_consecutive_ports(n: u16) -> u16 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for attempt in (0..200u32).map(|a| a + call * 1_000) {
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

    /// Runs a script with changes to its environment (`None` removes a variable).
    fn run_with(&self, script: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> Output {
        let mut command = self.command(&format!("./{script}"));
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command.args(args).output().expect("run script")
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
    // Replicas are known by their id and data directory, not by the binaries that run them.
    let stopped = scripts.run_with("run_servers.sh", &["stop"], &[("PAXOS_KV_BIN_DIR", Some("/elsewhere"))]);
    let stopped = String::from_utf8_lossy(&stopped.stdout);
    assert!(stopped.contains("stopped replica 2") && stopped.contains("stopped replica 3"), "{stopped}");
    assert!(!alive(&two) && !alive(&three));
    // status (unlike put or the prompt) starts nothing: it reports.
    let down = scripts.run("run_client.sh", &["status"]);
    assert_eq!(down.status.code(), Some(2), "status with no replica up must fail: {down:?}");
    assert!(!scripts.ok("run_servers.sh", &["status"]).contains(": running"));
    let help = scripts.run("run_client.sh", &["--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("Examples"), "{help:?}");
    assert!(!scripts.ok("run_servers.sh", &["status"]).contains(": running"), "--help started a cluster");
}

/// A second terminal cannot damage a running cluster: without BASE_PORT or
/// flags a start restarts missing replicas as the cluster was made; another
/// port, protocol or flag set is refused with what to do, and nothing changes.
/// A replica that cannot start shows its error, not backtrace frames.
#[test]
fn a_second_start_keeps_the_cluster_it_made_and_refuses_conflicting_settings() {
    let dir = std::env::temp_dir().join(format!("paxos-kv-remember-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scripts = Scripts { dir: dir.clone(), base_port: free_consecutive_ports(3) };
    scripts.ok("run_servers.sh", &["3", "--", "--window-slots", "8"]);
    scripts.ok("run_client.sh", &["put", "k", "v"]);
    let servers = std::fs::read_to_string(dir.join("data/servers")).unwrap();
    let flags = std::fs::read_to_string(dir.join("data/server.flags")).unwrap();

    let victim = scripts.pid(2);
    assert!(Command::new("kill").args(["-9", &victim]).status().unwrap().success());
    // A new terminal: no BASE_PORT, no size, no flags.
    let out = scripts.run_with("run_servers.sh", &[], &[("BASE_PORT", None)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("started replica 2"), "{out:?}");
    assert!(stdout.contains("--window-slots 8"), "the cluster's own flags were not used: {stdout}");
    assert_eq!(std::fs::read_to_string(dir.join("data/servers")).unwrap(), servers);
    assert_eq!(scripts.ok("run_client.sh", &["get", "k"]), "v\n");

    let other_port = (scripts.base_port + 10).to_string();
    for (args, env, says) in [
        (vec![], vec![("BASE_PORT", Some(other_port.as_str()))], "stop"),
        (vec!["--protocol", "2pc"], vec![], "holds a paxos cluster"),
        (vec!["--failures"], vec![], "started with"),
        (vec!["5"], vec![], "cluster of 3 replicas"),
    ] {
        let out = scripts.run_with("run_servers.sh", &args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {out:?}");
        assert!(stderr.contains(says) && stderr.contains("./run_servers.sh stop"), "{args:?}: {stderr}");
        assert_eq!(std::fs::read_to_string(dir.join("data/servers")).unwrap(), servers, "{args:?} changed the ports");
        assert_eq!(
            std::fs::read_to_string(dir.join("data/server.flags")).unwrap(),
            flags,
            "{args:?} changed the flags"
        );
    }
    assert_eq!(scripts.ok("run_client.sh", &["get", "k"]), "v\n");

    // A replica that cannot bind its port says so, backtrace or not.
    scripts.ok("run_servers.sh", &["stop", "3"]);
    let squatter = TcpListener::bind(("127.0.0.1", scripts.base_port + 2)).unwrap();
    let out = scripts.run_with("run_servers.sh", &[], &[("RUST_BACKTRACE", Some("1"))]);
    drop(squatter);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("replica 3 exited") && stderr.contains("error:"), "{stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "the cause is not shown: {stderr}");
    assert!(!stderr.contains("backtrace") && !stderr.contains("  0: "), "{stderr}");
}

#[test]
fn help_answers_with_usage_and_changes_nothing_and_usage_errors_exit_2() {
    let dir = std::env::temp_dir().join(format!("paxos-kv-help-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scripts = Scripts { dir: dir.clone(), base_port: 20_000 };
    for (script, expected) in [
        ("run_servers.sh", "run_servers.sh [N]"),
        ("scripts/soak.sh", "soak.sh [ROUNDS]"),
        ("scripts/bench_scale.sh", "bench_scale.sh [KEYS]"),
        ("scripts/bench_tls.sh", "bench_tls.sh [ROUNDS]"),
        ("scripts/bench_etcd.sh", "bench_etcd.sh [ROUNDS]"),
    ] {
        for flag in ["--help", "-h"] {
            let out = scripts.run(script, &[flag]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && stdout.contains(expected), "{script} {flag}: {out:?}");
            assert!(stdout.contains("Examples:") && !stdout.contains("set -euo"), "{script} {flag}: {stdout}");
        }
    }
    assert!(!dir.join("data").exists() && !dir.join("logs").exists(), "--help must not create data or logs");
    assert_eq!(scripts.run("run_servers.sh", &["--frob"]).status.code(), Some(2));
    assert_eq!(scripts.run("run_servers.sh", &["--protocol", "raft"]).status.code(), Some(2));
    for script in ["scripts/soak.sh", "scripts/bench_scale.sh", "scripts/bench_tls.sh", "scripts/bench_etcd.sh"] {
        assert_eq!(scripts.run(script, &["many"]).status.code(), Some(2), "{script} many");
    }
    assert!(!dir.join("data").exists() && !dir.join("logs").exists(), "a usage error must change nothing");
}

/// A new user learns from the README's first section what to install (rustup,
/// the minimum Rust, the same as Cargo.toml's rust-version) and how long the
/// first build and the tests take; builds started by the scripts show cargo's
/// progress instead of a silent wait.
#[test]
fn the_readme_says_what_to_install_and_builds_show_progress() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let cargo = std::fs::read_to_string("Cargo.toml").unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("Cargo.toml sets rust-version")
        .trim_matches('"');
    let first_section: String = readme.split("\n## ").take(2).collect();
    assert!(first_section.contains("rustup"), "the first section does not say to install Rust with rustup");
    assert!(first_section.contains(&format!("Rust {version}")), "the first section does not name Rust {version}");
    assert!(first_section.contains("first release build takes about"), "no build time");
    assert!(readme.contains("the tests take about"), "no test time");
    for script in ["run_servers.sh", "run_client.sh", "scripts/bench_lib.sh", "scripts/soak.sh"] {
        let text = std::fs::read_to_string(script).unwrap();
        for line in text.lines().filter(|l| l.contains("cargo build")) {
            assert!(!line.contains("--quiet") && !line.contains(" -q"), "{script} builds silently: {line}");
        }
    }
}
