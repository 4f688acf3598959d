//! A link: one connection to the card with one logical channel on which the applet is
//! selected. Running an operation in one turn (and keeping the endpoint's note current:
//! another process's change of the card is noticed, ours is told to the others), reopening the
//! channel after a card reset, closing it without resetting the card.
//!
//! Where the transport keeps a note, the channel is the one recorded there and shared by every
//! process of this module on the machine: it stays open when a process ends, so the next one
//! needs no MANAGE CHANNEL, and the card never holds more than one channel of ours, however
//! processes end (`kill -9` included).

use std::sync::Arc;

use log::{debug, warn};

use super::apdu::ClassStyle;
use super::channel::AppletChannel;
use super::channel_note::{ChannelNote, ContentVersion};
use super::commands::{close_channel, open_channel};
use super::content_cache::{CachedCard, ContentCache};
use super::error::{AppletError, Result};
use crate::transport::{CardConnection, ChannelRoute, SessionOpen, Turn};

/// The link's place in the endpoint's note, when the transport keeps one.
pub(super) struct NoteState {
    /// The note version this process's view of the card was read against.
    pub(super) known: ContentVersion,
    pub(super) cache: Arc<ContentCache>,
    /// The content cache entry's name: the reader or modem.
    pub(super) endpoint: String,
    /// Whether the token takes writes (kept with cached content).
    pub(super) writable: bool,
}

pub(super) struct Link {
    conn: Option<Box<dyn CardConnection>>,
    pub(super) route: ChannelRoute,
    /// The AID selected on the channel (to re-select after a card reset).
    aid: Vec<u8>,
    logical_channel: bool,
    /// A command answered `63CF`, or another process changed the card, since the flag was
    /// last taken.
    pub(super) remote_update_seen: bool,
    pub(super) note: Option<NoteState>,
}

impl Link {
    pub(super) fn new(
        conn: Box<dyn CardConnection>,
        route: ChannelRoute,
        aid: Vec<u8>,
        logical_channel: bool,
        note: Option<NoteState>,
    ) -> Link {
        Link {
            conn: Some(conn),
            route,
            aid,
            logical_channel,
            remote_update_seen: false,
            note,
        }
    }

