//! The real binaries over loopback: five replicas, kill -9, restarts, no
//! quorum, random acceptor failures, bad input.

mod support;

use paxos_kv::client::ClientError;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::{wait_until, Cluster, Terminal};

#[test]
fn demo_then_kill_two_keep_serving_and_restarted_replicas_catch_up() {
    let mut cluster = Cluster::start("kill-two", 5, &[]);
    let (code, stdout, stderr) = cluster.run_client(&["demo"], None);
    assert_eq!(code, 0, "demo failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.matches("-> OK").count(), 15, "{stdout}");
    assert_eq!(stdout.matches("-> DELETED").count(), 5, "{stdout}");
    assert!(stdout.contains("GET cherry                   -> dark red"), "{stdout}");

    // Kill the leader and one follower.
    let leader = cluster.wait_for_leader();
    let follower = if leader == 1 { 2 } else { 1 };
    cluster.kill(leader);
    cluster.kill(follower);
    let mut client = cluster.client();
    for i in 0..20 {
        client.put(&format!("k{i}"), &format!("v{i}")).expect("a majority is up: writes must succeed");
    }
    for i in 0..20 {
        assert_eq!(client.get(&format!("k{i}")).unwrap(), Some(format!("v{i}")));
    }
    assert!(client.delete("k0").unwrap());

    // Restart them: they recover from disk and catch up with what they missed.
    cluster.start_replica(leader);
    cluster.start_replica(follower);
    let target = cluster.status(cluster.wait_for_leader()).unwrap().learner_next_slot;
    for id in [leader, follower] {
        wait_until(&format!("replica {id} to catch up"), Duration::from_secs(15), || {
            cluster.status(id).is_ok_and(|s| s.learner_next_slot >= target)
        });
    }
    // Now the restarted pair is needed for a quorum: the state must be all there.
    let others: Vec<usize> = (1..=5).filter(|id| *id != leader && *id != follower).take(2).collect();
    for id in others {
        cluster.kill(id);
    }
    let mut client = cluster.client();
    assert_eq!(client.get("k0").unwrap(), None);
    for i in 1..20 {
        assert_eq!(client.get(&format!("k{i}")).unwrap(), Some(format!("v{i}")));
    }
    assert_eq!(client.get("seed-9").unwrap().as_deref(), Some("value-9"));
}

#[test]
fn three_down_refuses_with_no_quorum_and_nothing_half_applied() {
    let mut cluster = Cluster::start("no-quorum", 5, &[]);
    let mut client = cluster.client();
    client.put("before", "1").unwrap();
    for id in [3, 4, 5] {
        cluster.kill(id);
    }
    // The first attempts may race with failure detection and report a
    // timeout (outcome unknown); "no quorum" must follow, and must mean "not applied".
    // Attempts wait 1 s each; a 2.5 s deadline falls in the middle of the third.
    let mut client = cluster.client_with_deadline(Duration::from_millis(2_500));
    let mut refused = Vec::new();
    for attempt in 0..20 {
        let key = format!("during-{attempt}");
        match client.put(&key, "x") {
            Err(ClientError::NoQuorum { reachable, needed }) => {
                assert!(reachable < needed);
                refused.push(key);
                if refused.len() == 3 {
                    break;
                }
            }
            Err(ClientError::Timeout) => {}
            other => panic!("with three of five down, put returned {other:?}"),
        }
    }
    assert_eq!(refused.len(), 3, "never got a no-quorum error");
    let (code, _, stderr) = cluster.run_client(&["--deadline-ms", "1500", "put", "cli", "x"], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("no quorum") || stderr.contains("timed out"), "{stderr}");

    for id in [3, 4, 5] {
        cluster.start_replica(id);
    }
    let mut client = cluster.client();
    assert_eq!(client.get("before").unwrap().as_deref(), Some("1"));
    for key in &refused {
        assert_eq!(client.get(key).unwrap(), None, "{key} was refused with no quorum, yet applied");
    }
    client.put("after", "2").unwrap();
    let applied = cluster.status(cluster.wait_for_leader()).unwrap().learner_next_slot;
    wait_until("every replica to apply the same prefix", Duration::from_secs(15), || {
        (1..=5).all(|id| cluster.status(id).is_ok_and(|s| s.learner_next_slot >= applied))
    });
    let keys: Vec<usize> = (1..=5).map(|id| cluster.status(id).unwrap().keys).collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "replicas disagree on the number of keys: {keys:?}");
}

