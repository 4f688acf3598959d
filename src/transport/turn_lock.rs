//! Turns on one card endpoint between processes (and between module instances in one process),
//! held for one operation: advisory `flock`s on two lock files named after the endpoint, which the
//! kernel drops when their holder dies, `kill -9` included. Waiters sleep in the kernel and are
//! woken as soon as a lock is released — unlike a PC/SC transaction, which a waiting process only
//! polls for every ~200 ms, so that a process taking its next transaction at once starves the
//! others (docs/design.md, "Fair turns over PC/SC").
//!
//! One lock file would not be enough: its releaser, still running, takes it again before the
//! waiters it woke are scheduled (on a busy machine, 4 processes got 24 to 79 signatures each).
//! So a turn is taken in two steps: first the `.queue` file (the place at the head of the queue),
//! then the `.lock` file (the turn), and the queue place is given up as soon as the turn is
//! held. The process at the head of the queue is the only one waiting for the turn, so it gets
//! it whenever the holder lets go; a holder that wants another turn has to queue like everyone
//! else.
//!
//! The files live in `/run/lock` (or the temporary directory when that cannot be used). A
//! leftover file of a dead process is just opened again: the locks were never in the files.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::Path;
use std::sync::Once;

use log::warn;
use sha2::{Digest, Sha256};

/// The lock files of one endpoint, opened by one connection.
pub(crate) struct TurnLock {
    queue: File,
    turn: File,
}

/// A turn on the endpoint; the next process may go when it is dropped.
pub(crate) struct Turn<'a> {
    file: &'a File,
}

impl TurnLock {
    /// For a modem's AT port: files per device (major/minor), whatever path names it, readable
    /// by the port's group, so anyone who may open the port may take a turn. (The port itself
    /// cannot carry the lock: the serial-port crate keeps a shared `flock` on it for as long as
    /// it is open.)
    pub(crate) fn for_tty(device: &str) -> io::Result<TurnLock> {
        let node = std::fs::metadata(device)?;
        let (major, minor) = (libc::major(node.rdev()), libc::minor(node.rdev()));
        let lock = TurnLock::open(&format!("iotsafe-pkcs11.tty-{major}-{minor}"))?;
        for file in [&lock.queue, &lock.turn] {
            // Only the file's owner may change these; for anyone else they fail, and the owner
            // already did it.
            let _ = fchown(file, None, Some(node.gid()));
            let _ = file.set_permissions(Permissions::from_mode(0o640));
        }
        Ok(lock)
    }

