//! Durable state, and the only code that touches a data directory.
//!
//! Every file is a checksummed frame sequence that starts with a header
//! naming its kind, cluster and replica ([`frames`]); all go through one
//! [`Disk`] so that the simulator's faulty disk exercises the same code.
//! The rules it keeps:
//! - a record log may be cut only at a torn *final* append; damage with
//!   intact data after it is corruption, and the replica refuses to start,
//!   naming the file and offset and leaving the file untouched;
//! - a failed write or sync is never retried (the page cache may already
//!   claim the data is clean): the caller stops the process ([`fail_stop`]);
//! - whole files are replaced atomically, with their directory synced;
//! - a data directory holds an identity marker; without one it is a new
//!   replica (`--cluster-state new`) or a lost one (`--rejoin`), never a
//!   voter that quietly forgot its promises.

pub mod disk;
pub mod frames;

pub use disk::{Disk, FsDisk, SimDisk, Torn, SIM_SECTOR_BYTES};

use self::frames::{
    check_header, check_header_record, decode_body, decode_record, encode_frame, push_frame, FileHeader, FileKind,
    FrameReader, Next, FILE_FORMAT_BATCHES, FRAME_HEADER_BYTES, RECORD_BYTES_MAX,
};
use crate::kv::{ChangeChunk, Changes, KvStore};
use crate::paxos::acceptor::{AcceptorRecord, AcceptorState};
use crate::paxos::messages::{Snapshot, SnapshotJob};
use crate::paxos::{Ballot, NodeId, Slot};
use crate::wire;
use anyhow::{anyhow, Context, Result};
use log::{error, info, warn};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::marker::PhantomData;
use std::sync::Arc;

pub const MARKER: &str = "replica.id";
pub const ACCEPTOR_LOG: &str = "acceptor.log";
pub const PROPOSER_BALLOT: &str = "proposer.ballot";
pub const SNAPSHOT: &str = "snapshot.bin";
pub const SNAPSHOT_CHANGES: &str = "snapshot.changes";
/// The store file being rewritten, in steps; it replaces `snapshot.bin` when done.
pub const SNAPSHOT_NEXT: &str = "snapshot.bin.next";
/// Sets of changes appended while the store file is rewritten.
pub const SNAPSHOT_CHANGES_NEXT: &str = "snapshot.changes.next";
pub const COORDINATOR_LOG: &str = "coordinator.log";
pub const PARTICIPANT_LOG: &str = "participant.log";
/// Files a replica owns; anything else in its directory (a pid file) is left alone.
const DATA_FILES: [&str; 9] = [
    MARKER,
    ACCEPTOR_LOG,
    PROPOSER_BALLOT,
    SNAPSHOT,
    SNAPSHOT_CHANGES,
    SNAPSHOT_NEXT,
    SNAPSHOT_CHANGES_NEXT,
    COORDINATOR_LOG,
    PARTICIPANT_LOG,
];
/// Snapshots and compacted state are written in chunks of about this size.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The exit status of a replica stopped by its storage.
pub const EXIT_STORAGE: i32 = 74;

/// Which cluster and which replica a data directory (and each file in it) belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: u64,
    pub replica_id: NodeId,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica {} of cluster {:016x}", self.replica_id, self.cluster_id)
    }
}

const REJOIN_ADVICE: &str = "the file was left untouched. This replica must not vote with state it cannot trust: \
     stop it, move its data directory aside (keep it for inspection) and start it again with --rejoin \
     (`./run_servers.sh rejoin ID`); it then rebuilds from the other replicas without voting until it has caught up \
     (a 2PC replica cannot rebuild: restore its directory from a copy, or start the 2PC cluster anew). \
     See README, \"Disks and recovery\"";

/// Why a data directory cannot be used as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// A bad record with intact data after it: not a torn write.
    Corrupt { file: String, offset: u64, record: usize, reason: String },
    /// A file of another replica, cluster, kind or format.
    Foreign { file: String, reason: String },
    /// A file the replica's state depends on is gone.
    Missing { file: String, reason: String },
    /// No identity marker: the directory is new, was emptied, or was lost.
    NoIdentity { dir: String, files: Vec<String> },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Corrupt { file, offset, record, reason } => {
                write!(f, "{file} is corrupt at byte {offset} (record {record}): {reason}; {REJOIN_ADVICE}")
            }
            Damage::Foreign { file, reason } => write!(f, "{file} is refused: {reason}; {REJOIN_ADVICE}"),
            Damage::Missing { file, reason } => write!(f, "{file} is missing: {reason}; {REJOIN_ADVICE}"),
            Damage::NoIdentity { dir, files } if files.is_empty() => write!(
                f,
                "{dir} holds no replica state. Only the first start of a new cluster may begin empty \
                 (--cluster-state new). If this replica belonged to a running cluster and lost its disk, \
                 start it with --rejoin (`./run_servers.sh rejoin ID`): it then catches up without voting \
                 until it is safe to vote again"
            ),
            Damage::NoIdentity { dir, files } => write!(
                f,
                "{dir} holds {} but no identity marker ({MARKER}), so nothing in it can be trusted; {REJOIN_ADVICE}",
                files.join(", ")
            ),
        }
    }
}

impl std::error::Error for Damage {}

/// Ends the process: a replica whose storage failed must not carry on with
/// state that memory claims and the disk may not hold.
pub fn fail_stop(what: &str, error: &anyhow::Error) -> ! {
    error!(
        "FATAL {what}: {error:#}. Stopping this replica: its disk cannot be trusted to hold what it acknowledged. \
         Free space or replace the disk, then start it again (its durable state is intact up to the last \
         successful sync)"
    );
    eprintln!("FATAL {what}: {error:#}");
    std::process::exit(EXIT_STORAGE)
}

fn io_context(disk: &dyn Disk, name: &str, what: &str) -> String {
    format!("{what} {}", disk.describe(name))
}

/// An append-only log of records of type `R`, after its file header.
///
/// Each append is one frame holding its batch of records, written in place
/// ([`Disk::append_in_place`]) and synced before the next. So at most the
/// last frame is un-synced at a crash, and however its pages were lost it is
/// a torn final frame: never intact data after damage, which is refused.
/// (Logs of the first format hold a frame per record; they are read, then
/// rewritten in batches before the first append.)
pub struct RecordLog<R> {
    disk: Arc<dyn Disk>,
    name: &'static str,
    kind: FileKind,
    identity: Identity,
    bytes: u64,
    _records: PhantomData<R>,
}

/// What replaying a log found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub records: usize,
    /// Bytes of a torn final write that were cut off.
    pub torn_bytes_cut: u64,
}

impl<R: Serialize + DeserializeOwned> RecordLog<R> {
    /// Creates the log with just its header (replacing any file of that name).
    pub fn create(disk: Arc<dyn Disk>, name: &'static str, kind: FileKind, identity: Identity) -> Result<Self> {
        let mut log = RecordLog { disk, name, kind, identity, bytes: 0, _records: PhantomData };
        log.rewrite(std::iter::empty())?;
        Ok(log)
    }

