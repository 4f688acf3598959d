//! Turns on one card endpoint between processes (and between module instances in one process),
//! held for one operation: advisory `flock`s on two lock files named after the endpoint, which the
//! kernel drops when their holder dies, `kill -9` included. Waiters sleep in the kernel and are
//! woken as soon as a lock is released — unlike a PC/SC transaction, which a waiting process only
//! polls for every ~200 ms, so that a process taking its next transaction at once starves the
//! others (docs/design.md, "Fair turns over PC/SC").
//!
//! One lock file would not be enough: its releaser, still running, takes it again before the
//! waiters it woke are scheduled (on a busy machine, 4 processes got 80 to 174 signatures each
//! in 30 s).
//! So a turn is taken in two steps: first the `.queue` file (the place at the head of the queue),
//! then the `.lock` file (the turn), and the queue place is given up as soon as the turn is
//! held. The process at the head of the queue is the only one waiting for the turn, so it gets
//! it whenever the holder lets go; a holder that wants another turn has to queue like everyone
//! else.
//!
//! The files are opened for each turn and closed after it, so a forked child never inherits a
//! descriptor that would keep a lock of its parent alive; a child forked while another thread
//! queues or holds a turn shares that open file, which is why the locks are released
//! explicitly rather than by closing (only a parent killed inside that very turn then leaves
//! it to the child until the child exits). They
//! live in `/run/lock` (or the temporary directory when that cannot be used); a leftover file of
//! a dead process is just opened again: the locks were never in the files.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt, fchown};
use std::path::{Path, PathBuf};
use std::sync::Once;

use std::time::Duration;

use log::{debug, warn};
use rustix::fs::{Timespec, Timestamps, UTIME_NOW, UTIME_OMIT, futimens};
use sha2::{Digest, Sha256};

/// Where the lock files of one endpoint are, and what new ones look like.
pub(crate) struct TurnLock {
    /// `<stem>.queue`: the place at the head of the queue.
    queue_path: PathBuf,
    /// `<stem>.lock`: the turn (and the endpoint's note; its modification time is when the last
    /// turn ended).
    turn_path: PathBuf,
    /// `<stem>.users`: every connection of this module holds a shared lock on it.
    users_path: PathBuf,
    mode: u32,
    /// The group of new files (a modem port's group).
    group: Option<u32>,
}

/// A turn on the endpoint; the next process may go when it is dropped. It also reads and
/// writes the endpoint's note, kept in the `.lock` file.
pub(crate) struct HeldTurn {
    file: File,
    /// The turn used the card (for `TurnLock::join`: when it was last used).
    marks_use: bool,
}

impl TurnLock {
    /// For a modem's AT port: files per device (major/minor), whatever path names it, shared
    /// with the port's group, so anyone who may open the port may take a turn. (The port itself
    /// cannot carry the lock: the serial-port crate keeps a shared `flock` on it for as long as
    /// it is open.)
    pub(crate) fn for_tty(device: &str, lock_dir: Option<&Path>) -> io::Result<TurnLock> {
        let node = std::fs::metadata(device)?;
        let (major, minor) = (libc::major(node.rdev()), libc::minor(node.rdev()));
        let stem = format!("iotsafe-pkcs11.tty-{major}-{minor}");
        TurnLock::in_usable_dir(&stem, 0o660, Some(node.gid()), lock_dir)
    }

