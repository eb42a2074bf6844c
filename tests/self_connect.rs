//! A peer link that dials a closed port of the ephemeral range can connect
//! to itself (TCP simultaneous open); it must close such a connection, or the
//! port stays held and the replica that owns it cannot bind it. A test binary
//! of its own: the floods in tests/attacker.rs use thousands of ephemeral
//! ports at once, which would make "is the port free?" a race.

use rand::Rng;
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn reconnecting_to_a_closed_ephemeral_port_never_holds_it() {
    // A port from the ephemeral range, closed: what a peer link dials while that replica is down.
    // Linux gives connect() even ports of the ephemeral range first (bind(0)
    // odd ones), so a free even port is one an outgoing connection can land on.
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut ends = range.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((ends.next()??, ends.next()??))
        })
        .unwrap_or((32768, 60999));
    // Ports in TIME_WAIT (other tests' connections, for 60 s) cannot be bound: wait for a free one.
    let mut rng = rand::rng();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let port = loop {
        let free = (0..1_000)
            .map(|_| (rng.random_range(low / 2..high / 2)) * 2)
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        match free {
            Some(port) => break port,
            None if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_secs(1)),
            None => panic!("no free even port in the ephemeral range for 90 s"),
        }
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut self_connects = 0;
    for _ in 0..200_000 {
        if self_connects >= 3 {
            break;
        }
        match paxos_kv::transport::connect_tcp(addr, Duration::from_millis(100)) {
            Ok(stream) => panic!("connected to a closed port: {stream:?}"),
            Err(e) if e.to_string().contains("connected to itself") => self_connects += 1,
            Err(_) => {}
        }
    }
    println!("{self_connects} self-connects seen and closed");
    // Other tests' outgoing connections may land on this port for a moment;
    // a self-connect left open would hold it for good.
    let bindable = (0..150).any(|_| {
        std::net::TcpListener::bind(addr).is_ok() || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    if !bindable {
        let sockets = std::process::Command::new("ss")
            .args(["-tanpe"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let holders: Vec<String> = sockets
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(":{port} ")))
            .map(str::to_string)
            .collect();
        panic!("port {port} not bindable after 15 s; sockets on it:\n{}", holders.join("\n"));
    }
}
