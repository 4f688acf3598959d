//! The simulated modem speaking QMI (QMUX framing, CTL and UIM services) on its control device
//! (a raw pseudo-terminal, as `/dev/cdc-wdm0` would be), and optionally standing in for
//! ModemManager's `qmi-proxy` on an abstract socket. See `sim/docs/qmi.md`.
//!
//! | file | what |
//! |---|---|
//! | `message.rs` | QMUX frames and TLVs |
//! | `device.rs` | CTL client ids, the UIM messages, the card behind them |
//! | `proxy.rs` | the proxy mode: handshake, clients, client-id ownership |

mod device;
mod message;
mod proxy;

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::device::QmiDevice;
use self::message::{Cut, Frame, cut};
use super::{ModemControl, ModemHandle, ModemOptions, lock};
use crate::shared::CardSlot;

/// How often blocking waits look at the stop flag.
const POLL_MS: i32 = 50;

/// Serves QMI for `card` on a new pty linked at `link` (and, with `proxy_socket`, as the
/// proxy on that abstract socket name) until the handle is dropped.
pub fn spawn<C: CardSlot>(
    card: C,
    link: &Path,
    options: ModemOptions,
    proxy_socket: Option<&str>,
) -> io::Result<ModemHandle<C>> {
    let listener = match proxy_socket {
        Some(name) => {
            let l = super::abstract_socket::listen(name)
                .map_err(|e| io::Error::new(e.kind(), format!("proxy socket @{name}: {e}")))?;
            l.set_nonblocking(true)?;
            Some(l)
        }
        None => None,
    };
    let (master, slave, device) = super::linked_pty(link)?;
    let control = super::new_control(card, options);
    let qmi = Arc::new(Mutex::new(QmiDevice::new(control.clone())));
    let serving = Serving {
        control: control.clone(),
        device: qmi,
    };
    let device_path = device.clone();
    let thread = std::thread::Builder::new()
        .name("qmi-modem".into())
        .spawn(move || {
            let proxy = listener.and_then(|l| {
                let s = serving.clone();
                std::thread::Builder::new()
                    .name("qmi-proxy".into())
                    .spawn(move || proxy::run(s, l, device_path))
                    .ok()
            });
            serve_pty(&serving, master, slave);
            if let Some(p) = proxy {
                let _ = p.join();
            }
        });
    super::into_handle(control, link, device, thread)
}

/// What every serving thread shares: the modem's settings and counters, and the device state.
pub(super) struct Serving<C: CardSlot> {
    control: ModemControl<C>,
    device: Arc<Mutex<QmiDevice<C>>>,
}

impl<C: CardSlot> Clone for Serving<C> {
    fn clone(&self) -> Self {
        Serving {
            control: self.control.clone(),
            device: self.device.clone(),
        }
    }
}

impl<C: CardSlot> Serving<C> {
    fn stopping(&self) -> bool {
        self.control.shared.stop.load(Ordering::SeqCst)
    }

    /// The answer to one request, with the modem's misbehaviour: none while hung (the
    /// request is dropped), late by `delay_ms`.
    fn answer(&self, request: &Frame) -> Option<Frame> {
        let opts = self.control.options();
        if opts.hang {
            self.control.count(|s| s.dropped += 1);
            return None;
        }
        let response = lock(&self.device).handle(request);
        self.control.update(|o| {
            if o.hang_after > 0 {
                o.hang_after -= 1;
                if o.hang_after == 0 {
                    o.hang = true;
                }
            }
        });
        let mut left = Duration::from_millis(opts.delay_ms);
        while !left.is_zero() && !self.stopping() {
            let step = left.min(Duration::from_millis(POLL_MS as u64));
            std::thread::sleep(step);
            left -= step;
        }
        response
    }
}

/// Waits up to `POLL_MS` for `events` on `fd`; true if ready.
fn poll_fd(fd: impl AsFd, events: libc::c_short) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, POLL_MS) };
    r > 0 && p.revents != 0
}

/// Writes all of `data` to a non-blocking descriptor, unless the modem stops.
fn write_all<W: Write + AsFd>(
    serving_stop: &AtomicBool,
    out: &mut W,
    mut data: &[u8],
) -> io::Result<()> {
    while !data.is_empty() {
        if serving_stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(ErrorKind::Interrupted, "stopping"));
        }
        match out.write(data) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "closed")),
            Ok(n) => data = &data[n..],
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                poll_fd(&*out, libc::POLLOUT);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Takes the whole frames off the front of `buf` (skipping bytes that start none).
fn take_frames(buf: &mut Vec<u8>, mut on_frame: impl FnMut(Option<Frame>)) {
    loop {
        match cut(buf) {
            Cut::Partial => return,
            Cut::Garbage => {
                buf.remove(0);
            }
            Cut::Frame(n, frame) => {
                buf.drain(..n);
                on_frame(frame);
            }
        }
    }
}

/// The control device: QMUX requests in on the pty, answers out.
fn serve_pty<C: CardSlot>(serving: &Serving<C>, mut master: File, _slave: File) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !serving.stopping() {
        if !poll_fd(&master, libc::POLLIN) {
            continue;
        }
        match master.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                continue;
            }
            // No host has the pty open (we hold the slave, so rarely): back off.
            _ => {
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                continue;
            }
        }
        let mut answers = Vec::new();
        take_frames(&mut buf, |frame| {
            if let Some(answer) = frame.and_then(|f| serving.answer(&f)) {
                answers.push(answer.encode());
            }
        });
        for a in answers {
            if write_all(&serving.control.shared.stop, &mut master, &a).is_err() {
                return;
            }
        }
    }
}
