//! The card model: logical channels, the IoT SAFE applet and ISO transport behaviour.
//!
//! [`Card::transmit`] takes one command APDU and returns the response. The card knows
//! nothing of fault injection (see `crate::faults`, which wraps it) or of threads (see
//! `crate::shared`).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the [`Card`] state, its life cycle (power, presence, persistence) and counters |
//! | `apdu.rs` | command APDU parsing, replies, CLA ↔ channel, ATR, TLV readers |
//! | `dispatch.rs` | the APDU pipeline (Le, `61xx`/GET RESPONSE) and the INS table |
//! | `channels.rs` | MANAGE CHANNEL, SELECT |
//! | `objects.rs` | GET DATA, object lookup, information structures |
//! | `read.rs` | READ FILE, READ PUBLIC KEY, GET RANDOM |
//! | `signature.rs` | sign / verify / put-key sessions |
//! | `keygen.rs` | GENERATE KEY PAIR, COMPUTE DH |
//! | `derive.rs` | COMPUTE PRF / HKDF |
//! | `store.rs` | STORE DATA (the provisioning profile) |
//! | `remote.rs` | remote management sessions (G4) |
//! | `options.rs`, `sw.rs` | [`CardOptions`] and its styles; status words |

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hash::HashAlg;
use crate::profile::*;
use crate::tlv::{self, Tlv};

mod apdu;
mod channels;
mod derive;
mod dispatch;
mod keygen;
mod objects;
mod options;
mod read;
mod remote;
mod signature;
mod store;
pub mod sw;

pub use apdu::{ATR, cla_for_channel};
pub use derive::{KD_HKDF, KD_TLS12_PRF};
pub use objects::{
    file_info, private_key_info, public_key_format, public_key_info, secret_key_info,
};
pub use options::{AppInfoTags, CardOptions, ObjectListStyle, SignatureLengthStyle};

use apdu::{Apdu, CmdResult, LeRule, Reply, decode_cla, fields, get, need, parse_tlvs, sw_bytes};
use keygen::{is_persistent_key_type, paired_public_id, random_secret_key};
use objects::{ObjRef, parse_public_key_format};
use remote::RemoteSession;
use signature::{Session, SessionKind};
use store::{Selected, StoreState};

/// APDU counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardStats {
    /// All APDUs passed to `transmit`, including malformed ones.
    pub total: u64,
    /// Count per INS byte (APDUs of at least 2 bytes).
    pub by_ins: BTreeMap<u8, u64>,
    /// Session INIT-open commands (`2A`/`2C`/`24` with P1=`00`) that arrived on a channel
    /// where another sign/verify/put-key sequence was still open (opened and not yet
    /// finished by its last-block UPDATE, closed, or reset by SELECT / power). A host that
    /// leases a channel for each whole sequence never triggers this.
    pub interleaved: u64,
    /// [`CardStats::interleaved`] per logical channel.
    pub interleaved_by_channel: BTreeMap<u8, u64>,
    /// Logical channels open now, the basic channel not counted (filled in by
    /// [`Card::stats`]).
    pub open_channel_count: u64,
    /// The most logical channels (the basic channel not counted) open at once since the
    /// card was created or its stats were reset; a reset starts from the channels open then.
    pub max_open_channels: u64,
}

#[derive(Clone)]
struct Pending {
    data: Vec<u8>,
    offset: usize,
    final_sw: u16,
}

/// Pending response data may be a derived secret (COMPUTE PRF / HKDF): never printed.
impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("len", &self.data.len())
            .field("offset", &self.offset)
            .field("final_sw", &self.final_sw)
            .finish()
    }
}

#[derive(Debug, Clone)]
struct ListCursor {
    data: Vec<u8>,
    offset: usize,
}

#[derive(Debug, Clone, Default)]
struct Channel {
    applet_selected: bool,
    sessions: BTreeMap<(SessionKind, u8), Session>,
    /// Sessions whose object was changed underneath them (their next update → `6989`).
    interrupted: BTreeSet<(SessionKind, u8)>,
    pending: Option<Pending>,
    list_cursor: Option<ListCursor>,
    /// A STORE DATA sequence in progress (cut by any other command on the channel).
    store: Option<StoreState>,
    /// The object selected by STORE DATA `75` / `7E`.
    selected: Option<Selected>,
    /// A remote management session ended while this channel was open: the next successful
    /// applet command answers `63CF` instead of `9000`.
    remote_completed: bool,
}