#[test]
fn no_acknowledged_write_is_lost_when_every_replica_is_killed_and_restarted() {
    // A small snapshot interval makes recovery use snapshots and truncated logs too.
    let mut cluster = Cluster::start("kill-all", 3, &["--snapshot-interval-slots", "7"]);
    let mut client = cluster.client();
    for i in 0..40 {
        client.put(&format!("k{i}"), &format!("v{i}")).unwrap();
    }
    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.start_replica(id);
    }
    cluster.wait_for_leader();
    let mut client = cluster.client();
    for i in 0..40 {
        assert_eq!(client.get(&format!("k{i}")).unwrap(), Some(format!("v{i}")), "acknowledged write k{i} lost");
    }
}

#[test]
fn random_acceptor_failures_do_not_stop_or_corrupt_the_store() {
    let mut cluster = Cluster::start(
        "failures",
        5,
        &["--fail-mtbf-ms", "400", "--fail-downtime-ms", "300", "--fail-seed", "7", "--fail-max", "20"],
    );
    let mut client = cluster.client();
    for i in 0..150 {
        let key = format!("k{}", i % 10);
        client.put(&key, &i.to_string()).unwrap_or_else(|e| panic!("put {i} failed under random failures: {e}"));
        assert_eq!(client.get(&key).unwrap(), Some(i.to_string()), "read did not see the acknowledged write {i}");
    }
    let failures: u64 = (1..=5).filter_map(|id| cluster.status(id).ok()).map(|s| s.acceptor_failures).sum();
    assert!(failures > 0, "the failure threads never took an acceptor offline");
    let log = std::fs::read_to_string(cluster.log_path(1)).unwrap();
    assert!(log.contains("FAILURE") && log.contains("RESTART acceptor from durable state"), "failures not logged");
    cluster.kill(1);
}

/// The server closes the connection (a TLS server may first send an alert).
fn assert_closed_by_server(mut stream: TcpStream, what: &str) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("after {what} the server should close the connection, got {e:?}"),
        }
    }
}

#[test]
fn bad_input_gets_a_closed_connection_or_a_clear_error_and_the_server_keeps_serving() {
    let cluster = Cluster::start("bad-input", 3, &["--key-bytes-max", "64"]);
    let addr = cluster.addrs[0];

    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.write_all(b"\x00\x00\x00\x08GARBAGE!").unwrap();
    assert_closed_by_server(garbage, "a garbage hello");

    let mut oversized = TcpStream::connect(addr).unwrap();
    oversized
        .write_all(&paxos_kv::wire::frame(&paxos_kv::wire::Hello::new(paxos_kv::wire::Speaker::Client)).unwrap())
        .unwrap();
    oversized.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_closed_by_server(oversized, "an oversized length prefix");

    let mut bad_body = TcpStream::connect(addr).unwrap();
    bad_body
        .write_all(&paxos_kv::wire::frame(&paxos_kv::wire::Hello::new(paxos_kv::wire::Speaker::Client)).unwrap())
        .unwrap();
    bad_body.write_all(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]).unwrap();
    assert_closed_by_server(bad_body, "an undecodable body");

    let mut client = cluster.client();
    client.put("still", "serving").unwrap();
    assert_eq!(client.get("still").unwrap().as_deref(), Some("serving"));
    let huge_key = "k".repeat(65);
    assert!(matches!(client.put(&huge_key, "v"), Err(ClientError::TooLarge { .. })));
    assert!(matches!(client.put("", "v"), Err(ClientError::Invalid(_))));

    // One-shot output is made for scripts.
    let (code, stdout, _) = cluster.run_client(&["get", "still"], None);
    assert_eq!((code, stdout.as_str()), (0, "serving\n"));
    let (code, stdout, stderr) = cluster.run_client(&["get", "missing"], None);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("not found"), "{stderr}");
    // Piped commands: one line per command, in order, errors included.
    let (code, stdout, _) = cluster.run_client(&[], Some("put a 1\nFROB\nget a\ndelete a\nGET a\n"));
    assert_eq!(code, 1, "a failed command (FROB) makes pipe mode exit 1");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[0], "OK");
    assert!(lines[1].starts_with("ERROR: unknown command 'FROB'; usage:"), "{}", lines[1]);
    assert_eq!(&lines[2..], ["1", "DELETED", "(not found)"]);
}

