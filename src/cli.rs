//! What the client binary does for each command, so that the binary stays a
//! thin layer of flags: the prompt and pipe loops, one-shot commands, the demo,
//! `inspect`, `compare` and `timeline`.

use crate::client::{self, Client, ClientOptions};
use crate::compare;
use crate::config::Protocol;
use crate::kv::Reply;
use crate::lesson;
use crate::prompt::{self, Outcome, PromptCommand};
use crate::security::ClientSecurity;
use crate::timeline;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Exit codes for scripts: 0 done, 1 key not found, 2 error.
pub const EXIT_NOT_FOUND: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Output into a closed pipe (`client timeline ... | head`) ends the program
/// quietly, as for any Unix filter, while a write to a socket whose replica
/// died only fails that request. Both raise SIGPIPE: TLS writes go through
/// `writev`, which has no MSG_NOSIGNAL. So the signal is caught and ends the
/// program only when stdout is the pipe that lost its reader; otherwise the
/// write that raised it returns EPIPE.
#[cfg(unix)]
pub fn end_quietly_when_stdout_closes() {
    extern "C" fn on_sigpipe(_: libc::c_int) {
        let mut stdout = libc::pollfd { fd: libc::STDOUT_FILENO, events: libc::POLLOUT, revents: 0 };
        // SAFETY: poll, signal and raise are async-signal-safe; the pollfd is ours.
        unsafe {
            // A pipe without a reader reports POLLERR to its writer.
            if libc::poll(&mut stdout, 1, 0) == 1 && stdout.revents & libc::POLLERR != 0 {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                // Delivered when the handler returns: the filter's usual end.
                libc::raise(libc::SIGPIPE);
            }
        }
    }
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigpipe as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGPIPE, &action, std::ptr::null_mut());
    }
}

/// What `client timeline` is asked for.
pub enum TimelineQuery {
    Slot(u64),
    Txn(String),
    /// The latest slot whose value touched a key.
    Key(String),
    /// A list of the slots that saw more than one ballot.
    Contested,
}

