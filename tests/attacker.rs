//! Tests that play the attacker against real replicas on loopback: strangers
//! without the cluster's certificates, clients claiming to be replicas,
//! forged protocol messages, Slowloris, declared-huge frames and a flood of
//! malformed frames. None may change the store, stall it, make replicas
//! disagree or run one out of memory.

mod support;

use paxos_kv::config::Protocol;
use paxos_kv::kv::{Command, KvStore, Op, Reply, StoreCursor};
use paxos_kv::paxos::messages::{CatchupReply, SnapshotPart};
use paxos_kv::paxos::messages::{Decide, LeaderAlive, Prepare};
use paxos_kv::paxos::{Ballot, Envelope, Message, SlotValue};
use paxos_kv::security::{self, ClientSecurity, Stream, ANY_REPLICA};
use paxos_kv::wire::{self, ClientRequest, Hello, Speaker};
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{certs_dir, client_security, wait_until, Cluster};

/// True if the server closes `stream` (after at most a TLS alert) within 5 s.
fn closed_by_server(stream: &mut impl Read) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
    false
}

fn tls(addr: SocketAddr, security: &ClientSecurity) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_millis(500)))?;
    security.wrap(tcp, ANY_REPLICA)
}

/// A client certificate from another CA, in a directory that still trusts the
/// real CA (so that it gets as far as the server's check).
fn foreign_client(dir: &Path) -> ClientSecurity {
    let other = dir.join("other-ca");
    security::issue(&other, 1, &[]).unwrap();
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(certs_dir().join(security::CA_CERT), mixed.join(security::CA_CERT)).unwrap();
    for file in [security::CLIENT_CERT, security::CLIENT_KEY] {
        std::fs::copy(other.join(file), mixed.join(file)).unwrap();
    }
    ClientSecurity::from_dir(&mixed).unwrap()
}

fn replica_hello(node_id: u32) -> Vec<u8> {
    wire::frame(&Hello::new(Speaker::Replica { node_id, protocol: Protocol::Paxos })).unwrap()
}

fn envelope(from: u32, to: u32, msg: Message) -> Envelope {
    Envelope { from, to, msg }
}

/// Everything a stranger could try to say as replica 2.
fn forgeries(to: u32, next_slot: u64) -> Vec<(&'static str, Vec<Envelope>)> {
    let forged = SlotValue::batch(vec![Command {
        client_id: 666,
        seq: 1,
        op: Op::Put { key: "k0".into(), value: "forged".into() },
    }]);
    let mut store = KvStore::default();
    store.apply(&Command { client_id: 666, seq: 1, op: Op::Put { key: "only".into(), value: "me".into() } });
    let chunk = store.chunk_after(&StoreCursor::Start, 1 << 20).0;
    let part = SnapshotPart {
        snapshot_slot: u64::MAX - 10,
        applied_commands: 1,
        after: StoreCursor::Start,
        crc32: SnapshotPart::checksum(&chunk),
        chunk,
        next: None,
    };
    let catchup = CatchupReply { snapshot: Some(part), entries: vec![] };
    vec![
        ("Decide", vec![envelope(2, to, Message::Decide(Decide { slot: next_slot, value: forged }))]),
        ("CatchupReply", vec![envelope(2, to, Message::CatchupReply(catchup))]),
        (
            "Prepare u64::MAX",
            vec![envelope(2, to, Message::Prepare(Prepare { ballot: Ballot::new(u64::MAX, 2), first_slot: 0 }))],
        ),
        (
            "LeaderAlive flood",
            (0..1_000)
                .map(|_| envelope(2, to, Message::LeaderAlive(LeaderAlive { ballot: Ballot::new(1_000, 2) })))
                .collect(),
        ),
    ]
}

/// What every replica holds for the keys, and who leads with which ballot.
type Copies = Vec<Vec<Result<Reply, String>>>;