#[test]
fn a_flood_of_idle_connections_ages_out_and_clients_are_served_meanwhile() {
    let cluster = Cluster::start("conn-flood", 3, &["--handshakes-max", "8"]);
    let addr = cluster.addrs[0];
    // Idle connections that never start a handshake: beyond 8 the oldest are closed.
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut client = cluster.client();
    client.put("during-flood", "ok").unwrap();
    let closed = idle
        .iter()
        .filter(|stream| {
            stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut buf = [0u8; 1];
            match (&**stream).read(&mut buf) {
                Ok(0) => true,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                Ok(_) => false,
            }
        })
        .count();
    assert!(closed >= 12, "only {closed} of 20 idle connections beyond the limit were closed");
    drop(idle);
    assert_eq!(client.get("during-flood").unwrap().as_deref(), Some("ok"));
}

/// A value larger than any frame the servers accept is refused by the client
/// at once, with the sizes, and never sent; one within the frame but over
/// `--value-bytes-max` is refused by the server, also without retries.
#[test]
fn a_value_too_large_gets_a_clear_immediate_error_and_nothing_is_sent() {
    let cluster = Cluster::start("too-large", 3, &[]);
    let mut client = cluster.client();
    let started = std::time::Instant::now();
    match client.put("big", &"x".repeat(5 << 20)) {
        Err(ClientError::TooLarge { what, bytes, limit }) => {
            assert_eq!(what, "value");
            assert!(bytes > 5 << 20 && limit == 4 << 20, "{bytes} / {limit}");
        }
        other => panic!("a 5 MiB value must be refused as too large, got {other:?}"),
    }
    match client.put("big", &"x".repeat(2 << 20)) {
        Err(ClientError::TooLarge { what, limit, .. }) => {
            assert!(what == "value" && limit == 1 << 20, "{what} {limit}")
        }
        other => panic!("a 2 MiB value must be refused by the server, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3), "refusals took {:?}", started.elapsed());
    let log = (1..=3).map(|id| std::fs::read_to_string(cluster.log_path(id)).unwrap()).collect::<String>();
    assert!(!log.contains("exceeds the limit"), "an oversized frame reached a server");
    client.put("small", "ok").unwrap();
}

/// A call ends by its deadline even when every replica is frozen (SIGSTOP):
/// each attempt's wait is cut to what is left of the deadline.
#[test]
fn a_call_to_frozen_replicas_ends_at_its_deadline() {
    let mut cluster = Cluster::start("deadline", 3, &[]);
    cluster.client().put("k", "v").unwrap();
    for id in 1..=3 {
        cluster.pause(id, true);
    }
    // Attempts wait 1 s each; a 2.5 s deadline falls in the middle of the third.
    let mut client = cluster.client_with_deadline(Duration::from_millis(2_500));
    let started = std::time::Instant::now();
    let result = client.get("k");
    let elapsed = started.elapsed();
    for id in 1..=3 {
        cluster.pause(id, false);
    }
    assert!(result.is_err(), "frozen replicas cannot answer: {result:?}");
    assert!(elapsed < Duration::from_millis(2_900), "a 2.5 s deadline took {elapsed:?}");
    assert!(elapsed >= Duration::from_millis(2_400), "gave up early, after {elapsed:?}");
}

/// One-shot values of any size the store accepts, multi-line or empty, from
/// stdin (`-`) or a file; the value read back is byte for byte the same.
#[test]
fn one_shot_values_come_from_stdin_or_a_file() {
    let cluster = Cluster::start("values", 3, &[]);
    let large = "line one\nline two\n".repeat(40_000); // 720 KB: beyond what argv accepts in one argument
    let (code, stdout, stderr) = cluster.run_client(&["put", "from-stdin", "-"], Some(&large));
    assert_eq!((code, stdout.as_str()), (0, "OK\n"), "{stderr}");
    let file = std::env::temp_dir().join(format!("paxos-kv-value-{}", std::process::id()));
    std::fs::write(&file, "").unwrap();
    let (code, _, stderr) = cluster.run_client(&["put", "from-file", "--value-file", file.to_str().unwrap()], None);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 0, "{stderr}");
    let mut client = cluster.client();
    assert_eq!(client.get("from-stdin").unwrap().as_deref(), Some(large.as_str()));
    assert_eq!(client.get("from-file").unwrap().as_deref(), Some(""), "an empty file stores an empty value");
    let (code, _, stderr) = cluster.run_client(&["put", "k", "--value-file", "/nonexistent/value"], None);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read the value"), "{stderr}");
}

/// In pipe mode each command answers with one line: a quoted value may be
/// empty or hold escaped newlines, and a value read back that would span lines
/// (or be mistaken for an answer) is printed quoted, the way it can be typed.
#[test]
fn pipe_mode_takes_quoted_values_and_answers_one_line_per_command() {
    let cluster = Cluster::start("quoted", 3, &[]);
    let commands = "PUT empty \"\"\nGET empty\nPUT lines \"one\\ntwo\"\nGET lines\nPUT plain a b  c\nGET plain\nPUT bad \"open\nGET missing\n";
    let (code, stdout, stderr) = cluster.run_client(&[], Some(commands));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "OK",
            "\"\"",
            "OK",
            "\"one\\ntwo\"",
            "OK",
            "a b  c",
            "ERROR: the value's closing quote is missing",
            "(not found)"
        ],
        "{stderr}"
    );
    assert_eq!(code, 1, "a failed command makes pipe mode exit 1");
    let mut client = cluster.client();
    assert_eq!(client.get("empty").unwrap().as_deref(), Some(""));
    assert_eq!(client.get("lines").unwrap().as_deref(), Some("one\ntwo"));
    let (code, stdout, _) = cluster.run_client(&["get", "lines"], None);
    assert_eq!((code, stdout.as_str()), (0, "one\ntwo\n"), "one-shot GET prints the value as stored");
}

