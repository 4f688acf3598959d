//! The simulated modem speaking MBIM on its control device (a pseudo-terminal), and optionally
//! as the mbim-proxy on an abstract socket (see `sim/docs/mbim.md`).
//!
//! | file | what |
//! |---|---|
//! | `message.rs` | framing: header, fragments, information buffers |
//! | `function.rs` | the function: OPEN/CLOSE, MS UICC low-level access, BASIC_CONNECT |
//! | `mod.rs` | [`spawn`], the pty's serving thread, the proxy's clients |

mod function;
mod message;

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{ModemControl, ModemHandle, ModemOptions, lock};
use crate::shared::CardSlot;
use function::{Function, Outcome};
use message::{
    CLOSE_DONE, COMMAND_DONE, FUNCTION_ERROR, HostMessage, OPEN_DONE, PROXY_CONTROL, Reader,
    StreamError, status,
};

/// How often blocking waits look at the stop flag.
const POLL_MS: i32 = 50;

/// Serves MBIM for `card` on a new pty linked at `link` (and, with `proxy_socket`, as the
/// proxy on that abstract socket name) until the handle is dropped.
pub fn spawn<C: CardSlot>(
    card: C,
    link: &Path,
    options: ModemOptions,
    proxy_socket: Option<&str>,
) -> io::Result<ModemHandle<C>> {
    let listener = proxy_socket
        .map(super::abstract_socket::listen)
        .transpose()?;
    let (master, slave, device) = super::linked_pty(link)?;
    let control = super::new_control(card, options);
    let function = Arc::new(Mutex::new(Function::new(control.clone())));
    let pty = PtyServer {
        function: function.clone(),
        stop: control.clone(),
        master,
        _slave: slave,
    };
    let spawned = std::thread::Builder::new()
        .name("mbim".into())
        .spawn(move || pty.run())
        .and_then(|pty_thread| {
            let Some(listener) = listener else {
                return Ok(pty_thread);
            };
            let proxy = Proxy {
                function,
                control: control.clone(),
                device: device.clone(),
                next_tid: Arc::new(AtomicU32::new(1)),
            };
            std::thread::Builder::new()
                .name("mbim-proxy".into())
                .spawn(move || {
                    proxy.serve(listener);
                    let _ = pty_thread.join();
                })
        });
    super::into_handle(control, link, device, spawned)
}

fn stopping<C: CardSlot>(control: &ModemControl<C>) -> bool {
    control.shared.stop.load(Ordering::SeqCst)
}

/// Waits up to `POLL_MS` for `events` on `fd`; true if ready.
fn poll_fd(fd: &impl AsRawFd, events: libc::c_short) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, POLL_MS) };
    r > 0 && p.revents != 0
}

/// Writes every message in full (the fd is non-blocking).
fn write_messages<C: CardSlot, W: Write + AsRawFd>(
    out: &mut W,
    messages: &[Vec<u8>],
    control: &ModemControl<C>,
) -> io::Result<()> {
    for m in messages {
        let mut data = m.as_slice();
        while !data.is_empty() {
            if stopping(control) {
                return Err(io::Error::new(ErrorKind::Interrupted, "stopping"));
            }
            match out.write(data) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "closed")),
                Ok(n) => data = &data[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    poll_fd(out, libc::POLLOUT);
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn out_of_sequence(e: StreamError) -> Vec<u8> {
    let StreamError::OutOfSequence { tid } = e;
    message::simple(FUNCTION_ERROR, tid, message::ERROR_FRAGMENT_OUT_OF_SEQUENCE)
}

/// The control device: the host side of the pty.
struct PtyServer<C: CardSlot> {
    function: Arc<Mutex<Function<C>>>,
    stop: ModemControl<C>,
    master: File,
    /// Kept open so the pty keeps its raw settings while no host has it open.
    _slave: File,
}

impl<C: CardSlot> PtyServer<C> {
    fn run(mut self) {
        let mut reader = Reader::default();
        let mut buf = [0u8; 4096];
        while !stopping(&self.stop) {
            if !poll_fd(&self.master, libc::POLLIN) {
                continue;
            }
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => reader.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    continue;
                }
                _ => {
                    std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                    continue;
                }
            }
            while let Some(next) = reader.next_message() {
                let replies = match next {
                    Ok(msg) => match lock(&self.function).handle(&msg) {
                        Outcome::Reply(r) => r,
                        Outcome::Dropped => continue,
                    },
                    Err(e) => vec![out_of_sequence(e)],
                };
                if write_messages(&mut self.master, &replies, &self.stop).is_err() {
                    return;
                }
            }
        }
    }
}

