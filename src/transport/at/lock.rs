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
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::{Path, PathBuf};

pub(super) struct PortLock {
    path: PathBuf,
}

/// A turn on the port; the next process may go when it is dropped.
pub(super) struct PortTurn<'a> {
    file: File,
    _lock: PhantomData<&'a PortLock>,
}

impl PortLock {
    pub(super) fn open(device: &str) -> io::Result<PortLock> {
        let node = std::fs::metadata(device)?;
        let path = lock_path(node.rdev());
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
fn lock_path(rdev: u64) -> PathBuf {
    let dir = Path::new("/run/lock");
    let dir = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    dir.join(format!("iotsafe-pkcs11.tty-{major}-{minor}.lock"))
}