/// `bench` shows its progress while it runs (plain lines when stderr is not a
/// terminal) and ends with a table of each kind of request.
#[test]
fn bench_shows_progress_then_a_table() {
    let cluster = Cluster::start("bench", 3, &[]);
    let (code, stdout, stderr) =
        cluster.run_client(&["bench", "--clients", "4", "--duration", "5", "--put-ratio", "0.5", "--keys", "50"], None);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("bench: ") && l.contains("ops/s")).collect();
    assert!(progress.len() >= 2, "progress lines while running: {stderr}");
    let header = stdout.lines().find(|l| l.contains("p99 ms")).unwrap_or_else(|| panic!("no table: {stdout}"));
    assert!(header.contains("ops/s") && header.contains("failed"), "{header}");
    for row in ["PUT ", "GET ", "all "] {
        let line = stdout.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row}row: {stdout}"));
        let ok: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(ok > 0, "{line}");
    }
    // The benchmark scripts read the summary line's figure from this very report.
    let summary = stdout.lines().find(|l| l.contains(" ops/s  (")).unwrap_or_else(|| panic!("no summary: {stdout}"));
    let parsed = shell_output(&format!("source scripts/bench_parse.sh; ops <<'END'\n{stdout}END"));
    assert_eq!(parsed.trim(), summary.split_whitespace().next().unwrap(), "{stdout}");
    let ok = shell_output(&format!("source scripts/bench_parse.sh; ok_count <<'END'\n{stdout}END"));
    assert!(summary.contains(&format!("({} ok,", ok.trim())), "{ok} from {summary}");
    let median = shell_output("source scripts/bench_parse.sh; printf '3\n10\n2\n' | median");
    assert_eq!(median.trim(), "3");
}

