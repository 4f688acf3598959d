//! The simulator standing in for libqmi's `qmi-proxy` (reference §4): clients connect to the
//! abstract socket, open the device with the internal-proxy-open request (CTL 0xFF00 carrying
//! the device path), then talk plain QMUX. The proxy here is the modem too, so requests go
//! straight to the device state; what the real proxy does with client ids is kept: a client's
//! allocated ids are its own, are disowned (still allocated) when it disconnects without
//! releasing them, and are re-owned by the next client that uses one.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::device::ctl;
use super::message::{CTL, Frame};
use super::{Serving, poll_fd, take_frames, write_all};
use crate::modem::lock;
use crate::shared::CardSlot;

/// (service, client id) → the proxy client that owns it (`None`: disowned).
type Owners = Arc<Mutex<BTreeMap<(u8, u8), Option<u64>>>>;

pub(super) fn run<C: CardSlot>(serving: Serving<C>, listener: UnixListener, device: PathBuf) {
    let owners: Owners = Arc::default();
    let mut next_client = 1u64;
    while !serving.stopping() {
        if !poll_fd(&listener, libc::POLLIN) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if stream.set_nonblocking(true).is_err() {
            continue;
        }
        let client = Client {
            id: next_client,
            serving: serving.clone(),
            owners: owners.clone(),
            device: device.clone(),
        };
        next_client += 1;
        let _ = std::thread::Builder::new()
            .name("qmi-proxy-client".into())
            .spawn(move || client.serve(stream));
    }
}

struct Client<C: CardSlot> {
    id: u64,
    serving: Serving<C>,
    owners: Owners,
    device: PathBuf,
}

impl<C: CardSlot> Client<C> {
    fn serve(self, mut stream: UnixStream) {
        let mut opened = false;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        'reading: while !self.serving.stopping() {
            if !poll_fd(&stream, libc::POLLIN) {
                continue;
            }
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    continue;
                }
                Err(_) => break,
            }
            let mut frames = Vec::new();
            take_frames(&mut buf, |f| frames.push(f));
            for frame in frames {
                let Some(frame) = frame else { continue };
                let answer = if opened {
                    self.forward(&frame)
                } else if self.opens_our_device(&frame) {
                    opened = true;
                    Some(frame.response(None, Vec::new()))
                } else {
                    // The real proxy disconnects a client whose device cannot be opened.
                    break 'reading;
                };
                let Some(answer) = answer else { continue };
                if write_all(
                    &self.serving.control.shared.stop,
                    &mut stream,
                    &answer.encode(),
                )
                .is_err()
                {
                    break 'reading;
                }
            }
        }
        for owner in lock(&self.owners).values_mut() {
            if *owner == Some(self.id) {
                *owner = None;
            }
        }
    }

    /// The internal-proxy-open request, for this modem's device (symlinks resolved).
    fn opens_our_device(&self, frame: &Frame) -> bool {
        if frame.service != CTL || frame.message != ctl::INTERNAL_PROXY_OPEN {
            return false;
        }
        let Some(path) = frame.tlv(0x01) else {
            return false;
        };
        let path = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path));
        let ours = std::fs::canonicalize(&self.device).unwrap_or(self.device.clone());
        std::fs::canonicalize(path).is_ok_and(|p| p == ours)
    }

    fn forward(&self, frame: &Frame) -> Option<Frame> {
        if frame.service == CTL
            && frame.message == ctl::RELEASE_CID
            && let Some(&[service, cid]) = frame.tlv(0x01)
        {
            lock(&self.owners).remove(&(service, cid));
        }
        if frame.service != CTL {
            let mut owners = lock(&self.owners);
            let owner = owners.entry((frame.service, frame.client)).or_insert(None);
            if owner.is_none() {
                *owner = Some(self.id);
            }
        }
        let answer = self.serving.answer(frame)?;
        if frame.service == CTL
            && frame.message == ctl::ALLOCATE_CID
            && let (Some(&[0, 0, ..]), Some(&[service, cid])) = (answer.tlv(0x02), answer.tlv(0x01))
        {
            lock(&self.owners).insert((service, cid), Some(self.id));
        }
        Some(answer)
    }
}