    /// Whether this process can take turns on the modem port `device` where every process of
    /// the module does (`lock_dir`, default `/run/lock`), without the temporary-directory
    /// fallback: the directory, or the file that refuses and why.
    pub(crate) fn check_tty_files(
        device: &str,
        lock_dir: Option<&Path>,
    ) -> Result<PathBuf, (PathBuf, io::Error)> {
        let node = std::fs::metadata(device).map_err(|e| (PathBuf::from(device), e))?;
        let (major, minor) = (libc::major(node.rdev()), libc::minor(node.rdev()));
        let stem = format!("iotsafe-pkcs11.tty-{major}-{minor}");
        let dir = lock_dir.unwrap_or(Path::new("/run/lock")).to_path_buf();
        let lock = TurnLock {
            queue_path: dir.join(format!("{stem}.queue")),
            turn_path: dir.join(format!("{stem}.lock")),
            users_path: dir.join(format!("{stem}.users")),
            mode: 0o660,
            group: Some(node.gid()),
        };
        for path in [&lock.queue_path, &lock.turn_path] {
            lock.open(path).map_err(|e| (path.clone(), e))?;
        }
        Ok(dir)
    }

    /// For a PC/SC reader: files per reader name (hashed: the name comes from the reader's
    /// driver and must not become part of a path). Open to everyone: any local user may talk
    /// to pcscd, and what the files allow gives nothing pcscd does not — taking a turn only
    /// blocks this module's processes, as holding a PC/SC transaction on the reader (which
    /// anyone may) blocks them anyway, and the note only names a channel that is used after the
    /// applet answered on it. `None` when no lock file can be opened: pcscd's transactions still
    /// keep operations apart, only without fair turns (one warning per process).
    pub(crate) fn for_pcsc_reader(reader: &str, lock_dir: Option<&Path>) -> Option<TurnLock> {
        match TurnLock::in_usable_dir(&pcsc_lock_stem(reader), 0o666, None, lock_dir) {
            Ok(lock) => Some(lock),
            Err(e) => {
                warn_once_without_pcsc_turns(&e);
                None
            }
        }
    }

