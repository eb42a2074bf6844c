//! Durable state: the acceptor's log (trait, in-memory and on-disk versions),
//! the proposer's last ballot and the learner's snapshot. The only disk code.

use crate::paxos::acceptor::{AcceptorRecord, AcceptorState};
use crate::paxos::messages::Snapshot;
use crate::paxos::Ballot;
use crate::wire;
use anyhow::{Context, Result};
use log::{info, warn};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// Where an acceptor's records go before its replies leave.
pub trait AcceptorStorage: Send {
    fn load(&mut self) -> Result<AcceptorState>;
    /// Appends the records and makes them durable (one sync for all of them).
    fn append(&mut self, records: &[AcceptorRecord]) -> Result<()>;
    /// Rewrites the log as the smallest set of records giving `state`.
    fn compact(&mut self, state: &AcceptorState) -> Result<()>;
    /// Forgets everything: only the unsafe amnesia failure mode calls this.
    fn wipe(&mut self) -> Result<()>;
}

/// For the simulator and unit tests: "durable" means it survives a restart of
/// the acceptor state machine.
#[derive(Default)]
pub struct MemoryStorage {
    records: Vec<AcceptorRecord>,
}

impl AcceptorStorage for MemoryStorage {
    fn load(&mut self) -> Result<AcceptorState> {
        let mut state = AcceptorState::default();
        self.records.iter().for_each(|r| state.apply(r));
        Ok(state)
    }
    fn append(&mut self, records: &[AcceptorRecord]) -> Result<()> {
        self.records.extend_from_slice(records);
        Ok(())
    }
    fn compact(&mut self, state: &AcceptorState) -> Result<()> {
        self.records = state.to_records();
        Ok(())
    }
    fn wipe(&mut self) -> Result<()> {
        self.records.clear();
        Ok(())
    }
}

/// An append-only file of records, each `[len u32 BE][crc32 u32 BE][body]`.
/// A torn or corrupt tail (a crash in mid-write) is cut off at load.
pub struct RecordLog<R> {
    path: PathBuf,
    name: &'static str,
    file: File,
    bytes: u64,
    _records: PhantomData<R>,
}

/// The acceptor's log.
pub type DiskLog = RecordLog<AcceptorRecord>;

const ACCEPTOR_LOG: &str = "acceptor.log";
const PROPOSER_BALLOT: &str = "proposer.ballot";
const SNAPSHOT: &str = "snapshot.bin";

impl<R: Serialize + DeserializeOwned> RecordLog<R> {
    pub fn open_named(dir: &Path, name: &'static str) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(RecordLog { path, name, file, bytes: 0, _records: PhantomData })
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Feeds every intact record to `apply`, cuts a torn tail, returns the count.
    pub fn replay(&mut self, mut apply: impl FnMut(R)) -> Result<usize> {
        let mut contents = Vec::new();
        File::open(&self.path)?.read_to_end(&mut contents)?;
        let mut at = 0usize;
        let mut records = 0usize;
        while at + 8 <= contents.len() {
            let len = u32::from_be_bytes(contents[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_be_bytes(contents[at + 4..at + 8].try_into().unwrap());
            let Some(body) = contents.get(at + 8..at + 8 + len) else { break };
            if crc32fast::hash(body) != crc {
                break;
            }
            let Ok(record) = wire::decode::<R>(body) else { break };
            apply(record);
            records += 1;
            at += 8 + len;
        }
        if at < contents.len() {
            warn!(
                "{}: cutting a torn tail of {} bytes after {records} records",
                self.path.display(),
                contents.len() - at
            );
            self.file.set_len(at as u64)?;
            self.file.sync_data()?;
        }
        self.bytes = at as u64;
        Ok(records)
    }

    fn encode_records(records: &[R]) -> Vec<u8> {
        let mut buf = Vec::new();
        for record in records {
            let body = wire::encode(record);
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
            buf.extend_from_slice(&body);
        }
        buf
    }

    /// Appends the records and makes them durable with one sync.
    pub fn append(&mut self, records: &[R]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let buf = Self::encode_records(records);
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.bytes += buf.len() as u64;
        Ok(())
    }

    /// Replaces the whole log, atomically, with `records`.
    pub fn rewrite(&mut self, records: &[R]) -> Result<()> {
        let buf = Self::encode_records(records);
        let dir = self.path.parent().expect("a log lives in a directory").to_path_buf();
        write_atomically(&dir, self.name, &buf)?;
        self.file = OpenOptions::new().read(true).append(true).open(&self.path)?;
        self.bytes = buf.len() as u64;
        Ok(())
    }

    pub fn wipe(&mut self) -> Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.bytes = 0;
        Ok(())
    }
}

impl DiskLog {
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_named(dir, ACCEPTOR_LOG)
    }
}

impl AcceptorStorage for DiskLog {
    fn load(&mut self) -> Result<AcceptorState> {
        let mut state = AcceptorState::default();
        let records = self.replay(|record| state.apply(&record))?;
        info!(
            "recovered acceptor: promised={} log_start={} accepted slots={} ({records} records)",
            state.promised,
            state.log_start,
            state.accepted.len()
        );
        Ok(state)
    }