fn snapshot_of(cluster: &Cluster, keys: &[String]) -> (Copies, (u32, Ballot)) {
    // Followers learn a decision with the leader's next message, a tick at most
    // after the client's reply: wait for every copy to settle (replicas that
    // never agree fail here).
    let mut values = Vec::new();
    wait_until("every replica to hold the same copy of each key", Duration::from_secs(10), || {
        values = keys.iter().map(|k| cluster.local_values(k)).collect();
        values.iter().all(|copies: &Vec<_>| copies.windows(2).all(|w| w[0] == w[1]))
    });
    let leader = cluster.wait_for_leader();
    let ballot = cluster.status(leader).unwrap().proposer.ballot;
    (values, (leader as u32, ballot))
}

#[test]
fn strangers_and_clients_cannot_speak_as_replicas_nor_forge_protocol_messages() {
    let cluster = Cluster::start("forgery", 3, &[]);
    let mut client = cluster.client();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for key in &keys {
        client.put(key, "genuine").unwrap();
    }
    let before = snapshot_of(&cluster, &keys);
    let scratch = std::env::temp_dir().join(format!("paxos-kv-attacker-{}", std::process::id()));
    let foreign = foreign_client(&scratch);

    for (id, &addr) in cluster.addrs.iter().enumerate() {
        let to = id as u32 + 1;
        let next_slot = cluster.status(id + 1).unwrap().learner_next_slot;
        for (what, envelopes) in forgeries(to, next_slot) {
            let frame = wire::frame(&envelopes).unwrap();
            // Plain TCP: no TLS, no hearing.
            let mut plain = TcpStream::connect(addr).unwrap();
            plain.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let _ = plain.write_all(&replica_hello(2)).and_then(|()| plain.write_all(&frame));
            assert!(closed_by_server(&mut plain), "a plain-TCP {what} was not refused");
            // A certificate from another CA: refused by the server (with TLS 1.3
            // the client's side of the handshake may complete first).
            if let Ok(mut stranger) = tls(addr, &foreign) {
                let hello = wire::frame(&Hello::new(Speaker::Client)).unwrap();
                let _ = stranger
                    .write_all(&hello)
                    .and_then(|()| stranger.write_all(&wire::frame(&ClientRequest::Status).unwrap()));
                assert!(closed_by_server(&mut stranger), "a certificate from another CA was accepted");
            }
            // The client certificate claiming replica 2: refused at the hello.
            let mut claimed = tls(addr, &client_security()).unwrap();
            let _ = claimed.write_all(&replica_hello(2)).and_then(|()| claimed.write_all(&frame));
            assert!(closed_by_server(&mut claimed), "a client certificate spoke as replica 2 ({what})");
            // The client certificate as a client: a peer frame is not a request.
            let mut as_client = tls(addr, &client_security()).unwrap();
            let _ = as_client
                .write_all(&wire::frame(&Hello::new(Speaker::Client)).unwrap())
                .and_then(|()| as_client.write_all(&frame));
            assert!(closed_by_server(&mut as_client), "a client connection took a {what}");
        }
    }
    let log = std::fs::read_to_string(cluster.log_path(1)).unwrap();
    assert!(log.contains("closing connections"), "refusals must be logged");

    client.put("after", "flowing").unwrap();
    let after = snapshot_of(&cluster, &keys);
    assert_eq!(after.0, before.0, "a forged message changed a replica's copy of a key");
    assert_eq!(after.1, before.1, "a forged message changed the leader or its ballot");
    let _ = std::fs::remove_dir_all(&scratch);
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn thirty_connections_declaring_maximal_frames_stay_within_the_byte_budget() {
    const BUDGET: u64 = 16 << 20;
    let cluster = Cluster::start("big-frames", 3, &["--inflight-bytes-max", &BUDGET.to_string()]);
    let mut client = cluster.client();
    client.put("warm", "up").unwrap();
    let rss_before = rss_bytes(cluster.pid(1));
    let chunk = vec![7u8; 64 * 1024];
    let mut holders = Vec::new();
    for _ in 0..30 {
        let Ok(mut stream) = tls(cluster.addrs[0], &client_security()) else { continue };
        let hello = wire::frame(&Hello::new(Speaker::Client)).unwrap();
        if stream.write_all(&hello).is_err() || stream.write_all(&(4u32 << 20).to_be_bytes()).is_err() {
            continue;
        }
        // Half of a 4 MiB frame, then silence.
        for _ in 0..32 {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        holders.push(stream);
    }
    // Let the server read what was sent before measuring.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut rss_peak = 0;
    while Instant::now() < deadline {
        rss_peak = rss_peak.max(rss_bytes(cluster.pid(1)));
        std::thread::sleep(Duration::from_millis(100));
    }
    let grown = rss_peak.saturating_sub(rss_before);
    println!("RSS grew by {} MiB with 30 half-sent 4 MiB frames (budget {} MiB)", grown >> 20, BUDGET >> 20);
    assert!(grown < BUDGET + (24 << 20), "RSS grew by {grown} bytes, beyond the {BUDGET}-byte budget and slack");
    drop(holders);
    client.put("after", "served").unwrap();
}

#[test]
fn a_slowloris_beyond_every_limit_leaves_clients_served() {
    let cluster = Cluster::start("slowloris", 3, &["--handshakes-max", "16", "--connections-max", "8"]);
    // The leader is attacked, and the client talks to it alone.
    let leader = cluster.wait_for_leader();
    let addr = cluster.addrs[leader - 1];
    // 60 connections that dribble the start of a TLS ClientHello, a byte at a
    // time, and come back whenever they are closed.
    let stop = Instant::now() + Duration::from_secs(6);
    let (connected, first_connects) = std::sync::mpsc::channel();
    let dribblers: Vec<_> = (0..60)
        .map(|_| {
            let connected = connected.clone();
            std::thread::spawn(move || {
                let mut announced = false;
                while Instant::now() < stop {
                    let Ok(mut stream) = TcpStream::connect(addr) else { continue };
                    if !std::mem::replace(&mut announced, true) {
                        let _ = connected.send(());
                    }
                    for byte in [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01].iter().cycle() {
                        if Instant::now() > stop || stream.write_all(&[*byte]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                }
            })
        })
        .collect();
    for _ in 0..60 {
        first_connects.recv().unwrap();
    }
    let mut client = cluster.client_of(leader, Duration::from_secs(5));
    for i in 0..20 {
        client.put(&format!("during-{i}"), "served").unwrap_or_else(|e| panic!("write {i} during the Slowloris: {e}"));
    }
    dribblers.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(client.get("during-19").unwrap().as_deref(), Some("served"));
}

/// Random bytes that do not decode as `T`: malformed for that path.
fn malformed<T: serde::de::DeserializeOwned>(rng: &mut impl Rng) -> Vec<u8> {
    loop {
        let len = rng.random_range(0..48);
        let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if wire::decode::<T>(&body).is_err() {
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend(body);
            return frame;
        }
    }
}

#[test]
fn a_hundred_thousand_malformed_frames_on_every_path_change_nothing() {
    // Plain TCP, so that the flood reaches the hello, client and peer parsers
    // themselves (with TLS, strangers stop at the handshake).
    let cluster = Cluster::start("malformed", 3, &["--insecure"]);
    let mut client = cluster.client();
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for key in &keys {
        client.put(key, "genuine").unwrap();
    }
    let before = snapshot_of(&cluster, &keys);
    let addrs = cluster.addrs.clone();
    let sent: usize = (0..4u64)
        .map(|worker| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(worker);
                let mut sent = 0;
                while sent < 25_000 {
                    let target = addrs[rng.random_range(0..addrs.len())];
                    let Ok(mut stream) = TcpStream::connect(target) else { continue };
                    let mut bytes = Vec::new();
                    match sent % 3 {
                        0 => bytes.extend(malformed::<Hello>(&mut rng)),
                        1 => {
                            bytes.extend(wire::frame(&Hello::new(Speaker::Client)).unwrap());
                            bytes.extend(malformed::<ClientRequest>(&mut rng));
                        }
                        _ => {
                            bytes.extend(replica_hello(2));
                            bytes.extend(malformed::<Vec<Envelope>>(&mut rng));
                        }
                    }
                    let _ = stream.write_all(&bytes);
                    sent += 1;
                }
                sent
            })
        })
        .map(|t| t.join().unwrap())
        .sum();
    assert!(sent >= 100_000);
    for id in 1..=3 {
        wait_until(&format!("replica {id} to answer after the flood"), Duration::from_secs(20), || {
            cluster.status(id).is_ok()
        });
    }
    let mut client = cluster.client();
    client.put("after-flood", "served").unwrap();
    let after = snapshot_of(&cluster, &keys);
    assert_eq!(after.0, before.0, "malformed frames changed a replica's copy of a key");
    let (served, _) = snapshot_of(&cluster, &["after-flood".to_string()]);
    assert_eq!(served[0][0], Ok(Reply::Value(Some("served".into()))), "the write after the flood: {served:?}");
}

#[test]
fn a_handshake_dribbled_a_byte_at_a_time_is_closed_at_its_deadline() {
    let cluster = Cluster::start("dribble", 3, &[]);
    let mut stream = TcpStream::connect(cluster.addrs[0]).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(900))).unwrap();
    // The start of a TLS ClientHello, one byte a second: each read gets a byte
    // in time, only the whole handshake's deadline (5 s) can end it.
    let started = Instant::now();
    let mut closed = false;
    for byte in [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x00] {
        if stream.write_all(&[byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a handshake dribbled for {:?} was still open", started.elapsed());
    println!("closed after {:?}", started.elapsed());
    let mut client = cluster.client();
    client.put("after-dribble", "served").unwrap();
}

/// A frame of more commands than a replica accepts gets a clear refusal, not
/// a closed connection, and nothing in it is applied; the connection goes on.
#[test]
fn a_pipelined_frame_beyond_the_command_limit_is_refused_and_the_connection_serves_on() {
    let cluster = Cluster::start("pipeline-limit", 3, &[]);
    cluster.wait_for_leader();
    let leader = cluster.wait_for_leader();
    let mut stream = tls(cluster.addrs[leader - 1], &client_security()).unwrap();
    stream.write_all(&wire::frame(&Hello::new(Speaker::Client)).unwrap()).unwrap();
    let too_many: Vec<Command> = (0..=wire::PIPELINE_COMMANDS_MAX as u64)
        .map(|i| Command { client_id: 1_000 + i, seq: 1, op: Op::Put { key: format!("over-{i}"), value: "x".into() } })
        .collect();
    stream.write_all(&wire::frame(&ClientRequest::ExecuteMany(too_many)).unwrap()).unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let response: wire::ClientResponse = wire::read_frame(&mut reader, 1 << 20).unwrap();
    match response {
        wire::ClientResponse::Reply(Reply::Rejected(paxos_kv::kv::RequestError::Invalid(why))) => {
            assert!(why.contains("at most 4096"), "{why}")
        }
        other => panic!("expected a refusal naming the limit, got {other:?}"),
    }
    let within: Vec<Command> = (0..3)
        .map(|i| Command { client_id: 9_000 + i, seq: 1, op: Op::Put { key: format!("in-{i}"), value: "y".into() } })
        .collect();
    let ids: Vec<_> = within.iter().map(Command::request_id).collect();
    reader.get_mut().write_all(&wire::frame(&ClientRequest::ExecuteMany(within)).unwrap()).unwrap();
    reader.get_ref().tcp().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match wire::read_frame(&mut reader, 1 << 20).unwrap() {
        wire::ClientResponse::Replies(replies) => {
            assert_eq!(replies.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids, "tagged with their request ids");
            assert!(replies.iter().all(|(_, reply)| *reply == Reply::Stored), "{replies:?}");
        }
        other => panic!("expected the replies, got {other:?}"),
    }
    let mut client = cluster.client();
    assert_eq!(client.get("over-0").unwrap(), None, "nothing of the refused frame was applied");
    assert_eq!(client.get("in-2").unwrap().as_deref(), Some("y"));
}
