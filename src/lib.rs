//! paxos-kv: a replicated key-value store on Multi-Paxos.
//!
//! The protocol lives in [`paxos`] as sans-IO state machines; [`node`] runs
//! them on threads over TCP ([`transport`], [`wire`]) with durable acceptors
//! ([`storage`]); [`sim`] runs them in a seeded deterministic simulation.

pub mod kv;
pub mod node;
pub mod paxos;
pub mod sim;
pub mod storage;
pub mod wire;
