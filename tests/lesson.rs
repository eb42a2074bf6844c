//! `client lesson amnesia` on real processes: without --durable one slot is
//! chosen two ways, with it every replica ends equal; the same every time.

use paxos_kv::lesson::{self, LessonOptions, FIRST, SECOND};
use std::path::PathBuf;
use std::process::Command;

fn options(durable: bool, round: usize) -> LessonOptions {
    let base = std::env::temp_dir().join(format!("paxos-kv-lesson-test-{}-{round}-{durable}", std::process::id()));
    LessonOptions {
        server_binary: PathBuf::from(env!("CARGO_BIN_EXE_server")),
        durable,
        work_dir: base.join("work"),
        out: base.join("reports"),
    }
}

#[test]
fn the_amnesia_lesson_breaks_agreement_and_the_durable_one_never_does_ten_times_in_a_row() {
    for round in 0..10 {
        for durable in [false, true] {
            let options = options(durable, round);
            let mut steps = Vec::new();
            let outcome = lesson::run(&options, &mut |step| steps.push(step.to_string()))
                .unwrap_or_else(|e| panic!("round {round}, durable {durable}: {e:#}\n{}", steps.join("\n")));
            let story = steps.join("\n");
            let values: Vec<Option<&str>> = outcome.replicas.iter().map(|r| r.value.as_deref()).collect();
            let slots: Vec<Option<&str>> = outcome.replicas.iter().map(|r| r.slot_holds.as_deref()).collect();
            let first = format!("PUT {}={FIRST}", lesson::KEY);
            let second = format!("PUT {}={SECOND}", lesson::KEY);
            assert_eq!(outcome.replicas.len(), 5, "{story}");
            if durable {
                assert!(outcome.agree, "round {round}: durable acceptors must agree\n{story}\n{outcome:?}");
                assert!(values.iter().all(|v| *v == Some(SECOND)), "{values:?}\n{story}");
                assert!(slots.iter().all(|s| *s == Some(first.as_str())), "{slots:?}\n{story}");
            } else {
                assert!(!outcome.agree, "round {round}: amnesia must break agreement\n{story}\n{outcome:?}");
                // The frozen leader learned the first value in the slot; the new majority chose another.
                assert_eq!(values[0], Some(FIRST), "{story}");
                assert_eq!(slots[0], Some(first.as_str()), "{story}");
                assert!(values[1..].iter().all(|v| *v == Some(SECOND)), "{values:?}\n{story}");
                assert!(slots[1..].iter().all(|s| *s == Some(second.as_str())), "{slots:?}\n{story}");
            }
            for timeline in &outcome.timelines {
                let html = std::fs::read_to_string(timeline).unwrap();
                assert!(html.contains("<svg"), "{} is not a timeline", timeline.display());
            }
            assert!(!options.work_dir.join("cluster").exists(), "the lesson left its cluster folder behind");
            let _ = std::fs::remove_dir_all(options.work_dir.parent().unwrap());
        }
    }
}

/// The command a student runs: its exit status says the lesson showed what it should.
#[test]
fn the_lesson_command_tells_the_story_and_cleans_up() {
    for (durable, verdict) in [(false, "DISAGREE"), (true, "AGREE")] {
        let out = std::env::temp_dir().join(format!("paxos-kv-lesson-cli-{}-{durable}", std::process::id()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_client"));
        command.args(["lesson", "amnesia", "--out"]).arg(&out);
        if durable {
            command.arg("--durable");
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
        assert!(stdout.lines().any(|l| l.starts_with(verdict)), "{stdout}");
        assert!(stdout.contains("Paxos Made Simple"), "{stdout}");
        let work = stdout.lines().next().and_then(|l| l.split(" in ").nth(1)).unwrap().trim().to_string();
        assert!(!std::path::Path::new(&work).exists(), "{work} left behind");
        let _ = std::fs::remove_dir_all(&out);
    }
}
