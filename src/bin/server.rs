//! A paxos-kv replica: flags in, then `paxos_kv::node::serve`.

use anyhow::Result;
use clap::Parser;
use paxos_kv::args::ServerArgs;
use paxos_kv::config::{FailureConfig, ServerConfig};
use paxos_kv::security::ServerSecurity;
use paxos_kv::storage::{Damage, EXIT_STORAGE};
use std::process::ExitCode;

/// Errors end the process with one line on stderr saying what went wrong
/// (with its causes), never a backtrace in place of the message.
fn main() -> ExitCode {
    one_heap();
    paxos_kv::heap::keep_top_reserve();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.downcast_ref::<Damage>().is_some() => {
            log::error!("REFUSING TO START: {error:#}");
            eprintln!("REFUSING TO START: {error:#}");
            ExitCode::from(EXIT_STORAGE as u8)
        }
        Err(error) => {
            log::error!("stopping: {error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One allocator arena for every thread, set before any thread starts. The
/// store is loaded by one thread and rewritten by another (the learner, which
/// also writes a received snapshot over it in place); with glibc's per-thread
/// arenas, memory a value freed in one arena was never reused by the other,
/// and a replica that caught up through a snapshot held 2.2 times its store
/// (1.2 times with one arena, at the same throughput within the noise).
/// `MALLOC_ARENA_MAX` in the environment, glibc's own setting, takes precedence.
fn one_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Whether the heap is on transparent huge pages, for the start-up log. A
/// large store is a B-tree whose nodes are spread over gigabytes: on 4 KiB
/// pages nearly every node visited misses the TLB too, and PUT over 2M keys
/// was about a fifth faster on huge pages. Where the system hands them out
/// only on request (`madvise`), glibc asks for them when started with
/// `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, as `run_servers.sh` does. The
/// cost, where fresh memory is slow to touch (a virtual machine whose host
/// takes back freed memory): each 2 MiB page first touched stalls its thread
/// for milliseconds (README, "Growth and memory").
fn heap_pages() -> &'static str {
    let system = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let mode = system.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(mode, _)| mode);
    let asked = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.split(':').any(|t| t == "glibc.malloc.hugetlb=1"));
    match mode {
        Some("always") => "transparent huge pages (the system's setting is `always`)",
        Some("madvise") if asked => "transparent huge pages (GLIBC_TUNABLES asks glibc for them)",
        Some("madvise") => "4 KiB pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1 puts it on transparent huge pages)",
        Some(_) => "4 KiB pages (transparent huge pages are off on this system)",
        None => "the system's default pages",
    }
}

fn run() -> Result<()> {
    let args = ServerArgs::parse();
    paxos_kv::logging::init(args.log_level);
    log::info!("heap on {}", heap_pages());
    paxos_kv::heap::spawn_toucher(paxos_kv::heap::TOUCH_PERIOD);
    let config = ServerConfig {
        id: args.id,
        cluster_id: args.cluster_id.unwrap_or_else(|| ServerConfig::cluster_id_of(&args.replicas)),
        cluster_state: args.cluster_state,
        rejoin: args.rejoin,
        protocol: args.protocol,
        stall_coordinator: args.stall_coordinator,
        trace: args.trace,
        trace_bytes_max: args.trace_bytes_max,
        security: match &args.certs {
            Some(dir) if !args.insecure => ServerSecurity::from_dir(dir, args.id)?,
            _ => ServerSecurity::Insecure,
        },
        listen: args.listen,
        replicas: args.replicas,
        data_dir: args.data_dir,
        tick_ms: args.tick_ms,
        request_timeout_ms: args.request_timeout_ms,
        vote_timeout_ms: args.vote_timeout_ms,
        frame_bytes_max: args.frame_bytes_max,
        peer_frame_bytes_max: args.peer_frame_bytes_max,
        key_bytes_max: args.key_bytes_max,
        connections_max: args.connections_max,
        handshakes_max: args.handshakes_max,
        inflight_bytes_max: args.inflight_bytes_max,
        client_idle_timeout_ms: args.client_idle_timeout_ms,
        value_bytes_max: args.value_bytes_max,
        snapshot_interval_slots: args.snapshot_interval_slots,
        snapshot_log_bytes: args.snapshot_log_bytes,
        queue_bytes_max: args.queue_bytes_max,
        window_slots: args.window_slots,
        seed: args.seed,
        failure: FailureConfig {
            mtbf_ms: args.fail_mtbf_ms,
            downtime_ms: args.fail_downtime_ms,
            seed: args.fail_seed,
            mode: args.fail_mode,
            failures_max: args.fail_max,
        },
    };
    paxos_kv::node::serve(config)
}