    /// Opens an existing log, feeding every record to `apply`. A torn final
    /// append is cut, and zeros after the data too; any other damage is
    /// refused with [`Damage`].
    pub fn open(
        disk: Arc<dyn Disk>,
        name: &'static str,
        kind: FileKind,
        identity: Identity,
        mut apply: impl FnMut(R),
    ) -> Result<(Self, Replayed)> {
        let file = disk.describe(name);
        let contents = disk.read(name).with_context(|| io_context(&*disk, name, "reading"))?.ok_or_else(|| {
            Damage::Missing { file: file.clone(), reason: "the replica's identity marker says it was created".into() }
        })?;
        let parsed = frames::parse_log(&file, &contents)?;
        if parsed.bodies.is_empty() {
            // Only a crash while creating the file leaves it without a header.
            return Err(Damage::Corrupt { file, offset: 0, record: 0, reason: "no intact file header".into() }.into());
        }
        let batches = check_header(&file, &contents, &parsed, kind, identity)? == FILE_FORMAT_BATCHES;
        let decode_frame = |index: usize, body| -> Result<Vec<R>, Damage> {
            if batches {
                decode_body(&file, &contents, body, index)
            } else {
                Ok(vec![decode_body(&file, &contents, body, index)?])
            }
        };
        let mut replayed = Replayed::default();
        for (index, body) in parsed.bodies.iter().enumerate().skip(1) {
            for record in decode_frame(index, body)? {
                apply(record);
                replayed.records += 1;
            }
        }
        if let Some(torn_at) = parsed.torn_at {
            // What was written of it: zeros after it are the disk's reserve.
            let written_end = contents.iter().rposition(|&b| b != 0).map_or(torn_at, |last| last + 1);
            replayed.torn_bytes_cut = (written_end.max(torn_at) - torn_at) as u64;
            warn!(
                "{file}: cutting a torn final write of {} bytes after {} records (a crash in mid-append)",
                replayed.torn_bytes_cut, replayed.records
            );
            // Only the torn write is cut: zeros after the data are the disk's
            // reserve, which the next append writes over.
            disk.truncate(name, torn_at as u64).with_context(|| io_context(&*disk, name, "truncating"))?;
        }
        let mut log = RecordLog { disk, name, kind, identity, bytes: parsed.end as u64, _records: PhantomData };
        if !batches {
            let records = parsed.bodies.iter().enumerate().skip(1).map(|(index, body)| decode_frame(index, body));
            let records: Vec<R> = records.collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
            log.rewrite(records)?;
        }
        Ok((log, replayed))
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends the records as one frame and makes them durable with one sync
    /// (a batch above what a reader accepts is split, each part synced before
    /// the next is written). On error the records may or may not be on disk:
    /// the caller must stop, not retry.
    pub fn append(&mut self, records: &[R]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let body = wire::encode(&records);
        if body.len() > RECORD_BYTES_MAX && records.len() > 1 {
            let (first, rest) = records.split_at(records.len() / 2);
            self.append(first)?;
            return self.append(rest);
        }
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
        push_frame(&mut frame, &body)?;
        let disk = &*self.disk;
        disk.append_in_place(self.name, self.bytes, &frame)
            .with_context(|| io_context(disk, self.name, "appending to"))?;
        disk.sync(self.name).with_context(|| io_context(disk, self.name, "syncing"))?;
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// Replaces the whole log, atomically, with `records` (a frame each: it
    /// is never torn, and no batch can outgrow a frame).
    pub fn rewrite(&mut self, records: impl IntoIterator<Item = R>) -> Result<()> {
        let mut records = records.into_iter();
        self.bytes = replace_framed(&*self.disk, self.name, self.kind, self.identity, |file| {
            records.by_ref().try_for_each(|record| file.push(&std::slice::from_ref(&record)))
        })?;
        Ok(())
    }
}

/// The acceptor's log, the first thing a Paxos replica must not lose.
pub type AcceptorLog = RecordLog<AcceptorRecord>;

impl AcceptorLog {
    pub fn open_acceptor(disk: Arc<dyn Disk>, identity: Identity) -> Result<(Self, AcceptorState, Replayed)> {
        let mut state = AcceptorState::default();
        let (log, replayed) = Self::open(disk, ACCEPTOR_LOG, FileKind::AcceptorLog, identity, |r| state.apply(&r))?;
        info!(
            "recovered acceptor: promised={} log_start={} accepted slots={} ({} records){}",
            state.promised,
            state.log_start,
            state.accepted.len(),
            replayed.records,
            if state.rebuilding { "; still rebuilding (not voting)" } else { "" }
        );
        Ok((log, state, replayed))
    }

    /// Rewrites the log as the smallest set of records giving `state`.
    pub fn compact(&mut self, state: &AcceptorState) -> Result<()> {
        self.rewrite(state.to_records())
    }
}

/// A file holding exactly one value after its header, replaced atomically.
fn write_value<T: Serialize>(disk: &dyn Disk, name: &str, kind: FileKind, identity: Identity, value: &T) -> Result<()> {
    replace_framed(disk, name, kind, identity, |file| file.push(value)).map(|_| ())
}

/// A file being replaced, written as frames in blocks of about [`CHUNK_BYTES`].
struct FramedFile<'a> {
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    written: u64,
}

impl FramedFile<'_> {
    fn push<T: Serialize>(&mut self, value: &T) -> std::io::Result<()> {
        // A record too large for its reader fails here, before anything of it is written.
        encode_frame(&mut self.buf, value).map_err(std::io::Error::other)?;
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Replaces `name`, atomically and durably, with its file header followed by
/// the frames `write` pushes; returns the bytes written.
fn replace_framed(
    disk: &dyn Disk,
    name: &str,
    kind: FileKind,
    identity: Identity,
    mut write: impl FnMut(&mut FramedFile<'_>) -> std::io::Result<()>,
) -> Result<u64> {
    let mut written = 0;
    disk.replace(name, &mut |out: &mut dyn Write| {
        let mut file = FramedFile { out, buf: Vec::new(), written: 0 };
        file.push(&FileHeader::new(kind, identity))?;
        write(&mut file)?;
        file.flush()?;
        written = file.written;
        Ok(())
    })
    .with_context(|| io_context(disk, name, "writing"))?;
    Ok(written)
}

/// Reads a file written whole by `write_value`; any damage is refused (it
/// was replaced atomically, so it cannot be torn).
fn read_value<T: DeserializeOwned>(
    disk: &dyn Disk,
    name: &str,
    kind: FileKind,
    identity: Identity,
) -> Result<Option<T>> {
    let file = disk.describe(name);
    let Some(contents) = disk.read(name).with_context(|| io_context(disk, name, "reading"))? else { return Ok(None) };
    let parsed = strict_parse(&file, &contents)?;
    check_header(&file, &contents, &parsed, kind, identity)?;
    if parsed.bodies.len() != 2 {
        let reason = format!("{} records where one value was written", parsed.bodies.len().saturating_sub(1));
        return Err(Damage::Corrupt { file, offset: 0, record: 1, reason }.into());
    }
    Ok(Some(decode_body(&file, &contents, &parsed.bodies[1], 1)?))
}

/// Parses a file that is only ever replaced whole: even a "torn" end is damage.
fn strict_parse(file: &str, contents: &[u8]) -> Result<frames::Parsed, Damage> {
    let parsed = frames::parse(file, contents)?;
    if let Some(at) = parsed.torn_at {
        let reason = "damaged final record in a file that is only ever replaced whole".into();
        return Err(Damage::Corrupt { file: file.into(), offset: at as u64, record: parsed.bodies.len(), reason });
    }
    Ok(parsed)
}

/// The highest ballot this replica's proposer used: a restart must never reuse one.
pub fn save_ballot(disk: &dyn Disk, identity: Identity, ballot: Ballot) -> Result<()> {
    write_value(disk, PROPOSER_BALLOT, FileKind::ProposerBallot, identity, &ballot)
}

pub fn load_ballot(disk: &dyn Disk, identity: Identity) -> Result<Ballot> {
    read_value(disk, PROPOSER_BALLOT, FileKind::ProposerBallot, identity)?.ok_or_else(|| {
        let reason = "the identity marker says it was created with the replica".into();
        Damage::Missing { file: disk.describe(PROPOSER_BALLOT), reason }.into()
    })
}

/// What a snapshot file says of itself before its chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotMeta {
    next_slot: Slot,
    applied_commands: u64,
}

/// The last record of a snapshot file: how many chunks precede it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotEnd {
    chunks: u64,
}

/// Writes `snapshot` in chunks of about [`CHUNK_BYTES`], each checksummed, so
/// that no record exceeds what the reader accepts however large the store.
/// Chunks are produced as they are written: the store is never copied whole.
pub fn save_snapshot(disk: &dyn Disk, identity: Identity, snapshot: &Snapshot) -> Result<u64> {
    let meta = SnapshotMeta { next_slot: snapshot.next_slot, applied_commands: snapshot.store.applied_commands() };
    replace_framed(disk, SNAPSHOT, FileKind::Snapshot, identity, |file| {
        file.push(&meta)?;
        let mut chunks = 0;
        for chunk in snapshot.store.chunks(CHUNK_BYTES) {
            file.push(&chunk)?;
            chunks += 1;
        }
        file.push(&SnapshotEnd { chunks })
    })
}

/// The snapshot, if one was written; a damaged one is refused, never half-loaded.
/// Read a frame at a time: the file is as large as the store.
pub fn load_snapshot(disk: &dyn Disk, identity: Identity) -> Result<Option<Snapshot>> {
    let file = disk.describe(SNAPSHOT);
    let Some(reader) = disk.open_read(SNAPSHOT).with_context(|| io_context(disk, SNAPSHOT, "reading"))? else {
        return Ok(None);
    };
    let mut frames = FrameReader::new(&file, reader);
    let mut next = || -> Result<Option<(Vec<u8>, usize, usize)>> {
        match frames.next_frame().with_context(|| io_context(disk, SNAPSHOT, "reading"))? {
            Next::Record { body, offset, record } => Ok(Some((body, offset, record))),
            Next::End => Ok(None),
            Next::Torn { offset, record } => {
                let reason = "damaged final record in a file that is only ever replaced whole".into();
                Err(Damage::Corrupt { file: file.clone(), offset: offset as u64, record, reason }.into())
            }
        }
    };
    let missing = |what: &str| Damage::Corrupt { file: file.clone(), offset: 0, record: 0, reason: what.into() };
    let (header, ..) = next()?.ok_or_else(|| missing("no file header"))?;
    check_header_record(&file, &header, FileKind::Snapshot, identity)?;
    let (meta, meta_offset, _) = next()?.ok_or_else(|| missing("no snapshot description"))?;
    let meta: SnapshotMeta = decode_record(&file, &meta, meta_offset, 1)?;
    // Each record is a chunk but the last, which counts them: decoded one behind.
    let mut store = KvStore::default();
    let mut chunks = 0u64;
    let mut held = next()?;
    while let Some((body, offset, record)) = held.take() {
        let Some(following) = next()? else {
            let end: SnapshotEnd = decode_record(&file, &body, offset, record)?;
            if end.chunks != chunks {
                let reason = format!("{chunks} chunks where the end record counts {}", end.chunks);
                return Err(Damage::Corrupt { file, offset: offset as u64, record, reason }.into());
            }
            store.set_applied_commands(meta.applied_commands);
            return Ok(Some(Snapshot { next_slot: meta.next_slot, store }));
        };
        store.restore_chunk(decode_record(&file, &body, offset, record)?);
        chunks += 1;
        held = Some(following);
    }
    let reason = "no end record that counts the chunks".into();
    Err(Damage::Corrupt { file, offset: meta_offset as u64, record: 1, reason }.into())
}

/// A record of `snapshot.changes`. Each set of changes is `Begin`, its
/// chunks, then `End`, appended with one sync; a set without its `End` was
/// cut short by a crash before that sync, and is cut off at the next start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum ChangeRecord {
    /// Changes to the store as it was at `from_slot`. `base_slot` names the
    /// store file of when it was written; a reader chains sets by slot alone.
    Begin {
        base_slot: Slot,
        from_slot: Slot,
    },
    Chunk(ChangeChunk),
    End {
        next_slot: Slot,
        applied_commands: u64,
        chunks: u64,
    },
}