    /// Runs `op` in one turn on the link's channel.
    pub(super) fn run_once<R>(
        &mut self,
        style: ClassStyle,
        op: &mut impl FnMut(&mut AppletChannel<'_>) -> Result<R>,
    ) -> Result<R> {
        let route = self.route;
        let conn = self.conn.as_mut().ok_or(AppletError::NotConnected)?;
        let mut turn = conn.transaction(route)?;
        let note = match &self.note {
            Some(_) => ChannelNote::read_from(turn.as_mut()),
            None => None,
        };
        let mut ch = AppletChannel::new(turn.as_mut(), route.cla_channel(), style);
        let result = op(&mut ch);
        let remote_update = ch.remote_update_completed;
        let changes = ch.content_changes;
        let fresh = ch.fresh_read.take();
        drop(ch);
        self.remote_update_seen |= remote_update;
        if let (Some(state), Some(note)) = (&mut self.note, note) {
            let lost = note.is_none();
            let mut note = note.unwrap_or_else(|| {
                // Lost (or torn by a writer that died): start a new epoch, which no view or
                // cache entry matches, and record our channel again.
                let mut n = ChannelNote::new_epoch();
                if route != ChannelRoute::Cla(0) {
                    n.route = Some(route);
                    n.aid = self.aid.clone();
                }
                n
            });
            if changes > 0 {
                note.generation += 1;
            }
            if changes > 0 || lost {
                turn.write_note(&note.encode());
            }
            match fresh {
                Some(contents) => {
                    state.known = note.version();
                    state.cache.store(
                        &state.endpoint,
                        &CachedCard {
                            version: state.known,
                            aid: self.aid.clone(),
                            writable: state.writable,
                            contents,
                        },
                    );
                }
                // Our view is older than the card: the token re-reads it.
                None if note.version() != state.known => self.remote_update_seen = true,
                None => {}
            }
        }
        drop(turn);
        result
    }

    /// After a card reset: reconnect, then use the channel another process of this module
    /// reopened already, or reopen it (and record it).
    pub(super) fn reopen(&mut self, style: ClassStyle, reader: &str) -> Result<()> {
        let conn = self.conn.as_mut().ok_or(AppletError::NotConnected)?;
        conn.reconnect()?;
        let mut turn = conn.transaction(ChannelRoute::Cla(0))?;
        let note = ChannelNote::read_from(turn.as_mut());
        if self.logical_channel
            && let Some(Some(recorded)) = &note
            && let Some(route) = recorded.route
            && recorded.aid == self.aid
            && applet_answers_on(turn.as_mut(), route, style)
        {
            debug!("{reader}: using the channel another process reopened ({route:?})");
            self.route = route;
            return Ok(());
        }
        turn.set_route(ChannelRoute::Cla(0))?;
        let aids = [self.aid.clone()];
        let (route, _) =
            open_applet_channel(turn.as_mut(), &aids, self.logical_channel, style, reader)?
                .ok_or(AppletError::AppletGone)?;
        self.route = route;
        if let Some(note) = note {
            let mut note = note.unwrap_or_else(ChannelNote::new_epoch);
            record_channel(turn.as_mut(), &mut note, route, &self.aid);
        }
        Ok(())
    }

    /// True while the card is there (no APDU is sent).
    pub(super) fn is_present(&mut self) -> bool {
        self.conn.as_mut().is_some_and(|c| c.is_present())
    }

    /// Closes the connection, leaving the card as it is. The channel is closed too unless it
    /// is the one the endpoint's note shares with other processes (or the card is gone).
    pub(super) fn close(&mut self, card_gone: bool, reader: &str) {
        let route = self.route;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if !card_gone && route != ChannelRoute::Cla(0) {
            let closed = conn.transaction(ChannelRoute::Cla(0)).and_then(|mut turn| {
                let shared = ChannelNote::read_from(turn.as_mut())
                    .flatten()
                    .is_some_and(|n| n.route == Some(route));
                if shared {
                    debug!("{reader}: leaving the shared channel {route:?} open");
                    return Ok(());
                }
                close_route(turn.as_mut(), route)
            });
            if let Err(e) = closed {
                debug!("{reader}: closing the channel: {e}");
            }
        }
        conn.disconnect();
    }
}

/// Closes a channel of ours: the transport's session, or MANAGE CHANNEL close on the basic
/// channel.
pub(super) fn close_route(
    turn: &mut dyn Turn,
    route: ChannelRoute,
) -> std::result::Result<(), crate::transport::TransportError> {
    match route {
        ChannelRoute::Session(id) => turn.close_session(id),
        ChannelRoute::Cla(0) => Ok(()),
        ChannelRoute::Cla(ch) => {
            turn.set_route(ChannelRoute::Cla(0))?;
            if let Err(e) = close_channel(turn, ch) {
                debug!("MANAGE CHANNEL close {ch}: {e}");
            }
            Ok(())
        }
    }
}

/// Records `route` as the channel every process shares (a basic channel is never recorded:
/// another configuration may still want a logical one).
pub(super) fn record_channel(
    turn: &mut dyn Turn,
    note: &mut ChannelNote,
    route: ChannelRoute,
    aid: &[u8],
) {
    if route == ChannelRoute::Cla(0) {
        return;
    }
    note.route = Some(route);
    note.aid = aid.to_vec();
    turn.write_note(&note.encode());
}

/// Whether the applet answers on `route` (a recorded channel may be gone since a reset, or
/// reused by someone else for another applet): one GET DATA.
pub(super) fn applet_answers_on(
    turn: &mut dyn Turn,
    route: ChannelRoute,
    style: ClassStyle,
) -> bool {
    if turn.set_route(route).is_err() {
        return false;
    }
    let mut ch = AppletChannel::new(turn, route.cla_channel(), style);
    ch.application_info().is_ok()
}

/// Opens a logical channel and selects the first AID that answers: through the transport
/// (AT+CCHO) where it manages channels, else with MANAGE CHANNEL + SELECT (the basic channel
/// when the card has no logical channels or the configuration says so). A card with no
/// channel left is an error, never a silent move to the basic channel the modem uses itself.
pub(super) fn open_applet_channel(
    turn: &mut dyn Turn,
    aids: &[Vec<u8>],
    logical_channel: bool,
    style: ClassStyle,
    reader: &str,
) -> Result<Option<(ChannelRoute, Vec<u8>)>> {
    if logical_channel {
        let mut managed = false;
        for aid in aids {
            match turn.open_session(aid)? {
                SessionOpen::Opened(id) => {
                    return Ok(Some((ChannelRoute::Session(id), aid.clone())));
                }
                SessionOpen::NoApplet => managed = true,
                SessionOpen::NoChannelFree => return Err(AppletError::NoChannelFree),
                SessionOpen::NotManaged => break,
            }
        }
        if managed {
            debug!("{reader}: no IoT SAFE applet on this card");
            return Ok(None);
        }
    }
    turn.set_route(ChannelRoute::Cla(0))?;
    let channel = if logical_channel {
        match open_channel(turn) {
            Ok(Some(ch)) => ch,
            Ok(None) => {
                debug!("{reader}: the card has no logical channels; using the basic channel");
                0
            }
            Err(AppletError::NoChannelFree) => {
                warn!("{reader}: the card has no logical channel left (MANAGE CHANNEL: 6A81)");
                return Err(AppletError::NoChannelFree);
            }
            Err(e) => return Err(e),
        }
    } else {
        0
    };
    turn.set_route(ChannelRoute::Cla(channel))?;
    let mut ch = AppletChannel::new(turn, channel, style);
    for aid in aids {
        match ch.select(aid) {
            Ok(true) => return Ok(Some((ChannelRoute::Cla(channel), aid.clone()))),
            Ok(false) => {}
            Err(e) => {
                // Not recorded anywhere yet: close it, or it is nobody's (e.g. a modem that
                // takes AT+CSIM on the basic channel only).
                drop(ch);
                if channel != 0 && !e.card_gone() {
                    let _ = turn.set_route(ChannelRoute::Cla(0));
                    let _ = close_channel(turn, channel);
                }
                return Err(e);
            }
        }
    }
    drop(ch);
    debug!("{reader}: no IoT SAFE applet on this card");
    if channel != 0 {
        turn.set_route(ChannelRoute::Cla(0))?;
        close_channel(turn, channel)?;
    }
    Ok(None)
}