    /// `<stem>.queue` and `<stem>.lock` in `lock_dir` (default `/run/lock`) if they can be
    /// opened there, else in the temporary directory (with one warning: processes with another
    /// temporary directory take no turns with this one).
    fn in_usable_dir(
        stem: &str,
        mode: u32,
        group: Option<u32>,
        lock_dir: Option<&Path>,
    ) -> io::Result<TurnLock> {
        let in_dir = |dir: &Path| -> io::Result<TurnLock> {
            let lock = TurnLock {
                queue_path: dir.join(format!("{stem}.queue")),
                turn_path: dir.join(format!("{stem}.lock")),
                users_path: dir.join(format!("{stem}.users")),
                mode,
                group,
            };
            lock.open(&lock.queue_path)?;
            lock.open(&lock.turn_path)?;
            Ok(lock)
        };
        let run_lock = lock_dir.unwrap_or(Path::new("/run/lock"));
        in_dir(run_lock).or_else(|e| {
            let fallback = std::env::temp_dir();
            let lock = in_dir(&fallback)?;
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
    pub(crate) fn turn(&self) -> io::Result<HeldTurn> {
        self.take_turn(true)
    }

    /// A turn that sends nothing to the card (connecting to it): it does not count as use, so
    /// a connection that powered a card up leaves the next process's guess about its channels
    /// alone.
    pub(crate) fn turn_without_use(&self) -> io::Result<HeldTurn> {
        self.take_turn(false)
    }

    fn take_turn(&self, marks_use: bool) -> io::Result<HeldTurn> {
        let queue = self.open(&self.queue_path)?;
        lock_waiting(&queue)?;
        let turn = self.open(&self.turn_path)?;
        lock_waiting(&turn)?;
        // Unlocked, not only closed: a child forked meanwhile shares the open file, and its
        // copy would keep the queue locked until it exits.
        let _ = queue.unlock();
        Ok(HeldTurn {
            file: turn,
            marks_use,
        })
    }

    /// Registers a connection as a user of the endpoint for as long as the returned presence
    /// lives, and tells whether the card may have been powered down since this module last used
    /// it: no other connection of this module is registered (a process's registration ends with
    /// it), and the last turn ended more than `idle` ago. (pcscd powers a card down 5 s after
    /// its last client disconnected, which closes every logical channel.)
    pub(crate) fn join(&self, idle: Duration) -> (Option<Presence>, bool) {
        let Ok(file) = self.open(&self.users_path) else {
            return (None, false);
        };
        let alone = file.try_lock().is_ok();
        let last_turn = std::fs::metadata(&self.turn_path).and_then(|m| m.modified());
        let idle_long = last_turn.is_ok_and(|t| t.elapsed().is_ok_and(|e| e > idle));
        // Shared from now on (flock converts the lock in place).
        let registered = file.lock_shared().is_ok();
        (
            registered.then_some(Presence { _file: file }),
            alone && idle_long,
        )
    }

    /// A file of the endpoint's own beside the lock files (`<stem>.<suffix>`), for state a
    /// transport shares between its processes (read and written during a turn).
    pub(crate) fn side_path(&self, suffix: &str) -> PathBuf {
        self.turn_path.with_extension(suffix)
    }

    /// Opens (making it if needed) the file beside the lock files named by `suffix`, with the
    /// lock files' mode and group, so that every user who may take turns may also read and
    /// write it.
    pub(crate) fn open_side_file(&self, suffix: &str) -> io::Result<File> {
        self.open(&self.side_path(suffix))
    }

    /// Whether no connection holds a [`Presence`] on the endpoint now (none joined, or all
    /// left).
    pub(crate) fn nobody_joined(&self) -> bool {
        let Ok(file) = self.open(&self.users_path) else {
            return false;
        };
        let alone = file.try_lock().is_ok();
        let _ = file.unlock();
        alone
    }

    fn open(&self, path: &Path) -> io::Result<File> {
        let (file, created) = open_lock_file(path, self.mode)?;
        if created {
            // The mode again, past the umask; the group of a modem port.
            let _ = file.set_permissions(Permissions::from_mode(self.mode));
            if let Some(gid) = self.group {
                let _ = fchown(&file, None, Some(gid));
            }
        }
        Ok(file)
    }
}

/// The largest note kept in a lock file.
const MAX_NOTE: u64 = 4096;

impl HeldTurn {
    /// The endpoint's note (empty: none yet, or unreadable).
    pub(crate) fn read_note(&self) -> Vec<u8> {
        let read = self.file.metadata().and_then(|m| {
            let mut note = vec![0; m.len().min(MAX_NOTE) as usize];
            self.file.read_exact_at(&mut note, 0).map(|()| note)
        });
        read.unwrap_or_else(|e| {
            debug!("reading the endpoint's note: {e}");
            Vec::new()
        })
    }

    /// Replaces the note in place: the turn keeps other processes out, and a writer that dies
    /// half-way leaves a note its reader's checks reject. A lock file this user may only read
    /// (another user's, with a mode that does not share it) keeps its note.
    pub(crate) fn write_note(&self, note: &[u8]) {
        let written = self
            .file
            .write_all_at(note, 0)
            .and_then(|()| self.file.set_len(note.len() as u64));
        if let Err(e) = written {
            debug!("cannot write the endpoint's note: {e}");
        }
    }
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        // When the last turn ended, for `TurnLock::join` (anyone who may write the file may
        // set it to now; a read-only opener leaves it).
        let now = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_NOW,
            },
        };
        if self.marks_use {
            let _ = futimens(&self.file, &now);
        }
        let _ = self.file.unlock();
    }
}

/// A connection's registration as a user of the endpoint (a shared `flock`, dropped with the
/// connection or its process).
pub(crate) struct Presence {
    _file: File,
}