/// Where the durable snapshot stands: `snapshot.bin` holds the whole store
/// at `base_slot`, and the change logs bring it to `tip_slot`: first
/// `snapshot.changes`, then, while the store is being rewritten (or since a
/// crash cut a rewrite short), `snapshot.changes.next`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotChain {
    pub base_slot: Slot,
    pub tip_slot: Slot,
    /// Bytes of `snapshot.changes`.
    pub change_log_bytes: u64,
    /// It is missing, or holds only changes `snapshot.bin` already has: it is
    /// replaced before the next append.
    pub change_log_stale: bool,
    /// Bytes of `snapshot.changes.next`, if sets are appended there.
    pub next_log_bytes: Option<u64>,
    /// Bytes of unfinished final sets of changes cut off at start.
    pub torn_bytes_cut: u64,
    /// A rewrite of the store file was cut short, and its unfinished file removed.
    pub unfinished_rewrite_removed: bool,
}

impl SnapshotChain {
    /// What a restart reads beyond the store file.
    pub fn log_bytes(&self) -> u64 {
        self.change_log_bytes + self.next_log_bytes.unwrap_or(0)
    }
}

/// What a [`SnapshotWriter::write`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotWritten {
    /// Only what changed, appended to a change log.
    Changes { bytes: u64 },
    /// The whole store, to `snapshot.bin` at once (one installed from a peer,
    /// which no change log can express); the change logs emptied.
    Whole { bytes: u64 },
}

/// A rewrite of the whole store that [`SnapshotWriter::rewrite_step`] finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreRewritten {
    pub slot: Slot,
    pub bytes: u64,
    pub steps: u64,
}

/// The store file's bytes rewritten for each byte of changes appended while
/// a rewrite runs. The rewrite pins the store as it was when it began (the
/// map is persistent, so that costs nothing at once), and every value
/// overwritten since stays in memory until it ends: at 4 it ends within a
/// quarter of the store's size in changes, so it holds at most that much.
pub const REWRITE_BYTES_PER_CHANGED_BYTE: u64 = 4;
/// A rewrite step writes at most this many chunks.
const REWRITE_STEP_CHUNKS: usize = 8;

/// The store file being written anew, a step at a time.
struct Rewrite {
    /// The store as it was at `snapshot.next_slot`, pinned.
    snapshot: Snapshot,
    /// Where the next chunk starts; `None` once every chunk is written.
    next: Option<crate::kv::StoreCursor>,
    chunks: u64,
    bytes: u64,
    steps: u64,
    /// Bytes it may write before more changes earn it more.
    credit: u64,
}

/// Makes snapshots durable, writing each as the changes since the last one:
/// so the cost of snapshots follows the bytes written, not the size of the
/// store. Once the change logs have grown past the store's size (times
/// `1 + stagger`, so that replicas do not all do it at once), the store is
/// written anew in steps, [`REWRITE_BYTES_PER_CHANGED_BYTE`] bytes of it per
/// byte of changes appended, so that no snapshot writes the whole store at
/// once, the disk's load stays even, and what a restart reads stays bounded.
/// Sets appended meanwhile go to `snapshot.changes.next`, which becomes
/// `snapshot.changes` when the new `snapshot.bin` is in place. Every role's
/// runtime and the simulator write snapshots through here.
pub struct SnapshotWriter {
    disk: Arc<dyn Disk>,
    identity: Identity,
    chain: SnapshotChain,
    /// Fraction of the store's size, in percent, added to the rewrite threshold.
    stagger_percent: u64,
    chunk_bytes: usize,
    /// Store bytes rewritten per byte of changes appended.
    rewrite_pace: u64,
    rewrite: Option<Rewrite>,
    /// What a step or a set of changes is encoded into before it is appended
    /// (at most a step and a chunk): kept, so that each write reuses memory
    /// already in place.
    scratch: Vec<u8>,
}

impl SnapshotWriter {
    /// `cluster` sets this replica's stagger: each rewrites its whole store at
    /// a different size of change log, so that a cluster does not write every
    /// copy of the store at once.
    pub fn new(disk: Arc<dyn Disk>, identity: Identity, chain: SnapshotChain, cluster: &[NodeId]) -> Self {
        let rank = cluster.iter().position(|&member| member == identity.replica_id).unwrap_or(0) as u64;
        let stagger_percent = rank * 100 / cluster.len().max(1) as u64;
        let rewrite_pace = REWRITE_BYTES_PER_CHANGED_BYTE;
        SnapshotWriter {
            disk,
            identity,
            chain,
            stagger_percent,
            chunk_bytes: CHUNK_BYTES,
            rewrite_pace,
            rewrite: None,
            scratch: Vec::new(),
        }
    }

    /// Smaller chunks (and so smaller rewrite steps) and a slower rewrite,
    /// for the simulator's small stores.
    pub fn with_pace(mut self, chunk_bytes: usize, rewrite_bytes_per_changed_byte: u64) -> Self {
        self.chunk_bytes = chunk_bytes.clamp(1, CHUNK_BYTES);
        self.rewrite_pace = rewrite_bytes_per_changed_byte.max(1);
        self
    }

    /// Appends the job's changes (or, if it has none that follow the last
    /// snapshot, writes the whole store at once), and begins rewriting the
    /// store when the change logs call for it. On error the files may hold
    /// part of it: the caller must stop, not retry.
    pub fn write(&mut self, job: &SnapshotJob) -> Result<SnapshotWritten> {
        match &job.changes {
            Some((since, changes)) if *since == self.chain.tip_slot => {
                let store_bytes = job.snapshot.store.data_bytes();
                let rewrite_at = store_bytes + store_bytes * self.stagger_percent / 100;
                // A leftover next log is folded in by the next rewrite, whatever its size.
                let rewrite_due = self.rewrite.is_none()
                    && (self.chain.log_bytes() >= rewrite_at || self.chain.next_log_bytes.is_some());
                let bytes = self.append_changes(&job.snapshot, changes)?;
                if rewrite_due {
                    self.begin_rewrite(job.snapshot.clone())?;
                }
                if let Some(rewrite) = &mut self.rewrite {
                    rewrite.credit += bytes * self.rewrite_pace;
                }
                Ok(SnapshotWritten::Changes { bytes })
            }
            _ => {
                if self.rewrite.take().is_some() {
                    self.remove(SNAPSHOT_NEXT)?;
                }
                let bytes = save_snapshot(&*self.disk, self.identity, &job.snapshot)?;
                let slot = job.snapshot.next_slot;
                // Both logs now hold only what the store file has; a crash before they are emptied leaves them so.
                self.chain = SnapshotChain { base_slot: slot, tip_slot: slot, ..Default::default() };
                self.reset_change_log()?;
                self.remove(SNAPSHOT_CHANGES_NEXT)?;
                Ok(SnapshotWritten::Whole { bytes })
            }
        }
    }

    /// A rewrite has bytes it may write now.
    pub fn rewrite_pending(&self) -> bool {
        self.rewrite.as_ref().is_some_and(|rewrite| rewrite.credit > 0)
    }

    /// Bytes the rewrite may write now, in steps of at most [`Self::step_bytes`].
    pub fn rewrite_credit(&self) -> u64 {
        self.rewrite.as_ref().map_or(0, |rewrite| rewrite.credit)
    }

    pub fn step_bytes(&self) -> u64 {
        (self.chunk_bytes * REWRITE_STEP_CHUNKS) as u64
    }

