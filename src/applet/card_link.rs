//! The one link a token has to its card, shared by the token's sessions: an operation leases it
//! for its whole APDU sequence, so the sequences of two sessions never interleave on the
//! channel. One per card, never global.
//!
//! One link per card and process, not a pool: the card and its reader are serial, and a PC/SC
//! transaction holds the whole card whatever channel it uses, so a second channel cannot run an
//! operation beside the first. Measured over pcscd (8 threads, 200 signatures): one channel
//! 0.53–0.56 s, a pool of four 1.05–1.29 s — pcsc-lite hands the card between handles of one
//! process only every 100–200 ms, while the lease below hands it over at once. Cards have 3 or 4
//! logical channels besides the basic one, too few to spend on a process that cannot use them.

use log::info;
use parking_lot::Mutex;

use super::apdu::ClassStyle;
use super::channel::AppletChannel;
use super::error::Result;
use super::link::Link;

pub struct CardLink {
    reader: String,
    link: Mutex<Link>,
    style: ClassStyle,
}

/// The card link, held for one operation.
pub struct LinkLease<'l> {
    link: parking_lot::MutexGuard<'l, Link>,
    owner: &'l CardLink,
}

impl CardLink {
    pub(super) fn new(link: Link, style: ClassStyle, reader: &str) -> CardLink {
        CardLink {
            reader: reader.to_string(),
            link: Mutex::new(link),
            style,
        }
    }

    /// The link for one operation, once the operation before it is done.
    pub fn lease(&self) -> LinkLease<'_> {
        LinkLease {
            link: self.link.lock(),
            owner: self,
        }
    }

    /// Whether the card is still there, without an APDU; `None` while the link is busy (an
    /// operation is using the card, so it is there).
    pub fn is_present(&self) -> Option<bool> {
        self.link.try_lock().map(|mut link| link.is_present())
    }

    /// Closes the channel (unless the card is gone) and the connection; the card is left as it
    /// is.
    pub fn close(&self, card_gone: bool) {
        self.link.lock().close(card_gone, &self.reader);
    }
}

impl LinkLease<'_> {
    /// Runs one operation's APDUs in one transaction. After a card reset (another process, a
    /// power cycle) or a lost channel, the channel is reopened and the operation run once more.
    pub fn run<R>(
        &mut self,
        op: &mut impl FnMut(&mut AppletChannel<'_>) -> Result<R>,
    ) -> Result<R> {
        let style = self.owner.style;
        match self.link.run_once(style, op) {
            Err(e) if e.needs_reopen() => {
                info!(
                    "{}: the card was reset; reopening the channel",
                    self.owner.reader
                );
                self.link.reopen(style, &self.owner.reader)?;
                self.link.run_once(style, op)
            }
            other => other,
        }
    }

    /// Runs `op` once, without reopening the channel after a reset.
    pub fn run_once<R>(
        &mut self,
        op: &mut impl FnMut(&mut AppletChannel<'_>) -> Result<R>,
    ) -> Result<R> {
        self.link.run_once(self.owner.style, op)
    }

    /// True while the card is there (no APDU is sent).
    pub fn is_present(&mut self) -> bool {
        self.link.is_present()
    }

    /// Whether a command answered `63CF` (a remote-management session completed) since the
    /// last call.
    pub fn take_remote_update(&mut self) -> bool {
        std::mem::take(&mut self.link.remote_update_seen)
    }
}
