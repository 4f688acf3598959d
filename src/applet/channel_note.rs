//! The note every process of this module keeps beside a card endpoint (in the transport's lock
//! file, read and written only during a turn): which logical channel has the applet selected for
//! all of them, and a content generation that any process bumps when it learns that the card's
//! objects changed (its own write, `63CF`, `6989`). With it, a new process reuses the channel
//! instead of opening one more, and every process — and every content cache entry — can tell
//! whether what it knows about the card is still current.

use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::transport::{ChannelRoute, SessionId, Turn};

const HEADER: &str = "iotsafe-pkcs11 channel note 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChannelNote {
    /// Tells this note from one written before it was lost (a reboot empties `/run`): content
    /// cached against another epoch is never trusted.
    pub(super) epoch: u64,
    /// Bumped whenever the card's objects may have changed.
    pub(super) generation: u64,
    /// The shared channel with the applet selected; `None` when no channel is recorded.
    pub(super) route: Option<ChannelRoute>,
    /// The AID selected on `route`.
    pub(super) aid: Vec<u8>,
}

/// What a process's view of the card was read against: the note's epoch and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ContentVersion {
    pub epoch: u64,
    pub generation: u64,
}

impl ChannelNote {
    /// A note for a card no note knew about: a new epoch, generation 0, no channel.
    pub(super) fn new_epoch() -> ChannelNote {
        // Unique enough: notes are created rarely, and the clock moves between them.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        ChannelNote {
            epoch: nanos ^ u64::from(std::process::id()).rotate_left(48),
            generation: 0,
            route: None,
            aid: Vec::new(),
        }
    }

    /// The endpoint's note as this turn finds it: `None` when the transport keeps no notes,
    /// `Some(None)` when there is none yet (or it does not parse).
    pub(super) fn read_from(turn: &mut dyn Turn) -> Option<Option<ChannelNote>> {
        turn.read_note().map(|bytes| ChannelNote::decode(&bytes))
    }

    pub(super) fn version(&self) -> ContentVersion {
        ContentVersion {
            epoch: self.epoch,
            generation: self.generation,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let route = match self.route {
            None => "none".to_string(),
            Some(ChannelRoute::Cla(ch)) => format!("cla {ch}"),
            Some(ChannelRoute::Session(id)) => format!("session {id}"),
        };
        let body = format!(
            "{HEADER}\nepoch {}\ngeneration {}\nroute {route}\naid {}\n",
            self.epoch,
            self.generation,
            hex::encode_upper(&self.aid)
        );
        format!("{body}check {}\n", check(&body)).into_bytes()
    }

    /// The note in `bytes`, or `None` for anything but a whole note of this version (empty,
    /// torn by a writer that died, another version, edited by hand).
    pub(super) fn decode(bytes: &[u8]) -> Option<ChannelNote> {
        let text = std::str::from_utf8(bytes).ok()?;
        let check_at = text.rfind("check ")?;
        let (body, check_line) = text.split_at(check_at);
        if check_line.trim_end() != format!("check {}", check(body)) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|v| v.strip_prefix(' '))
                .map(str::to_string)
        };
        let epoch = field("epoch")?.parse().ok()?;
        let generation = field("generation")?.parse().ok()?;
        let route = match field("route")?.split_once(' ') {
            None => None,
            Some(("cla", ch)) => Some(ChannelRoute::Cla(ch.parse().ok()?)),
            Some(("session", id)) => Some(ChannelRoute::Session(SessionId::parse(id)?)),
            Some(_) => return None,
        };
        let aid = hex::decode(field("aid")?).ok()?;
        Some(ChannelNote {
            epoch,
            generation,
            route,
            aid,
        })
    }
}

fn check(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> ChannelNote {
        ChannelNote {
            epoch: 7,
            generation: 3,
            route: Some(ChannelRoute::Session(
                SessionId::parse("00000000038aa32f").unwrap(),
            )),
            aid: vec![0xA0, 0, 0, 5, 0x59, 0, 0x10],
        }
    }

    #[test]
    fn round_trip() {
        let n = note();
        assert_eq!(ChannelNote::decode(&n.encode()), Some(n));
        let basic = ChannelNote {
            route: Some(ChannelRoute::Cla(2)),
            ..note()
        };
        assert_eq!(ChannelNote::decode(&basic.encode()), Some(basic));
        let none = ChannelNote {
            route: None,
            ..note()
        };
        assert_eq!(ChannelNote::decode(&none.encode()), Some(none));
    }

    #[test]
    fn torn_edited_or_foreign_notes_are_rejected() {
        let bytes = note().encode();
        for len in 0..bytes.len() - 1 {
            assert_eq!(ChannelNote::decode(&bytes[..len]), None, "torn at {len}");
        }
        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("generation 3", "generation 2");
        assert_eq!(ChannelNote::decode(edited.as_bytes()), None);
        let other_version = String::from_utf8(bytes)
            .unwrap()
            .replace("note 1", "note 2");
        assert_eq!(ChannelNote::decode(other_version.as_bytes()), None);
        assert_eq!(ChannelNote::decode(&[0xFF, 0xFE]), None);
    }
}
