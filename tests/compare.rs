//! A tiny comparison run with the real binaries produces a CSV and a chart
//! that hold both protocols at every level.

use std::process::Command;

#[test]
fn a_tiny_compare_run_writes_a_csv_and_a_chart_of_both_protocols() {
    let out = std::env::temp_dir().join(format!("paxos-kv-compare-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let child = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["compare", "--replicas", "3", "--clients", "2", "--duration", "1", "--levels", "0,40"])
        .args(["--server-binary", env!("CARGO_BIN_EXE_server")])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run client compare");
    let work_dir = std::env::temp_dir().join(format!("paxos-kv-compare-{}", child.id()));
    let output = child.wait_with_output().unwrap();
    assert!(!work_dir.exists(), "compare left {} behind", work_dir.display());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "compare failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("availability") && stdout.contains("2pc"), "{stdout}");

    let files: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
    let csv_path = files.iter().find(|p| p.extension().is_some_and(|e| e == "csv")).expect("a CSV file");
    let svg_path = files.iter().find(|p| p.extension().is_some_and(|e| e == "svg")).expect("an SVG chart");

    let csv = std::fs::read_to_string(csv_path).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let keys: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(keys, [("paxos", "0"), ("paxos", "40"), ("2pc", "0"), ("2pc", "40")]);
    for row in &rows {
        let attempted: u64 = row[2].parse().unwrap();
        let succeeded: u64 = row[3].parse().unwrap();
        let lost: u64 = row[11].parse().unwrap();
        assert!(attempted > 0 && succeeded <= attempted, "{row:?}");
        assert_eq!(lost, 0, "acknowledged writes lost: {row:?}");
    }

    let svg = std::fs::read_to_string(svg_path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for protocol in ["paxos", "2pc"] {
        let marker = format!(r#"data-protocol="{protocol}" points=""#);
        let series: Vec<&str> = svg.match_indices(&marker).map(|(at, _)| &svg[at + marker.len()..]).collect();
        assert_eq!(series.len(), 3, "one {protocol} line per panel");
        for points in series {
            let points = &points[..points.find('"').unwrap()];
            assert_eq!(points.split(' ').count(), 2, "one point per level: {points}");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}
