//! The pseudo-terminal pair the modem serves on (raw mode, non-blocking master).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

fn last_os_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Opens a pty pair; returns (master, slave, slave path). The line discipline is put in
/// raw mode (no echo, no CR/LF translation, 8 bits).
pub(super) fn open_pty() -> io::Result<(File, File, PathBuf)> {
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes at most buf.len().
    let master = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(last_os_error("posix_openpt"));
        }
        OwnedFd::from_raw_fd(fd)
    };
    let mfd = master.as_raw_fd();
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: see above.
    unsafe {
        if libc::grantpt(mfd) != 0 {
            return Err(last_os_error("grantpt"));
        }
        if libc::unlockpt(mfd) != 0 {
            return Err(last_os_error("unlockpt"));
        }
        if libc::ptsname_r(mfd, name.as_mut_ptr(), name.len()) != 0 {
            return Err(last_os_error("ptsname_r"));
        }
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let path = PathBuf::from(path.to_string_lossy().into_owned());
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)?;
    // SAFETY: termios calls on an open tty descriptor with a zero-initialised struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut t) != 0 {
            return Err(last_os_error("tcgetattr"));
        }
        libc::cfmakeraw(&mut t);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        if libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(last_os_error("tcsetattr"));
        }
        let flags = libc::fcntl(mfd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(mfd, libc::F_SETFL, flags | libc::O_NONBLOCK) != 0 {
            return Err(last_os_error("fcntl"));
        }
    }
    Ok((File::from(master), slave, path))
}
