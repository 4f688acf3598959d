//! The first contact with a card, in one turn: the channel (the one the endpoint's note shares,
//! or a new one that is then recorded), and what the card holds (the content cache's entry when
//! the card proves to be the cached one, else a whole read).
//!
//! APDUs up to the first signature: a process that finds the shared channel and a current cache
//! entry sends one READ PUBLIC KEY (the identity proof) before it; after a card power cycle it
//! opens the channel again (MANAGE CHANNEL + SELECT, or AT+CCHO) before that proof.

use std::sync::Arc;

use log::{debug, info};

use super::card_read::{CardContents, read_card, read_card_on_probation};
use super::channel::AppletChannel;
use super::channel_note::{ChannelNote, ContentVersion};
use super::content_cache::{CachedCard, ContentCache};
use super::error::{AppletError, Result};
use super::link::{
    Link, NoteState, applet_answers_on, close_route, open_applet_channel, record_channel,
};
use super::readers::AppletSettings;
use super::status::StatusWord;
use crate::config::Provisioning;
use crate::transport::{CardConnection, ChannelRoute, Turn};

/// A card with its channel open and its content known.
pub(super) struct Attached {
    pub(super) link: Link,
    pub(super) contents: CardContents,
    pub(super) writable: bool,
}

/// Where the applet's channel came from, and what the card holds.
struct Found {
    route: ChannelRoute,
    aid: Vec<u8>,
    contents: CardContents,
    writable: bool,
    /// Read from the card in this turn (else taken from the content cache).
    read: bool,
}

/// Opens (or reuses) the applet's channel on `conn` and learns the card's content. `Ok(None)`
/// when the card has no IoT SAFE applet (the connection is then closed).
pub(super) fn attach(
    mut conn: Box<dyn CardConnection>,
    settings: &AppletSettings,
    cache: &Arc<ContentCache>,
    reader: &str,
) -> Result<Option<Attached>> {
    let found = {
        let mut turn = conn.transaction(ChannelRoute::Cla(0))?;
        match turn.read_note() {
            None => first_contact_without_note(turn.as_mut(), settings, reader)?,
            Some(bytes) => {
                let note = ChannelNote::decode(&bytes).unwrap_or_else(|| {
                    if !bytes.is_empty() {
                        debug!("{reader}: the endpoint's note does not parse; starting a new one");
                    }
                    ChannelNote::new_epoch()
                });
                first_contact(turn.as_mut(), note, settings, cache, reader)?
                    .map(|(found, version)| (found, Some(version)))
            }
        }
    };
    let Some((found, version)) = found else {
        conn.disconnect();
        return Ok(None);
    };
    debug!(
        "{reader}: applet on {:?}, content {}",
        found.route,
        if found.read { "read" } else { "from the cache" }
    );
    let note = version.map(|known| NoteState {
        known,
        cache: cache.clone(),
        endpoint: reader.to_string(),
        writable: found.writable,
    });
    if let Some(state) = &note
        && found.read
    {
        state.cache.store(
            reader,
            &CachedCard {
                version: state.known,
                aid: found.aid.clone(),
                writable: found.writable,
                contents: found.contents.clone(),
            },
        );
    }
    Ok(Some(Attached {
        link: Link::new(conn, found.route, found.aid, settings.logical_channel, note),
        contents: found.contents,
        writable: found.writable,
    }))
}

/// A transport that keeps no note: a channel of this process's own and a whole read.
fn first_contact_without_note(
    turn: &mut dyn Turn,
    settings: &AppletSettings,
    reader: &str,
) -> Result<Option<(Found, Option<ContentVersion>)>> {
    let Some((route, aid)) = open_applet_channel(
        turn,
        &settings.aids,
        settings.logical_channel,
        settings.style,
        reader,
    )?
    else {
        return Ok(None);
    };
    turn.set_route(route)?;
    let mut ch = AppletChannel::new(turn, route.cla_channel(), settings.style);
    let (contents, writable) = read_all(&mut ch, settings, reader, false)?;
    Ok(Some((
        Found {
            route,
            aid,
            contents,
            writable,
            read: true,
        },
        None,
    )))
}

fn first_contact(
    turn: &mut dyn Turn,
    mut note: ChannelNote,
    settings: &AppletSettings,
    cache: &ContentCache,
    reader: &str,
) -> Result<Option<(Found, ContentVersion)>> {
    let cached = cache
        .load(reader)
        .filter(|c| c.version == note.version() && settings.aids.contains(&c.aid));
    let generation_before = note.generation;
    let recorded = note
        .route
        .filter(|_| settings.logical_channel && settings.aids.contains(&note.aid));
    let mut found = None;
    // After a likely power cycle the recorded channel is closed: not worth an APDU first.
    let restarted = turn.card_may_have_restarted();
    if let Some(route) = recorded.filter(|_| !restarted) {
        found = on_recorded_channel(turn, route, &note.aid, cached.as_ref(), settings, reader)?;
        if found.is_none() {
            info!("{reader}: the recorded channel {route:?} is gone; opening a new one");
        }
    }
    let found = match found {
        Some(f) => f,
        None => {
            turn.set_route(ChannelRoute::Cla(0))?;
            let Some((route, aid)) = open_applet_channel(
                turn,
                &settings.aids,
                settings.logical_channel,
                settings.style,
                reader,
            )?
            else {
                return Ok(None);
            };
            // Recorded at once, so that even a process killed during the read below leaves no
            // channel nobody knows of.
            record_channel(turn, &mut note, route, &aid);
            if restarted
                && let Some(old) = recorded.filter(|old| *old != route)
                && applet_answers_on(turn, old, settings.style)
            {
                // The card was not powered down after all: the channel the note recorded is
                // still open with our applet, and no longer recorded. It is ours; close it.
                debug!("{reader}: closing the channel {old:?} recorded before");
                let _ = close_route(turn, old);
            }
            match on_new_channel(turn, route, &aid, cached.as_ref(), settings, reader) {
                Ok(found) => found,
                Err(e) => {
                    if !e.card_gone() && note.route != Some(route) {
                        let _ = close_route(turn, route);
                    }
                    return Err(e);
                }
            }
        }
    };
    if found.changes > 0 {
        note.generation += 1;
    }
    if note.generation != generation_before || found.changes > 0 {
        turn.write_note(&note.encode());
    }
    Ok(Some((found.found, note.version())))
}