pub fn run_timeline(query: TimelineQuery, traces: &std::path::Path, out: Option<std::path::PathBuf>) -> ExitCode {
    let loaded = match timeline::load_traces(traces) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let selection = match query {
        TimelineQuery::Slot(slot) => timeline::Selection::Slot(slot),
        TimelineQuery::Txn(txn) => timeline::Selection::Txn(txn),
        TimelineQuery::Key(key) => {
            let slots = timeline::slots_touching(&loaded, &key);
            let Some(latest) = slots.first() else {
                eprintln!("not found: no traced slot touched key {key:?}");
                return ExitCode::from(EXIT_NOT_FOUND);
            };
            let listed: Vec<String> = slots.iter().take(10).map(u64::to_string).collect();
            println!("slots that touched {key:?}, latest first: {}", listed.join(", "));
            timeline::Selection::Slot(*latest)
        }
        TimelineQuery::Contested => {
            let contested = timeline::contested_slots(&loaded);
            if contested.is_empty() {
                println!("no traced slot saw more than one ballot");
                return ExitCode::from(EXIT_NOT_FOUND);
            }
            for (slot, ballots) in &contested {
                println!("slot {slot}: ballots {}", ballots.join(", "));
            }
            return ExitCode::SUCCESS;
        }
    };
    let round = match timeline::select(&loaded, &selection) {
        Ok(round) => round,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let out = out.unwrap_or_else(|| {
        let name = match &selection {
            timeline::Selection::Slot(slot) => format!("slot-{slot}"),
            timeline::Selection::Txn(txn) => format!("txn-{}", txn.replace(':', "-")),
        };
        std::path::PathBuf::from("reports").join(format!("timeline-{name}.html"))
    });
    // A .svg file gets the picture alone (for documents); anything else the page.
    let page = if out.extension().is_some_and(|e| e == "svg") { round.render_svg() } else { round.render_html() };
    let written = out.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&out, page));
    print!("{}", round.render_text());
    match written {
        Ok(()) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", out.display());
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A working folder (replicas' data and logs) removed however the run ends.
struct RemoveOnDrop<'a>(&'a std::path::Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// `text` in lines of at most `width` characters (longer words stay whole),
/// continuation lines indented by `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if !line.trim().is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(format!("{indent}{word}"));
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines.join("\n")
}

/// Plays a lesson and prints it: its steps, every replica's view, the
/// timelines written, and what it means. Exit 0 when the lesson showed what
/// it is meant to (a disagreement without `--durable`, agreement with it).
pub fn run_lesson(options: &lesson::LessonOptions) -> ExitCode {
    let _work_dir = RemoveOnDrop(&options.work_dir);
    println!(
        "lesson amnesia{}: five replicas of its own, on free ports, in {}\n",
        if options.durable { " --durable" } else { "" },
        options.work_dir.display()
    );
    let outcome = match lesson::run(options, &mut |step| println!("{}", wrap(step, 100, "   "))) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    println!("\nEach replica's own copy (read outside the protocol):");
    println!("{:<8} {:<10} {:<34} note", "replica", lesson::KEY, format!("slot {}", outcome.slot));
    for view in &outcome.replicas {
        println!(
            "{:<8} {:<10} {:<34} {}",
            format!("s{}", view.id),
            view.value.as_deref().unwrap_or("(none)"),
            view.slot_holds.as_deref().unwrap_or("?"),
            view.note
        );
    }
    println!(
        "\n{}",
        if outcome.agree { "AGREE: every replica holds the same." } else { "DISAGREE: slot chosen two ways." }
    );
    println!("\nTimelines of slot {}:", outcome.slot);
    for path in &outcome.timelines {
        println!("  {}", path.display());
    }
    println!("\n{}", wrap(&lesson::explanation(&outcome, options.durable), 100, ""));
    if outcome.agree == options.durable {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the choreography did not show what it should; see the steps above");
        ExitCode::from(EXIT_NOT_FOUND)
    }
}

pub fn run_compare(options: &compare::CompareOptions, out: &std::path::Path) -> ExitCode {
    use indicatif::{ProgressBar, ProgressStyle};
    let _work_dir = RemoveOnDrop(&options.work_dir);
    let protocols = [Protocol::Paxos, Protocol::TwoPc];
    println!(
        "compare: {} replicas, {} clients, {} s per level, levels {:?}% downtime (mean failure {} ms), seed {}",
        options.replicas,
        options.clients,
        options.duration_per_level.as_secs(),
        options.levels_percent,
        options.mean_downtime_ms,
        options.seed
    );
    let progress = ProgressBar::new((protocols.len() * options.levels_percent.len()) as u64);
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.enable_steady_tick(Duration::from_millis(200));
    let mut results = Vec::new();
    for protocol in protocols {
        for &level in &options.levels_percent {
            progress.set_message(format!("{protocol} at {level}% downtime"));
            match compare::run_level(options, protocol, level) {
                Ok(result) => results.push(result),
                Err(e) => {
                    progress.abandon();
                    eprintln!("error: {protocol} at {level}%: {e:#}");
                    return ExitCode::from(EXIT_ERROR);
                }
            }
            progress.inc(1);
        }
    }
    progress.finish_and_clear();
    print!("{}", compare::table(&results));
    let stem = format!(
        "compare-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    );
    match compare::write_reports(&results, options, out, &stem) {
        Ok((csv, svg)) => {
            println!("wrote {} and {}", csv.display(), svg.display());
            let lost: u64 = results.iter().map(|r| r.writes_lost).sum();
            if lost > 0 {
                eprintln!("error: {lost} acknowledged write(s) missing at a replica that is up");
                return ExitCode::from(EXIT_ERROR);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

pub fn one_shot(client: &mut Client, command: PromptCommand) -> ExitCode {
    match prompt::execute(client, &command) {
        Outcome::Done(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Outcome::NotFound(_) => {
            let key = match &command {
                PromptCommand::Get { key } | PromptCommand::Delete { key } => key.as_str(),
                _ => "",
            };
            eprintln!("not found: {key}");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        Outcome::Failed(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// What one line of the prompt did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LineOutcome {
    Continue,
    /// The command failed or was not understood (pipe mode then exits 1).
    Failed,
    Quit,
}

/// Runs one parsed line. Prints exactly one line per command (STATUS prints
/// one per replica) so scripts can pair them up.
fn run_line(client: &mut Client, options: &ClientOptions, line: &str, interactive: bool) -> LineOutcome {
    match prompt::parse(line) {
        Ok(None) => {}
        Ok(Some(PromptCommand::Quit)) => return LineOutcome::Quit,
        Ok(Some(PromptCommand::Help)) => {
            if interactive {
                println!("{}", prompt::HELP);
            } else {
                println!("{}", prompt::USAGE);
            }
        }
        Ok(Some(PromptCommand::Status)) => {
            let lines =
                prompt::status_lines(&client::status_all(client.replicas(), options.timeout, &options.security));
            if interactive {
                lines.iter().for_each(|l| println!("{l}"));
            } else {
                println!(
                    "{}",
                    lines[1..]
                        .iter()
                        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
        }
        Ok(Some(command)) => match prompt::execute(client, &command) {
            Outcome::Done(value) if matches!(command, PromptCommand::Get { .. }) => {
                println!("{}", prompt::display_value(&value))
            }
            Outcome::Done(line) | Outcome::NotFound(line) => println!("{line}"),
            Outcome::Failed(e) => {
                println!("ERROR: {e}");
                return LineOutcome::Failed;
            }
        },
        Err(usage) => {
            println!("ERROR: {usage}");
            return LineOutcome::Failed;
        }
    }
    LineOutcome::Continue
}

/// One command per input line; exits 1 if any of them failed.
pub fn piped(client: &mut Client, options: &ClientOptions) -> ExitCode {
    let mut failed = false;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match run_line(client, options, &line, false) {
            LineOutcome::Continue => {}
            LineOutcome::Failed => failed = true,
            LineOutcome::Quit => break,
        }
    }
    if failed {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn interactive(client: &mut Client, options: &ClientOptions) -> ExitCode {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("error: cannot open the line editor: {e}");
            return piped(client, options);
        }
    };
    let history = std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".paxos_kv_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let replicas = client.replicas().len();
    let up = client::status_all(client.replicas(), options.timeout, &options.security)
        .iter()
        .filter(|(_, status)| status.is_ok())
        .count();
    let warning = if up * 2 <= replicas { " (no majority: requests fail until more are up)" } else { "" };
    println!("paxos-kv: {up} of {replicas} replicas answer{warning}. Type HELP for commands, QUIT to leave.");
    loop {
        match editor.readline("paxos-kv> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if run_line(client, options, &line, true) == LineOutcome::Quit {
                    break;
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    ExitCode::SUCCESS
}

/// Prints every replica's copy of each key; exits 1 if two replicas that
/// answered disagree on a key.
pub fn inspect(servers: &[SocketAddr], keys: &[String], timeout: Duration, security: &ClientSecurity) -> ExitCode {
    let mut disagreements = 0;
    for key in keys {
        let copies: Vec<String> = servers
            .iter()
            .map(|addr| match client::local_get(*addr, key, timeout, security) {
                Ok(Reply::Value(Some(value))) => value,
                Ok(Reply::Value(None)) => prompt::NOT_FOUND.to_string(),
                Ok(Reply::Rejected(e)) => format!("[{e}]"),
                Ok(other) => format!("[{other:?}]"),
                Err(e) => format!("[down: {e}]"),
            })
            .collect();
        let answered: std::collections::BTreeSet<&String> = copies.iter().filter(|c| !c.starts_with('[')).collect();
        if answered.len() > 1 {
            disagreements += 1;
        }
        let shown: Vec<String> = copies.iter().enumerate().map(|(i, c)| format!("s{}={c}", i + 1)).collect();
        println!("{key}: {}{}", shown.join("  "), if answered.len() > 1 { "  DISAGREE" } else { "" });
    }
    if disagreements > 0 {
        ExitCode::from(EXIT_NOT_FOUND)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn demo(client: &mut Client) -> ExitCode {
    let mut failures = 0;
    let mut show = |label: String, result: Result<String, String>| match result {
        Ok(text) => println!("{label:<28} -> {text}"),
        Err(e) => {
            failures += 1;
            println!("{label:<28} -> ERROR: {e}");
        }
    };
    println!("-- pre-populating 10 keys");
    for i in 0..10 {
        show(
            format!("PUT seed-{i} value-{i}"),
            client.put(&format!("seed-{i}"), &format!("value-{i}")).map(|()| "OK".into()).map_err(|e| e.to_string()),
        );
    }
    let pairs = [("apple", "red"), ("banana", "yellow"), ("cherry", "dark red"), ("grape", "green"), ("kiwi", "brown")];
    println!("-- five PUTs");
    for (key, value) in pairs {
        show(format!("PUT {key} {value}"), client.put(key, value).map(|()| "OK".into()).map_err(|e| e.to_string()));
    }
    println!("-- five GETs");
    for (key, _) in pairs {
        show(
            format!("GET {key}"),
            client.get(key).map(|v| v.unwrap_or_else(|| prompt::NOT_FOUND.into())).map_err(|e| e.to_string()),
        );
    }
    println!("-- five DELETEs");
    for (key, _) in pairs {
        show(
            format!("DELETE {key}"),
            client
                .delete(key)
                .map(|existed| if existed { "DELETED".into() } else { prompt::NOT_FOUND.into() })
                .map_err(|e| e.to_string()),
        );
    }
    println!("-- GETs after DELETE");
    for (key, _) in pairs.iter().take(2) {
        show(
            format!("GET {key}"),
            client.get(key).map(|v| v.unwrap_or_else(|| prompt::NOT_FOUND.into())).map_err(|e| e.to_string()),
        );
    }
    if failures > 0 {
        ExitCode::from(EXIT_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

/// Polls until replica `replica` (1-based) has applied every slot the others
/// had decided when the wait began; prints the time it took.
pub fn wait_caught_up(servers: &[SocketAddr], replica: usize, timeout_s: u64, security: &ClientSecurity) -> ExitCode {
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(timeout_s);
    let poll = Duration::from_millis(500);
    let others_decided = || {
        client::status_all(servers, poll, security)
            .iter()
            .enumerate()
            .filter(|(index, _)| index + 1 != replica)
            .filter_map(|(_, (_, status))| status.as_ref().ok()?.paxos().map(|s| s.learner_next_slot))
            .max()
    };
    let target = loop {
        if let Some(target) = others_decided() {
            break target;
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("ERROR: no other replica answers");
            return ExitCode::from(EXIT_ERROR);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let Some(&addr) = servers.get(replica.wrapping_sub(1)) else {
        eprintln!("ERROR: there is no replica {replica}");
        return ExitCode::from(EXIT_ERROR);
    };
    while std::time::Instant::now() < deadline {
        let applied = client::status(addr, poll, security).ok().and_then(|s| s.paxos().map(|s| s.learner_next_slot));
        if applied.is_some_and(|slot| slot >= target) {
            println!("replica {replica} caught up to slot {target} in {:.1} s", started.elapsed().as_secs_f64());
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("ERROR: replica {replica} did not reach slot {target} within {timeout_s} s");
    ExitCode::from(EXIT_ERROR)
}

/// The value of a one-shot PUT: as given, from stdin for `-`, or from a file.
pub fn read_value(value: Option<String>, file: Option<std::path::PathBuf>) -> Result<String, String> {
    use std::io::Read;
    match (value.as_deref(), file) {
        (_, Some(path)) => {
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read the value from {}: {e}", path.display()))
        }
        (Some("-"), None) => {
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
            Ok(value)
        }
        (Some(value), None) => Ok(value.to_string()),
        (None, None) => Err("give a value, `-` for stdin, or --value-file F".into()),
    }
}

/// `bench --workload-set`: every workload at every client count, a table as
/// the runs finish, then a CSV and a chart under `reports`.
pub fn bench_workload_set(
    servers: &[SocketAddr],
    base: &crate::bench::BenchOptions,
    options: &ClientOptions,
    reports: &std::path::Path,
) -> ExitCode {
    use crate::bench;
    let runs_total = bench::WORKLOADS.len() * bench::WORKLOAD_CLIENTS.len();
    println!(
        "bench workload set: {runs_total} runs of {} s ({} workloads at {:?} clients, at most {} thread(s)), {}-byte values, {} keys, {} replicas",
        base.duration.as_secs(),
        bench::WORKLOADS.len(),
        bench::WORKLOAD_CLIENTS,
        base.threads,
        base.value_bytes,
        base.keys,
        servers.len()
    );
    println!(
        "{:<8} {:>7} {:>9} {:>7} {:>8} {:>8} {:>9}",
        "workload", "clients", "ops/s", "failed", "p50 ms", "p99 ms", "p99.9 ms"
    );
    let runs = bench::run_set(servers, base, options, |run| {
        let ms = |q: f64| run.report.latency_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<8} {:>7} {:>9.0} {:>7} {:>8.2} {:>8.2} {:>9.2}",
            run.workload,
            run.clients,
            run.report.throughput(),
            run.report.failed,
            ms(0.5),
            ms(0.99),
            ms(0.999)
        );
    });
    let stem = format!(
        "bench-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    );
    let title = format!(
        "paxos-kv: {} replicas, {}-byte values, {} keys, {} s per run",
        servers.len(),
        base.value_bytes,
        base.keys,
        base.duration.as_secs()
    );
    let (csv, svg) = (reports.join(format!("{stem}.csv")), reports.join(format!("{stem}.svg")));
    let written = std::fs::create_dir_all(reports)
        .and_then(|()| std::fs::write(&csv, bench::set_csv(&runs, base.threads)))
        .and_then(|()| std::fs::write(&svg, bench::set_chart(&runs, &title)));
    if let Err(e) = written {
        eprintln!("error: cannot write the report under {}: {e}", reports.display());
        return ExitCode::from(EXIT_ERROR);
    }
    println!("wrote {} and {}", csv.display(), svg.display());
    if runs.iter().any(|run| run.report.succeeded == 0) {
        eprintln!("error: a run completed no request");
        return ExitCode::from(EXIT_ERROR);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::wrap;

    /// A replica that died under a TLS write (`writev`, no MSG_NOSIGNAL) costs
    /// the request, not the client: the lesson once died here, silently,
    /// leaving its replicas running.
    #[cfg(unix)]
    #[test]
    fn a_write_to_a_closed_socket_fails_the_write_and_the_process_lives() {
        use std::io::{IoSlice, Write};
        super::end_quietly_when_stdout_closes();
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(theirs);
        let error = ours.write_vectored(&[IoSlice::new(b"PUT"), IoSlice::new(b" k v")]).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn text_wraps_at_word_boundaries_with_an_indent() {
        assert_eq!(wrap("1. one two three four", 10, "   "), "1. one two\n   three\n   four");
        assert_eq!(wrap("averyveryverylongword x", 5, ""), "averyveryverylongword\nx");
        assert_eq!(wrap("", 10, ""), "");
    }
}