    /// Writes the next piece of the store file being rewritten; after the
    /// last, syncs it and puts it in place. The caller spaces steps out, so that
    /// the disk's other writers (every role's log syncs) are not queued behind
    /// a large write. On error the caller must stop, not retry.
    pub fn rewrite_step(&mut self) -> Result<Option<StoreRewritten>> {
        let step_bytes = self.step_bytes();
        let Some(rewrite) = self.rewrite.as_mut().filter(|rewrite| rewrite.credit > 0) else {
            return Ok(None);
        };
        let buf = &mut self.scratch;
        buf.clear();
        while let Some(cursor) = rewrite.next.take() {
            let (chunk, next) = rewrite.snapshot.store.chunk_after(&cursor, self.chunk_bytes);
            encode_frame(buf, &chunk)?;
            rewrite.chunks += 1;
            rewrite.next = next;
            if buf.len() as u64 >= step_bytes.min(rewrite.credit) {
                break;
            }
        }
        if rewrite.next.is_none() {
            encode_frame(buf, &SnapshotEnd { chunks: rewrite.chunks })?;
        }
        let disk = &*self.disk;
        disk.append(SNAPSHOT_NEXT, buf).with_context(|| io_context(disk, SNAPSHOT_NEXT, "appending to"))?;
        rewrite.bytes += buf.len() as u64;
        rewrite.steps += 1;
        rewrite.credit = rewrite.credit.saturating_sub(buf.len() as u64);
        if rewrite.next.is_some() {
            // Nothing of an unfinished file is ever read, so only the last step
            // syncs; the others only start their writeback, which waits for no
            // device flush or journal commit that the logs' syncs would queue behind.
            disk.start_writeback(SNAPSHOT_NEXT).with_context(|| io_context(disk, SNAPSHOT_NEXT, "writing back"))?;
            return Ok(None);
        }
        disk.sync(SNAPSHOT_NEXT).with_context(|| io_context(disk, SNAPSHOT_NEXT, "syncing"))?;
        let rewrite = self.rewrite.take().expect("matched above");
        let slot = rewrite.snapshot.next_slot;
        disk.rename(SNAPSHOT_NEXT, SNAPSHOT).with_context(|| io_context(disk, SNAPSHOT, "replacing"))?;
        // Sets appended since the rewrite began follow it; those before are in the new store file.
        self.chain.base_slot = slot;
        match self.chain.next_log_bytes.take() {
            Some(bytes) => {
                disk.rename(SNAPSHOT_CHANGES_NEXT, SNAPSHOT_CHANGES)
                    .with_context(|| io_context(disk, SNAPSHOT_CHANGES, "replacing"))?;
                self.chain.change_log_bytes = bytes;
                self.chain.change_log_stale = false;
            }
            None => self.chain.change_log_stale = true,
        }
        Ok(Some(StoreRewritten { slot, bytes: rewrite.bytes, steps: rewrite.steps }))
    }

    /// Starts the new store file with its header and description; its chunks
    /// follow in steps.
    fn begin_rewrite(&mut self, snapshot: Snapshot) -> Result<()> {
        // Only a file a crash left could be there, and loading removed it; never append to one.
        self.remove(SNAPSHOT_NEXT)?;
        let mut buf = Vec::new();
        encode_frame(&mut buf, &FileHeader::new(FileKind::Snapshot, self.identity))?;
        let meta = SnapshotMeta { next_slot: snapshot.next_slot, applied_commands: snapshot.store.applied_commands() };
        encode_frame(&mut buf, &meta)?;
        let disk = &*self.disk;
        disk.append(SNAPSHOT_NEXT, &buf).with_context(|| io_context(disk, SNAPSHOT_NEXT, "appending to"))?;
        let bytes = buf.len() as u64;
        self.rewrite = Some(Rewrite {
            snapshot,
            next: Some(crate::kv::StoreCursor::Start),
            chunks: 0,
            bytes,
            steps: 0,
            credit: 0,
        });
        Ok(())
    }

    fn remove(&self, name: &str) -> Result<()> {
        self.disk.remove(name).with_context(|| io_context(&*self.disk, name, "removing"))
    }

    fn reset_change_log(&mut self) -> Result<()> {
        let disk = &*self.disk;
        self.chain.change_log_bytes =
            replace_framed(disk, SNAPSHOT_CHANGES, FileKind::SnapshotChanges, self.identity, |_| Ok(()))?;
        self.chain.change_log_stale = false;
        Ok(())
    }

    /// Appends one set, synced, to the log sets go to now.
    fn append_changes(&mut self, snapshot: &Snapshot, changes: &Changes) -> Result<u64> {
        let name = if self.rewrite.is_some() || self.chain.next_log_bytes.is_some() {
            if self.chain.next_log_bytes.is_none() {
                let disk = &*self.disk;
                let header =
                    replace_framed(disk, SNAPSHOT_CHANGES_NEXT, FileKind::SnapshotChanges, self.identity, |_| Ok(()))?;
                self.chain.next_log_bytes = Some(header);
            }
            SNAPSHOT_CHANGES_NEXT
        } else {
            if self.chain.change_log_stale {
                self.reset_change_log()?;
            }
            SNAPSHOT_CHANGES
        };
        let disk = &*self.disk;
        let mut appended = 0;
        let mut append = |buf: &mut Vec<u8>| -> Result<()> {
            disk.append(name, buf).with_context(|| io_context(disk, name, "appending to"))?;
            appended += buf.len() as u64;
            buf.clear();
            Ok(())
        };
        let buf = &mut self.scratch;
        buf.clear();
        let begin = ChangeRecord::Begin { base_slot: self.chain.base_slot, from_slot: self.chain.tip_slot };
        encode_frame(buf, &begin)?;
        let mut chunks = 0;
        for chunk in snapshot.store.change_chunks(changes, self.chunk_bytes) {
            encode_frame(buf, &ChangeRecord::Chunk(chunk))?;
            chunks += 1;
            if buf.len() >= self.chunk_bytes {
                append(buf)?;
            }
        }
        let applied_commands = snapshot.store.applied_commands();
        encode_frame(buf, &ChangeRecord::End { next_slot: snapshot.next_slot, applied_commands, chunks })?;
        append(buf)?;
        disk.sync(name).with_context(|| io_context(disk, name, "syncing"))?;
        self.chain.tip_slot = snapshot.next_slot;
        match &mut self.chain.next_log_bytes {
            Some(bytes) if name == SNAPSHOT_CHANGES_NEXT => *bytes += appended,
            _ => self.chain.change_log_bytes += appended,
        }
        Ok(appended)
    }
}

/// What reading one change log found.
struct ChangeLogRead {
    bytes: u64,
    /// Sets the store already had (written before the store file was last replaced).
    skipped: usize,
    applied: usize,
}

/// Brings the snapshot loaded from `snapshot.bin` to the end of its change
/// logs. A set is applied if it follows the store's slot, and skipped if
/// the store file already holds it (it was written before that file was
/// replaced); anything else means the files do not belong together. A final
/// set without its end (a crash before its sync) is cut off; any other damage
/// is refused. Also finishes what a crash cut short: an unfinished rewrite of
/// the store file is removed, and a next log whose predecessor is all in the
/// store file takes its place.
pub fn load_snapshot_changes(disk: &dyn Disk, identity: Identity, snapshot: &mut Snapshot) -> Result<SnapshotChain> {
    let base_slot = snapshot.next_slot;
    let mut chain = SnapshotChain { base_slot, tip_slot: base_slot, ..Default::default() };
    if disk.names().with_context(|| io_context(disk, "", "listing"))?.iter().any(|name| name == SNAPSHOT_NEXT) {
        warn!("{}: removing an unfinished rewrite of the store (a crash cut it short)", disk.describe(SNAPSHOT_NEXT));
        disk.remove(SNAPSHOT_NEXT).with_context(|| io_context(disk, SNAPSHOT_NEXT, "removing"))?;
        chain.unfinished_rewrite_removed = true;
    }
    let mut applied = 0;
    let main = read_change_log(disk, identity, SNAPSHOT_CHANGES, snapshot, &mut applied, &mut chain)?;
    let next = read_change_log(disk, identity, SNAPSHOT_CHANGES_NEXT, snapshot, &mut applied, &mut chain)?;
    chain.tip_slot = snapshot.next_slot;
    let main_stale = main.as_ref().is_none_or(|log| log.skipped > 0 && log.applied == 0);
    chain.change_log_stale = main_stale;
    chain.change_log_bytes = main.map_or(0, |log| log.bytes);
    match next {
        None => {}
        Some(next) if next.applied == 0 => {
            disk.remove(SNAPSHOT_CHANGES_NEXT).with_context(|| io_context(disk, SNAPSHOT_CHANGES_NEXT, "removing"))?
        }
        Some(next) if main_stale => {
            disk.rename(SNAPSHOT_CHANGES_NEXT, SNAPSHOT_CHANGES)
                .with_context(|| io_context(disk, SNAPSHOT_CHANGES, "replacing"))?;
            (chain.change_log_bytes, chain.change_log_stale) = (next.bytes, false);
        }
        Some(next) => chain.next_log_bytes = Some(next.bytes),
    }
    Ok(chain)
}

