//! The one interface to a replica's data directory. `FsDisk` is the real
//! thing; `SimDisk` is what the simulator uses, and it fails the way disks
//! do: un-synced writes vanish on a crash, a crash in mid-append leaves a
//! torn tail, a sync can fail, a bit can flip, a directory can be lost.
//! Everything above this trait (framing, checksums, replay) is the same code
//! in both, so the simulator exercises the real recovery paths.

use log::warn;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Files in one directory, named by plain file names.
pub trait Disk: Send + Sync {
    /// A name for messages: the full path of `name`.
    fn describe(&self, name: &str) -> String;
    /// The whole file, or `None` if it does not exist.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// The file from its start as a stream, or `None` if it does not exist:
    /// for files as large as the store, which are never read whole.
    fn open_read(&self, name: &str) -> io::Result<Option<Box<dyn Read + Send>>> {
        Ok(self.read(name)?.map(|bytes| Box::new(io::Cursor::new(bytes)) as Box<dyn Read + Send>))
    }
    /// Appends to `name`, creating it (and making its directory entry durable).
    /// Not durable until `sync`.
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// [`Disk::append`] for a log that syncs after every append, at `at`: the
    /// end of its data, which the caller keeps. The bytes may be written over
    /// zeros reserved ahead, so that a sync need not change the file's size
    /// (on most file systems a journal commit, which doubles its cost).
    /// Readers then see zeros after the data, and a crash may keep any of the
    /// un-synced pages and lose the others, in no order. (This default, for
    /// disks that reserve nothing, appends: `at` is the file's length.)
    fn append_in_place(&self, name: &str, at: u64, bytes: &[u8]) -> io::Result<()> {
        let _ = at;
        self.append(name, bytes)
    }
    /// Makes every append to `name` durable. An error means the appended bytes
    /// may or may not be on disk, whatever a later read says: the caller stops.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Starts writing `name`'s appended bytes back, without waiting and
    /// without making anything durable: so that a large file written in steps
    /// leaves the page cache a step at a time, not all at its final sync.
    fn start_writeback(&self, name: &str) -> io::Result<()> {
        let _ = name;
        Ok(())
    }
    /// Cuts `name` to `len` bytes, durably (a torn tail after a crash).
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Replaces `name` atomically and durably with what `write` produces:
    /// after a crash it holds the old or the new contents, never a mix.
    fn replace(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()>;
    /// Gives `from` the name `to`, replacing any file of that name, atomically
    /// and durably. Only what was synced to `from` is sure to survive a crash.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name` durably; a missing file is not an error.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Every file name in the directory.
    fn names(&self) -> io::Result<Vec<String>>;
    /// Moves `names` into the sub-directory `folder` (kept for inspection).
    fn set_aside(&self, names: &[String], folder: &str) -> io::Result<()>;
}

/// A directory on the real file system.
pub struct FsDisk {
    dir: PathBuf,
    /// Open append handles: a replaced file is reopened, never written through
    /// a handle to the unlinked old one.
    appending: Mutex<Appending>,
    /// Logs appended in place, by name; forgotten when replaced or cut.
    in_place: Mutex<HashMap<String, InPlaceLog>>,
}

/// `append_in_place` keeps at least this much zeroed past a log's data, and
/// tops it up by at least a piece at a time, with the append: one sync in
/// every few hundred also writes back a piece (and the file's new size),
/// the rest only their own data.
const RESERVE_LOW_BYTES: u64 = 1 << 20;
const RESERVE_PIECE_BYTES: usize = 256 << 10;
static ZEROS: [u8; RESERVE_PIECE_BYTES] = [0; RESERVE_PIECE_BYTES];

/// Appends at least this large bypass the page cache (`O_DIRECT`). Only the
/// snapshot files are appended to in bulk, and they are read back only when a
/// replica restarts: caching them buys nothing, while copying each byte into
/// the cache costs the writer CPU time, several times a plain copy wherever
/// the cache grows into memory the machine has not touched lately (a virtual
/// machine whose host takes freed memory back).
const DIRECT_MIN_BYTES: usize = 256 << 10;
/// Direct writes start and end at multiples of this, from memory aligned to it
/// (the largest logical block size in use).
const DIRECT_ALIGN: usize = 4096;
/// Direct writes go through one buffer of this size.
const DIRECT_BUFFER_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Appending {
    files: HashMap<String, AppendFile>,
    /// `DIRECT_BUFFER_BYTES` aligned to `DIRECT_ALIGN` inside it, allocated on first use.
    direct_buffer: Vec<u8>,
    /// Bytes appended through direct writes (for tests).
    direct_bytes: u64,
}

/// A file appended to at its end, which this handle tracks.
struct AppendFile {
    path: PathBuf,
    file: File,
    len: u64,
    direct: Direct,
}

enum Direct {
    Untried,
    Open(File),
    /// The file system refused `O_DIRECT` (say, an old tmpfs): appends go through the cache.
    Unsupported,
}

impl AppendFile {
    /// Writes `bytes` at the end with direct writes, going back over the
    /// partial block the file ends in (with the same bytes, so a crash in
    /// mid-write leaves them as they were) and writing the new partial
    /// block through the cache. `Ok(false)`: the file system does not take
    /// direct writes, and the caller appends through the cache instead.
    fn append_direct(&mut self, bytes: &[u8], buffer: &mut Vec<u8>) -> io::Result<bool> {
        if let Direct::Untried = self.direct {
            self.direct = match open_direct(&self.path) {
                Ok(file) => Direct::Open(file),
                Err(e) if direct_refused(&e) => Direct::Unsupported,
                Err(e) => return Err(e),
            };
        }
        let Direct::Open(direct) = &self.direct else {
            return Ok(false);
        };
        if buffer.is_empty() {
            *buffer = vec![0; DIRECT_BUFFER_BYTES + DIRECT_ALIGN];
        }
        let skip = buffer.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut buffer[skip..skip + DIRECT_BUFFER_BYTES];
        let mut at = self.len - self.len % DIRECT_ALIGN as u64;
        let mut filled = (self.len - at) as usize;
        self.file.read_exact_at(&mut buf[..filled], at)?;
        let mut rest = bytes;
        loop {
            let take = rest.len().min(buf.len() - filled);
            buf[filled..filled + take].copy_from_slice(&rest[..take]);
            filled += take;
            rest = &rest[take..];
            let whole = if rest.is_empty() { filled - filled % DIRECT_ALIGN } else { filled };
            match direct.write_all_at(&buf[..whole], at) {
                Ok(()) => {}
                Err(e) if direct_refused(&e) => {
                    warn!("{}: direct writes refused ({e}); appending through the page cache", self.path.display());
                    self.direct = Direct::Unsupported;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
            at += whole as u64;
            if rest.is_empty() {
                self.file.write_all_at(&buf[whole..filled], at)?;
                self.len += bytes.len() as u64;
                return Ok(true);
            }
            filled = 0;
        }
    }
}

/// How file systems say they take no direct writes (or not with this alignment).
fn direct_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EOPNOTSUPP))
}