    /// For a PC/SC reader: files per reader name (hashed: the name comes from the reader's
    /// driver and must not become part of a path). Readable by everyone: any local user may talk
    /// to pcscd, and taking a turn only blocks this module's processes, as holding a PC/SC
    /// transaction on the reader — which anyone may — blocks them anyway. `None` when no lock
    /// file can be opened: pcscd's transactions still keep operations apart, only without fair
    /// turns (one warning per process).
    pub(crate) fn for_pcsc_reader(reader: &str) -> Option<TurnLock> {
        match TurnLock::open(&pcsc_lock_stem(reader)) {
            Ok(lock) => {
                for file in [&lock.queue, &lock.turn] {
                    let _ = file.set_permissions(Permissions::from_mode(0o644));
                }
                Some(lock)
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

    /// `<stem>.queue` and `<stem>.lock` in `/run/lock`, else both in the temporary directory
    /// (with one warning: processes with another temporary directory take no turns with this
    /// one).
    fn open(stem: &str) -> io::Result<TurnLock> {
        let open_in = |dir: &Path| -> io::Result<TurnLock> {
            Ok(TurnLock {
                queue: open_lock_file(&dir.join(format!("{stem}.queue")))?,
                turn: open_lock_file(&dir.join(format!("{stem}.lock")))?,
            })
        };
        let run_lock = Path::new("/run/lock");
        open_in(run_lock).or_else(|e| {
            let fallback = std::env::temp_dir();
            let lock = open_in(&fallback)?;
            static WARNED: Once = Once::new();
            WARNED.call_once(|| {
                warn!(
                    "cannot use {} for turn locks ({e}); using {}",
                    run_lock.display(),
                    fallback.display()
                );
            });
            Ok(lock)
        })
    }

    /// Waits for the endpoint (other processes' operations end, or their processes die): first
    /// for the head of the queue, then for the turn.
    pub(crate) fn turn(&self) -> io::Result<Turn<'_>> {
        lock_waiting(&self.queue)?;
        let taken = lock_waiting(&self.turn);
        let _ = self.queue.unlock();
        taken?;
        Ok(Turn { file: &self.turn })
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

fn lock_waiting(file: &File) -> io::Result<()> {
    loop {
        match file.lock() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `iotsafe-pkcs11.pcsc-<first 16 bytes of the name's SHA-256, hex>`.
fn pcsc_lock_stem(reader: &str) -> String {
    let digest = Sha256::digest(reader.as_bytes());
    format!("iotsafe-pkcs11.pcsc-{}", hex::encode(&digest[..16]))
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
            let stem = pcsc_lock_stem(&self.0);
            for dir in [Path::new("/run/lock"), &std::env::temp_dir()] {
                for suffix in ["queue", "lock"] {
                    let _ = std::fs::remove_file(dir.join(format!("{stem}.{suffix}")));
                }
            }
        }
    }

    #[test]
    fn lock_file_names_are_hashed_reader_names() {
        let stem = pcsc_lock_stem("../../etc/passwd 00 00");
        let hash = stem
            .strip_prefix("iotsafe-pkcs11.pcsc-")
            .expect("the prefix");
        assert_eq!(hash.len(), 32);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{stem}");
        assert_ne!(stem, pcsc_lock_stem("../../etc/passwd 01 00"));
    }

    #[test]
    fn a_turn_holds_off_another_connection_until_dropped() {
        let reader = TestReader::new("hold");
        let first = TurnLock::for_pcsc_reader(&reader.0).expect("a lock file");
        let second = TurnLock::for_pcsc_reader(&reader.0).expect("a lock file");
        let turn = first.turn().expect("a turn");
        assert!(matches!(
            second.turn.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        // The head of the queue is free again once the turn is held.
        assert!(second.queue.try_lock().is_ok());
        second.queue.unlock().expect("unlock");
        drop(turn);
        assert!(second.turn.try_lock().is_ok());
    }

    #[test]
    fn a_holder_wanting_another_turn_queues_behind_the_waiter() {
        let reader = TestReader::new("queue");
        let (holder, waiter) = (
            TurnLock::for_pcsc_reader(&reader.0).expect("a lock file"),
            TurnLock::for_pcsc_reader(&reader.0).expect("a lock file"),
        );
        let observer = TurnLock::for_pcsc_reader(&reader.0).expect("a lock file");
        let order = std::sync::Mutex::new(Vec::new());
        let first = holder.turn().expect("a turn");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let turn = waiter.turn().expect("a turn");
                order.lock().expect("order").push("waiter");
                drop(turn);
            });
            // The waiter stands at the head of the queue (waiting for the turn).
            while observer.queue.try_lock().is_ok() {
                observer.queue.unlock().expect("unlock");
                std::thread::yield_now();
            }
            drop(first);
            let again = holder.turn().expect("another turn");
            order.lock().expect("order").push("holder");
            drop(again);
        });
        assert_eq!(*order.lock().expect("order"), ["waiter", "holder"]);
    }

    #[test]
    fn a_leftover_file_is_reused() {
        let reader = TestReader::new("leftover");
        let first = TurnLock::for_pcsc_reader(&reader.0).expect("a lock file");
        let inode = first.turn.metadata().expect("metadata").ino();
        drop(first);
        let again = TurnLock::for_pcsc_reader(&reader.0).expect("the same file again");
        assert_eq!(again.turn.metadata().expect("metadata").ino(), inode);
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
