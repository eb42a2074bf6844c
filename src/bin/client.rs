//! The paxos-kv client: an interactive prompt, a pipe reader, one-shot
//! commands, a demo and a benchmark, all over the remote stub.

use clap::Parser;
use paxos_kv::args::{ClientArgs, ClientCommand, LessonName};
use paxos_kv::bench::{self, BenchOptions};
use paxos_kv::cli::{self, EXIT_ERROR};
use paxos_kv::client::{self, Client, ClientOptions};
use paxos_kv::compare;
use paxos_kv::lesson;
use paxos_kv::prompt::{self, PromptCommand};
use paxos_kv::security::ClientSecurity;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

fn security(args: &ClientArgs) -> Result<ClientSecurity, String> {
    match (&args.certs, args.insecure) {
        (_, true) => Ok(ClientSecurity::Insecure),
        (Some(dir), false) => ClientSecurity::from_dir(dir).map_err(|e| format!("{e:#}")),
        (None, false) => Err("give --certs DIR (or PAXOS_KV_CERTS) for a cluster with certificates, or \
             --insecure for one started with --insecure; ./run_client.sh does this for you"
            .into()),
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    cli::end_quietly_when_stdout_closes();
    let args = ClientArgs::parse();
    let needs_cluster = !matches!(
        args.command,
        Some(ClientCommand::Timeline { .. } | ClientCommand::Compare { .. } | ClientCommand::Lesson { .. })
    );
    let security = match security(&args) {
        Ok(security) => security,
        Err(e) if needs_cluster => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
        Err(_) => ClientSecurity::Insecure,
    };
    let options = ClientOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        deadline: Duration::from_millis(args.deadline_ms),
        security: security.clone(),
        ..ClientOptions::default()
    };
    let mut client = match Client::with_options(&args.servers, options.clone()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match args.command.unwrap_or(ClientCommand::Prompt) {
        ClientCommand::Prompt if std::io::stdin().is_terminal() => cli::interactive(&mut client, &options),
        ClientCommand::Prompt => cli::piped(&mut client, &options),
        ClientCommand::Put { key, value, value_file } => match cli::read_value(value, value_file) {
            Ok(value) => cli::one_shot(&mut client, PromptCommand::Put { key, value }),
            Err(e) => {
                eprintln!("ERROR: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        },
        ClientCommand::Get { key } => cli::one_shot(&mut client, PromptCommand::Get { key }),
        ClientCommand::Delete { key } => cli::one_shot(&mut client, PromptCommand::Delete { key }),
        ClientCommand::Status => {
            let statuses = client::status_all(&args.servers, options.timeout, &security);
            prompt::status_lines(&statuses).iter().for_each(|l| println!("{l}"));
            let up = statuses.iter().filter(|(_, status)| status.is_ok()).count();
            if up > args.servers.len() / 2 {
                ExitCode::SUCCESS
            } else {
                eprintln!("ERROR: {up} of {} replicas answer; a majority is needed", args.servers.len());
                ExitCode::from(EXIT_ERROR)
            }
        }
        ClientCommand::Demo => cli::demo(&mut client),
        ClientCommand::Inspect { keys } => cli::inspect(&args.servers, &keys, options.timeout, &security),
        ClientCommand::Compare {
            replicas,
            clients,
            duration,
            levels,
            downtime_ms,
            seed,
            keys_per_client,
            put_ratio,
            vote_timeout_ms,
            out,
            server_binary,
        } => {
            let server_binary = server_binary.unwrap_or_else(|| {
                std::env::current_exe().map(|exe| exe.with_file_name("server")).unwrap_or_else(|_| "server".into())
            });
            let work_dir = std::env::temp_dir().join(format!("paxos-kv-compare-{}", std::process::id()));
            let options = compare::CompareOptions {
                server_binary,
                replicas,
                clients,
                duration_per_level: Duration::from_secs(duration),
                levels_percent: levels,
                mean_downtime_ms: downtime_ms,
                seed,
                keys_per_client,
                put_ratio,
                client_deadline: Duration::from_millis(2_000),
                vote_timeout_ms,
                work_dir,
            };
            cli::run_compare(&options, &out)
        }
        ClientCommand::Lesson { lesson: LessonName::Amnesia, durable, out, server_binary } => {
            let server_binary = server_binary.unwrap_or_else(|| {
                std::env::current_exe().map(|exe| exe.with_file_name("server")).unwrap_or_else(|_| "server".into())
            });
            let work_dir = std::env::temp_dir().join(format!("paxos-kv-lesson-{}", std::process::id()));
            cli::run_lesson(&lesson::LessonOptions { server_binary, durable, work_dir, out })
        }
        ClientCommand::Watch { interval_ms, duration } => {
            if !std::io::stdout().is_terminal() {
                eprintln!("error: watch needs a terminal; use `status` in scripts");
                return ExitCode::from(EXIT_ERROR);
            }
            match paxos_kv::watch::run(
                &args.servers,
                &security,
                Duration::from_millis(interval_ms),
                duration.map(Duration::from_secs),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        ClientCommand::Timeline { slot, txn, key, contested, traces, out } => {
            let query = match (slot, txn, key) {
                (Some(slot), _, _) => cli::TimelineQuery::Slot(slot),
                (None, Some(txn), _) => cli::TimelineQuery::Txn(txn),
                (None, None, Some(key)) => cli::TimelineQuery::Key(key),
                (None, None, None) if contested => cli::TimelineQuery::Contested,
                _ => unreachable!("clap requires one of --slot, --txn, --key, --contested"),
            };
            cli::run_timeline(query, &traces, out)
        }
        ClientCommand::Sizes => {
            for (addr, status) in client::status_all(&args.servers, options.timeout, &security) {
                match status.as_ref().map(|s| s.paxos()) {
                    Ok(Some(s)) => println!(
                        "replica {} {addr}: keys {} store {:.1} MiB learner-held {:.1} MiB apply-pause-max {:.1} ms (cpu {:.1} ms: {}) \
                         pauses-over-10ms {} (over 10 ms of cpu: {}) next-slot {}",
                        s.node_id,
                        s.keys,
                        s.store_bytes as f64 / (1 << 20) as f64,
                        s.learner_held_bytes as f64 / (1 << 20) as f64,
                        s.apply_pause_max_us as f64 / 1000.0,
                        s.apply_pause_cpu_max_us as f64 / 1000.0,
                        if s.apply_pause_cause.is_empty() { "none yet" } else { &s.apply_pause_cause },
                        s.apply_pauses_over_10ms,
                        s.apply_pauses_over_10ms_cpu,
                        s.learner_next_slot
                    ),
                    Ok(None) => println!("{addr}: not a Paxos replica"),
                    Err(e) => println!("{addr}: DOWN ({e})"),
                }
            }
            ExitCode::SUCCESS
        }
        ClientCommand::WaitCaughtUp { replica, timeout_s } => {
            cli::wait_caught_up(&args.servers, replica, timeout_s, &security)
        }
        ClientCommand::Bench {
            clients,
            threads,
            duration,
            value_size,
            keys,
            put_ratio,
            seed,
            fill,
            workload_set,
            reports,
        } => {
            let bench_options = BenchOptions {
                clients,
                threads,
                duration: Duration::from_secs(duration),
                value_bytes: value_size,
                keys,
                put_ratio,
                seed,
                fill,
            };
            if workload_set {
                return cli::bench_workload_set(&args.servers, &bench_options, &options, &reports);
            }
            println!(
                "bench: {clients} closed-loop clients on {} thread(s), {duration} s, {value_size}-byte values, {keys} keys, put ratio {put_ratio}, {} replicas",
                threads.clamp(1, clients.max(1)),
                args.servers.len()
            );
            let report = bench::run(&args.servers, &bench_options, &options);
            println!("{}", report.table());
            println!("{}", report.summary());
            if let Some(error) = &report.first_error {
                println!("first error: {error}");
            }
            if report.succeeded == 0 {
                return ExitCode::from(EXIT_ERROR);
            }
            ExitCode::SUCCESS
        }
    }
}
