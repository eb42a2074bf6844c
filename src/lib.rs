//! paxos-kv: a replicated key-value store on Multi-Paxos.
//!
//! The protocol lives in [`paxos`] as sans-IO state machines; [`node`] runs
//! them on threads over TCP ([`transport`], [`wire`]) with durable acceptors
//! ([`storage`]) and random acceptor failures ([`fault`]); [`sim`] runs them
//! in a seeded deterministic simulation; [`client`] is the remote stub.

pub mod args;
pub mod bench;
pub mod cli;
pub mod client;
pub mod compare;
pub mod config;
pub mod fault;
pub mod heap;
pub mod kv;
pub mod lesson;
pub mod local_cluster;
pub mod logging;
pub mod mailbox;
pub mod node;
pub mod paxos;
pub mod prompt;
pub mod security;
pub mod sim;
pub mod storage;
pub mod timeline;
pub mod trace;
pub mod transport;
pub mod twopc;
pub mod watch;
pub mod wire;