/// Applies one change log's sets to `snapshot` (see [`load_snapshot_changes`]);
/// `None` if the file does not exist. `applied` counts sets applied so far
/// over every log: once one was, no later set may be skipped.
fn read_change_log(
    disk: &dyn Disk,
    identity: Identity,
    name: &str,
    snapshot: &mut Snapshot,
    applied: &mut usize,
    chain: &mut SnapshotChain,
) -> Result<Option<ChangeLogRead>> {
    let file = disk.describe(name);
    let Some(reader) = disk.open_read(name).with_context(|| io_context(disk, name, "reading"))? else {
        return Ok(None);
    };
    let mut frames = FrameReader::new(&file, reader);
    let mut next = || frames.next_frame().with_context(|| io_context(disk, name, "reading"));
    let Next::Record { body: header, .. } = next()? else {
        return Err(Damage::Corrupt { file, offset: 0, record: 0, reason: "no intact file header".into() }.into());
    };
    check_header_record(&file, &header, FileKind::SnapshotChanges, identity)?;
    let corrupt = |offset: usize, record: usize, reason: String| Damage::Corrupt {
        file: file.clone(),
        offset: offset as u64,
        record,
        reason,
    };
    let mut read = ChangeLogRead { bytes: 0, skipped: 0, applied: 0 };
    // (from slot, chunks) of the set being read: at most one set is held,
    // and a set is what one snapshot changed.
    let mut open_set: Option<(Slot, Vec<ChangeChunk>)> = None;
    let mut complete_through = FRAME_HEADER_BYTES + header.len();
    let file_bytes = loop {
        let (body, offset, index) = match next()? {
            Next::Record { body, offset, record } => (body, offset, record),
            Next::End | Next::Torn { .. } => break frames.offset(),
        };
        let record: ChangeRecord = decode_record(&file, &body, offset, index)?;
        match (record, open_set.as_mut()) {
            (ChangeRecord::Begin { from_slot, .. }, None) => open_set = Some((from_slot, Vec::new())),
            (ChangeRecord::Chunk(chunk), Some((_, chunks))) => chunks.push(chunk),
            (ChangeRecord::End { next_slot, applied_commands, chunks: count }, Some(_)) => {
                let (from_slot, chunks) = open_set.take().expect("matched Some");
                if chunks.len() as u64 != count {
                    let reason = format!("{} chunks where the set's end counts {count}", chunks.len());
                    return Err(corrupt(offset, index, reason).into());
                }
                complete_through = offset + FRAME_HEADER_BYTES + body.len();
                let at = snapshot.next_slot;
                if next_slot < from_slot {
                    let reason = format!("a set of changes from slot {from_slot} back to {next_slot}");
                    return Err(corrupt(offset, index, reason).into());
                }
                if from_slot != at && next_slot <= at && *applied == 0 {
                    // Written before snapshot.bin was last replaced; that file holds it all.
                    read.skipped += 1;
                    continue;
                }
                if from_slot != at {
                    let reason =
                        format!("it holds changes from slot {from_slot} to {next_slot}, but the store is at slot {at}");
                    return Err(if *applied == 0 {
                        Damage::Foreign { file, reason: format!("{reason} (as {} holds it)", disk.describe(SNAPSHOT)) }
                    } else {
                        corrupt(offset, index, reason)
                    }
                    .into());
                }
                chunks.into_iter().for_each(|chunk| snapshot.store.restore_changes(chunk));
                snapshot.store.set_applied_commands(applied_commands);
                snapshot.next_slot = next_slot;
                read.applied += 1;
                *applied += 1;
            }
            (record, _) => {
                let what = match record {
                    ChangeRecord::Begin { .. } => "a set's beginning",
                    ChangeRecord::Chunk(_) => "a chunk",
                    ChangeRecord::End { .. } => "a set's end",
                };
                return Err(corrupt(offset, index, format!("{what} out of place")).into());
            }
        }
    };
    read.bytes = complete_through as u64;
    if complete_through < file_bytes {
        let cut = (file_bytes - complete_through) as u64;
        chain.torn_bytes_cut += cut;
        warn!("{file}: cutting an unfinished final set of changes ({cut} bytes; a crash before its sync)");
        disk.truncate(name, complete_through as u64).with_context(|| io_context(disk, name, "truncating"))?;
    }
    Ok(Some(read))
}

/// How a replica may begin when its data directory has no identity marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ClusterState {
    /// The first start of a new cluster: an empty directory becomes a voter.
    New,
    /// A replica of a running cluster: an empty directory is refused.
    Existing,
}

/// What opening a data directory decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The marker was there and matches: recover from the files.
    Existing,
    /// A new cluster's first start: the files were just created empty.
    Created,
    /// `--rejoin`: any old files were set aside; the replica starts empty and
    /// must rebuild before it votes.
    Rejoining,
}

/// Checks (or, for a new or rejoining replica, writes) the identity marker.
/// `initial_files` creates the empty state files of a fresh replica, after
/// which the marker is written last: a crash in between leaves no marker and
/// the start is simply repeated.
pub fn open_data_dir(
    disk: &dyn Disk,
    identity: Identity,
    cluster_state: ClusterState,
    rejoin: bool,
    initial_files: impl FnOnce() -> Result<()>,
) -> Result<Opened> {
    let ours = our_files(disk)?;
    if ours.iter().any(|name| name == MARKER) {
        let marker: Option<()> = read_value(disk, MARKER, FileKind::Marker, identity)?;
        marker.ok_or_else(|| anyhow!("{} vanished while starting", disk.describe(MARKER)))?;
        if rejoin {
            info!("--rejoin given, but {} holds intact state of {identity}: starting from it", disk.describe(""));
        }
        return Ok(Opened::Existing);
    }
    let dir = disk.describe("");
    let opened = if rejoin {
        set_aside(disk, &ours)?;
        Opened::Rejoining
    } else if ours.iter().all(|name| name.ends_with(".tmp")) && cluster_state == ClusterState::New {
        Opened::Created
    } else {
        let files = ours.into_iter().filter(|name| !name.ends_with(".tmp")).collect();
        return Err(Damage::NoIdentity { dir, files }.into());
    };
    initial_files()?;
    write_value(disk, MARKER, FileKind::Marker, identity, &())?;
    match opened {
        Opened::Rejoining => warn!("{identity} rejoins with an empty data directory: it will not vote until rebuilt"),
        _ => info!("{identity}: new data directory {dir}"),
    }
    Ok(opened)
}

fn our_files(disk: &dyn Disk) -> Result<Vec<String>> {
    Ok(disk
        .names()
        .with_context(|| io_context(disk, "", "listing"))?
        .into_iter()
        .filter(|name| DATA_FILES.contains(&name.as_str()) || name.ends_with(".tmp"))
        .collect())
}

/// `--rejoin`: the old files are moved aside for inspection, never deleted.
fn set_aside(disk: &dyn Disk, files: &[String]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let dir = disk.describe("");
    let folder = format!("set-aside-{}", std::process::id());
    warn!("--rejoin: moving {} into {dir}{folder}/ for inspection", files.join(", "));
    disk.set_aside(files, &folder).with_context(|| format!("setting files aside in {dir}"))
}

/// Everything a Paxos replica recovers from its data directory.
pub struct PaxosFiles {
    pub opened: Opened,
    pub acceptor_log: AcceptorLog,
    pub acceptor_state: AcceptorState,
    pub replayed: Replayed,
    pub last_ballot: Ballot,
    /// `snapshot.bin` with `snapshot.changes` applied.
    pub snapshot: Snapshot,
    pub snapshot_chain: SnapshotChain,
}

/// Opens (or, for a new or rejoining replica, creates) a Paxos replica's
/// files and checks that they fit together. The server and the simulator
/// both start replicas through here.
pub fn open_paxos(
    disk: Arc<dyn Disk>,
    identity: Identity,
    cluster_state: ClusterState,
    rejoin: bool,
) -> Result<PaxosFiles> {
    match open_paxos_files(disk.clone(), identity, cluster_state, false) {
        Err(error) if rejoin && error.downcast_ref::<Damage>().is_some() => {
            warn!("--rejoin: {error:#}");
            set_aside(&*disk, &our_files(&*disk)?)?;
            open_paxos_files(disk, identity, cluster_state, true)
        }
        other => other,
    }
}