/// Without a lock file for PC/SC readers, transactions go without turns; said once.
pub(crate) fn warn_once_without_pcsc_turns(e: &io::Error) {
    static WARNED: Once = Once::new();
    WARNED.call_once(|| {
        warn!(
            "no lock file for fair turns on PC/SC readers ({e}); processes signing at once on \
             one card may starve each other"
        );
    });
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

/// Opens a lock file for reading and writing (the note), or read-only where this user may not
/// write it (`flock` needs no more), creating it with `mode` if need be (then `true`). An
/// existing file is opened without `O_CREAT`, which `fs.protected_regular` refuses for another
/// user's file in a sticky directory; not following links, not blocking on a FIFO, and only a
/// regular file is taken.
fn open_lock_file(path: &Path, mode: u32) -> io::Result<(File, bool)> {
    let open = |create: bool| {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        if create {
            options.create_new(true).mode(mode);
        }
        match options.open(path) {
            Err(e) if !create && e.kind() == io::ErrorKind::PermissionDenied => {
                options.write(false).open(path).map(|file| (file, false))
            }
            other => other.map(|file| (file, create)),
        }
    };
    let (file, created) = match open(false) {
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
    Ok((file, created))
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
        let first = TurnLock::for_pcsc_reader(&reader.0, None).expect("a lock file");
        let second = TurnLock::for_pcsc_reader(&reader.0, None).expect("a lock file");
        let (queue, turn_file) = (
            second.open(&second.queue_path).expect("the queue file"),
            second.open(&second.turn_path).expect("the turn file"),
        );
        let turn = first.turn().expect("a turn");
        assert!(matches!(
            turn_file.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        // The head of the queue is free again once the turn is held.
        assert!(queue.try_lock().is_ok());
        queue.unlock().expect("unlock");
        drop(turn);
        assert!(turn_file.try_lock().is_ok());
    }

    #[test]
    fn a_holder_wanting_another_turn_queues_behind_the_waiter() {
        let reader = TestReader::new("queue");
        let (holder, waiter) = (
            TurnLock::for_pcsc_reader(&reader.0, None).expect("a lock file"),
            TurnLock::for_pcsc_reader(&reader.0, None).expect("a lock file"),
        );
        let observer = TurnLock::for_pcsc_reader(&reader.0, None).expect("a lock file");
        let observed_queue = observer.open(&observer.queue_path).expect("the queue file");
        let order = std::sync::Mutex::new(Vec::new());
        let first = holder.turn().expect("a turn");
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let turn = waiter.turn().expect("a turn");
                order.lock().expect("order").push("waiter");
                drop(turn);
            });
            // The waiter stands at the head of the queue (waiting for the turn).
            while observed_queue.try_lock().is_ok() {
                observed_queue.unlock().expect("unlock");
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
        let first = TurnLock::for_pcsc_reader(&reader.0, None).expect("a lock file");
        let inode = std::fs::metadata(&first.turn_path).expect("metadata").ino();
        drop(first);
        let again = TurnLock::for_pcsc_reader(&reader.0, None).expect("the same file again");
        assert_eq!(
            std::fs::metadata(&again.turn_path).expect("metadata").ino(),
            inode
        );
        assert!(again.turn().is_ok());
    }

    #[test]
    fn no_descriptor_of_a_lock_file_stays_open_between_turns() {
        let reader = TestReader::new("descriptors");
        let lock = TurnLock::for_pcsc_reader(&reader.0, None).expect("a lock file");
        let open_lock_files = || {
            std::fs::read_dir("/proc/self/fd")
                .expect("/proc/self/fd")
                .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter(|target| *target == lock.queue_path || *target == lock.turn_path)
                .count()
        };
        let turn = lock.turn().expect("a turn");
        assert_eq!(
            open_lock_files(),
            1,
            "the turn file, while the turn is held"
        );
        drop(turn);
        assert_eq!(open_lock_files(), 0);
    }

    #[test]
    fn a_fifo_in_place_of_the_lock_file_is_refused_without_blocking() {
        let path = std::env::temp_dir().join(format!("turn-lock-fifo-{}", std::process::id()));
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let opened = open_lock_file(&path, 0o644);
        let _ = std::fs::remove_file(&path);
        assert!(opened.is_err());
    }
}
