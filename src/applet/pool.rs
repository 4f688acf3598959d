//! The channel pool of one card: links opened on demand up to a maximum while operations wait
//! for each other. An operation leases one link for its whole APDU sequence, so the sequences
//! of two sessions never interleave on a channel; the pool is per card, never global.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::{debug, info};
use parking_lot::{ArcMutexGuard, Mutex, RawMutex, RwLock};

use super::apdu::ClassStyle;
use super::channel::AppletChannel;
use super::error::Result;
use super::link::Link;
use crate::transport::{ChannelRoute, ReaderSource};

pub struct ChannelPool {
    reader: String,
    links: RwLock<Vec<Arc<Mutex<Link>>>>,
    max_channels: usize,
    /// The card refused another channel: the pool stays at its size.
    full: AtomicBool,
    /// Held while the pool opens another channel.
    growing: Mutex<()>,
    /// Where more connections to this card come from (`None`: the pool cannot grow).
    source: Option<Arc<dyn ReaderSource>>,
    style: ClassStyle,
}

/// One link of the pool, held for one operation.
pub struct ChannelLease<'p> {
    link: ArcMutexGuard<RawMutex, Link>,
    pool: &'p ChannelPool,
}

impl ChannelPool {
    pub(super) fn new(
        first: Link,
        source: Option<Arc<dyn ReaderSource>>,
        max_channels: usize,
        style: ClassStyle,
        reader: &str,
    ) -> ChannelPool {
        ChannelPool {
            reader: reader.to_string(),
            links: RwLock::new(vec![Arc::new(Mutex::new(first))]),
            max_channels: max_channels.max(1),
            full: AtomicBool::new(false),
            growing: Mutex::new(()),
            source,
            style,
        }
    }

    /// A channel for one operation: a free one of the pool, else a new one while the pool may
    /// grow (another connection, MANAGE CHANNEL + SELECT), else the first that frees up.
    pub fn lease(&self) -> ChannelLease<'_> {
        let links = self.links.read().clone();
        for link in &links {
            if let Some(guard) = link.try_lock_arc() {
                return ChannelLease {
                    link: guard,
                    pool: self,
                };
            }
        }
        if links.len() < self.max_channels
            && !self.full.load(Ordering::Acquire)
            && let Some(_growing) = self.growing.try_lock()
            && self.links.read().len() < self.max_channels
        {
            // One thread grows the pool at a time; the others wait for a channel below.
            match self.open_link() {
                Some(link) => {
                    let link = Arc::new(Mutex::new(link));
                    let guard = link.lock_arc();
                    self.links.write().push(link);
                    return ChannelLease {
                        link: guard,
                        pool: self,
                    };
                }
                None => self.full.store(true, Ordering::Release),
            }
        }
        // Wait for a busy channel; spread waiters over the pool.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let i = NEXT.fetch_add(1, Ordering::Relaxed) as usize % links.len().max(1);
        let guard = match links.get(i) {
            Some(link) => link.lock_arc(),
            None => Arc::new(Mutex::new(Link::closed())).lock_arc(),
        };
        ChannelLease {
            link: guard,
            pool: self,
        }
    }

    /// Another connection with its own logical channel and the applet selected on it.
    fn open_link(&self) -> Option<Link> {
        let (aid, logical_channel) = {
            let links = self.links.read();
            let first = links.first()?.lock();
            (first.aid.clone(), first.logical_channel)
        };
        if !logical_channel {
            return None;
        }
        let conn = match self.source.as_ref()?.connect(&self.reader) {
            Ok(Some(c)) => c,
            _ => return None,
        };
        let aids = std::slice::from_ref(&aid);
        match Link::open(conn, aids, true, self.style, &self.reader) {
            Ok(Some(link)) if link.route != ChannelRoute::Cla(0) => {
                debug!("{}: channel pool grows: {:?}", self.reader, link.route);
                Some(link)
            }
            other => {
                debug!(
                    "{}: no further logical channel; the pool stays at its size",
                    self.reader
                );
                if let Ok(Some(mut basic)) = other {
                    basic.close(false, &self.reader);
                }
                None
            }
        }
    }

    /// How many channels the pool holds now.
    pub fn channels(&self) -> usize {
        self.links.read().len()
    }

    /// Whether the card is still there, without an APDU; `None` while the first link is busy
    /// (an operation is using the card, so it is there).
    pub fn is_present(&self) -> Option<bool> {
        let first = self.links.read().first().cloned();
        let Some(first) = first else {
            return Some(false);
        };
        first.try_lock().map(|mut link| link.is_present())
    }

    /// Closes every channel (unless the card is gone) and connection; the card is left as it
    /// is.
    pub fn close(&self, card_gone: bool) {
        let links = std::mem::take(&mut *self.links.write());
        for link in links {
            link.lock().close(card_gone, &self.reader);
        }
    }
}

impl ChannelLease<'_> {
    /// Runs one operation's APDUs in one transaction. After a card reset (another process, a
    /// power cycle) or a lost channel, the channel is reopened and the operation run once more.
    pub fn run<R>(
        &mut self,
        op: &mut impl FnMut(&mut AppletChannel<'_>) -> Result<R>,
    ) -> Result<R> {
        let style = self.pool.style;
        let result = self.link.run_once(style, op);
        match result {
            Err(e) if e.needs_reopen() => {
                info!(
                    "{}: the card was reset; reopening the channel",
                    self.pool.reader
                );
                self.link.reopen(style, &self.pool.reader)?;
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
        self.link.run_once(self.pool.style, op)
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
