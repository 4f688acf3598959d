//! The byte stream to a modem's control device (`/dev/cdc-wdm0`, `/dev/wwan0mbim0`, …), opened
//! directly or through ModemManager's proxy (`mbim-proxy`, `qmi-proxy`) on its abstract Unix
//! socket. MBIM and QMI frame their messages themselves; this only moves bytes, with a
//! deadline on every read.

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};

/// An open control device or a connection to a proxy.
pub(crate) enum ControlStream {
    /// The device node itself (no other program may use it meanwhile).
    Device(File),
    /// A proxy that multiplexes the device among its clients.
    Proxy(UnixStream),
}

impl ControlStream {
    /// Opens the device node (read-write, non-blocking, never as a controlling terminal).
    pub(crate) fn open_device(path: &str) -> io::Result<ControlStream> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(ControlStream::Device(file))
    }

    /// Connects to the proxy listening on the abstract socket `name` (no leading NUL).
    /// `ConnectionRefused` / `NotFound` when no proxy runs.
    pub(crate) fn connect_proxy(name: &str) -> io::Result<ControlStream> {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let stream = UnixStream::connect_addr(&addr)?;
        stream.set_nonblocking(true)?;
        Ok(ControlStream::Proxy(stream))
    }

    pub(crate) fn is_proxy(&self) -> bool {
        matches!(self, ControlStream::Proxy(_))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            ControlStream::Device(f) => f.as_fd(),
            ControlStream::Proxy(s) => s.as_fd(),
        }
    }

    fn wait(&self, flags: PollFlags, deadline: Instant) -> io::Result<()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "control device timed out",
                ));
            }
            let timeout = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::from_borrowed_fd(self.fd(), flags)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => continue,
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes all of `bytes` before `deadline`.
    pub(crate) fn send(&mut self, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
        while !bytes.is_empty() {
            let written = match self {
                ControlStream::Device(f) => f.write(bytes),
                ControlStream::Proxy(s) => s.write(bytes),
            };
            match written {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.wait(PollFlags::OUT, deadline)?
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Appends what arrives next (at least one byte) to `buf`, waiting until `deadline`.
    /// `UnexpectedEof` when the other end closed (a proxy went away, the device vanished).
    pub(crate) fn receive(&mut self, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            let read = match self {
                ControlStream::Device(f) => f.read(&mut chunk),
                ControlStream::Proxy(s) => s.read(&mut chunk),
            };
            match read {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.wait(PollFlags::IN, deadline)?
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A pty whose other side closed reads EIO.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops whatever is already waiting to be read (late answers to a timed-out request).
    pub(crate) fn discard_pending(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            let read = match self {
                ControlStream::Device(f) => f.read(&mut chunk),
                ControlStream::Proxy(s) => s.read(&mut chunk),
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        }
    }
}
