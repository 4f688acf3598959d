//! What the system says about this user, a device node and the processes that have it open.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};

use crate::report::Runner;

/// This process's user and groups, by name where they have one.
pub fn runner() -> Runner {
    let uid = rustix::process::getuid().as_raw();
    let mut gids: Vec<u32> = rustix::process::getgroups()
        .unwrap_or_default()
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    let primary = rustix::process::getgid().as_raw();
    if !gids.contains(&primary) {
        gids.insert(0, primary);
    }
    Runner {
        user: user_name(uid),
        uid,
        groups: gids.into_iter().map(group_name).collect(),
    }
}

pub fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

pub fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// A device node as `ls -l` would describe it.
pub struct Node {
    /// The node itself (symbolic links followed).
    pub path: PathBuf,
    pub owner: String,
    pub group: String,
    pub mode: u32,
    pub is_char_device: bool,
    pub rdev: u64,
}

impl Node {
    pub fn describe(&self) -> String {
        format!(
            "{} {}:{} mode {:04o}",
            self.path.display(),
            self.owner,
            self.group,
            self.mode
        )
    }
}

/// The node behind `device`, or why there is none.
pub fn node(device: &str) -> std::io::Result<Node> {
    let path = std::fs::canonicalize(device)?;
    let meta = std::fs::metadata(&path)?;
    Ok(Node {
        path,
        owner: user_name(meta.uid()),
        group: group_name(meta.gid()),
        mode: meta.mode() & 0o7777,
        is_char_device: meta.file_type().is_char_device(),
        rdev: meta.rdev(),
    })
}

/// Whether this user may read and write `path` (as the kernel would decide for an open).
pub fn may_read_write(path: &Path) -> std::io::Result<()> {
    rustix::fs::access(
        path,
        rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
    )
    .map_err(std::io::Error::from)
}

/// A process that has a file open.
pub struct Holder {
    pub pid: u32,
    pub name: String,
    /// It has this module loaded (it takes turns with every other user of the module).
    pub uses_module: bool,
    /// It holds the other end of this pseudo-terminal too: it is the (simulated) modem.
    pub is_pty_master: bool,
}

/// The processes (other than this one) that have `path` open, as far as this user may see:
/// the second value counts processes whose open files could not be read (another user's,
/// unless this is root).
pub fn holders(path: &Path) -> (Vec<Holder>, usize) {
    let own = std::process::id();
    // A pseudo-terminal's slave `/dev/pts/N`: its master is a `ptmx` descriptor whose fdinfo
    // says `tty-index: N`.
    let pty_index = path
        .strip_prefix("/dev/pts")
        .ok()
        .and_then(|n| n.to_str()?.parse::<u32>().ok());
    let mut found = Vec::new();
    let mut hidden = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return (found, 0);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            hidden += 1;
            continue;
        };
        let mut has_it = false;
        let mut is_pty_master = false;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            has_it |= target == path;
            if pty_index.is_some() && target.file_name().is_some_and(|n| n == "ptmx") {
                let info = entry.path().join("fdinfo").join(fd.file_name());
                is_pty_master |= master_index(&info) == pty_index;
            }
        }
        if has_it {
            let maps = std::fs::read_to_string(entry.path().join("maps")).unwrap_or_default();
            found.push(Holder {
                pid,
                name: process_name(pid),
                uses_module: maps.contains("libiotsafe_pkcs11"),
                is_pty_master,
            });
        }
    }
    (found, hidden)
}

/// The `tty-index` of a `ptmx` descriptor's fdinfo.
fn master_index(fdinfo: &Path) -> Option<u32> {
    std::fs::read_to_string(fdinfo)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("tty-index:"))
        .and_then(|n| n.trim().parse().ok())
}

pub fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Whether a process of this name runs (any user's: `/proc/<pid>/comm` is world-readable).
pub fn is_running(name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|s| s.parse::<u32>().is_ok())
            && std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name)
    })
}

/// A udev property of a character device (udev's database), when udev has one.
pub fn udev_property(node: &Node, name: &str) -> Option<String> {
    let (major, minor) = (rustix::fs::major(node.rdev), rustix::fs::minor(node.rdev));
    let data = std::fs::read_to_string(format!("/run/udev/data/c{major}:{minor}")).ok()?;
    data.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

/// Whether something listens on the abstract Unix socket `@name` (ModemManager's proxies).
pub fn abstract_socket_bound(name: &str) -> bool {
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|table| {
        let wanted = format!("@{name}");
        table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(7) == Some(wanted.as_str()))
    })
}
