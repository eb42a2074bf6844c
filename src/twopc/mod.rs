//! Two-phase commit, the baseline: the same store replicated by a protocol
//! that needs every replica and blocks when its coordinator is lost. Sans-IO
//! like `crate::paxos`: messages and ticks in, records and messages out.

pub mod coordinator;
pub mod messages;
pub mod participant;

pub use messages::{TxEnvelope, TxMessage, TxnId};