/// The simulator standing in for ModemManager's mbim-proxy: many clients, one function.
struct Proxy<C: CardSlot> {
    function: Arc<Mutex<Function<C>>>,
    control: ModemControl<C>,
    device: PathBuf,
    /// The proxy's own TransactionIds towards the function, shared by every client.
    next_tid: Arc<AtomicU32>,
}

impl<C: CardSlot> Clone for Proxy<C> {
    fn clone(&self) -> Self {
        Proxy {
            function: self.function.clone(),
            control: self.control.clone(),
            device: self.device.clone(),
            next_tid: self.next_tid.clone(),
        }
    }
}

impl<C: CardSlot> Proxy<C> {
    fn serve(self, listener: UnixListener) {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let mut clients = Vec::new();
        while !stopping(&self.control) {
            if !poll_fd(&listener.as_fd(), libc::POLLIN) {
                continue;
            }
            if let Ok((stream, _)) = listener.accept() {
                let proxy = self.clone();
                if let Ok(t) = std::thread::Builder::new()
                    .name("mbim-proxy-client".into())
                    .spawn(move || proxy.client(stream))
                {
                    clients.push(t);
                }
            }
            clients.retain(|t| !t.is_finished());
        }
        for t in clients {
            let _ = t.join();
        }
    }

    /// Whether `path` names this modem's control device (symlinks resolved, like the proxy).
    fn is_our_device(&self, path: &str) -> bool {
        let ours = std::fs::canonicalize(&self.device).ok();
        ours.is_some() && std::fs::canonicalize(path).ok() == ours
    }

    fn next_tid(&self) -> u32 {
        loop {
            let t = self.next_tid.fetch_add(1, Ordering::SeqCst);
            if t != 0 {
                return t;
            }
        }
    }

    fn client(self, mut stream: UnixStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut reader = Reader::default();
        let mut configured = false;
        let mut buf = [0u8; 4096];
        while !stopping(&self.control) {
            if !poll_fd(&stream, libc::POLLIN) {
                continue;
            }
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => reader.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    continue;
                }
                Err(_) => return,
            }
            while let Some(next) = reader.next_message() {
                let replies = match next {
                    Err(e) => vec![out_of_sequence(e)],
                    Ok(HostMessage::Command(c)) if c.service == PROXY_CONTROL && c.cid == 1 => {
                        let path = message::bytes_at(&c.info, 0).map(|p| {
                            let units: Vec<u16> = p
                                .chunks_exact(2)
                                .map(|u| u16::from_le_bytes([u[0], u[1]]))
                                .collect();
                            String::from_utf16_lossy(&units)
                        });
                        match path {
                            Some(p) if self.is_our_device(&p) => {
                                configured = true;
                                lock(&self.function).count_request("PROXY_CONFIGURATION");
                                message::command_done(
                                    c.tid,
                                    &PROXY_CONTROL,
                                    1,
                                    status::SUCCESS,
                                    &[],
                                    4096,
                                )
                            }
                            // The real proxy disconnects a client whose device it cannot open.
                            _ => return,
                        }
                    }
                    Ok(_) if !configured => return,
                    Ok(HostMessage::Open { tid, .. }) => {
                        vec![message::simple(OPEN_DONE, tid, status::SUCCESS)]
                    }
                    Ok(HostMessage::Close { tid }) => {
                        vec![message::simple(CLOSE_DONE, tid, status::SUCCESS)]
                    }
                    Ok(HostMessage::Command(mut c)) => {
                        let client_tid = c.tid;
                        c.tid = self.next_tid();
                        let outcome = lock(&self.function).command_for_proxy(&c);
                        match outcome {
                            Outcome::Reply(mut r) => {
                                for m in &mut r {
                                    if message::u32_at(m, 0) == Some(COMMAND_DONE) {
                                        message::set_tid(m, client_tid);
                                    }
                                }
                                r
                            }
                            Outcome::Dropped => continue,
                        }
                    }
                    Ok(HostMessage::Other { .. }) => continue,
                };
                if write_messages(&mut stream, &replies, &self.control).is_err() {
                    return;
                }
            }
        }
    }
}