    fn append(&mut self, records: &[AcceptorRecord]) -> Result<()> {
        RecordLog::append(self, records)
    }

    fn compact(&mut self, state: &AcceptorState) -> Result<()> {
        self.rewrite(&state.to_records())
    }

    fn wipe(&mut self) -> Result<()> {
        RecordLog::wipe(self)
    }
}

/// Write to a temporary file, sync, rename over the target, sync the directory:
/// after a crash the target holds either the old or the new contents.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub fn load_ballot(dir: &Path) -> Result<Ballot> {
    match read_optional(&dir.join(PROPOSER_BALLOT))? {
        Some(bytes) => wire::decode(&bytes).context("decoding proposer.ballot"),
        None => Ok(Ballot::ZERO),
    }
}

pub fn save_ballot(dir: &Path, ballot: Ballot) -> Result<()> {
    write_atomically(dir, PROPOSER_BALLOT, &wire::encode(&ballot))
}

pub fn load_snapshot(dir: &Path) -> Result<Snapshot> {
    match read_optional(&dir.join(SNAPSHOT))? {
        Some(bytes) => wire::decode(&bytes).context("decoding snapshot.bin"),
        None => Ok(Snapshot::default()),
    }
}

pub fn save_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<()> {
    write_atomically(dir, SNAPSHOT, &wire::encode(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::SlotValue;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("paxos-kv-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn disk_log_survives_reopen_and_cuts_a_torn_tail() {
        let dir = temp_dir("disklog");
        let mut log = DiskLog::open(&dir).unwrap();
        let records = vec![
            AcceptorRecord::Promised(Ballot::new(3, 1)),
            AcceptorRecord::Accepted { slot: 0, ballot: Ballot::new(3, 1), value: SlotValue::Noop },
        ];
        log.append(&records).unwrap();
        let expected = log.load().unwrap();
        assert_eq!(expected.promised, Ballot::new(3, 1));
        // A crash in mid-append leaves half a record.
        OpenOptions::new().append(true).open(dir.join(ACCEPTOR_LOG)).unwrap().write_all(&[0, 0, 0, 40, 1]).unwrap();
        let mut reopened = DiskLog::open(&dir).unwrap();
        assert_eq!(reopened.load().unwrap(), expected);
        reopened.append(&[AcceptorRecord::Promised(Ballot::new(4, 2))]).unwrap();
        assert_eq!(DiskLog::open(&dir).unwrap().load().unwrap().promised, Ballot::new(4, 2));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_the_state() {
        let dir = temp_dir("compact");
        let mut log = DiskLog::open(&dir).unwrap();
        let mut state = AcceptorState::default();
        for slot in 0..100 {
            let record = AcceptorRecord::Accepted { slot, ballot: Ballot::new(1, 1), value: SlotValue::Noop };
            state.apply(&record);
            log.append(&[record]).unwrap();
        }
        state.apply(&AcceptorRecord::Truncated { log_start: 90 });
        let before = log.bytes();
        log.compact(&state).unwrap();
        assert!(log.bytes() < before);
        assert_eq!(DiskLog::open(&dir).unwrap().load().unwrap(), state);
        fs::remove_dir_all(&dir).unwrap();
    }
}
