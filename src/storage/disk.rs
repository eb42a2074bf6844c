//! The one interface to a replica's data directory. `FsDisk` is the real
//! thing; `SimDisk` is what the simulator uses, and it fails the way disks
//! do: un-synced writes vanish on a crash, a crash in mid-append leaves a
//! torn tail, a sync can fail, a bit can flip, a directory can be lost.
//! Everything above this trait (framing, checksums, replay) is the same code
//! in both, so the simulator exercises the real recovery paths.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    /// Makes every append to `name` durable. An error means the appended bytes
    /// may or may not be on disk, whatever a later read says: the caller stops.
    fn sync(&self, name: &str) -> io::Result<()>;
    /// Cuts `name` to `len` bytes, durably (a torn tail after a crash).
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Replaces `name` atomically and durably with what `write` produces:
    /// after a crash it holds the old or the new contents, never a mix.
    fn replace(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()>;
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
    appending: Mutex<HashMap<String, File>>,
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
        Ok(FsDisk { dir: dir.to_path_buf(), appending: Mutex::new(HashMap::new()) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
        let mut open = self.appending.lock().unwrap();
        if !open.contains_key(name) {
            let path = self.dir.join(name);
            let existed = path.exists();
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            if !existed {
                sync_dir(&self.dir)?;
            }
            open.insert(name.to_string(), file);
        }
        open.get_mut(name).expect("inserted above").write_all(bytes)
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        match self.appending.lock().unwrap().get(name) {
            Some(file) => file.sync_data(),
            None => Ok(()),
        }
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
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
        self.appending.lock().unwrap().remove(name);
        fs::rename(&tmp, self.dir.join(name))?;
        sync_dir(&self.dir)
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
        self.appending.lock().unwrap().clear();
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
    /// except that `torn` keeps that many bytes of one file's un-synced tail,
    /// as a write cut in the middle does.
    pub fn crash(&self, torn: Option<(String, usize)>) {
        let mut state = self.state.lock().unwrap();
        state.fail_syncs = false;
        for (name, file) in state.files.iter_mut() {
            let mut survivor = file.durable.clone();
            if let Some((torn_name, keep)) = &torn {
                if torn_name == name && file.current.len() > file.durable.len() {
                    let tail = &file.current[file.durable.len()..];
                    survivor.extend_from_slice(&tail[..(*keep).min(tail.len())]);
                }
            }
            file.durable = survivor.clone();
            file.current = survivor;
        }
    }

    /// Bytes written to `name` but not yet synced.
    pub fn unsynced_bytes(&self, name: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.files.get(name).map_or(0, |f| f.current.len() - f.durable.len())
    }

    pub fn len(&self, name: &str) -> usize {
        self.state.lock().unwrap().files.get(name).map_or(0, |f| f.current.len())
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

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        if let Some(file) = state.files.get_mut(name) {
            file.durable = file.current.clone();
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
        Ok(())
    }

    fn replace(&self, name: &str, write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
        let mut bytes = Vec::new();
        write(&mut bytes)?;
        let mut state = self.state.lock().unwrap();
        if state.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        state.files.insert(name.to_string(), SimFile { durable: bytes.clone(), current: bytes });
        Ok(())
    }

    fn names(&self) -> io::Result<Vec<String>> {
        Ok(self.state.lock().unwrap().files.keys().filter(|name| !name.contains('/')).cloned().collect())
    }

    fn set_aside(&self, names: &[String], folder: &str) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        for name in names {
            if let Some(file) = state.files.remove(name) {
                state.files.insert(format!("{folder}/{name}"), file);
            }
        }
        Ok(())
    }
}