/// What a channel gave, and how often the card said its content changed meanwhile.
struct Probed {
    found: Found,
    changes: u32,
}

/// On the channel the note records: the cached content if the card proves to be the cached
/// one, else a whole read. `Ok(None)` when the applet does not answer there (the channel was
/// closed by a power cycle, or is someone else's now).
fn on_recorded_channel(
    turn: &mut dyn Turn,
    route: ChannelRoute,
    aid: &[u8],
    cached: Option<&CachedCard>,
    settings: &AppletSettings,
    reader: &str,
) -> Result<Option<Probed>> {
    if turn.set_route(route).is_err() {
        return Ok(None);
    }
    let mut ch = AppletChannel::new(turn, route.cla_channel(), settings.style);
    match identify_on(&mut ch, route, aid, cached, settings, reader, true) {
        Ok(found) => Ok(Some(found)),
        Err(e) if e.card_gone() => Err(e),
        Err(e) => {
            debug!("{reader}: the recorded channel {route:?}: {e}");
            // The proof may fail for a card without that key on a channel that is fine; not
            // when the channel is closed or has no IoT SAFE applet.
            drop(ch);
            let channel_gone = matches!(
                e.status(),
                Some(StatusWord::CHANNEL_NOT_OPEN | StatusWord(0x6D00 | 0x6E00))
            ) || matches!(e, AppletError::Transport(_));
            if cached.is_some() && !channel_gone && applet_answers_on(turn, route, settings.style) {
                let mut ch = AppletChannel::new(turn, route.cla_channel(), settings.style);
                return identify(&mut ch, route, aid, None, settings, reader).map(Some);
            }
            Ok(None)
        }
    }
}

/// On a channel just opened (the applet selected): the cached content if the card proves to
/// be the cached one, else a whole read.
fn on_new_channel(
    turn: &mut dyn Turn,
    route: ChannelRoute,
    aid: &[u8],
    cached: Option<&CachedCard>,
    settings: &AppletSettings,
    reader: &str,
) -> Result<Probed> {
    turn.set_route(route)?;
    let mut ch = AppletChannel::new(turn, route.cla_channel(), settings.style);
    match identify(&mut ch, route, aid, cached, settings, reader) {
        Err(e) if !e.card_gone() && cached.is_some() => {
            debug!("{reader}: identity proof failed ({e}); reading the card");
            identify(&mut ch, route, aid, None, settings, reader)
        }
        other => other,
    }
}

/// The cached content when `cached` is given and the card's identity key reads back the same
/// (and the card reports no change), else a whole read.
fn identify(
    ch: &mut AppletChannel<'_>,
    route: ChannelRoute,
    aid: &[u8],
    cached: Option<&CachedCard>,
    settings: &AppletSettings,
    reader: &str,
) -> Result<Probed> {
    identify_on(ch, route, aid, cached, settings, reader, false)
}

/// [`identify`]; `probation`: the channel is one the note recorded, which may not be ours any
/// more, so its first refusal ends the read quietly.
fn identify_on(
    ch: &mut AppletChannel<'_>,
    route: ChannelRoute,
    aid: &[u8],
    cached: Option<&CachedCard>,
    settings: &AppletSettings,
    reader: &str,
    probation: bool,
) -> Result<Probed> {
    let changes_before = ch.content_changes;
    if let Some(cached) = cached
        && let Some((key, point)) = cached.identity_key()
    {
        let read_back = ch.read_public_key(key)?;
        if read_back == *point && ch.content_changes == changes_before {
            let writable = match settings.provisioning {
                Provisioning::On => true,
                Provisioning::Off => false,
                Provisioning::Auto => cached.writable,
            };
            return Ok(Probed {
                found: Found {
                    route,
                    aid: aid.to_vec(),
                    contents: cached.contents.clone(),
                    writable,
                    read: false,
                },
                changes: 0,
            });
        }
        debug!("{reader}: not the cached card (or its content changed); reading it");
    }
    let (contents, writable) = read_all(ch, settings, reader, probation)?;
    Ok(Probed {
        found: Found {
            route,
            aid: aid.to_vec(),
            contents,
            writable,
            read: true,
        },
        changes: ch.content_changes - changes_before,
    })
}

/// Everything the object cache needs, and whether the token takes writes.
fn read_all(
    ch: &mut AppletChannel<'_>,
    settings: &AppletSettings,
    reader: &str,
    probation: bool,
) -> Result<(CardContents, bool)> {
    let contents = if probation {
        read_card_on_probation(ch, reader)?
    } else {
        read_card(ch, reader, &[])?
    };
    let writable = match settings.provisioning {
        Provisioning::On => true,
        Provisioning::Off => false,
        Provisioning::Auto => ch.supports_provisioning()?,
    };
    Ok((contents, writable))
}