impl Channel {
    fn reset_applet_state(&mut self) {
        self.sessions.clear();
        self.interrupted.clear();
        self.pending = None;
        self.list_cursor = None;
        self.store = None;
        self.selected = None;
    }
}

/// The highest logical channel number ISO 7816-4 can address (CLA `4x`–`7x`, `Cx`–`Fx`).
const HIGHEST_CHANNEL: u8 = 19;

/// The simulated card.
#[derive(Debug)]
pub struct Card {
    profile: Profile,
    options: CardOptions,
    channels: Vec<Option<Channel>>,
    stats: CardStats,
    present: bool,
    presence_epoch: u64,
    power_epoch: u64,
    /// The objects restored by STORE DATA `7F` (reset store): the profile given to
    /// [`Card::new`] without the objects the device had created.
    installed: Profile,
    content_epoch: u64,
    persist_path: Option<PathBuf>,
    last_save_error: Option<String>,
    remote: Option<RemoteSession>,
}

impl Card {
    /// A powered card with only the basic channel open and nothing selected.
    pub fn new(profile: Profile, options: CardOptions) -> Card {
        let installed = profile.without_device_objects();
        let mut c = Card {
            profile,
            installed,
            content_epoch: 0,
            persist_path: None,
            last_save_error: None,
            remote: None,
            options,
            channels: Vec::new(),
            stats: CardStats::default(),
            present: true,
            presence_epoch: 0,
            power_epoch: 0,
        };
        c.power_off();
        c
    }

    /// The current card content (changed by GENERATE KEY PAIR / PUT PUBLIC KEY, STORE
    /// DATA and remote management sessions).
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Switches the provisioning profile (STORE DATA) on or off at run time.
    pub fn set_provisioning(&mut self, on: bool) {
        self.profile.provisioning = on;
    }

    /// Saves the profile to `path` (atomically) after every content change that must
    /// survive a restart: STORE DATA, GENERATE KEY PAIR of a persistent key, PUT PUBLIC KEY
    /// into a persistent container, the end of a remote management session. `None` stops.
    pub fn set_persist_path(&mut self, path: Option<PathBuf>) {
        self.persist_path = path;
    }

    /// The file the profile is saved to (see [`Card::set_persist_path`]).
    pub fn persist_path(&self) -> Option<&Path> {
        self.persist_path.as_deref()
    }

    /// The error of the last save, if it failed.
    pub fn last_save_error(&self) -> Option<&str> {
        self.last_save_error.as_deref()
    }

    /// Incremented by every change of the card content (objects, keys, files).
    pub fn content_epoch(&self) -> u64 {
        self.content_epoch
    }

    /// Records a content change; saves the profile if `persist` and a path is set.
    fn content_changed(&mut self, persist: bool) {
        self.content_epoch += 1;
        if !persist {
            return;
        }
        if let Some(path) = &self.persist_path {
            match self.profile.save(path) {
                Ok(()) => self.last_save_error = None,
                Err(e) => {
                    let msg = format!("saving the profile to {}: {e}", path.display());
                    eprintln!("iotsafe-sim: {msg}");
                    self.last_save_error = Some(msg);
                }
            }
        }
    }

    /// The options in force.
    pub fn options(&self) -> &CardOptions {
        &self.options
    }

    /// Changes the options (e.g. latencies) of a running card.
    pub fn options_mut(&mut self) -> &mut CardOptions {
        &mut self.options
    }

    /// Sets the per-APDU and/or per-signature latency (`None` keeps the current value).
    pub fn set_latency(&mut self, apdu: Option<Duration>, signature: Option<Duration>) {
        if let Some(d) = apdu {
            self.options.latency_per_apdu = d;
        }
        if let Some(d) = signature {
            self.options.latency_per_signature = d;
        }
    }

