//! A link: one connection to the card with one logical channel on which the applet is
//! selected. Opening it (transport-managed AT+CCHO, or MANAGE CHANNEL + SELECT, or the basic
//! channel), running an operation in one transaction, reopening it after a card reset, closing
//! it without resetting the card.

use log::debug;

use super::apdu::ClassStyle;
use super::channel::AppletChannel;
use super::commands::{close_channel, open_channel};
use super::error::{AppletError, Result};
use crate::transport::{CardConnection, ChannelRoute, SessionOpen};

pub(super) struct Link {
    conn: Option<Box<dyn CardConnection>>,
    pub(super) route: ChannelRoute,
    /// The AID selected on the channel (to re-select after a card reset).
    aid: Vec<u8>,
    logical_channel: bool,
    /// A command answered `63CF` since the flag was last taken.
    pub(super) remote_update_seen: bool,
}

impl Link {
    /// Opens a channel on `conn` and selects the first of `aids` that answers. `Ok(None)` when
    /// the card has none of them (the connection is then closed).
    pub(super) fn open(
        mut conn: Box<dyn CardConnection>,
        aids: &[Vec<u8>],
        logical_channel: bool,
        style: ClassStyle,
        reader: &str,
    ) -> Result<Option<Link>> {
        match open_applet_channel(conn.as_mut(), aids, logical_channel, style, reader)? {
            Some((route, aid)) => Ok(Some(Link {
                conn: Some(conn),
                route,
                aid,
                logical_channel,
                remote_update_seen: false,
            })),
            None => {
                conn.disconnect();
                Ok(None)
            }
        }
    }

    /// Runs `op` in one transaction on the link's channel.
    pub(super) fn run_once<R>(
        &mut self,
        style: ClassStyle,
        op: &mut impl FnMut(&mut AppletChannel<'_>) -> Result<R>,
    ) -> Result<R> {
        let route = self.route;
        let conn = self.conn.as_mut().ok_or(AppletError::NotConnected)?;
        let mut transaction = conn.transaction(route)?;
        let mut ch = AppletChannel::new(transaction.as_mut(), route.cla_channel(), style);
        let result = op(&mut ch);
        let remote_update = ch.remote_update_completed;
        drop(transaction);
        self.remote_update_seen |= remote_update;
        result
    }

    /// After a card reset: reconnect, reopen the channel and re-select the applet.
    pub(super) fn reopen(&mut self, style: ClassStyle, reader: &str) -> Result<()> {
        let conn = self.conn.as_mut().ok_or(AppletError::NotConnected)?;
        conn.reconnect()?;
        let aids = [self.aid.clone()];
        match open_applet_channel(conn.as_mut(), &aids, self.logical_channel, style, reader)? {
            Some((route, _)) => {
                self.route = route;
                Ok(())
            }
            None => Err(AppletError::AppletGone),
        }
    }

    /// True while the card is there (no APDU is sent).
    pub(super) fn is_present(&mut self) -> bool {
        self.conn.as_mut().is_some_and(|c| c.is_present())
    }

    /// Closes the channel (unless the card is gone) and the connection, leaving the card as it
    /// is.
    pub(super) fn close(&mut self, card_gone: bool, reader: &str) {
        let route = self.route;
        if let Some(mut conn) = self.conn.take() {
            if !card_gone {
                let closed = match route {
                    ChannelRoute::Session(id) => conn.close_session(id).map_err(AppletError::from),
                    ChannelRoute::Cla(0) => Ok(()),
                    ChannelRoute::Cla(ch) => conn
                        .transaction(ChannelRoute::Cla(0))
                        .map_err(AppletError::from)
                        .and_then(|mut basic| close_channel(basic.as_mut(), ch)),
                };
                if let Err(e) = closed {
                    debug!("{reader}: closing the channel: {e}");
                }
            }
            conn.disconnect();
        }
    }
}

/// Opens a logical channel and selects the first AID that answers: through the transport
/// (AT+CCHO) where it manages channels, else with MANAGE CHANNEL + SELECT (the basic channel
/// when the card refuses MANAGE CHANNEL or the configuration says so).
fn open_applet_channel(
    conn: &mut dyn CardConnection,
    aids: &[Vec<u8>],
    logical_channel: bool,
    style: ClassStyle,
    reader: &str,
) -> Result<Option<(ChannelRoute, Vec<u8>)>> {
    if logical_channel {
        let mut managed = false;
        for aid in aids {
            match conn.open_session(aid)? {
                SessionOpen::Opened(id) => {
                    return Ok(Some((ChannelRoute::Session(id), aid.clone())));
                }
                SessionOpen::NoApplet => managed = true,
                SessionOpen::NotManaged => break,
            }
        }
        if managed {
            debug!("{reader}: no IoT SAFE applet on this card");
            return Ok(None);
        }
    }
    let mut basic = conn.transaction(ChannelRoute::Cla(0))?;
    let channel = if logical_channel {
        open_channel(basic.as_mut())?.unwrap_or_else(|| {
            debug!("{reader}: MANAGE CHANNEL refused; using the basic channel");
            0
        })
    } else {
        0
    };
    let mut ch = AppletChannel::new(basic.as_mut(), channel, style);
    for aid in aids {
        if ch.select(aid)? {
            return Ok(Some((ChannelRoute::Cla(channel), aid.clone())));
        }
    }
    debug!("{reader}: no IoT SAFE applet on this card");
    if channel != 0 {
        close_channel(basic.as_mut(), channel)?;
    }
    Ok(None)
}