fn open_direct(path: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// A log written in place: its data, then zeros up to `len`.
struct InPlaceLog {
    /// Shared so that a sync runs without holding the map of logs.
    file: Arc<File>,
    /// The file's length: the data, then the reserve of zeros.
    len: u64,
    /// Writing zeros failed (say, the disk is full): appends extend the file.
    reserve_failed: bool,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FsDisk {
    /// Opens `dir`, creating it (and syncing its parent) if needed.
    pub fn open(dir: &Path) -> io::Result<FsDisk> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        Ok(FsDisk { dir: dir.to_path_buf(), appending: Default::default(), in_place: Default::default() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes appended so far with direct writes, bypassing the page cache.
    pub fn direct_bytes(&self) -> u64 {
        self.appending.lock().unwrap().direct_bytes
    }

    /// Drops the open handles of `name` (or of every file), which know where
    /// it ended: it is being replaced, moved or cut, and the next append reopens it.
    fn forget_handles(&self, name: Option<&str>) {
        let (mut appending, mut logs) = (self.appending.lock().unwrap(), self.in_place.lock().unwrap());
        match name {
            Some(name) => {
                appending.files.remove(name);
                logs.remove(name);
            }
            None => {
                appending.files.clear();
                logs.clear();
            }
        }
    }
}

impl Disk for FsDisk {
    fn describe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_read(&self, name: &str) -> io::Result<Option<Box<dyn Read + Send>>> {
        match File::open(self.dir.join(name)) {
            Ok(file) => Ok(Some(Box::new(io::BufReader::with_capacity(1 << 20, file)))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut appending = self.appending.lock().unwrap();
        let Appending { files, direct_buffer, direct_bytes } = &mut *appending;
        if !files.contains_key(name) {
            let path = self.dir.join(name);
            let existed = path.exists();
            let file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&path)?;
            if !existed {
                sync_dir(&self.dir)?;
            }
            let len = file.metadata()?.len();
            files.insert(name.to_string(), AppendFile { path, file, len, direct: Direct::Untried });
        }
        let open = files.get_mut(name).expect("inserted above");
        if bytes.len() >= DIRECT_MIN_BYTES && open.append_direct(bytes, direct_buffer)? {
            *direct_bytes += bytes.len() as u64;
            return Ok(());
        }
        // Written from the end this handle knows, so that a direct write refused part-way is written over.
        open.file.write_all_at(bytes, open.len)?;
        open.len += bytes.len() as u64;
        Ok(())
    }

    fn append_in_place(&self, name: &str, at: u64, bytes: &[u8]) -> io::Result<()> {
        let mut logs = self.in_place.lock().unwrap();
        if !logs.contains_key(name) {
            let path = self.dir.join(name);
            let existed = path.exists();
            let file = OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
            if !existed {
                sync_dir(&self.dir)?;
            }
            let len = file.metadata()?.len();
            logs.insert(name.to_string(), InPlaceLog { file: Arc::new(file), len, reserve_failed: false });
        }
        let log = logs.get_mut(name).expect("inserted above");
        log.file.write_all_at(bytes, at)?;
        let end = at + bytes.len() as u64;
        log.len = log.len.max(end);
        if log.len - end < RESERVE_LOW_BYTES && !log.reserve_failed {
            let mut piece = bytes.len().max(RESERVE_PIECE_BYTES);
            while piece > 0 {
                let zeros = &ZEROS[..piece.min(RESERVE_PIECE_BYTES)];
                if let Err(e) = log.file.write_all_at(zeros, log.len) {
                    // Not the data's error: a full disk stops the reserve, not the log.
                    warn!("reserving space after {}: {e}; appending without a reserve", self.describe(name));
                    log.reserve_failed = true;
                    break;
                }
                log.len += zeros.len() as u64;
                piece -= zeros.len();
            }
        }
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let in_place = self.in_place.lock().unwrap().get(name).map(|log| log.file.clone());
        if let Some(file) = in_place {
            return file.sync_data();
        }
        match self.appending.lock().unwrap().files.get(name) {
            Some(open) => open.file.sync_data(),
            None => Ok(()),
        }
    }

    fn start_writeback(&self, name: &str) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if let Some(AppendFile { file, .. }) = self.appending.lock().unwrap().files.get(name) {
            use std::os::fd::AsRawFd;
            // SAFETY: a plain syscall on an open descriptor; offset 0 and length 0 mean the whole file.
            if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = name;
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        self.forget_handles(Some(name));
        let file = OpenOptions::new().write(true).open(self.dir.join(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn replace(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        // From here on, appends must go to the new file.
        self.forget_handles(Some(name));
        fs::rename(&tmp, self.dir.join(name))?;
        sync_dir(&self.dir)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        // Handles follow the file, not the name: both names are reopened when next appended to.
        for name in [from, to] {
            self.forget_handles(Some(name));
        }
        fs::rename(self.dir.join(from), self.dir.join(to))?;
        sync_dir(&self.dir)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.forget_handles(Some(name));
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn set_aside(&self, names: &[String], folder: &str) -> io::Result<()> {
        let aside = self.dir.join(folder);
        fs::create_dir_all(&aside)?;
        self.forget_handles(None);
        for name in names {
            fs::rename(self.dir.join(name), aside.join(name))?;
        }
        sync_dir(&aside)?;
        sync_dir(&self.dir)
    }
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What reads see: `durable` plus appends not yet synced.
    current: Vec<u8>,
    /// For a log appended in place, where its data ends, now and at the
    /// last sync; `durable` and `current` then hold the same length, the
    /// data followed by zeros (a reserve that stands for zeros synced ahead).
    /// Kept through a crash, as what was synced; cleared when cut or replaced.
    in_place: Option<SimInPlace>,
}

#[derive(Clone, Copy, Debug)]
struct SimInPlace {
    end: usize,
    synced_end: usize,
}

/// The simulated disk writes back in-place logs in sectors this small, so
/// that a crash tears holes inside records, not only between them.
pub const SIM_SECTOR_BYTES: usize = 16;
const SIM_RESERVE_BYTES: usize = 256;

/// What a crash keeps of one file's un-synced writes.
#[derive(Clone, Copy, Debug)]
pub enum Torn {
    /// This many bytes of an appended tail: a write cut in the middle.
    Tail(usize),
    /// For a log written in place, the un-synced sector `i` (counted from
    /// the file's start) survives if bit `i % 64` is set: write-back keeps
    /// no order.
    Sectors(u64),
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<String, SimFile>,
    fail_syncs: bool,
}

/// An in-memory directory for the simulator, with the faults of a real disk.
#[derive(Debug, Default)]
pub struct SimDisk {
    state: Mutex<SimState>,
}

impl SimDisk {
    /// From now on every sync fails (until the next crash): the caller must stop.
    pub fn fail_syncs(&self) {
        self.state.lock().unwrap().fail_syncs = true;
    }

    /// Syncs succeed again (the disk was replaced or space freed).
    pub fn heal(&self) {
        self.state.lock().unwrap().fail_syncs = false;
    }

    /// A power cut: every un-synced byte is lost (as LazyFS does for Jepsen),
    /// except what `torn` keeps of one file's un-synced writes.
    pub fn crash(&self, torn: Option<(String, Torn)>) {
        let mut state = self.state.lock().unwrap();
        state.fail_syncs = false;
        for (name, file) in state.files.iter_mut() {
            let mut survivor = file.durable.clone();
            let torn = torn.as_ref().filter(|(torn_name, _)| torn_name == name).map(|(_, torn)| *torn);
            match (torn, file.in_place) {
                (Some(Torn::Tail(keep)), None) if file.current.len() > file.durable.len() => {
                    let tail = &file.current[file.durable.len()..];
                    survivor.extend_from_slice(&tail[..keep.min(tail.len())]);
                }
                (Some(Torn::Sectors(kept)), Some(log)) => {
                    for at in (log.synced_end..log.end).filter(|at| kept >> (at / SIM_SECTOR_BYTES % 64) & 1 == 1) {
                        survivor[at] = file.current[at];
                    }
                }
                _ => {}
            }
            file.durable = survivor.clone();
            file.current = survivor;
            // What was synced is the data; anything torn after it is for the reader to cut.
            file.in_place = file.in_place.map(|log| SimInPlace { end: log.synced_end, synced_end: log.synced_end });
        }
    }

    /// The disk as a power cut now would leave it; this one is unchanged.
    pub fn after_crash(&self) -> SimDisk {
        let files = self.state.lock().unwrap().files.clone();
        let copy = SimDisk { state: Mutex::new(SimState { files, fail_syncs: false }) };
        copy.crash(None);
        copy
    }

    /// Bytes written to `name` but not yet synced.
    pub fn unsynced_bytes(&self, name: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.files.get(name).map_or(0, |f| match f.in_place {
            Some(log) => log.end - log.synced_end,
            None => f.current.len() - f.durable.len(),
        })
    }

    /// The length of `name`'s data (without the zeros reserved after it).
    pub fn len(&self, name: &str) -> usize {
        self.state.lock().unwrap().files.get(name).map_or(0, |f| f.in_place.map_or(f.current.len(), |log| log.end))
    }

    /// Flips one bit of `name` at `offset`, on disk and in what reads see.
    pub fn flip_bit(&self, name: &str, offset: usize, bit: u8) {
        let mut state = self.state.lock().unwrap();
        if let Some(file) = state.files.get_mut(name) {
            if offset < file.durable.len() {
                file.durable[offset] ^= 1 << (bit % 8);
            }
            if offset < file.current.len() {
                file.current[offset] ^= 1 << (bit % 8);
            }
        }
    }

    /// The data directory is gone (a replaced disk, an `rm -rf`).
    pub fn wipe(&self) {
        self.state.lock().unwrap().files.clear();
    }
}

impl Disk for SimDisk {
    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.state.lock().unwrap().files.get(name).map(|f| f.current.clone()))
    }

    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.state.lock().unwrap().files.entry(name.to_string()).or_default().current.extend_from_slice(bytes);
        Ok(())
    }

    fn append_in_place(&self, name: &str, at: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        let file = state.files.entry(name.to_string()).or_default();
        let at = at as usize;
        let log = file.in_place.get_or_insert(SimInPlace { end: at, synced_end: at });
        let end = at + bytes.len();
        if file.current.len() < end {
            file.current.resize(end + SIM_RESERVE_BYTES, 0);
        }
        file.durable.resize(file.current.len(), 0);
        file.current[at..end].copy_from_slice(bytes);
        log.synced_end = log.synced_end.min(at);
        log.end = end;
        Ok(())
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        if let Some(file) = state.files.get_mut(name) {
            file.durable = file.current.clone();
            if let Some(log) = &mut file.in_place {
                log.synced_end = log.end;
            }
        }
        Ok(())
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        let file = state.files.get_mut(name).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.current.truncate(len as usize);
        file.durable = file.current.clone();
        file.in_place = None;
        Ok(())
    }

    fn replace(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let mut bytes = Vec::new();
        write(&mut bytes)?;
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        state.files.insert(name.to_string(), SimFile { durable: bytes.clone(), current: bytes, in_place: None });
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        // The name moves now; the file's un-synced bytes stay un-synced.
        let file = state.files.remove(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        state.files.insert(to.to_string(), file);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs && state.files.contains_key(name) {
            return Err(io::Error::other("simulated fsync failure"));
        }
        state.files.remove(name);
        Ok(())
    }

    fn names(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().unwrap().files.keys().filter(|name| !name.contains('/')).cloned().collect())
    }

    fn set_aside(&self, names: &[String], folder: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        for name in names {
            if let Some(mut file) = state.files.remove(name) {
                file.in_place = None;
                state.files.insert(format!("{folder}/{name}"), file);
            }
        }
        Ok(())
    }
}
