//! State larger than the codec's 256 MiB decode limit is written in bounded
//! chunks and read back: a store that grows never becomes one that cannot
//! restart.

use paxos_kv::kv::{Command, KvStore, Op};
use paxos_kv::paxos::messages::Snapshot;
use paxos_kv::storage::frames::FileKind;
use paxos_kv::storage::{self, FsDisk, Identity, RecordLog};
use paxos_kv::twopc::participant::{ParticipantRecord, ParticipantState};
use std::sync::Arc;

const ME: Identity = Identity { cluster_id: 42, replica_id: 1 };
/// Above the old single-record limit of 256 MiB.
const STATE_BYTES: usize = 272 << 20;

fn big_store() -> KvStore {
    let mut store = KvStore::default();
    let value = "v".repeat(1 << 20);
    for i in 0..STATE_BYTES >> 20 {
        let op = Op::Put { key: format!("key-{i:04}"), value: value.clone() };
        store.apply(&Command { client_id: i as u64, seq: 1, op });
    }
    store
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("paxos-kv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_snapshot_above_the_old_decode_limit_is_saved_and_loaded_back() {
    let dir = TempDir::new("large-snapshot");
    let disk = FsDisk::open(&dir.0).unwrap();
    let snapshot = Snapshot { next_slot: 123_456, store: big_store() };
    storage::save_snapshot(&disk, ME, &snapshot).unwrap();
    let bytes = std::fs::metadata(dir.0.join(storage::SNAPSHOT)).unwrap().len();
    assert!(bytes > 256 << 20, "the snapshot must exceed the old limit: {bytes} bytes");
    let loaded = storage::load_snapshot(&disk, ME).unwrap().expect("a snapshot");
    assert_eq!(loaded.next_slot, snapshot.next_slot);
    assert_eq!(loaded.store, snapshot.store);
}

#[test]
fn two_phase_commit_state_above_the_old_decode_limit_is_compacted_and_replayed() {
    let dir = TempDir::new("large-participant");
    let disk: Arc<dyn storage::Disk> = Arc::new(FsDisk::open(&dir.0).unwrap());
    let mut state = ParticipantState::default();
    for chunk in big_store().chunks(storage::CHUNK_BYTES) {
        state.apply(&ParticipantRecord::RestoreStore(chunk));
    }
    let mut log: RecordLog<ParticipantRecord> =
        RecordLog::create(disk.clone(), storage::PARTICIPANT_LOG, FileKind::ParticipantLog, ME).unwrap();
    log.rewrite(state.to_records(storage::CHUNK_BYTES)).unwrap();
    assert!(log.bytes() > 256 << 20, "the compacted log must exceed the old limit: {} bytes", log.bytes());
    let mut replayed = ParticipantState::default();
    let (_, report) =
        RecordLog::open(disk, storage::PARTICIPANT_LOG, FileKind::ParticipantLog, ME, |record: ParticipantRecord| {
            replayed.apply(&record);
        })
        .unwrap();
    assert_eq!(report.torn_bytes_cut, 0);
    assert_eq!(replayed, state);
}
