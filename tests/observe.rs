//! Seeing the protocols at work: status while an acceptor is offline, and
//! timelines rendered from traces recorded by a real run.

mod support;

use paxos_kv::trace::TraceEvent;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{wait_until, Cluster};

#[test]
fn status_answers_while_the_acceptor_is_offline() {
    let cluster = Cluster::start(
        "status-offline",
        3,
        &["--fail-mtbf-ms", "150", "--fail-downtime-ms", "800", "--fail-seed", "3", "--fail-max", "5"],
    );
    let mut seen_offline = None;
    wait_until("a status answer from a replica whose acceptor is offline", Duration::from_secs(20), || {
        seen_offline = (1..=3).filter_map(|id| cluster.status(id).ok()).find(|s| !s.acceptor_online);
        seen_offline.is_some()
    });
    let status = seen_offline.unwrap();
    assert!(status.acceptor_failures >= 1);
    assert!(!status.peers_connected.is_empty(), "an offline acceptor does not cut the replica off: {status:?}");
}

fn traced_cluster(name: &str, protocol_2pc: bool) -> Cluster {
    let mut cluster = if protocol_2pc { Cluster::start_2pc(name, 3, &[]) } else { Cluster::start(name, 3, &[]) };
    for id in 1..=3 {
        let path = cluster.dir.join(format!("traces/trace-{id}.jsonl"));
        cluster.kill(id);
        let path = path.to_string_lossy().into_owned();
        cluster.set_replica_args(id, &["--trace", &path]);
        cluster.start_replica(id);
    }
    cluster
}

fn read_events(path: &Path) -> Vec<TraceEvent> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn timeline(args: &[&str], traces: &Path, out: &Path) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_client"))
        .arg("timeline")
        .args(args)
        .arg("--traces")
        .arg(traces)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `(kind, from lane, to lane, chosen)` of every arrow in the page's SVG.
