//! How many logical channels a card has free: opened one after another on one turn, then all
//! closed again (a diagnosis, not something an operation needs).

use super::commands::open_channel;
use super::error::{AppletError, Result};
use super::link::close_route;
use crate::transport::{CardConnection, ChannelRoute, SessionOpen};

/// The most logical channels a card can have besides the basic one (ISO 7816-4).
const MAX_LOGICAL_CHANNELS: usize = 19;

/// What opening every free channel showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelCensus {
    /// Channels that opened (and were closed again).
    pub free: usize,
    /// The transport opens the channels itself (`AT+CCHO`, MBIM, QMI); else MANAGE CHANNEL.
    pub transport_managed: bool,
    /// The transport opens channels only with an AID it can select, and `aid` is not one.
    pub aid_refused: bool,
}

/// Opens logical channels (selecting `aid` where the transport opens them) until the card or
/// modem refuses, on one turn so that no other process of this module sees them, and closes
/// them all again.
pub fn count_free_channels(conn: &mut dyn CardConnection, aid: &[u8]) -> Result<ChannelCensus> {
    let mut turn = conn.transaction(ChannelRoute::Cla(0))?;
    let mut opened: Vec<ChannelRoute> = Vec::new();
    let mut census = ChannelCensus {
        free: 0,
        transport_managed: false,
        aid_refused: false,
    };
    let outcome = loop {
        if opened.len() >= MAX_LOGICAL_CHANNELS {
            break Ok(());
        }
        match turn.open_session(aid) {
            Ok(SessionOpen::Opened(id)) => {
                census.transport_managed = true;
                opened.push(ChannelRoute::Session(id));
            }
            Ok(SessionOpen::NoChannelFree) => {
                census.transport_managed = true;
                break Ok(());
            }
            Ok(SessionOpen::NoApplet) => {
                census.transport_managed = true;
                census.aid_refused = true;
                break Ok(());
            }
            Ok(SessionOpen::NotManaged) => match open_channel(turn.as_mut()) {
                Ok(Some(ch)) => opened.push(ChannelRoute::Cla(ch)),
                Ok(None) | Err(AppletError::NoChannelFree) => break Ok(()),
                Err(e) => break Err(e),
            },
            Err(e) => break Err(AppletError::from(e)),
        }
    };
    census.free = opened.len();
    for route in opened.into_iter().rev() {
        let _ = close_route(turn.as_mut(), route);
    }
    outcome.map(|()| census)
}
