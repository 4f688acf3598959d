//! Turns on one card endpoint between processes (and between module instances in one process):
//! an advisory `flock` on a lock file named after the endpoint, held for one operation and
//! dropped by the kernel when its holder dies, `kill -9` included. Waiters sleep in the kernel
//! and one of them gets the lock as soon as it is released — unlike a PC/SC transaction, which a
//! waiting process only polls for every ~200 ms, so that a process taking its next transaction
//! at once starves the others (docs/design.md, "Fair turns over PC/SC").
//!
//! The files live in `/run/lock` (or the temporary directory when that cannot be used). A
//! leftover file of a dead process is just opened again: the lock was never in the file.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::Path;
use std::sync::Once;

use log::warn;
use sha2::{Digest, Sha256};

/// The lock file of one endpoint, opened by one connection.
pub(crate) struct TurnLock {
    file: File,
}

/// A turn on the endpoint; the next process may go when it is dropped.
pub(crate) struct Turn<'a> {
    file: &'a File,
}

impl TurnLock {
    /// For a modem's AT port: one file per device (major/minor), whatever path names it,
    /// readable by the port's group, so anyone who may open the port may take a turn. (The port
    /// itself cannot carry the lock: the serial-port crate keeps a shared `flock` on it for as
    /// long as it is open.)
    pub(crate) fn for_tty(device: &str) -> io::Result<TurnLock> {
        let node = std::fs::metadata(device)?;
        let (major, minor) = (libc::major(node.rdev()), libc::minor(node.rdev()));
        let name = format!("iotsafe-pkcs11.tty-{major}-{minor}.lock");
        let file = open_in_lock_dir(&name)?;
        // Only the file's owner may change these; for anyone else they fail, and the owner
        // already did it.
        let _ = fchown(&file, None, Some(node.gid()));
        let _ = file.set_permissions(Permissions::from_mode(0o640));
        Ok(TurnLock { file })
    }

    /// For a PC/SC reader: one file per reader name (hashed: the name comes from the reader's
    /// driver and must not become part of a path). Readable by everyone: any local user may talk
    /// to pcscd, and taking a turn only blocks this module's processes, as holding a PC/SC
    /// transaction on the reader — which anyone may — blocks them anyway. `None` when no lock
    /// file can be opened: pcscd's transactions still keep operations apart, only without fair
    /// turns (one warning per process).
    pub(crate) fn for_pcsc_reader(reader: &str) -> Option<TurnLock> {
        match open_in_lock_dir(&pcsc_lock_name(reader)) {
            Ok(file) => {
                let _ = file.set_permissions(Permissions::from_mode(0o644));
                Some(TurnLock { file })
            }
            Err(e) => {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    warn!(
                        "no lock file for fair turns on PC/SC readers ({e}); processes \
                         signing at once on one card may starve each other"
                    );
                });
                None
            }
        }
    }

    /// Waits for the endpoint (another process's operation ends, or its process dies).
    pub(crate) fn turn(&self) -> io::Result<Turn<'_>> {
        loop {
            match self.file.lock() {
                Ok(()) => return Ok(Turn { file: &self.file }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// `iotsafe-pkcs11.pcsc-<first 16 bytes of the name's SHA-256, hex>.lock`.
fn pcsc_lock_name(reader: &str) -> String {
    let digest = Sha256::digest(reader.as_bytes());
    format!("iotsafe-pkcs11.pcsc-{}.lock", hex::encode(&digest[..16]))
}

/// Opens (creating it if need be) the lock file `name` in `/run/lock`, else in the temporary
/// directory (with one warning: processes with another temporary directory take no turns with
/// this one).
fn open_in_lock_dir(name: &str) -> io::Result<File> {
    let run_lock = Path::new("/run/lock");
    match open_lock_file(&run_lock.join(name)) {
        Ok(file) => Ok(file),
        Err(e) => {
            let fallback = std::env::temp_dir().join(name);
            let file = open_lock_file(&fallback)?;
            static WARNED: Once = Once::new();
            WARNED.call_once(|| {
                warn!(
                    "cannot use {} for turn locks ({e}); using {}",
                    run_lock.display(),
                    fallback.display()
                );
            });
            Ok(file)
        }
    }
}

/// Opens a lock file read-only (all `flock` needs). An existing file is opened without
/// `O_CREAT`, which `fs.protected_regular` refuses for another user's file in a sticky
/// directory; not following links, not blocking on a FIFO, and only a regular file is taken.
fn open_lock_file(path: &Path) -> io::Result<File> {
    let open = |create: bool| {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        if create {
            // `create_new` needs write access in the options; the file itself stays empty.
            options.write(true).create_new(true).mode(0o600);
        }
        options.open(path)
    };
    let file = match open(false) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match open(true) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open(false),
            other => other,
        },
        other => other,
    }?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader name of its own for one test, and its lock file removed afterwards.
    struct TestReader(String);

    impl TestReader {
        fn new(test: &str) -> TestReader {
            TestReader(format!(
                "turn lock test {test} {} 00 00",
                std::process::id()
            ))
        }
    }

    impl Drop for TestReader {
        fn drop(&mut self) {
            let name = pcsc_lock_name(&self.0);
            let _ = std::fs::remove_file(Path::new("/run/lock").join(&name));
            let _ = std::fs::remove_file(std::env::temp_dir().join(&name));
        }
    }

    #[test]
    fn lock_file_names_are_hashed_reader_names() {
        let name = pcsc_lock_name("../../etc/passwd 00 00");
        let hash = name
            .strip_prefix("iotsafe-pkcs11.pcsc-")
            .and_then(|rest| rest.strip_suffix(".lock"))
            .expect("prefix and suffix");
        assert_eq!(hash.len(), 32);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        assert_ne!(name, pcsc_lock_name("../../etc/passwd 01 00"));
    }

    #[test]
    fn a_turn_holds_off_another_connection_until_dropped() {
        let reader = TestReader::new("hold");
        let first = TurnLock::for_pcsc_reader(&reader.0).expect("a lock file");
        let second = TurnLock::for_pcsc_reader(&reader.0).expect("a lock file");
        let turn = first.turn().expect("a turn");
        assert!(matches!(
            second.file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(turn);
        assert!(second.file.try_lock().is_ok());
    }

    #[test]
    fn a_leftover_file_is_reused() {
        let reader = TestReader::new("leftover");
        let first = TurnLock::for_pcsc_reader(&reader.0).expect("a lock file");
        let inode = first.file.metadata().expect("metadata").ino();
        drop(first);
        let again = TurnLock::for_pcsc_reader(&reader.0).expect("the same file again");
        assert_eq!(again.file.metadata().expect("metadata").ino(), inode);
        assert!(again.turn().is_ok());
    }

    #[test]
    fn a_fifo_in_place_of_the_lock_file_is_refused_without_blocking() {
        let path = std::env::temp_dir().join(format!("turn-lock-fifo-{}", std::process::id()));
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let opened = open_lock_file(&path);
        let _ = std::fs::remove_file(&path);
        assert!(opened.is_err());
    }
}