fn open_paxos_files(
    disk: Arc<dyn Disk>,
    identity: Identity,
    cluster_state: ClusterState,
    rejoin: bool,
) -> Result<PaxosFiles> {
    let opened = open_data_dir(&*disk, identity, cluster_state, rejoin, || {
        // A new replica's files exist from the start, so a missing one later is damage.
        let mut log = AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, identity)?;
        if rejoin {
            log.append(&[AcceptorRecord::RebuildStarted])?;
        }
        save_ballot(&*disk, identity, Ballot::ZERO)
    })?;
    let (acceptor_log, acceptor_state, replayed) = AcceptorLog::open_acceptor(disk.clone(), identity)?;
    let last_ballot = load_ballot(&*disk, identity)?;
    // Without snapshot.bin the base is the empty store at slot 0, which the
    // change log may extend; what neither holds is checked below.
    let mut snapshot = load_snapshot(&*disk, identity)?.unwrap_or_default();
    let snapshot_chain = load_snapshot_changes(&*disk, identity, &mut snapshot)?;
    if snapshot.next_slot < acceptor_state.log_start {
        // Also what a lost or cut change log looks like.
        let reason = format!(
            "the snapshot with its changes ends at slot {} but the acceptor forgot every slot below {}",
            snapshot.next_slot, acceptor_state.log_start
        );
        return Err(Damage::Missing { file: disk.describe(SNAPSHOT_CHANGES), reason }.into());
    }
    Ok(PaxosFiles { opened, acceptor_log, acceptor_state, replayed, last_ballot, snapshot, snapshot_chain })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Command, Op};
    use crate::paxos::SlotValue;
    use frames::FRAME_HEADER_BYTES;

    const ME: Identity = Identity { cluster_id: 7, replica_id: 2 };

    fn disk() -> Arc<SimDisk> {
        Arc::new(SimDisk::default())
    }
    fn accepted(slot: Slot) -> AcceptorRecord {
        AcceptorRecord::Accepted { slot, ballot: Ballot::new(3, 1), value: SlotValue::Noop }
    }
    fn open(disk: &Arc<SimDisk>) -> Result<(AcceptorLog, AcceptorState, Replayed)> {
        AcceptorLog::open_acceptor(disk.clone(), ME)
    }
    fn damage(result: Result<impl Sized>) -> Damage {
        match result {
            Ok(_) => panic!("damage was accepted"),
            Err(e) => e.downcast::<Damage>().expect("a Damage error"),
        }
    }

    #[test]
    fn a_log_survives_reopening_and_a_torn_final_append_is_cut() {
        let disk = disk();
        let mut log = AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, ME).unwrap();
        log.append(&[AcceptorRecord::Promised(Ballot::new(3, 1)), accepted(0)]).unwrap();
        let synced = disk.len(ACCEPTOR_LOG);
        disk.append_in_place(ACCEPTOR_LOG, synced as u64, &[0, 0, 0, 40, 1, 2]).unwrap();
        disk.crash(Some((ACCEPTOR_LOG.into(), Torn::Sectors(u64::MAX))));
        let (mut log, state, replayed) = open(&disk).unwrap();
        assert_eq!((replayed.records, replayed.torn_bytes_cut), (2, 6));
        assert_eq!(disk.len(ACCEPTOR_LOG), synced);
        assert_eq!(disk.read(ACCEPTOR_LOG).unwrap().unwrap().len(), synced, "the torn write and the reserve are cut");
        assert_eq!(state.promised, Ballot::new(3, 1));
        log.append(&[accepted(1)]).unwrap();
        assert_eq!(open(&disk).unwrap().1.accepted.len(), 2);
    }

    /// A tiny deterministic generator, for sector masks.
    fn masks(count: usize) -> impl Iterator<Item = u64> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..count).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        })
    }

    #[test]
    fn an_append_that_lost_any_of_its_sectors_is_cut_and_nothing_synced_is() {
        let batch: Vec<AcceptorRecord> = (10..16).map(accepted).collect();
        for (case, kept) in [0, u64::MAX].into_iter().chain(masks(300)).enumerate() {
            let disk = disk();
            let mut log = AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, ME).unwrap();
            for slot in 0..4 {
                log.append(&[accepted(slot)]).unwrap();
            }
            disk.fail_syncs();
            assert!(log.append(&batch).is_err());
            disk.crash(Some((ACCEPTOR_LOG.into(), Torn::Sectors(kept))));
            let (mut log, state, replayed) = open(&disk).unwrap_or_else(|e| panic!("case {case}: refused: {e:#}"));
            let slots: Vec<Slot> = state.accepted.keys().copied().collect();
            // The batch is one frame: all of it came back (every sector survived) or none.
            let whole: Vec<Slot> = (0..4).chain(10..16).collect();
            assert!(slots == vec![0, 1, 2, 3] || slots == whole, "case {case}: {slots:?}");
            assert_eq!(replayed.records, slots.len(), "case {case}");
            log.append(&[accepted(20)]).unwrap();
            assert!(open(&disk).unwrap().1.accepted.contains_key(&20), "case {case}: appends go on after the cut");
        }
    }

    #[test]
    fn zeros_reserved_after_a_log_are_not_a_torn_write() {
        let disk = disk();
        let mut log = AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, ME).unwrap();
        log.append(&[accepted(0), accepted(1)]).unwrap();
        let contents = disk.read(ACCEPTOR_LOG).unwrap().unwrap();
        assert!(contents.len() > disk.len(ACCEPTOR_LOG) && contents[disk.len(ACCEPTOR_LOG)..].iter().all(|&b| b == 0));
        disk.crash(None);
        let (_, state, replayed) = open(&disk).unwrap();
        assert_eq!((state.accepted.len(), replayed.torn_bytes_cut), (2, 0));
        // A stray byte in the reserve is a torn write, cut; before the data's end it is damage.
        let end = disk.len(ACCEPTOR_LOG);
        let mut log = open(&disk).unwrap().0;
        log.append(&[accepted(2)]).unwrap();
        disk.flip_bit(ACCEPTOR_LOG, disk.len(ACCEPTOR_LOG) + 3, 0);
        let (_, state, replayed) = open(&disk).unwrap();
        assert_eq!((state.accepted.len(), replayed.torn_bytes_cut), (3, 4), "up to the stray byte");
        disk.flip_bit(ACCEPTOR_LOG, end - 1, 0);
        assert!(matches!(damage(open(&disk)), Damage::Corrupt { .. }));
    }

    #[test]
    fn a_log_of_the_first_format_is_read_and_rewritten_in_batches() {
        let disk = disk();
        let mut old = Vec::new();
        let mut header = FileHeader::new(FileKind::AcceptorLog, ME);
        header.format = 1;
        encode_frame(&mut old, &header).unwrap();
        for slot in 0..3 {
            encode_frame(&mut old, &accepted(slot)).unwrap();
        }
        disk.append(ACCEPTOR_LOG, &old).unwrap();
        disk.sync(ACCEPTOR_LOG).unwrap();
        let (mut log, state, replayed) = open(&disk).unwrap();
        assert_eq!((state.accepted.len(), replayed.records), (3, 3));
        log.append(&[accepted(3), accepted(4)]).unwrap();
        assert_eq!(open(&disk).unwrap().1.accepted.len(), 5);
    }

    #[test]
    fn a_log_on_the_real_file_system_appends_over_a_reserve_of_zeros() {
        let dir = std::env::temp_dir().join(format!("paxos-kv-in-place-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let disk: Arc<dyn Disk> = Arc::new(FsDisk::open(&dir).unwrap());
        let mut log = AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, ME).unwrap();
        for slot in 0..2000 {
            log.append(&[accepted(slot)]).unwrap();
        }
        let path = dir.join(ACCEPTOR_LOG);
        assert!(std::fs::metadata(&path).unwrap().len() >= log.bytes() + (1 << 20), "a reserve after the data");
        let contents = std::fs::read(&path).unwrap();
        assert!(contents[log.bytes() as usize..].iter().all(|&b| b == 0));
        drop(log);
        let (_, state, replayed) = AcceptorLog::open_acceptor(disk.clone(), ME).unwrap();
        assert_eq!((state.accepted.len(), replayed.torn_bytes_cut), (2000, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn large_appends_on_the_real_file_system_bypass_the_cache_and_keep_every_byte_in_order() {
        let dir = std::env::temp_dir().join(format!("paxos-kv-direct-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut expected = Vec::new();
        let (mut direct, mut large) = (0, 0);
        // Small and large appends in turn, so that large ones start and end inside blocks,
        // and one larger than the direct buffer; then a new handle carries on.
        for sizes in [&[10, 300_000, 5, (1 << 20) + 3, 4096 * 70, 7][..], &[2_500_001, 1, 262_144]] {
            let disk = FsDisk::open(&dir).unwrap();
            for &size in sizes {
                let bytes: Vec<u8> = (0..size).map(|i| (expected.len() + i) as u8 ^ (i >> 12) as u8).collect();
                disk.append(SNAPSHOT_NEXT, &bytes).unwrap();
                expected.extend_from_slice(&bytes);
                large += if size >= 256 << 10 { size as u64 } else { 0 };
                assert_eq!(disk.read(SNAPSHOT_NEXT).unwrap().unwrap(), expected, "after appending {size} bytes");
            }
            disk.sync(SNAPSHOT_NEXT).unwrap();
            direct += disk.direct_bytes();
        }
        // Cut short and appended to again through the same handle: the append follows the cut.
        let disk = FsDisk::open(&dir).unwrap();
        disk.append(SNAPSHOT_NEXT, &[1; 300_000]).unwrap();
        disk.truncate(SNAPSHOT_NEXT, 1000).unwrap();
        expected.truncate(1000);
        disk.append(SNAPSHOT_NEXT, &[2; 300_000]).unwrap();
        expected.extend_from_slice(&[2; 300_000]);
        assert_eq!(disk.read(SNAPSHOT_NEXT).unwrap().unwrap(), expected, "an append after a cut");
        // A file system that refuses O_DIRECT (an old tmpfs) takes the same bytes through the cache.
        assert!(direct == large || direct == 0, "{direct} bytes written directly of {large} in large appends");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn un_synced_appends_are_lost_in_a_crash_and_a_failed_sync_is_an_error() {
        let disk = disk();
        let mut log = AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, ME).unwrap();
        log.append(&[accepted(0)]).unwrap();
        disk.fail_syncs();
        assert!(log.append(&[accepted(1)]).is_err(), "a failed sync must reach the caller");
        assert!(disk.unsynced_bytes(ACCEPTOR_LOG) > 0);
        disk.crash(None);
        assert_eq!(open(&disk).unwrap().1.accepted.keys().copied().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn a_flipped_byte_in_the_middle_is_refused_and_the_file_left_untouched() {
        let disk = disk();
        let mut log = AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, ME).unwrap();
        for slot in 0..20 {
            log.append(&[accepted(slot)]).unwrap();
        }
        let middle = disk.len(ACCEPTOR_LOG) / 2;
        disk.flip_bit(ACCEPTOR_LOG, middle, 2);
        let before = disk.read(ACCEPTOR_LOG).unwrap();
        let Damage::Corrupt { offset, .. } = damage(open(&disk)) else { panic!("expected corruption") };
        assert!(offset as usize <= middle);
        assert_eq!(disk.read(ACCEPTOR_LOG).unwrap(), before, "a refused file must not be changed");
    }

    #[test]
    fn files_of_another_replica_or_cluster_are_refused() {
        let disk = disk();
        AcceptorLog::create(disk.clone(), ACCEPTOR_LOG, FileKind::AcceptorLog, ME).unwrap();
        save_ballot(&*disk, ME, Ballot::new(4, 2)).unwrap();
        let other_replica = Identity { replica_id: 3, ..ME };
        let other_cluster = Identity { cluster_id: 8, ..ME };
        for who in [other_replica, other_cluster] {
            assert!(matches!(damage(AcceptorLog::open_acceptor(disk.clone(), who)), Damage::Foreign { .. }));
            assert!(matches!(damage(load_ballot(&*disk, who)), Damage::Foreign { .. }));
        }
        assert_eq!(load_ballot(&*disk, ME).unwrap(), Ballot::new(4, 2));
    }

    fn store_of(keys: usize, value_bytes: usize) -> KvStore {
        let mut store = KvStore::default();
        for i in 0..keys {
            let op = Op::Put { key: format!("key-{i}"), value: "v".repeat(value_bytes) };
            store.apply(&Command { client_id: i as u64 % 7, seq: i as u64, op });
        }
        store
    }

    #[test]
    fn snapshots_are_chunked_checksummed_and_refused_when_damaged() {
        let disk = disk();
        let snapshot = Snapshot { next_slot: 172_000, store: store_of(3_000, 1_000) };
        save_snapshot(&*disk, ME, &snapshot).unwrap();
        assert_eq!(load_snapshot(&*disk, ME).unwrap(), Some(snapshot));
        let len = disk.len(SNAPSHOT);
        for offset in [30, 60, len / 2, len - 1] {
            let copy = SimDisk::default();
            copy.replace(SNAPSHOT, &mut |out: &mut dyn Write| out.write_all(&disk.read(SNAPSHOT).unwrap().unwrap()))
                .unwrap();
            copy.flip_bit(SNAPSHOT, offset, 4);
            assert!(load_snapshot(&copy, ME).is_err(), "a flipped bit at {offset} of {len} was loaded");
        }
    }

    /// A learner's view: a store, what changed since the last job, and the job.
    struct Writes {
        store: KvStore,
        changes: Changes,
        slot: Slot,
        since: Slot,
        seq: u64,
    }

    impl Writes {
        fn new(store: KvStore, slot: Slot) -> Self {
            Writes { store, changes: Changes::default(), slot, since: slot, seq: 1_000_000 }
        }
        fn apply(&mut self, client_id: u64, op: Op) {
            self.seq += 1;
            let command = Command { client_id, seq: self.seq, op };
            self.store.apply_noting(&command, Some(&mut self.changes));
            self.slot += 1;
        }
        fn job(&mut self) -> SnapshotJob {
            let since = std::mem::replace(&mut self.since, self.slot);
            let changes = std::mem::take(&mut self.changes);
            SnapshotJob { snapshot: self.snapshot(), changes: Some((since, changes)) }
        }
        /// As after an install: only the whole store will do.
        fn whole(&mut self) -> SnapshotJob {
            self.since = self.slot;
            self.changes = Changes::default();
            SnapshotJob { snapshot: self.snapshot(), changes: None }
        }
        fn snapshot(&self) -> Snapshot {
            Snapshot { next_slot: self.slot, store: self.store.clone() }
        }
    }

    fn writer_on(disk: &Arc<SimDisk>, chain: SnapshotChain) -> SnapshotWriter {
        SnapshotWriter::new(disk.clone(), ME, chain, &[ME.replica_id])
    }

    fn reopen(disk: &SimDisk) -> Result<(Snapshot, SnapshotChain)> {
        let mut snapshot = load_snapshot(disk, ME)?.unwrap_or_default();
        let chain = load_snapshot_changes(disk, ME, &mut snapshot)?;
        Ok((snapshot, chain))
    }

    #[test]
    fn snapshots_write_only_what_changed_until_the_changes_outgrow_the_store() {
        let disk = disk();
        let mut writes = Writes::new(store_of(1_000, 100), 500);
        let mut writer = writer_on(&disk, SnapshotChain::default());
        let whole = writer.write(&writes.whole()).unwrap();
        let SnapshotWritten::Whole { bytes: store_file_bytes } = whole else { panic!("first write: {whole:?}") };

        writes.apply(1, Op::Put { key: "key-3".into(), value: "new".into() });
        writes.apply(2, Op::Delete { key: "key-4".into() });
        writes.apply(3, Op::Put { key: "fresh".into(), value: "x".repeat(50) });
        let written = writer.write(&writes.job()).unwrap();
        let SnapshotWritten::Changes { bytes } = written else { panic!("three writes: {written:?}") };
        assert!(bytes < store_file_bytes / 20, "{bytes} bytes of changes for a {store_file_bytes}-byte store");
        let (loaded, chain) = reopen(&disk).unwrap();
        assert_eq!(loaded, writes.snapshot(), "the store and its changes read back as the store");
        assert_eq!((chain.base_slot, chain.tip_slot), (500, 503));

        // Sessions evicted and created travel too; an empty set of changes is fine.
        writes.apply(9, Op::Get { key: "key-5".into() });
        writer.write(&writes.job()).unwrap();
        writer.write(&writes.job()).unwrap();
        assert_eq!(reopen(&disk).unwrap().0, writes.snapshot());

        // Jobs that waited for the writer are written as one, with all their changes.
        writes.apply(1, Op::Put { key: "key-6".into(), value: "6".into() });
        let older = writes.job();
        writes.apply(2, Op::Delete { key: "key-7".into() });
        let mut newest = writes.job();
        newest.absorb(older);
        assert!(matches!(writer.write(&newest).unwrap(), SnapshotWritten::Changes { .. }));
        assert_eq!(reopen(&disk).unwrap().0, writes.snapshot());

        // Rewriting every key outgrows the store: it is written anew, in steps
        // the jobs pay for, and meanwhile every job is still a set of changes.
        let mut kinds = Vec::new();
        let mut rewritten = Vec::new();
        for round in 0..3 {
            for i in 0..1_000 {
                writes.apply(4, Op::Put { key: format!("key-{i}"), value: format!("{round}").repeat(100) });
            }
            kinds.push(writer.write(&writes.job()).unwrap());
            rewritten.extend(run_rewrite_steps(&mut writer));
        }
        assert!(kinds.iter().all(|kind| matches!(kind, SnapshotWritten::Changes { .. })), "{kinds:?}");
        assert!(!rewritten.is_empty(), "{kinds:?}");
        let (loaded, chain) = reopen(&disk).unwrap();
        assert_eq!(loaded, writes.snapshot());
        assert_eq!(chain.tip_slot, writes.slot);
        assert_eq!(chain.base_slot, rewritten.last().unwrap().slot);
    }

    /// Every step the writer may take now.
    fn run_rewrite_steps(writer: &mut SnapshotWriter) -> Vec<StoreRewritten> {
        let mut done = Vec::new();
        while writer.rewrite_pending() {
            done.extend(writer.rewrite_step().unwrap());
        }
        done
    }

    #[test]
    fn the_store_file_is_rewritten_in_steps_and_a_crash_between_any_two_loses_nothing() {
        let mut disk = disk();
        let mut writes = Writes::new(store_of(300, 100), 0);
        let mut writer = writer_on(&disk, SnapshotChain::default()).with_pace(500, REWRITE_BYTES_PER_CHANGED_BYTE);
        writer.write(&writes.whole()).unwrap();
        let mut rewrites = Vec::new();
        let mut restarts_mid_rewrite = 0;
        let mut round = 0;
        while rewrites.len() < 3 {
            round += 1;
            assert!(round < 1_000, "no rewrite after {round} jobs: {rewrites:?}");
            for i in 0..25 {
                let key = format!("key-{}", (round * 25 + i) % 300);
                writes.apply(i % 3, Op::Put { key, value: format!("{round}-").repeat(40) });
            }
            let written = writer.write(&writes.job()).unwrap();
            let SnapshotWritten::Changes { bytes: job_bytes } = written else { panic!("{written:?}") };
            let store_file = disk.read(SNAPSHOT).unwrap();
            let mut step_bytes = 0;
            loop {
                let before = Arc::new(disk.after_crash());
                let (loaded, chain) = reopen(&before).unwrap();
                assert_eq!(loaded, writes.snapshot(), "round {round}: a crash here loses nothing");
                if chain.next_log_bytes.is_some() && rewrites.len() == 1 && restarts_mid_rewrite == 0 {
                    // Restart there: the files fold together at the next rewrite.
                    restarts_mid_rewrite += 1;
                    writer = writer_on(&before, chain).with_pace(500, REWRITE_BYTES_PER_CHANGED_BYTE);
                    disk = before;
                    break;
                }
                if !writer.rewrite_pending() {
                    break;
                }
                let written_before = disk.len(SNAPSHOT_NEXT);
                let step = writer.rewrite_step().unwrap();
                match step {
                    None => {
                        step_bytes += disk.len(SNAPSHOT_NEXT) - written_before;
                        assert_eq!(
                            disk.read(SNAPSHOT).unwrap(),
                            store_file,
                            "the store file is replaced only when done"
                        );
                    }
                    Some(done) => {
                        rewrites.push(done);
                        // A crash between putting the new store file in place and the next log.
                        let mixed = before.after_crash();
                        let new_store_file = disk.read(SNAPSHOT).unwrap().unwrap();
                        mixed.replace(SNAPSHOT, &mut |out: &mut dyn Write| out.write_all(&new_store_file)).unwrap();
                        mixed.remove(SNAPSHOT_NEXT).unwrap();
                        let (loaded, chain) = reopen(&mixed).unwrap();
                        assert_eq!(loaded, writes.snapshot(), "a crash between the two renames loses nothing");
                        assert_eq!((chain.next_log_bytes, chain.change_log_stale), (None, false));
                        assert!(!mixed.names().unwrap().iter().any(|name| name == SNAPSHOT_CHANGES_NEXT));
                    }
                }
            }
            assert!(
                step_bytes as u64 <= (job_bytes * REWRITE_BYTES_PER_CHANGED_BYTE).max(500) + 2 * 500,
                "round {round}: {step_bytes} bytes of the store for {job_bytes} bytes of changes"
            );
        }
        assert!(rewrites.iter().all(|done| done.steps >= 3), "{rewrites:?}");
        assert!(restarts_mid_rewrite > 0);
        let (loaded, chain) = reopen(&disk).unwrap();
        assert_eq!(loaded, writes.snapshot());
        assert!(chain.log_bytes() < 3 * writes.store.data_bytes(), "{chain:?}");
    }

    #[test]
    fn an_unfinished_set_of_changes_is_cut_and_damage_before_the_end_refused() {
        let disk = disk();
        let mut writes = Writes::new(store_of(100, 10), 0);
        let mut writer = writer_on(&disk, SnapshotChain::default());
        writer.write(&writes.whole()).unwrap();
        writes.apply(1, Op::Put { key: "a".into(), value: "1".into() });
        writer.write(&writes.job()).unwrap();
        let durable = writes.snapshot();
        let synced = disk.len(SNAPSHOT_CHANGES);

        // A crash in the middle of the next set, at every point of it.
        writes.apply(1, Op::Put { key: "b".into(), value: "2".repeat(3_000) });
        disk.fail_syncs();
        assert!(writer.write(&writes.job()).is_err(), "a failed sync must reach the caller");
        let unsynced = disk.unsynced_bytes(SNAPSHOT_CHANGES);
        let image = disk.read(SNAPSHOT_CHANGES).unwrap().unwrap();
        let base = disk.read(SNAPSHOT).unwrap().unwrap();
        for keep in [1, FRAME_HEADER_BYTES + 5, unsynced / 2, unsynced - 1] {
            let copy = Arc::new(SimDisk::default());
            copy.replace(SNAPSHOT, &mut |out: &mut dyn Write| out.write_all(&base)).unwrap();
            copy.replace(SNAPSHOT_CHANGES, &mut |out: &mut dyn Write| out.write_all(&image[..synced])).unwrap();
            copy.append(SNAPSHOT_CHANGES, &image[synced..]).unwrap();
            copy.crash(Some((SNAPSHOT_CHANGES.into(), Torn::Tail(keep))));
            let (loaded, chain) = reopen(&copy).unwrap();
            assert_eq!(loaded, durable, "keeping {keep} of {unsynced} unsynced bytes");
            assert_eq!(chain.torn_bytes_cut, keep as u64);
            assert_eq!(copy.len(SNAPSHOT_CHANGES), synced, "the unfinished set is cut off the file");
            // Appending after the cut reads back.
            let mut writer = writer_on(&copy, chain);
            let mut more = Writes::new(loaded.store, loaded.next_slot);
            more.apply(2, Op::Delete { key: "a".into() });
            writer.write(&more.job()).unwrap();
            assert_eq!(reopen(&copy).unwrap().0, more.snapshot());
        }

        // Damage with a whole set after it is corruption, not a torn end.
        let copy = SimDisk::default();
        copy.replace(SNAPSHOT, &mut |out: &mut dyn Write| out.write_all(&base)).unwrap();
        copy.replace(SNAPSHOT_CHANGES, &mut |out: &mut dyn Write| out.write_all(&image[..synced])).unwrap();
        copy.flip_bit(SNAPSHOT_CHANGES, synced - 40, 1);
        assert!(matches!(damage(reopen(&copy)), Damage::Corrupt { .. }));
    }

    #[test]
    fn changes_left_from_an_older_store_file_are_ignored_and_changes_without_theirs_refused() {
        let disk = disk();
        let mut writes = Writes::new(store_of(100, 10), 10);
        let mut writer = writer_on(&disk, SnapshotChain::default());
        writer.write(&writes.whole()).unwrap();
        let old_base = disk.read(SNAPSHOT).unwrap().unwrap();
        writes.apply(1, Op::Put { key: "a".into(), value: "1".into() });
        writer.write(&writes.job()).unwrap();
        let old_changes = disk.read(SNAPSHOT_CHANGES).unwrap().unwrap();

        // A crash after the store file was replaced, before the change log was emptied.
        writes.apply(1, Op::Put { key: "b".into(), value: "2".into() });
        writer.write(&writes.whole()).unwrap();
        disk.replace(SNAPSHOT_CHANGES, &mut |out: &mut dyn Write| out.write_all(&old_changes)).unwrap();
        let (loaded, chain) = reopen(&disk).unwrap();
        assert_eq!(loaded, writes.snapshot());
        assert!(chain.change_log_stale);
        let mut writer = writer_on(&disk, chain);
        writes.apply(1, Op::Put { key: "c".into(), value: "3".into() });
        let written = writer.write(&writes.job()).unwrap();
        assert!(matches!(written, SnapshotWritten::Changes { .. }), "{written:?}");
        assert_eq!(reopen(&disk).unwrap().0, writes.snapshot(), "the stale sets were replaced, not extended");

        // Changes to a newer store file than the one present: refused.
        disk.replace(SNAPSHOT, &mut |out: &mut dyn Write| out.write_all(&old_base)).unwrap();
        assert!(matches!(damage(reopen(&disk)), Damage::Foreign { .. }));
    }

    #[test]
    fn an_empty_directory_starts_only_as_a_new_cluster_or_with_rejoin() {
        let disk = disk();
        let created = || Ok(());
        assert!(matches!(
            damage(open_data_dir(&*disk, ME, ClusterState::Existing, false, created)),
            Damage::NoIdentity { .. }
        ));
        assert_eq!(open_data_dir(&*disk, ME, ClusterState::New, false, created).unwrap(), Opened::Created);
        assert_eq!(open_data_dir(&*disk, ME, ClusterState::Existing, false, created).unwrap(), Opened::Existing);
        let other = Identity { replica_id: 5, ..ME };
        assert!(matches!(
            damage(open_data_dir(&*disk, other, ClusterState::New, false, created)),
            Damage::Foreign { .. }
        ));

        // Files without a marker are not trusted, even for a "new" cluster.
        let lost = SimDisk::default();
        lost.append(ACCEPTOR_LOG, b"x").unwrap();
        assert!(matches!(
            damage(open_data_dir(&lost, ME, ClusterState::New, false, created)),
            Damage::NoIdentity { .. }
        ));
        assert_eq!(open_data_dir(&lost, ME, ClusterState::Existing, true, created).unwrap(), Opened::Rejoining);
        assert_eq!(lost.names().unwrap(), vec![MARKER.to_string()]);
    }
}
