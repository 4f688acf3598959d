//! Turns on one modem port between processes (and between module instances in one process): an
//! advisory `flock` on a lock file named after the device, held for one operation and dropped by
//! the kernel when its holder dies, `kill -9` included. The file lives in `/run/lock` (or the
//! temporary directory) and belongs to the port's group with mode 0660, so anyone who may open
//! the port may take a turn. (The port itself cannot carry the lock: the serial-port crate keeps
//! a shared `flock` on it for as long as it is open.)
//!
//! The file is opened for each turn and closed after it. A `flock` belongs to the open file, and
//! a forked child keeps a copy of every descriptor open at the fork: were the file kept open
//! between turns, a worker forked by a process would hold that process's lock for as long as the
//! worker lives once the process died inside a turn, and every process would wait for it.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::{Path, PathBuf};

use log::{debug, warn};

pub(super) struct PortLock {
    path: PathBuf,
}

/// A turn on the port; the next process may go when it is dropped.
pub(super) struct PortTurn<'a> {
    file: File,
    _lock: PhantomData<&'a PortLock>,
}

impl PortLock {
    pub(super) fn open(device: &str, lock_dir: Option<&Path>) -> io::Result<PortLock> {
        let node = std::fs::metadata(device)?;
        let path = lock_path(node.rdev(), lock_dir);
        let file = open_lock_file(&path)?;
        // Shared with the port's group. Only the file's owner may change that; for anyone else
        // these fail, and the owner already did it.
        let _ = fchown(&file, None, Some(node.gid()));
        let _ = file.set_permissions(Permissions::from_mode(0o660));
        Ok(PortLock { path })
    }

    /// Waits for the port (another process's operation ends, or its process dies).
    pub(super) fn turn(&self) -> io::Result<PortTurn<'_>> {
        let file = open_lock_file(&self.path)?;
        file.lock()?;
        Ok(PortTurn {
            file,
            _lock: PhantomData,
        })
    }
}

/// The largest note kept in the lock file.
const MAX_NOTE: u64 = 4096;

impl PortTurn<'_> {
    /// The note kept in the lock file (empty: none yet, or unreadable).
    pub(super) fn read_note(&self) -> Vec<u8> {
        let read = self.file.metadata().and_then(|m| {
            let mut note = vec![0; m.len().min(MAX_NOTE) as usize];
            self.file.read_exact_at(&mut note, 0).map(|()| note)
        });
        read.unwrap_or_else(|e| {
            debug!("reading the modem port's note: {e}");
            Vec::new()
        })
    }

    /// Replaces the note in place: the turn keeps other processes out, and a writer that dies
    /// half-way leaves a note its reader's checks reject.
    pub(super) fn write_note(&self, note: &[u8]) {
        let written = self
            .file
            .write_all_at(note, 0)
            .and_then(|()| self.file.set_len(note.len() as u64));
        if let Err(e) = written {
            warn!("cannot write the modem port's note: {e}");
        }
    }
}

impl Drop for PortTurn<'_> {
    fn drop(&mut self) {
        // Closing the file would do as well, unless a child forked during this turn holds a copy.
        let _ = self.file.unlock();
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o660)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// `/run/lock/iotsafe-pkcs11.tty-<major>-<minor>.lock`: one name per device, whatever path
/// (a `/dev/serial/by-id` link, a pty link) names it.
fn lock_path(rdev: u64, lock_dir: Option<&Path>) -> PathBuf {
    let default = Path::new("/run/lock");
    let dir = match lock_dir {
        Some(dir) => dir.to_path_buf(),
        None if default.is_dir() => default.to_path_buf(),
        None => std::env::temp_dir(),
    };
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    dir.join(format!("iotsafe-pkcs11.tty-{major}-{minor}.lock"))
}
