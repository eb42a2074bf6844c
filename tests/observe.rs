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

/// One arrow of a page's SVG.
#[derive(Debug)]
struct DrawnArrow {
    kind: String,
    ballot: String,
    from: String,
    to: String,
    chosen: bool,
    lost: bool,
    /// Where it ends, and the x of its receiver's lane.
    end_x: f64,
    receiver_lane_x: f64,
}

fn attribute(tag: &str, name: &str) -> String {
    let start = tag.find(&format!(r#" {name}=""#)).unwrap_or_else(|| panic!("no {name} in {tag}")) + name.len() + 3;
    tag[start..start + tag[start..].find('"').unwrap()].to_string()
}

/// Every arrow in the page, with where it ends against its receiver's lane.
fn arrows_of(html: &str) -> Vec<DrawnArrow> {
    let lane_x: std::collections::BTreeMap<String, f64> = html
        .split(r#"<g class="lane""#)
        .skip(1)
        .map(|tag| (attribute(tag, "data-lane"), attribute(tag, "data-x").parse().unwrap()))
        .collect();
    html.split(r#" class="arrow"#)
        .skip(1)
        .map(|tag| {
            let tag = &tag[..tag.find("/>").unwrap()];
            let classes = &tag[..tag.find('"').unwrap()];
            // A line ends at x2; a loop (between roles of one replica) at its path's last point.
            let end_x = if tag.contains(" x2=\"") {
                attribute(tag, "x2").parse().unwrap()
            } else {
                let d = attribute(tag, "d");
                d.split(' ').next_back().unwrap().split(',').next().unwrap().parse().unwrap()
            };
            DrawnArrow {
                kind: attribute(tag, "data-kind"),
                ballot: attribute(tag, "data-ballot"),
                from: attribute(tag, "data-from"),
                to: attribute(tag, "data-to"),
                chosen: classes.contains("chosen"),
                lost: classes.contains("lost"),
                end_x,
                receiver_lane_x: lane_x[&attribute(tag, "data-to-lane")],
            }
        })
        .collect()
}

fn lanes(html: &str) -> Vec<String> {
    html.split(r#"<g class="lane" data-lane=""#)
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect()
}

fn assert_arrows_end_on_receiver_lanes(arrows: &[DrawnArrow]) {
    assert!(!arrows.is_empty());
    for arrow in arrows {
        assert!((arrow.end_x - arrow.receiver_lane_x).abs() < 0.01, "ends off its receiver's lane: {arrow:?}");
    }
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
    assert_eq!(lanes(&html), ["s1", "s2", "s3"], "one lane per replica");
    let arrows = arrows_of(&html);
    assert_arrows_end_on_receiver_lanes(&arrows);
    let leader_proposer = format!("s{leader} proposer");
    // ACCEPT goes to a majority first (usually with the leader's own acceptor,
    // unless it lags behind the others). Every learner gets the value: the
    // leader's from its proposer; another replica's from its own acceptor
    // after a CHOSEN, if that acceptor's ACCEPTED was among those that decided
    // the slot, else from the leader's proposer. At most one vote of a
    // majority of three is the leader's own, so at least one other acceptor
    // is sent a CHOSEN.
    let asked = |n: usize| {
        let to = format!("s{n} acceptor");
        arrows.iter().any(|a| a.kind == "ACCEPT" && a.from == leader_proposer && a.to == to && a.chosen)
    };
    let told_chosen = |n: usize| {
        let to = format!("s{n} acceptor");
        arrows.iter().any(|a| a.kind == "CHOSEN" && a.from == leader_proposer && a.to == to && a.chosen)
    };
    assert!((1..=3).filter(|&n| asked(n)).count() >= 2, "a majority is asked: {arrows:?}");
    assert!(!told_chosen(leader), "the leader's acceptor needs no CHOSEN: {arrows:?}");
    assert!((1..=3).any(told_chosen), "an acceptor that decided the slot is sent a CHOSEN: {arrows:?}");
    for n in 1..=3 {
        assert!(!told_chosen(n) || asked(n), "a CHOSEN only to an acceptor that was asked: {arrows:?}");
        let to = format!("s{n} learner");
        let from = if told_chosen(n) { format!("s{n} acceptor") } else { leader_proposer.clone() };
        assert!(
            arrows.iter().any(|a| a.kind == "DECIDE" && a.from == from && a.to == to),
            "no DECIDE from {from} to s{n}: {arrows:?}"
        );
    }
    let accepted = arrows.iter().filter(|a| a.kind == "ACCEPTED" && a.to == leader_proposer).count();
    assert!(accepted >= 2, "a decision needs a majority of ACCEPTED: {arrows:?}");
    assert!(html.contains("of 3 at ballot"), "the moment of choice is marked");

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
        arrows_of(&html).iter().any(|a| a.to.starts_with(&format!("s{other} "))),
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
    assert_eq!(lanes(&html).len(), 3);
    let arrows = arrows_of(&html);
    assert_arrows_end_on_receiver_lanes(&arrows);
    // Requests and votes may be repeated while a link comes up; every replica takes part.
    for kind in ["VOTE_REQUEST", "VOTE"] {
        let ends: std::collections::BTreeSet<&str> = arrows
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| if kind == "VOTE" { a.from.as_str() } else { a.to.as_str() })
            .collect();
        assert_eq!(ends.len(), 3, "{kind}: {arrows:?}");
    }
    for kind in ["COMMIT", "ACK"] {
        assert_eq!(arrows.iter().filter(|a| a.kind == kind).count(), 3, "{kind}: {arrows:?}");
    }
    assert_eq!(arrows.iter().filter(|a| a.chosen).count(), 3, "the COMMITs are highlighted");
}

/// A ballot that reached only one acceptor of three, then a new leader: the
/// failed ballot's ACCEPTs are drawn lost or not chosen, and the slot is
/// marked chosen once, at a later ballot (from a real traced run).
#[test]
fn a_failed_ballot_in_a_real_run_is_never_drawn_chosen() {
    let mut cluster = traced_cluster("timeline-failed", false);
    let leader = cluster.wait_for_leader();
    cluster.client().put("warm", "up").unwrap();
    let followers: Vec<usize> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &followers {
        cluster.kill(id);
    }
    // Only the leader's own acceptor can accept: the write cannot be chosen now.
    let attempt = cluster.client_with_deadline(Duration::from_millis(1_500)).put("k", "contested");
    assert!(attempt.is_err(), "no majority, yet the write succeeded");
    let traces = cluster.dir.join("traces");
    let leader_events = read_events(&traces.join(format!("trace-{leader}.jsonl")));
    let (slot, old_ballot) = leader_events
        .iter()
        .filter(|e| {
            e.kind == "ACCEPT" && e.event == "send" && e.keys.as_ref().is_some_and(|k| k.contains(&"k".to_string()))
        })
        .find_map(|e| Some((e.slot?, e.ballot.clone()?)))
        .expect("the leader sent ACCEPTs for the write");
    cluster.kill(leader);
    for id in 1..=3 {
        cluster.start_replica(id);
    }
    cluster.wait_for_leader();
    cluster.client().put("after", "restart").unwrap();
    let out = cluster.dir.join("failed.html");
    let mut drawn = None;
    wait_until("the slot to be decided in the traces", Duration::from_secs(20), || {
        let (ok, stdout, _) = timeline(&["--slot", &slot.to_string()], &traces, &out);
        drawn = Some(stdout.clone());
        ok && stdout.contains("CHOSEN: ")
    });
    let html = std::fs::read_to_string(&out).unwrap();
    let arrows = arrows_of(&html);
    assert_arrows_end_on_receiver_lanes(&arrows);
    let failed: Vec<&DrawnArrow> = arrows.iter().filter(|a| a.ballot == old_ballot).collect();
    assert!(failed.iter().any(|a| a.kind == "ACCEPT"), "the failed ballot's ACCEPTs are drawn: {arrows:?}");
    assert!(failed.iter().all(|a| !a.chosen), "ballot {old_ballot} reached 1 of 3 and must not be drawn chosen");
    assert!(failed.iter().any(|a| a.lost), "ACCEPTs to the killed followers end in a cross");
    let choices = html.matches(r#"<g class="choice""#).count();
    assert_eq!(choices, 1, "chosen once, at a later ballot:\n{}", drawn.unwrap_or_default());
    assert!(!html.contains(&format!(r#"<g class="choice" data-ballot="{old_ballot}""#)));
    // --key finds the slot, --contested lists it.
    let (ok, stdout, _) = timeline(&["--key", "k"], &traces, &out);
    assert!(ok && stdout.contains(&format!("latest first: {slot}")), "{stdout}");
    let (ok, stdout, _) = timeline(&["--contested"], &traces, &out);
    assert!(ok && stdout.contains(&format!("slot {slot}: ballots")), "{stdout}");

    browser_check(&out);
}

/// Renders the page in headless Chromium and reads back the check the page
/// runs on itself: it loaded, its script ran, every arrow ends on its
/// receiver's lane. Without Chromium the check is skipped with a note, unless
/// PAXOS_KV_REQUIRE_BROWSER is set (CI sets it and installs Chromium).
fn browser_check(page: &Path) {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(browser) = browser else {
        assert!(std::env::var_os("PAXOS_KV_REQUIRE_BROWSER").is_none(), "Chromium is required but not installed");
        eprintln!("note: no Chromium here; the browser check of {} is skipped", page.display());
        return;
    };
    let profile = page.with_extension("chromium-profile");
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .output()
        .expect("run Chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    let check = dom
        .split(r#"<p id="check""#)
        .nth(1)
        .unwrap_or_else(|| panic!("Chromium did not render the page: {}", String::from_utf8_lossy(&output.stderr)));
    let check = &check[..check.find("</p>").unwrap()];
    assert!(check.contains(r#"data-bad="0""#), "the page's own check failed in the browser: {check}");
    assert!(check.contains("each ending on its receiver"), "the page's script did not run: {check}");
}