fn shell_output(script: &str) -> String {
    let output = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{script}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The interactive prompt on a real terminal: its banner counts the replicas
/// that answer; a pasted value over the store's limit gets `value too large`
/// at once and the prompt goes on; without a majority the banner says so.
#[test]
fn the_prompt_counts_replicas_and_refuses_a_pasted_value_too_large_at_once() {
    let mut cluster = Cluster::start("prompt", 3, &[]);
    cluster.client().put("k", "v").unwrap();
    let mut terminal = Terminal::spawn(&cluster);
    let at = terminal.wait_for("3 of 3 replicas answer.", 0, Duration::from_secs(10));
    let started = std::time::Instant::now();
    terminal.paste_line(&format!("PUT big {}", "x".repeat(2 << 20)));
    let at = terminal.wait_for("value too large: ", at, Duration::from_secs(20));
    let refused_after = started.elapsed();
    terminal.type_line("GET k");
    let at = terminal.wait_for("\nv\r", at, Duration::from_secs(10));
    terminal.type_line("QUIT");
    wait_until("the prompt to exit", Duration::from_secs(10), || terminal.exited().is_some());
    assert!(terminal.output()[..at].contains("limit 1048576"), "the limit is not named");
    assert!(refused_after < Duration::from_secs(10), "a 2 MiB paste took {refused_after:?} to refuse");

    cluster.kill(2);
    cluster.kill(3);
    let terminal = Terminal::spawn(&cluster);
    terminal.wait_for("1 of 3 replicas answer (no majority", 0, Duration::from_secs(15));
}

/// A leader frozen (SIGSTOP) while the others elect another and take a write
/// must not answer a read from its own, older state once it thaws: reads wait
/// for a majority to acknowledge a round of heartbeats sent after them, and the
/// others, having promised a higher ballot, refuse it. The reads are already in
/// its sockets when it thaws. (`tests/network.rs` also cuts the frozen leader
/// off, so that no news from its peers can overtake the reads.)
#[test]
fn a_replaced_leader_that_thaws_never_answers_a_read_from_its_old_state() {
    let mut cluster = Cluster::start("stale-read", 3, &[]);
    cluster.client().put("k", "old").unwrap();
    let frozen = cluster.wait_for_leader();
    let mut readers: Vec<_> = (0..4).map(|_| cluster.client_of(frozen, Duration::from_secs(5))).collect();
    for reader in &mut readers {
        assert_eq!(reader.get("k").unwrap().as_deref(), Some("old"), "connected while it leads");
    }
    cluster.pause(frozen, true);
    let others: Vec<usize> = (1..=3).filter(|&id| id != frozen).collect();
    let mut successor = None;
    wait_until("another leader", Duration::from_secs(20), || {
        successor = others.iter().copied().find(|&id| {
            cluster.status(id).is_ok_and(|s| s.proposer.mode == paxos_kv::paxos::proposer::ProposerMode::Leading)
        });
        successor.is_some()
    });
    let successor = successor.unwrap();
    cluster.client_of(successor, Duration::from_secs(10)).put("k", "new").unwrap();

    let readers: Vec<_> = readers.into_iter().map(|mut reader| std::thread::spawn(move || reader.get("k"))).collect();
    let port = cluster.addrs[frozen - 1].port();
    wait_until("the reads waiting in the frozen replica's sockets", Duration::from_secs(5), || {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        support::connections_with_unread_bytes(&table, Some(port)) >= 4
    });
    cluster.pause(frozen, false);
    let mut answered = 0;
    for reader in readers {
        match reader.join().unwrap() {
            Ok(value) => {
                assert_eq!(value.as_deref(), Some("new"), "a deposed leader answered from its own state");
                answered += 1;
            }
            Err(e) => println!("refused, as a replica that no longer leads may: {e}"),
        }
    }
    let mut client = cluster.client();
    assert_eq!(client.get("k").unwrap().as_deref(), Some("new"));
    println!("{answered} of 4 reads at the thawed replica answered");
}

/// One connection carries many requests at once: a pipeline of 64 lanes (each
/// its own session) writes 64 keys in one frame and reads them back in the
/// next, whichever replica it starts at.
#[test]
fn a_pipeline_carries_many_requests_on_one_connection() {
    use paxos_kv::client::{ClientOptions, Pipeline};
    use paxos_kv::kv::{Op, Reply};
    let cluster = Cluster::start("pipeline", 3, &[]);
    cluster.wait_for_leader();
    let options =
        ClientOptions { deadline: Duration::from_secs(10), security: cluster.security(), ..ClientOptions::default() };
    // Each pipeline starts at a replica picked at random, a follower two times in three.
    for start in 1..=3 {
        let mut pipeline = Pipeline::new(&cluster.addrs, options.clone(), 64).unwrap();
        assert_eq!(pipeline.lanes(), 64);
        let puts = (0..64).map(|i| Op::Put { key: format!("p{i}"), value: format!("{start}-{i}") }).collect();
        let written = pipeline.run(puts);
        assert!(written.iter().all(|r| matches!(r, Ok(Reply::Stored))), "{written:?}");
        let read = pipeline.run((0..64).map(|i| Op::Get { key: format!("p{i}") }).collect());
        for (i, result) in read.into_iter().enumerate() {
            assert_eq!(result, Ok(Reply::Value(Some(format!("{start}-{i}")))), "lane {i}");
        }
    }
}

/// The workload set runs PUT, GET and a mix at 1, 16, 64 and 256 clients from
/// two threads, prints a row per run, and writes a CSV and an SVG chart.
#[test]
fn bench_workload_set_writes_a_csv_and_a_chart() {
    let cluster = Cluster::start("bench-set", 3, &[]);
    let reports = std::env::temp_dir().join(format!("paxos-kv-bench-set-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&reports);
    let reports_arg = reports.to_str().unwrap();
    let args =
        ["bench", "--workload-set", "--duration", "1", "--threads", "2", "--keys", "100", "--reports", reports_arg];
    let (code, stdout, stderr) = cluster.run_client(&args, None);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let files: Vec<_> = std::fs::read_dir(&reports).unwrap().map(|e| e.unwrap().path()).collect();
    let file = |ext: &str| files.iter().find(|p| p.extension().is_some_and(|e| e == ext)).cloned().unwrap();
    let csv = std::fs::read_to_string(file("csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 12, "three workloads at four client counts: {csv}");
    for (workload, clients) in [("PUT", 1), ("GET", 16), ("mixed", 256)] {
        let row = rows.iter().find(|r| r.starts_with(&format!("{workload},{clients},"))).expect(workload);
        let ops: f64 = row.split(',').nth(4).unwrap().parse().unwrap();
        assert!(ops > 0.0, "{row}");
        assert!(stdout
            .lines()
            .any(|l| l.starts_with(workload) && l.split_whitespace().nth(1) == Some(&clients.to_string())));
    }
    let svg = std::fs::read_to_string(file("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("256 clients") && svg.contains(">mixed<"), "{svg}");
    let _ = std::fs::remove_dir_all(&reports);
}