fn arrows_of(html: &str) -> Vec<(String, String, String, bool)> {
    let attribute = |tag: &str, name: &str| -> String {
        let start = tag.find(&format!(r#"{name}=""#)).unwrap() + name.len() + 2;
        tag[start..start + tag[start..].find('"').unwrap()].to_string()
    };
    html.split("<line class=\"arrow")
        .skip(1)
        .map(|tag| {
            let tag = &tag[..tag.find("/>").unwrap()];
            (
                attribute(tag, "data-kind"),
                attribute(tag, "data-from"),
                attribute(tag, "data-to"),
                tag.starts_with(" chosen"),
            )
        })
        .collect()
}

fn lanes(html: &str) -> Vec<String> {
    html.split(r#"<g class="lane" data-lane=""#)
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect()
}

#[test]
fn a_traced_paxos_run_renders_a_timeline_of_any_slot() {
    let cluster = traced_cluster("timeline-paxos", false);
    let leader = cluster.wait_for_leader();
    let mut client = cluster.client();
    for i in 0..3 {
        client.put(&format!("k{i}"), "v").unwrap();
    }
    let traces = cluster.dir.join("traces");
    let mut slot = None;
    wait_until("every replica to trace a decision", Duration::from_secs(10), || {
        let decided: Vec<Vec<u64>> = (1..=3)
            .map(|id| {
                read_events(&traces.join(format!("trace-{id}.jsonl")))
                    .iter()
                    .filter(|e| e.kind == "DECIDE" && e.event == "recv")
                    .filter_map(|e| e.slot)
                    .collect()
            })
            .collect();
        slot = decided[leader - 1].iter().max().copied().filter(|s| decided.iter().all(|d| d.contains(s)));
        slot.is_some()
    });
    let slot = slot.unwrap().to_string();
    let out = cluster.dir.join("timeline.html");
    let (ok, stdout, stderr) = timeline(&["--slot", &slot], &traces, &out);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("Timeline of slot {slot}")), "{stdout}");
    let html = std::fs::read_to_string(&out).unwrap();
    let expected_lanes: Vec<String> =
        (1..=3).flat_map(|n| ["proposer", "acceptor", "learner"].map(|r| format!("s{n} {r}"))).collect();
    assert_eq!(lanes(&html), expected_lanes);
    let arrows = arrows_of(&html);
    let leader_lane = format!("s{leader} proposer");
    for n in 1..=3 {
        let accept = (String::from("ACCEPT"), leader_lane.clone(), format!("s{n} acceptor"), true);
        assert!(arrows.contains(&accept), "no chosen ACCEPT to s{n}: {arrows:?}");
        let decide = (String::from("DECIDE"), leader_lane.clone(), format!("s{n} learner"), true);
        assert!(arrows.contains(&decide), "no DECIDE to s{n}: {arrows:?}");
    }
    let accepted = arrows.iter().filter(|a| a.0 == "ACCEPTED" && a.2 == leader_lane).count();
    assert!(accepted >= 2, "a decision needs a majority of ACCEPTED: {arrows:?}");

    // A replica's trace missing, and a truncated line: a partial picture and warnings, never a panic.
    let other = (1..=3).find(|n| *n != leader).unwrap();
    std::fs::remove_file(traces.join(format!("trace-{other}.jsonl"))).unwrap();
    let mut truncated = std::fs::read_to_string(traces.join(format!("trace-{leader}.jsonl"))).unwrap();
    truncated.push_str(r#"{"ts_us":1,"node":"#);
    std::fs::write(traces.join(format!("trace-{leader}.jsonl")), truncated).unwrap();
    let (ok, stdout, stderr) = timeline(&["--slot", &slot], &traces, &out);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("no trace from replica(s) [{other}]")), "{stdout}");
    assert!(stdout.contains("skipped 1 malformed or truncated line"), "{stdout}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(
        arrows_of(&html).iter().any(|a| a.2 == format!("s{other} acceptor")),
        "sends to the untraced replica are still drawn"
    );

    let (ok, _, stderr) = timeline(&["--slot", "999999"], &traces, &out);
    assert!(!ok && stderr.contains("slot 999999"), "{stderr}");

    // Into a pipe closed early (`| head -1`): the first line, and a quiet end.
    let piped = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' timeline --slot {slot} --traces '{}' --out '{}' | head -1",
            env!("CARGO_BIN_EXE_client"),
            traces.display(),
            out.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(String::from_utf8_lossy(&piped.stdout).contains("Timeline of slot"), "{piped:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}

#[test]
fn a_traced_2pc_run_renders_a_timeline_of_a_transaction() {
    let cluster = traced_cluster("timeline-2pc", true);
    cluster.client_of(2, Duration::from_secs(5)).put("k", "v").unwrap();
    let traces = cluster.dir.join("traces");
    let mut txn = None;
    wait_until("the transaction's ACKs in the coordinator's trace", Duration::from_secs(10), || {
        let events = read_events(&traces.join("trace-2.jsonl"));
        txn = events.iter().find(|e| e.kind == "VOTE_REQUEST").and_then(|e| e.txn.clone());
        events.iter().filter(|e| e.kind == "ACK" && e.event == "recv").count() == 3
    });
    let txn = txn.unwrap();
    let out = cluster.dir.join("txn.html");
    let (ok, stdout, stderr) = timeline(&["--txn", &txn], &traces, &out);
    assert!(ok, "{stdout}\n{stderr}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lanes(&html).len(), 6);
    let arrows = arrows_of(&html);
    // Requests and votes may be repeated while a link comes up; every replica takes part.
    for kind in ["VOTE_REQUEST", "VOTE"] {
        let lanes: std::collections::BTreeSet<&str> = arrows
            .iter()
            .filter(|a| a.0 == kind)
            .map(|a| if kind == "VOTE" { a.1.as_str() } else { a.2.as_str() })
            .collect();
        assert_eq!(lanes.len(), 3, "{kind}: {arrows:?}");
    }
    for kind in ["COMMIT", "ACK"] {
        assert_eq!(arrows.iter().filter(|a| a.0 == kind).count(), 3, "{kind}: {arrows:?}");
    }
    assert_eq!(arrows.iter().filter(|a| a.3).count(), 3, "the COMMITs are highlighted");
}