    /// Takes the card out of its reader: channel state is dropped and the transports
    /// (vpcd client, modem) stop talking to it until [`Card::insert`]. `transmit` itself
    /// still works (in-process users decide themselves what removal means).
    pub fn remove(&mut self) {
        self.present = false;
        self.presence_epoch += 1;
        self.power_off();
    }

    /// Puts the card back: powered fresh (channels closed, sessions gone, objects kept).
    pub fn insert(&mut self) {
        if !self.present {
            self.present = true;
            self.power_off();
        }
    }

    /// Whether the card is in its reader (see [`Card::remove`]).
    pub fn is_present(&self) -> bool {
        self.present
    }

    /// Incremented by every [`Card::remove`]; transports compare it to notice a removal
    /// that was followed by an insertion before they looked.
    pub fn presence_epoch(&self) -> u64 {
        self.presence_epoch
    }

    /// Incremented by every power cycle (reset, removal, insertion): a modem that drives the
    /// SIM knows its channels are gone then.
    pub fn power_epoch(&self) -> u64 {
        self.power_epoch
    }

    /// Drops all channel state (like a power cycle). Object content and stats are kept.
    pub fn power_off(&mut self) {
        self.power_epoch += 1;
        // Room for every addressable channel, so the limit can change while the card runs.
        self.channels = vec![None; HIGHEST_CHANNEL as usize + 1];
        self.channels[0] = Some(Channel::default());
    }

    /// The highest logical channel number MANAGE CHANNEL may open: [`CardOptions::max_channels`]
    /// if set, else the profile's `max_channels` (at most 19). Lowering it closes nothing;
    /// channels above it stay usable until closed.
    pub fn max_channels(&self) -> u8 {
        self.options
            .max_channels
            .unwrap_or(self.profile.max_channels)
            .min(HIGHEST_CHANNEL)
    }

    /// Warm reset: same effect as [`Card::power_off`].
    pub fn reset(&mut self) {
        self.power_off();
    }

    /// The ATR.
    pub fn atr(&self) -> Vec<u8> {
        ATR.to_vec()
    }

    /// APDU counters since the card was created or [`Card::reset_stats`] was called, and
    /// the open-channel counts.
    pub fn stats(&self) -> CardStats {
        CardStats {
            open_channel_count: self.open_channel_count(),
            ..self.stats.clone()
        }
    }

    /// Clears the APDU counters; the open-channel maximum restarts from the channels open now.
    pub fn reset_stats(&mut self) {
        self.stats = CardStats {
            max_open_channels: self.open_channel_count(),
            ..CardStats::default()
        };
    }

    /// Logical channels open now, the basic channel not counted.
    fn open_channel_count(&self) -> u64 {
        self.channels.iter().skip(1).flatten().count() as u64
    }

    /// Numbers of the currently open logical channels (always includes 0).
    pub fn open_channels(&self) -> Vec<u8> {
        self.channels
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| i as u8)
            .collect()
    }

    /// The state of open channel `ch`.
    fn chan(&mut self, ch: usize) -> &mut Channel {
        // Callers check that the channel is open; fall back to channel 0 defensively.
        if !matches!(self.channels.get(ch), Some(Some(_))) {
            return self.channels[0].get_or_insert_with(Channel::default);
        }
        self.channels[ch].get_or_insert_with(Channel::default)
    }

    fn aid(&self) -> &[u8] {
        self.options.aid.as_deref().unwrap_or(&self.profile.aid)
    }

    /// Processes one command APDU and returns response data ‖ SW1 SW2.
    pub fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        self.begin_apdu(command);
        self.process(command)
    }

    /// The part of [`Card::transmit`] before the command is processed: the per-APDU
    /// latency and the counters. A wrapper that may not process a command (fault
    /// injection) still calls this for every command.
    pub(crate) fn begin_apdu(&mut self, command: &[u8]) {
        if !self.options.latency_per_apdu.is_zero() {
            std::thread::sleep(self.options.latency_per_apdu);
        }
        self.stats.total += 1;
        if let Some(&ins) = command.get(1) {
            *self.stats.by_ins.entry(ins).or_insert(0) += 1;
        }
    }
}
