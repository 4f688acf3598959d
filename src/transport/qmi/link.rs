//! One QMI request and its response on the control stream: transaction ids that start at a
//! random value per process (so a late answer to a process that died is never taken for
//! ours), a deadline per request, and frames that are not the awaited response (indications,
//! late answers) skipped.

use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use log::debug;

use super::message::{CTL, Cut, Request, Response, cut};
use crate::transport::control_device::ControlStream;

/// Why a request got no usable response.
#[derive(Debug)]
pub(super) enum Fault {
    /// No response before the deadline.
    Timeout,
    /// The device (or the proxy) closed the stream.
    Closed,
    /// The other side sent bytes that start no QMUX frame (these, at most 32 of them).
    NotQmi(Vec<u8>),
    Io(io::Error),
    /// The modem answered with result failure: the QMI error and the card's SW when given.
    Qmi {
        code: u16,
        sw: Option<[u8; 2]>,
    },
    /// A response without its result TLV.
    Malformed,
}

pub(super) struct QmiLink {
    stream: ControlStream,
    received: Vec<u8>,
    timeout: Duration,
    ctl_tid: u8,
    service_tid: u16,
}

impl QmiLink {
    pub(super) fn new(stream: ControlStream, timeout: Duration) -> QmiLink {
        let mut seed = [0u8; 3];
        if rustix::rand::getrandom(&mut seed, rustix::rand::GetRandomFlags::empty()).is_err() {
            // No entropy: the process id and the clock still differ between processes.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                ^ std::process::id();
            seed = [nanos as u8, (nanos >> 8) as u8, (nanos >> 16) as u8];
        }
        QmiLink {
            stream,
            received: Vec::new(),
            timeout,
            ctl_tid: seed[0],
            service_tid: u16::from_le_bytes([seed[1], seed[2]]),
        }
    }

    /// The next transaction id for `service` (never 0).
    fn next_tid(&mut self, service: u8) -> u16 {
        if service == CTL {
            self.ctl_tid = self.ctl_tid.wrapping_add(1).max(1);
            u16::from(self.ctl_tid)
        } else {
            self.service_tid = self.service_tid.wrapping_add(1).max(1);
            self.service_tid
        }
    }

    /// Sends one request and waits for its response (same service, client, transaction and
    /// message); a failure result comes back as [`Fault::Qmi`].
    pub(super) fn exchange(
        &mut self,
        service: u8,
        client: u8,
        message: u16,
        tlvs: &[(u8, &[u8])],
    ) -> Result<Response, Fault> {
        let tid = self.next_tid(service);
        let frame = Request {
            service,
            client,
            tid,
            message,
            tlvs,
        }
        .encode();
        let deadline = Instant::now() + self.timeout;
        self.stream.send(&frame, deadline).map_err(io_fault)?;
        loop {
            while let Some(frame) = self.next_frame()? {
                let Some(r) = frame else {
                    debug!("QMI: skipped a malformed frame");
                    continue;
                };
                let ours = r.is_response()
                    && r.service == service
                    && r.client == client
                    && r.tid == tid
                    && r.message == message;
                if !ours {
                    debug!(
                        "QMI: skipped service {:#04x} client {} tid {} message {:#06x} flags {:#04x}",
                        r.service, r.client, r.tid, r.message, r.flags
                    );
                    continue;
                }
                return match r.result() {
                    Ok(()) => Ok(r),
                    Err(Some(code)) => Err(Fault::Qmi {
                        code,
                        sw: match r.tlv(0x11) {
                            Some(&[sw1, sw2]) => Some([sw1, sw2]),
                            _ => None,
                        },
                    }),
                    Err(None) => Err(Fault::Malformed),
                };
            }
            if let Err(e) = self.stream.receive(&mut self.received, deadline) {
                if e.kind() == ErrorKind::TimedOut {
                    // A late answer is dropped by its transaction id; start clean anyway.
                    self.received.clear();
                    self.stream.discard_pending();
                }
                return Err(io_fault(e));
            }
        }
    }

    /// The next whole frame received (`Some(None)`: a malformed one), `None` when more bytes
    /// are needed.
    fn next_frame(&mut self) -> Result<Option<Option<Response>>, Fault> {
        match cut(&self.received) {
            Cut::Partial => Ok(None),
            Cut::Frame(n, r) => {
                self.received.drain(..n);
                Ok(Some(r))
            }
            Cut::NotQmux => {
                let mut seen = std::mem::take(&mut self.received);
                seen.truncate(32);
                Err(Fault::NotQmi(seen))
            }
        }
    }
}

fn io_fault(e: io::Error) -> Fault {
    match e.kind() {
        ErrorKind::TimedOut => Fault::Timeout,
        ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => {
            Fault::Closed
        }
        _ => Fault::Io(e),
    }
}
