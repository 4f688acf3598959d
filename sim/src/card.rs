//! The card model: logical channels, the IoT SAFE applet and ISO transport behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::sec1::ToSec1Point;

use crate::hash::{self, HashAlg, Hasher};
use crate::profile::*;
use crate::tlv::{self, Tlv};

mod derive;
mod remote;
mod store;

pub use derive::{KD_HKDF, KD_TLS12_PRF};

use remote::RemoteSession;
use store::{Selected, StoreState};

/// Status words used by the simulator.
pub mod sw {
    /// Success.
    pub const OK: u16 = 0x9000;
    /// More data available (object list paging).
    pub const MORE_DATA: u16 = 0x6300;
    /// Success, and a remote management session has completed since (G4).
    pub const REMOTE_COMPLETED: u16 = 0x63CF;
    /// Referenced object is being updated by a remote management session (G4).
    pub const REMOTE_UPDATING: u16 = 0x6984;
    /// Wrong length (Lc/Le inconsistent, data where none is allowed).
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Logical channel not supported / not open.
    pub const CHANNEL_NOT_SUPPORTED: u16 = 0x6881;
    /// Conditions of use not satisfied.
    pub const CONDITIONS: u16 = 0x6985;
    /// Maximum capacity reached (too many sessions / objects), or: the object of a
    /// multi-APDU operation was changed underneath it (remote session, STORE DATA).
    pub const CAPACITY: u16 = 0x6989;
    /// Incorrect data (malformed TLV, missing tag, bad value).
    pub const WRONG_DATA: u16 = 0x6A80;
    /// Function not supported (no free logical channel, channel already open).
    pub const FUNC_NOT_SUPPORTED: u16 = 0x6A81;
    /// Referenced object / AID not found.
    pub const NOT_FOUND: u16 = 0x6A82;
    /// Not enough memory (file slot or store size).
    pub const NO_MEMORY: u16 = 0x6A84;
    /// Incorrect P1/P2.
    pub const WRONG_P1P2: u16 = 0x6A86;
    /// Referenced data not found (COMPUTE PRF / HKDF: no such secret key).
    pub const REF_NOT_FOUND: u16 = 0x6A88;
    /// Instruction not supported (or applet not selected on the channel).
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// VERIFY SIGNATURE: signature does not match.
    pub const SIGNATURE_MISMATCH: u16 = 0x6D01;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    /// Unknown error (internal failure, e.g. RNG).
    pub const UNKNOWN: u16 = 0x6F00;
}

/// How the `33` signature TLV length is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureLengthStyle {
    /// `33 40 r||s`.
    #[default]
    OneByte,
    /// `33 00 40 r||s`.
    TwoByte,
}

/// Container style of the GET DATA object list (reference §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectListStyle {
    /// `C1 L <one private key>` … `C2 …` `C4 …` `C3 …` (one wrapper per object).
    #[default]
    PerObject,
    /// `C1 L <all private keys>` `C2 …` `C3 …` `C4 …` (one wrapper per class).
    PerClass,
    /// Info structures concatenated without wrappers.
    NoWrapper,
}

/// Tags of the crypto-function and key-agreement fields in GET DATA application info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppInfoTags {
    /// `90` / `93` (what Orange's library parses).
    #[default]
    Orange,
    /// `61` / `6F` (what the QT-tool trace shows).
    QtApplet,
}

macro_rules! impl_from_str {
    ($t:ty, $( $s:literal => $v:expr ),+ ) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $( $s => Ok($v), )+
                    _ => Err(format!("unknown value {s:?} (expected one of: {})",
                        [$( $s ),+].join(", "))),
                }
            }
        }
    };
}
impl_from_str!(SignatureLengthStyle, "one" => SignatureLengthStyle::OneByte, "two" => SignatureLengthStyle::TwoByte);
impl_from_str!(ObjectListStyle, "per-object" => ObjectListStyle::PerObject, "per-class" => ObjectListStyle::PerClass, "none" => ObjectListStyle::NoWrapper);
impl_from_str!(AppInfoTags, "orange" => AppInfoTags::Orange, "qt" => AppInfoTags::QtApplet);

/// Behaviour switches of the simulated card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardOptions {
    /// Answer every response that has data with `61xx`, served by GET RESPONSE.
    pub t0_style: bool,
    /// `33 40` or `33 00 40`.
    pub signature_length_style: SignatureLengthStyle,
    /// Object-list wrapper style.
    pub object_list_style: ObjectListStyle,
    /// `90/93` or `61/6F` in application info.
    pub app_info_tags: AppInfoTags,
    /// Bytes per object-list page; longer lists answer `6300` and continue with P2=`01`.
    pub object_list_page_size: usize,
    /// Sleep at the start of every `transmit`.
    pub latency_per_apdu: Duration,
    /// Extra sleep for every signature computed.
    pub latency_per_signature: Duration,
    /// Overrides the profile's applet AID.
    pub aid: Option<Vec<u8>>,
}

impl Default for CardOptions {
    fn default() -> Self {
        CardOptions {
            t0_style: false,
            signature_length_style: SignatureLengthStyle::OneByte,
            object_list_style: ObjectListStyle::PerObject,
            app_info_tags: AppInfoTags::Orange,
            object_list_page_size: 255,
            latency_per_apdu: Duration::ZERO,
            latency_per_signature: Duration::ZERO,
            aid: None,
        }
    }
}

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
}

/// Sign/verify session mode (tag `A1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    FullText,
    LastBlock,
    PadAndSign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SessionKind {
    Sign,
    Verify,
    PutKey,
}

impl SessionKind {
    /// The class of the object a session of this kind works on.
    fn class(self) -> ObjectClass {
        match self {
            SessionKind::Sign => ObjectClass::PrivateKey,
            SessionKind::Verify | SessionKind::PutKey => ObjectClass::PublicKey,
        }
    }
}

#[derive(Debug, Clone)]
enum Session {
    /// Sign or verify.
    Crypto {
        key_id: Vec<u8>,
        mode: Mode,
        hash: HashAlg,
        hasher: Box<Hasher>,
    },
    /// PUT PUBLIC KEY.
    PutKey { key_id: Vec<u8>, buf: Vec<u8> },
}

impl Session {
    fn key_id(&self) -> &[u8] {
        match self {
            Session::Crypto { key_id, .. } | Session::PutKey { key_id, .. } => key_id,
        }
    }
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

/// A parsed short command APDU.
#[derive(Debug, Clone, Copy)]
struct Apdu<'a> {
    ins: u8,
    p1: u8,
    p2: u8,
    data: &'a [u8],
    has_lc: bool,
    /// Le byte as sent (`Some(0)` means 256).
    le: Option<u8>,
}

impl<'a> Apdu<'a> {
    fn parse(b: &'a [u8]) -> Option<Apdu<'a>> {
        if b.len() < 4 {
            return None;
        }
        let (ins, p1, p2) = (b[1], b[2], b[3]);
        let mk = |data, has_lc, le| Apdu {
            ins,
            p1,
            p2,
            data,
            has_lc,
            le,
        };
        match b.len() {
            4 => Some(mk(&[][..], false, None)),
            5 => Some(mk(&[][..], false, Some(b[4]))),
            n => {
                let lc = b[4] as usize;
                if lc == 0 {
                    None // extended length is not supported
                } else if n == 5 + lc {
                    Some(mk(&b[5..], true, None))
                } else if n == 6 + lc {
                    Some(mk(&b[5..5 + lc], true, Some(b[n - 1])))
                } else {
                    None
                }
            }
        }
    }

    /// Le as a byte count (`00` ⇒ 256).
    fn le_len(&self) -> Option<usize> {
        self.le.map(|l| if l == 0 { 256 } else { l as usize })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeRule {
    /// A non-zero Le smaller than the data ⇒ `6Cxx`.
    Exact,
    /// Le was already applied or must be ignored.
    Free,
}

struct Reply {
    data: Vec<u8>,
    sw: u16,
    le_rule: LeRule,
}

impl Reply {
    fn ok() -> Reply {
        Reply {
            data: Vec::new(),
            sw: sw::OK,
            le_rule: LeRule::Free,
        }
    }
    fn data(data: Vec<u8>) -> Reply {
        Reply {
            data,
            sw: sw::OK,
            le_rule: LeRule::Exact,
        }
    }
    fn free(data: Vec<u8>) -> Reply {
        Reply {
            data,
            sw: sw::OK,
            le_rule: LeRule::Free,
        }
    }
}

type CmdResult = Result<Reply, u16>;

/// Result of the last block of a sign/verify session.
struct Finished {
    key_id: Vec<u8>,
    digest: Vec<u8>,
    signature: Option<Vec<u8>>,
}

fn sw_bytes(sw: u16) -> [u8; 2] {
    sw.to_be_bytes()
}

/// Decodes a CLA into `(channel, proprietary class)`; `None` for unsupported classes
/// (secure messaging, command chaining, RFU).
fn decode_cla(cla: u8) -> Option<(usize, bool)> {
    match cla {
        0x00..=0x03 => Some(((cla & 0x03) as usize, false)),
        0x80..=0x83 => Some(((cla & 0x03) as usize, true)),
        0x40..=0x4F => Some((4 + (cla & 0x0F) as usize, false)),
        0xC0..=0xCF => Some((4 + (cla & 0x0F) as usize, true)),
        _ => None,
    }
}

/// The CLA byte for a channel (0..=19) in the inter-industry (`proprietary = false`) or
/// proprietary class. Returns `None` for channels above 19.
pub fn cla_for_channel(channel: u8, proprietary: bool) -> Option<u8> {
    let base = match channel {
        0..=3 => channel,
        4..=19 => 0x40 | (channel - 4),
        _ => return None,
    };
    Some(if proprietary { base | 0x80 } else { base })
}

/// The answer-to-reset: a UICC-style ATR offering T=0 and T=1.
pub const ATR: [u8; 23] = {
    let mut a = [
        0x3B, 0x9F, 0x96, 0x80, 0x81, 0x1F, 0xC7, // TS T0 TA1 TD1 TD2 TD3 TA4
        0x80, 0x31, 0xE0, 0x73, 0xFE, 0x21, 0x1B, 0x63, 0x3A, 0x20, 0x4E, 0x83, 0x00, 0x90,
        0x00, // 15 historical bytes
        0x00, // TCK
    ];
    let mut tck = 0u8;
    let mut i = 1;
    while i < 22 {
        tck ^= a[i];
        i += 1;
    }
    a[22] = tck;
    a
};

/// The simulated card.
#[derive(Debug)]
pub struct Card {
    profile: Profile,
    options: CardOptions,
    channels: Vec<Option<Channel>>,
    stats: CardStats,
    present: bool,
    presence_epoch: u64,
    /// Fault injection (see `faults.rs`); nothing armed by default.
    pub(crate) faults: crate::faults::Faults,
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
            faults: Default::default(),
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

    /// Drops all channel state (like a power cycle). Object content and stats are kept.
    pub fn power_off(&mut self) {
        let n = self.profile.max_channels as usize + 1;
        self.channels = vec![None; n];
        self.channels[0] = Some(Channel::default());
    }

    /// Warm reset: same effect as [`Card::power_off`].
    pub fn reset(&mut self) {
        self.power_off();
    }

    /// The ATR.
    pub fn atr(&self) -> Vec<u8> {
        ATR.to_vec()
    }

    /// APDU counters since the card was created or [`Card::reset_stats`] was called.
    pub fn stats(&self) -> CardStats {
        self.stats.clone()
    }

    /// Clears the APDU counters.
    pub fn reset_stats(&mut self) {
        self.stats = CardStats::default();
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

    fn aid(&self) -> &[u8] {
        self.options.aid.as_deref().unwrap_or(&self.profile.aid)
    }

    /// Processes one command APDU and returns response data ‖ SW1 SW2.
    pub fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        if !self.options.latency_per_apdu.is_zero() {
            std::thread::sleep(self.options.latency_per_apdu);
        }
        self.stats.total += 1;
        if let Some(&ins) = command.get(1) {
            *self.stats.by_ins.entry(ins).or_insert(0) += 1;
        }
        // Fault injection (faults.rs): plain `process` unless a fault is armed.
        crate::faults::transmit(self, command)
    }

    pub(crate) fn process(&mut self, command: &[u8]) -> Vec<u8> {
        if command.len() < 4 {
            return sw_bytes(sw::WRONG_LENGTH).to_vec();
        }
        let Some((ch, proprietary)) = decode_cla(command[0]) else {
            return sw_bytes(sw::CLA_NOT_SUPPORTED).to_vec();
        };
        if !matches!(self.channels.get(ch), Some(Some(_))) {
            return sw_bytes(sw::CHANNEL_NOT_SUPPORTED).to_vec();
        }
        let Some(apdu) = Apdu::parse(command) else {
            if let Some(Some(c)) = self.channels.get_mut(ch) {
                c.pending = None;
                c.list_cursor = None;
                c.store = None;
            }
            return sw_bytes(sw::WRONG_LENGTH).to_vec();
        };
        if apdu.ins == 0xC0 {
            return self.get_response(ch, &apdu);
        }
        let saved_cursor = {
            let c = self.chan(ch);
            c.pending = None;
            let cursor = c.list_cursor.clone();
            if !(apdu.ins == 0xCB && apdu.p1 == 0x01) {
                c.list_cursor = None;
            }
            if apdu.ins != 0xE2 {
                c.store = None;
            }
            cursor
        };
        let applet_cmd = !matches!((apdu.ins, proprietary), (0x70 | 0xA4, false));
        let result = self.dispatch(ch, proprietary, &apdu);
        let reply = match result {
            Ok(r) => r,
            Err(s) => return sw_bytes(s).to_vec(),
        };
        self.finish_reply(ch, &apdu, reply, saved_cursor, applet_cmd)
    }

    /// `63CF` instead of `9000` for the first successful applet command on a channel after
    /// a remote management session ended (consumes the channel's flag).
    fn remote_sw(&mut self, ch: usize, applet_cmd: bool, sw: u16) -> u16 {
        if applet_cmd && sw == sw::OK {
            let c = self.chan(ch);
            if std::mem::take(&mut c.remote_completed) {
                return sw::REMOTE_COMPLETED;
            }
        }
        sw
    }

    fn chan(&mut self, ch: usize) -> &mut Channel {
        // Callers check that the channel is open; fall back to channel 0 defensively.
        if !matches!(self.channels.get(ch), Some(Some(_))) {
            return self.channels[0].get_or_insert_with(Channel::default);
        }
        self.channels[ch].get_or_insert_with(Channel::default)
    }

    fn finish_reply(
        &mut self,
        ch: usize,
        apdu: &Apdu<'_>,
        reply: Reply,
        saved_cursor: Option<ListCursor>,
        applet_cmd: bool,
    ) -> Vec<u8> {
        let Reply { data, sw, le_rule } = reply;
        if data.is_empty() {
            return sw_bytes(self.remote_sw(ch, applet_cmd, sw)).to_vec();
        }
        if self.options.t0_style && apdu.ins != 0x70 {
            let sw = self.remote_sw(ch, applet_cmd, sw);
            let n = data.len().min(256);
            self.chan(ch).pending = Some(Pending {
                data,
                offset: 0,
                final_sw: sw,
            });
            return vec![0x61, n as u8];
        }
        if le_rule == LeRule::Exact
            && let Some(le) = apdu.le
            && le != 0
            && (le as usize) < data.len()
            && data.len() <= 256
        {
            // Keep nothing: undo object-list paging progress.
            self.chan(ch).list_cursor = saved_cursor;
            return vec![0x6C, data.len() as u8];
        }
        let sw = self.remote_sw(ch, applet_cmd, sw);
        if data.len() > 256 {
            let rest = data.len() - 256;
            let mut out = data[..256].to_vec();
            self.chan(ch).pending = Some(Pending {
                data,
                offset: 256,
                final_sw: sw,
            });
            out.extend_from_slice(&[0x61, rest.min(256) as u8]);
            return out;
        }
        let mut out = data;
        out.extend_from_slice(&sw_bytes(sw));
        out
    }

    fn get_response(&mut self, ch: usize, apdu: &Apdu<'_>) -> Vec<u8> {
        let c = self.chan(ch);
        if apdu.has_lc {
            c.pending = None;
            return sw_bytes(sw::WRONG_LENGTH).to_vec();
        }
        if apdu.p1 != 0 || apdu.p2 != 0 {
            return sw_bytes(sw::WRONG_P1P2).to_vec();
        }
        let Some(mut p) = c.pending.take() else {
            return sw_bytes(sw::CONDITIONS).to_vec();
        };
        let want = apdu.le_len().unwrap_or(256);
        let remaining = p.data.len() - p.offset;
        let n = want.min(remaining);
        let mut out = p.data[p.offset..p.offset + n].to_vec();
        p.offset += n;
        let left = p.data.len() - p.offset;
        if left > 0 {
            out.extend_from_slice(&[0x61, left.min(256) as u8]);
            c.pending = Some(p);
        } else {
            out.extend_from_slice(&sw_bytes(p.final_sw));
        }
        out
    }

    fn dispatch(&mut self, ch: usize, proprietary: bool, a: &Apdu<'_>) -> CmdResult {
        match (a.ins, proprietary) {
            (0x70, false) => return self.manage_channel(ch, a),
            (0xA4, false) => return self.select(ch, a),
            _ => {}
        }
        if !self.chan(ch).applet_selected {
            return Err(sw::INS_NOT_SUPPORTED);
        }
        match a.ins {
            0xCB => self.get_data(ch, a),
            0xB0 => self.read_file(a),
            0xCD => self.read_public_key(a),
            0x84 => self.get_random(a),
            0x2A => self.session_init(ch, a, SessionKind::Sign),
            0x2C => self.session_init(ch, a, SessionKind::Verify),
            0x24 => self.session_init(ch, a, SessionKind::PutKey),
            0x2B => self.sign_update(ch, a),
            0x2D => self.verify_update(ch, a),
            0xD8 => self.put_key_update(ch, a),
            0xB9 => self.generate_key_pair(a),
            0x46 => self.compute_dh(a),
            0x48 => self.compute_prf(a),
            0x4A => self.compute_hkdf(a),
            0xE2 => self.store_data(ch, a),
            _ => Err(sw::INS_NOT_SUPPORTED),
        }
    }

    // ---------------------------------------------------------------- ISO commands

    fn manage_channel(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        if a.has_lc {
            return Err(sw::WRONG_LENGTH);
        }
        let max = self.profile.max_channels as usize;
        match a.p1 {
            0x00 => {
                let target = if a.p2 == 0 {
                    match (1..=max).find(|&i| self.channels[i].is_none()) {
                        Some(i) => i,
                        None => return Err(sw::FUNC_NOT_SUPPORTED),
                    }
                } else {
                    let n = a.p2 as usize;
                    if n > max {
                        return Err(sw::WRONG_P1P2);
                    }
                    if self.channels[n].is_some() {
                        return Err(sw::FUNC_NOT_SUPPORTED);
                    }
                    n
                };
                // Opened from a non-basic channel: the applet selected there is selected
                // on the new channel too (fresh applet state), as in ISO 7816-4.
                let inherit = ch != 0 && self.chan(ch).applet_selected;
                self.channels[target] = Some(Channel {
                    applet_selected: inherit,
                    ..Channel::default()
                });
                if a.p2 == 0 {
                    Ok(Reply::free(vec![target as u8]))
                } else {
                    Ok(Reply::ok())
                }
            }
            0x80 => {
                let n = a.p2 as usize;
                if n == 0 || n > max || self.channels[n].is_none() {
                    return Err(sw::WRONG_P1P2);
                }
                self.channels[n] = None;
                Ok(Reply::ok())
            }
            _ => Err(sw::WRONG_P1P2),
        }
    }

    fn select(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0x04 || !matches!(a.p2, 0x00 | 0x04 | 0x0C) {
            return Err(sw::WRONG_P1P2);
        }
        if !a.has_lc {
            return Err(sw::WRONG_LENGTH);
        }
        if a.data != self.aid() {
            return Err(sw::NOT_FOUND);
        }
        let c = self.chan(ch);
        c.reset_applet_state();
        c.applet_selected = true;
        Ok(Reply::ok())
    }

    // ---------------------------------------------------------------- GET DATA

    fn get_data(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        match a.p1 {
            0x00 => {
                if a.p2 != 0 {
                    return Err(sw::WRONG_P1P2);
                }
                if a.has_lc {
                    return Err(sw::WRONG_LENGTH);
                }
                Ok(Reply::data(self.app_info()))
            }
            0x01 => {
                if a.has_lc {
                    return Err(sw::WRONG_LENGTH);
                }
                let page = self.options.object_list_page_size.max(1);
                let c_list = match a.p2 {
                    0x00 => ListCursor {
                        data: self.object_list(),
                        offset: 0,
                    },
                    0x01 => match self.chan(ch).list_cursor.take() {
                        Some(c) => c,
                        None => return Err(sw::CONDITIONS),
                    },
                    _ => return Err(sw::WRONG_P1P2),
                };
                let end = (c_list.offset + page).min(c_list.data.len());
                let chunk = c_list.data[c_list.offset..end].to_vec();
                let more = end < c_list.data.len();
                let c = self.chan(ch);
                if more {
                    c.list_cursor = Some(ListCursor {
                        data: c_list.data,
                        offset: end,
                    });
                } else {
                    c.list_cursor = None;
                }
                Ok(Reply {
                    data: chunk,
                    sw: if more { sw::MORE_DATA } else { sw::OK },
                    le_rule: LeRule::Exact,
                })
            }
            0xC1..=0xC4 => {
                if a.p2 != 0 {
                    return Err(sw::WRONG_P1P2);
                }
                let tlvs = parse_tlvs(a.data)?;
                let info = match a.p1 {
                    0xC1 => {
                        let k = self.find_private(&tlvs)?;
                        private_key_info(k)
                    }
                    0xC2 => {
                        let k = self.find_public(&tlvs)?;
                        public_key_info(k)
                    }
                    0xC3 => {
                        let f = self.find_file(&tlvs)?;
                        self.listed_file_info(f)
                    }
                    _ => {
                        let k = self.find_secret(&tlvs)?;
                        secret_key_info(k)
                    }
                };
                Ok(Reply::data(info))
            }
            _ => Err(sw::WRONG_P1P2),
        }
    }

    fn app_info(&self) -> Vec<u8> {
        let ai = &self.profile.app_info;
        let (cf_tag, ka_tag) = match self.options.app_info_tags {
            AppInfoTags::Orange => (0x90, 0x93),
            AppInfoTags::QtApplet => (0x61, 0x6F),
        };
        let mut v = Vec::with_capacity(68);
        tlv::push(&mut v, 0x10, &[ai.version]);
        tlv::push(&mut v, 0x11, &self.profile.applet_id);
        tlv::push(&mut v, 0xB1, &[ai.max_files]);
        tlv::push(&mut v, 0xB2, &[ai.max_private_keys]);
        tlv::push(&mut v, 0xB3, &[ai.max_public_keys]);
        tlv::push(&mut v, 0xB4, &[ai.max_secret_keys]);
        tlv::push(&mut v, cf_tag, &[ai.crypto_functions]);
        tlv::push(&mut v, 0x91, &ai.hash_algos.to_be_bytes());
        tlv::push(&mut v, 0x92, &[ai.signature_algos]);
        tlv::push(&mut v, ka_tag, &[ai.key_agreement_algos]);
        tlv::push(&mut v, 0x94, &[ai.key_derivation_algos]);
        tlv::push(&mut v, 0xB7, &[self.profile.max_sessions]);
        v
    }

    /// The full object list in the configured style (before paging).
    fn object_list(&self) -> Vec<u8> {
        let p = &self.profile;
        let privs: Vec<Vec<u8>> = p.private_keys.iter().map(private_key_info).collect();
        let pubs: Vec<Vec<u8>> = p.public_keys.iter().map(public_key_info).collect();
        let files: Vec<Vec<u8>> = p.files.iter().map(|f| self.listed_file_info(f)).collect();
        let secrets: Vec<Vec<u8>> = p.secret_keys.iter().map(secret_key_info).collect();
        let mut out = Vec::new();
        match self.options.object_list_style {
            ObjectListStyle::PerObject => {
                for (tag, items) in [
                    (0xC1, &privs),
                    (0xC2, &pubs),
                    (0xC4, &secrets),
                    (0xC3, &files),
                ] {
                    for i in items {
                        tlv::push(&mut out, tag, i);
                    }
                }
            }
            ObjectListStyle::PerClass => {
                for (tag, items) in [
                    (0xC1, &privs),
                    (0xC2, &pubs),
                    (0xC3, &files),
                    (0xC4, &secrets),
                ] {
                    if !items.is_empty() {
                        tlv::push(&mut out, tag, &items.concat());
                    }
                }
            }
            ObjectListStyle::NoWrapper => {
                for items in [&privs, &pubs, &files, &secrets] {
                    for i in items {
                        out.extend_from_slice(i);
                    }
                }
            }
        }
        out
    }

    // ---------------------------------------------------------------- object lookup

    fn find_private(&self, tlvs: &[Tlv<'_>]) -> Result<&PrivateKey, u16> {
        let r = obj_ref(tlvs, 0x84, 0x74)?;
        self.remote_check(ObjectClass::PrivateKey, &r)?;
        self.profile
            .private_keys
            .iter()
            .find(|k| r.matches(&k.id, &k.label))
            .ok_or(sw::NOT_FOUND)
    }

    fn find_public(&self, tlvs: &[Tlv<'_>]) -> Result<&PublicKey, u16> {
        let r = obj_ref(tlvs, 0x85, 0x75)?;
        self.remote_check(ObjectClass::PublicKey, &r)?;
        self.profile
            .public_keys
            .iter()
            .find(|k| r.matches(&k.id, &k.label))
            .ok_or(sw::NOT_FOUND)
    }

    fn find_file(&self, tlvs: &[Tlv<'_>]) -> Result<&File, u16> {
        let r = obj_ref(tlvs, 0x83, 0x73)?;
        self.remote_check(ObjectClass::File, &r)?;
        self.profile
            .files
            .iter()
            .find(|k| r.matches(&k.id, &k.label))
            .ok_or(sw::NOT_FOUND)
    }

    fn find_secret(&self, tlvs: &[Tlv<'_>]) -> Result<&SecretKey, u16> {
        let r = obj_ref(tlvs, 0x86, 0x76)?;
        self.remote_check(ObjectClass::SecretKey, &r)?;
        self.profile
            .secret_keys
            .iter()
            .find(|k| r.matches(&k.id, &k.label))
            .ok_or(sw::NOT_FOUND)
    }

    // ---------------------------------------------------------------- READ FILE etc.

    fn read_file(&mut self, a: &Apdu<'_>) -> CmdResult {
        let tlvs = parse_tlvs(a.data)?;
        let f = self.find_file(&tlvs)?;
        if f.state != ObjectState::Activated || f.access & ACCESS_READ == 0 {
            return Err(sw::CONDITIONS);
        }
        let offset = ((a.p1 as usize) << 8) | a.p2 as usize;
        if offset > f.content.len() {
            return Err(sw::WRONG_P1P2);
        }
        let remaining = f.content.len() - offset;
        let n = remaining.min(256).min(a.le_len().unwrap_or(256));
        Ok(Reply::free(f.content[offset..offset + n].to_vec()))
    }

    fn read_public_key(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let tlvs = parse_tlvs(a.data)?;
        let k = self.find_public(&tlvs)?;
        if k.state != ObjectState::Activated || k.access & ACCESS_READ == 0 {
            return Err(sw::CONDITIONS);
        }
        let point = k.point.as_deref().ok_or(sw::CONDITIONS)?;
        Ok(Reply::data(public_key_format(point)))
    }

    fn get_random(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if a.has_lc {
            return Err(sw::WRONG_LENGTH);
        }
        let n = a.le_len().ok_or(sw::WRONG_LENGTH)?;
        let mut buf = vec![0u8; n];
        getrandom::fill(&mut buf).map_err(|_| sw::UNKNOWN)?;
        Ok(Reply::free(buf))
    }

    // ---------------------------------------------------------------- sessions

    fn open_session_count(&self) -> usize {
        self.channels
            .iter()
            .flatten()
            .map(|c| c.sessions.len())
            .sum()
    }

    fn session_init(&mut self, ch: usize, a: &Apdu<'_>, kind: SessionKind) -> CmdResult {
        if a.p2 > 0x0F {
            return Err(sw::WRONG_P1P2);
        }
        match a.p1 {
            0x01 => {
                let c = self.chan(ch);
                c.sessions.remove(&(kind, a.p2));
                c.interrupted.remove(&(kind, a.p2));
                return Ok(Reply::ok());
            }
            0x00 => {}
            _ => return Err(sw::WRONG_P1P2),
        }
        if !self.chan(ch).sessions.is_empty() {
            self.stats.interleaved += 1;
            *self
                .stats
                .interleaved_by_channel
                .entry(ch as u8)
                .or_insert(0) += 1;
        }
        let tlvs = parse_tlvs(a.data)?;
        let session = match kind {
            SessionKind::PutKey => {
                let k = self.find_public(&tlvs)?;
                if k.access & ACCESS_UPDATE == 0 {
                    return Err(sw::CONDITIONS);
                }
                Session::PutKey {
                    key_id: k.id.clone(),
                    buf: Vec::new(),
                }
            }
            SessionKind::Sign | SessionKind::Verify => {
                let mode = match tlv::single(&tlvs, 0xA1).map_err(|_| sw::WRONG_DATA)? {
                    Some([1]) => Mode::FullText,
                    Some([2]) => Mode::LastBlock,
                    Some([3]) => Mode::PadAndSign,
                    _ => return Err(sw::WRONG_DATA),
                };
                let hash = match tlv::single(&tlvs, 0x91).map_err(|_| sw::WRONG_DATA)? {
                    Some([b]) => HashAlg::from_mask(*b as u16),
                    Some([h, l]) => HashAlg::from_mask(u16::from_be_bytes([*h, *l])),
                    _ => None,
                }
                .ok_or(sw::WRONG_DATA)?;
                match tlv::single(&tlvs, 0x92).map_err(|_| sw::WRONG_DATA)? {
                    Some([SIG_ECDSA]) => {}
                    _ => return Err(sw::WRONG_DATA),
                }
                let (id, state, cf, sig, hashes, filled) = if kind == SessionKind::Sign {
                    let k = self.find_private(&tlvs)?;
                    (
                        k.id.clone(),
                        k.state,
                        k.crypto_functions,
                        k.signature_algos,
                        k.hash_algos,
                        k.private.is_some(),
                    )
                } else {
                    let k = self.find_public(&tlvs)?;
                    (
                        k.id.clone(),
                        k.state,
                        k.crypto_functions,
                        k.signature_algos,
                        k.hash_algos,
                        k.point.is_some(),
                    )
                };
                if state != ObjectState::Activated
                    || !filled
                    || cf & CF_SIGNATURE == 0
                    || sig & SIG_ECDSA == 0
                    || hashes & hash.mask() == 0
                {
                    return Err(sw::CONDITIONS);
                }
                Session::Crypto {
                    key_id: id,
                    mode,
                    hash,
                    hasher: Box::new(Hasher::new(hash)),
                }
            }
        };
        let replacing = self.chan(ch).sessions.contains_key(&(kind, a.p2));
        if !replacing && self.open_session_count() >= self.profile.max_sessions as usize {
            return Err(sw::CAPACITY);
        }
        let c = self.chan(ch);
        c.sessions.insert((kind, a.p2), session);
        c.interrupted.remove(&(kind, a.p2));
        Ok(Reply::ok())
    }

    /// Common part of COMPUTE / VERIFY SIGNATURE update: feeds data, returns the final hash
    /// on the last block. `extra` tags (the `33` signature) are allowed on the last block.
    fn crypto_update(
        &mut self,
        ch: usize,
        a: &Apdu<'_>,
        kind: SessionKind,
    ) -> Result<Option<Finished>, u16> {
        let last = match a.p1 {
            0x80 => true,
            0x00 => false,
            _ => return Err(sw::WRONG_P1P2),
        };
        if a.p2 > 0x0F {
            return Err(sw::WRONG_P1P2);
        }
        let key = (kind, a.p2);
        let Some(Session::Crypto {
            key_id,
            mode,
            hash,
            hasher,
        }) = self.chan(ch).sessions.get(&key).cloned()
        else {
            return Err(sw::CONDITIONS);
        };
        self.session_guard(ch, key, &key_id)?;
        let tlvs = tlv::parse(a.data, &[0x33]).map_err(|_| sw::WRONG_DATA)?;
        let signature = if kind == SessionKind::Verify && last {
            Some(
                tlv::single(&tlvs, 0x33)
                    .map_err(|_| sw::WRONG_DATA)?
                    .ok_or(sw::WRONG_DATA)?
                    .to_vec(),
            )
        } else {
            None
        };
        let allowed: &[u8] = match mode {
            Mode::FullText => &[0x9B],
            Mode::LastBlock => &[0x9A, 0x9C, 0x9D],
            Mode::PadAndSign => &[0x9E],
        };
        if tlvs
            .iter()
            .any(|t| !(allowed.contains(&t.tag) || (t.tag == 0x33 && signature.is_some())))
        {
            return Err(sw::WRONG_DATA);
        }
        let digest = match mode {
            Mode::FullText => {
                if !tlvs.iter().any(|t| t.tag == 0x9B) {
                    return Err(sw::WRONG_DATA);
                }
                let mut h = *hasher;
                for t in tlvs.iter().filter(|t| t.tag == 0x9B) {
                    h.update(t.value);
                }
                if !last {
                    if let Some(Session::Crypto { hasher, .. }) =
                        self.chan(ch).sessions.get_mut(&key)
                    {
                        **hasher = h;
                    }
                    return Ok(None);
                }
                h.finish()
            }
            Mode::LastBlock => {
                if !last {
                    return Err(sw::WRONG_P1P2);
                }
                let block = need(&tlvs, 0x9A)?;
                let state = need(&tlvs, 0x9C)?;
                let count = match need(&tlvs, 0x9D)? {
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]) as u64,
                    _ => return Err(sw::WRONG_DATA),
                };
                hash::finish_from_midstate(hash, state, count, block).map_err(|_| sw::WRONG_DATA)?
            }
            Mode::PadAndSign => {
                if !last {
                    return Err(sw::WRONG_P1P2);
                }
                let h = need(&tlvs, 0x9E)?;
                if h.len() != hash.output_len() {
                    return Err(sw::WRONG_DATA);
                }
                h.to_vec()
            }
        };
        if let Some(s) = &signature
            && s.len() != 64
        {
            return Err(sw::WRONG_DATA);
        }
        self.chan(ch).sessions.remove(&key);
        Ok(Some(Finished {
            key_id,
            digest,
            signature,
        }))
    }

    fn sign_update(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        let Some(Finished { key_id, digest, .. }) = self.crypto_update(ch, a, SessionKind::Sign)?
        else {
            return Ok(Reply::ok());
        };
        let k = self.profile.private_key(&key_id).ok_or(sw::CONDITIONS)?;
        if k.state != ObjectState::Activated {
            return Err(sw::CONDITIONS);
        }
        let scalar = k.private.as_deref().ok_or(sw::CONDITIONS)?;
        let sk = SigningKey::from_slice(scalar).map_err(|_| sw::CONDITIONS)?;
        let sig: Signature = sk.sign_prehash(&digest).map_err(|_| sw::UNKNOWN)?;
        if !self.options.latency_per_signature.is_zero() {
            std::thread::sleep(self.options.latency_per_signature);
        }
        let rs = sig.to_bytes();
        let mut out = Vec::with_capacity(67);
        out.push(0x33);
        match self.options.signature_length_style {
            SignatureLengthStyle::OneByte => out.push(0x40),
            SignatureLengthStyle::TwoByte => out.extend_from_slice(&[0x00, 0x40]),
        }
        out.extend_from_slice(&rs);
        Ok(Reply::free(out))
    }

    fn verify_update(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        let Some(Finished {
            key_id,
            digest,
            signature,
        }) = self.crypto_update(ch, a, SessionKind::Verify)?
        else {
            return Ok(Reply::ok());
        };
        let signature = signature.ok_or(sw::WRONG_DATA)?;
        let k = self.profile.public_key(&key_id).ok_or(sw::CONDITIONS)?;
        let point = k.point.as_deref().ok_or(sw::CONDITIONS)?;
        let vk = VerifyingKey::from_sec1_bytes(point).map_err(|_| sw::CONDITIONS)?;
        let Ok(sig) = Signature::from_slice(&signature) else {
            return Err(sw::SIGNATURE_MISMATCH);
        };
        match vk.verify_prehash(&digest, &sig) {
            Ok(()) => Ok(Reply::ok()),
            Err(_) => Err(sw::SIGNATURE_MISMATCH),
        }
    }

    fn put_key_update(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        let last = match a.p1 {
            0x80 => true,
            0x00 => false,
            _ => return Err(sw::WRONG_P1P2),
        };
        if a.p2 > 0x0F {
            return Err(sw::WRONG_P1P2);
        }
        let key = (SessionKind::PutKey, a.p2);
        let key_id = match self.chan(ch).sessions.get(&key) {
            Some(s @ Session::PutKey { .. }) => s.key_id().to_vec(),
            _ => return Err(sw::CONDITIONS),
        };
        self.session_guard(ch, key, &key_id)?;
        let (key_id, data) = match self.chan(ch).sessions.get_mut(&key) {
            Some(Session::PutKey { key_id, buf }) => {
                buf.extend_from_slice(a.data);
                if !last {
                    return Ok(Reply::ok());
                }
                // The last block consumes the buffer, even if its content is invalid.
                (key_id.clone(), std::mem::take(buf))
            }
            _ => return Err(sw::CONDITIONS),
        };
        let point = parse_public_key_format(&data).ok_or(sw::WRONG_DATA)?;
        if point.len() != 65 || p256::PublicKey::from_sec1_bytes(&point).is_err() {
            return Err(sw::WRONG_DATA);
        }
        self.chan(ch).sessions.remove(&key);
        let k = self
            .profile
            .public_keys
            .iter_mut()
            .find(|k| k.id == key_id)
            .ok_or(sw::CONDITIONS)?;
        k.point = Some(point);
        k.state = ObjectState::Activated;
        let persistent = is_persistent_key_type(k.key_type);
        self.content_changed(persistent);
        Ok(Reply::ok())
    }

    /// Checks the object of an open session before an update: being updated by a remote
    /// session → `6984`; changed underneath the session → `6989` (the session is dropped).
    fn session_guard(
        &mut self,
        ch: usize,
        key: (SessionKind, u8),
        key_id: &[u8],
    ) -> Result<(), u16> {
        if self.remote_has(key.0.class(), key_id) {
            return Err(sw::REMOTE_UPDATING);
        }
        let c = self.chan(ch);
        if c.interrupted.remove(&key) {
            c.sessions.remove(&key);
            return Err(sw::CAPACITY);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- key generation, DH

    fn generate_key_pair(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let tlvs = parse_tlvs(a.data)?;
        let k = self.find_private(&tlvs)?;
        if k.crypto_functions & CF_KEY_GENERATION == 0
            || !matches!(
                k.key_type,
                KEY_TYPE_P256_PERSISTENT | KEY_TYPE_P256_VOLATILE
            )
        {
            return Err(sw::CONDITIONS);
        }
        let id = k.id.clone();
        let persistent = is_persistent_key_type(k.key_type);
        let pub_id = paired_public_id(&self.profile, &id);
        if self.remote_has(ObjectClass::PublicKey, &pub_id) {
            return Err(sw::REMOTE_UPDATING);
        }
        let sk = random_secret_key().ok_or(sw::UNKNOWN)?;
        let point = sk.public_key().to_sec1_point(false).as_bytes().to_vec();
        if let Some(k) = self.profile.private_keys.iter_mut().find(|k| k.id == id) {
            k.private = Some(sk.to_bytes().to_vec());
            k.state = ObjectState::Activated;
        }
        if let Some(p) = self.profile.public_keys.iter_mut().find(|k| k.id == pub_id) {
            p.point = Some(point.clone());
            p.state = ObjectState::Activated;
        }
        self.content_changed(persistent);
        let mut out = Vec::new();
        tlv::push(&mut out, 0x84, &id);
        tlv::push(&mut out, 0x85, &pub_id);
        out.extend_from_slice(&public_key_format(&point));
        Ok(Reply::data(out))
    }

    fn compute_dh(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let tlvs = parse_tlvs(a.data)?;
        let k = self.find_private(&tlvs)?;
        let p = self.find_public(&tlvs)?;
        if k.state != ObjectState::Activated
            || k.crypto_functions & CF_KEY_AGREEMENT == 0
            || k.key_agreement_algos & KA_ECKA == 0
            || p.state != ObjectState::Activated
        {
            return Err(sw::CONDITIONS);
        }
        let scalar = k.private.as_deref().ok_or(sw::CONDITIONS)?;
        let point = p.point.as_deref().ok_or(sw::CONDITIONS)?;
        let sk = p256::SecretKey::from_slice(scalar).map_err(|_| sw::CONDITIONS)?;
        let pk = p256::PublicKey::from_sec1_bytes(point).map_err(|_| sw::CONDITIONS)?;
        let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
        Ok(Reply::data(shared.raw_secret_bytes().to_vec()))
    }
}

/// Key types `13` / `23`: persistent (their changes are saved to the profile file).
fn is_persistent_key_type(t: u8) -> bool {
    matches!(t, 0x13 | 0x23)
}

/// The public key GENERATE KEY PAIR fills for a private key: the one with the same ID,
/// or the one named when the device created the pair with another ID.
fn paired_public_id(p: &Profile, id: &[u8]) -> Vec<u8> {
    p.device_object(ObjectClass::PrivateKey, id)
        .and_then(|d| d.public_id.clone())
        .filter(|pid| p.public_key(pid).is_some())
        .unwrap_or_else(|| id.to_vec())
}

fn random_secret_key() -> Option<p256::SecretKey> {
    for _ in 0..16 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).ok()?;
        if let Ok(k) = p256::SecretKey::from_slice(&b) {
            return Some(k);
        }
    }
    None
}

fn parse_tlvs(data: &[u8]) -> Result<Vec<Tlv<'_>>, u16> {
    tlv::parse(data, &[]).map_err(|_| sw::WRONG_DATA)
}

/// The TLVs of a command or STORE DATA value: only `allowed` tags, each at most once (else
/// `6A80`).
fn fields<'a>(data: &'a [u8], allowed: &[u8]) -> Result<Vec<Tlv<'a>>, u16> {
    let t = parse_tlvs(data)?;
    for (i, x) in t.iter().enumerate() {
        if !allowed.contains(&x.tag) || t[..i].iter().any(|y| y.tag == x.tag) {
            return Err(sw::WRONG_DATA);
        }
    }
    Ok(t)
}

/// The value of the first `tag` among `t`.
fn get<'a>(t: &[Tlv<'a>], tag: u8) -> Option<&'a [u8]> {
    t.iter().find(|x| x.tag == tag).map(|x| x.value)
}

fn need<'a>(tlvs: &[Tlv<'a>], tag: u8) -> Result<&'a [u8], u16> {
    tlv::single(tlvs, tag)
        .map_err(|_| sw::WRONG_DATA)?
        .ok_or(sw::WRONG_DATA)
}

enum ObjRef<'a> {
    Id(&'a [u8]),
    Label(&'a [u8]),
}

impl ObjRef<'_> {
    fn matches(&self, id: &[u8], label: &Option<Vec<u8>>) -> bool {
        match self {
            ObjRef::Id(x) => *x == id,
            ObjRef::Label(x) => label.as_deref() == Some(*x),
        }
    }
}

/// Exactly one of the ID tag or the label tag.
fn obj_ref<'a>(tlvs: &[Tlv<'a>], id_tag: u8, label_tag: u8) -> Result<ObjRef<'a>, u16> {
    let id = tlv::single(tlvs, id_tag).map_err(|_| sw::WRONG_DATA)?;
    let label = tlv::single(tlvs, label_tag).map_err(|_| sw::WRONG_DATA)?;
    match (id, label) {
        (Some(i), None) if !i.is_empty() => Ok(ObjRef::Id(i)),
        (None, Some(l)) if !l.is_empty() => Ok(ObjRef::Label(l)),
        _ => Err(sw::WRONG_DATA),
    }
}

/// `34 45 49 43 86 41 <point>`.
pub fn public_key_format(point: &[u8]) -> Vec<u8> {
    let mut p86 = Vec::new();
    tlv::push(&mut p86, 0x86, point);
    let mut p49 = Vec::new();
    tlv::push(&mut p49, 0x49, &p86);
    let mut out = Vec::new();
    tlv::push(&mut out, 0x34, &p49);
    out
}

/// Extracts the point from `34 L 49 L 86 L point` (also accepts `34 L 86 L point`).
fn parse_public_key_format(data: &[u8]) -> Option<Vec<u8>> {
    let outer = tlv::parse(data, &[]).ok()?;
    if outer.len() != 1 || outer[0].tag != 0x34 {
        return None;
    }
    let mut inner = tlv::parse(outer[0].value, &[]).ok()?;
    if inner.len() == 1 && inner[0].tag == 0x49 {
        inner = tlv::parse(inner[0].value, &[]).ok()?;
    }
    let p = tlv::single(&inner, 0x86).ok()??;
    Some(p.to_vec())
}

struct KeyAttrs<'a> {
    id: &'a [u8],
    label: &'a Option<Vec<u8>>,
    access: u8,
    state: ObjectState,
    key_type: u8,
    usage: u8,
    cf: u8,
    sig: u8,
    hash: u16,
    ka: u8,
}

fn key_info(label_tag: u8, id_tag: u8, k: KeyAttrs<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(l) = k.label {
        tlv::push(&mut v, label_tag, l);
    }
    tlv::push(&mut v, id_tag, k.id);
    tlv::push(&mut v, 0x60, &[k.access]);
    tlv::push(&mut v, 0x4A, &[k.state.byte()]);
    tlv::push(&mut v, 0x4B, &[k.key_type]);
    tlv::push(&mut v, 0x4E, &[k.usage]);
    tlv::push(&mut v, 0x61, &[k.cf]);
    tlv::push(&mut v, 0x92, &[k.sig]);
    tlv::push(&mut v, 0x91, &k.hash.to_be_bytes());
    tlv::push(&mut v, 0x6F, &[k.ka]);
    v
}

/// Private-key information structure (tags `74 84 60 4A 4B 4E 61 92 91 6F`).
pub fn private_key_info(k: &PrivateKey) -> Vec<u8> {
    key_info(
        0x74,
        0x84,
        KeyAttrs {
            id: &k.id,
            label: &k.label,
            access: k.access,
            state: k.state,
            key_type: k.key_type,
            usage: k.usage,
            cf: k.crypto_functions,
            sig: k.signature_algos,
            hash: k.hash_algos,
            ka: k.key_agreement_algos,
        },
    )
}

/// Public-key information structure (tags `75 85 60 4A 4B 4E 61 92 91 6F`).
pub fn public_key_info(k: &PublicKey) -> Vec<u8> {
    key_info(
        0x75,
        0x85,
        KeyAttrs {
            id: &k.id,
            label: &k.label,
            access: k.access,
            state: k.state,
            key_type: k.key_type,
            usage: k.usage,
            cf: k.crypto_functions,
            sig: k.signature_algos,
            hash: k.hash_algos,
            ka: k.key_agreement_algos,
        },
    )
}

/// File information structure (tags `73 83 60 4A 21 20`).
pub fn file_info(f: &File) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(l) = &f.label {
        tlv::push(&mut v, 0x73, l);
    }
    tlv::push(&mut v, 0x83, &f.id);
    tlv::push(&mut v, 0x60, &[f.access]);
    tlv::push(&mut v, 0x4A, &[f.state.byte()]);
    tlv::push(&mut v, 0x21, &[f.usage]);
    tlv::push(
        &mut v,
        0x20,
        &(f.content.len().min(0xFFFF) as u16).to_be_bytes(),
    );
    v
}

/// Secret-key information structure (tags `76 86 60 4A 4B 61 94`).
pub fn secret_key_info(k: &SecretKey) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(l) = &k.label {
        tlv::push(&mut v, 0x76, l);
    }
    tlv::push(&mut v, 0x86, &k.id);
    tlv::push(&mut v, 0x60, &[k.access]);
    tlv::push(&mut v, 0x4A, &[k.state.byte()]);
    tlv::push(&mut v, 0x4B, &[k.key_type]);
    tlv::push(&mut v, 0x61, &[k.crypto_functions]);
    tlv::push(&mut v, 0x94, &[k.key_derivation_algos]);
    v
}

/// A [`Card`] shareable between threads (`Arc<Mutex<Card>>`). Each call holds the lock for
/// one APDU, so latencies serialise like on a real card.
#[derive(Debug, Clone)]
pub struct SharedCard(Arc<Mutex<Card>>);

impl SharedCard {
    /// Wraps a card.
    pub fn new(card: Card) -> SharedCard {
        SharedCard(Arc::new(Mutex::new(card)))
    }

    /// Creates a card and wraps it.
    pub fn from_profile(profile: Profile, options: CardOptions) -> SharedCard {
        SharedCard::new(Card::new(profile, options))
    }

    /// Locks the card (poisoning is ignored).
    pub fn lock(&self) -> MutexGuard<'_, Card> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`Card::transmit`].
    pub fn transmit(&self, command: &[u8]) -> Vec<u8> {
        self.lock().transmit(command)
    }

    /// See [`Card::power_off`].
    pub fn power_off(&self) {
        self.lock().power_off()
    }

    /// See [`Card::reset`].
    pub fn reset(&self) {
        self.lock().reset()
    }

    /// See [`Card::atr`].
    pub fn atr(&self) -> Vec<u8> {
        self.lock().atr()
    }

    /// See [`Card::stats`].
    pub fn stats(&self) -> CardStats {
        self.lock().stats()
    }

    /// See [`Card::reset_stats`].
    pub fn reset_stats(&self) {
        self.lock().reset_stats()
    }

    /// See [`Card::open_channels`].
    pub fn open_channels(&self) -> Vec<u8> {
        self.lock().open_channels()
    }

    /// See [`Card::set_latency`].
    pub fn set_latency(&self, apdu: Option<Duration>, signature: Option<Duration>) {
        self.lock().set_latency(apdu, signature)
    }

    /// A copy of the options in force.
    pub fn options(&self) -> CardOptions {
        self.lock().options().clone()
    }

    /// See [`Card::remove`].
    pub fn remove(&self) {
        self.lock().remove()
    }

    /// See [`Card::insert`].
    pub fn insert(&self) {
        self.lock().insert()
    }

    /// See [`Card::is_present`].
    pub fn is_present(&self) -> bool {
        self.lock().is_present()
    }

    /// See [`Card::presence_epoch`].
    pub fn presence_epoch(&self) -> u64 {
        self.lock().presence_epoch()
    }

    /// A copy of the current profile.
    pub fn profile(&self) -> Profile {
        self.lock().profile().clone()
    }

    /// Runs `f` with the card locked.
    pub fn with<R>(&self, f: impl FnOnce(&mut Card) -> R) -> R {
        f(&mut self.lock())
    }

    /// See [`Card::set_provisioning`].
    pub fn set_provisioning(&self, on: bool) {
        self.lock().set_provisioning(on)
    }

    /// See [`Card::set_persist_path`].
    pub fn set_persist_path(&self, path: Option<PathBuf>) {
        self.lock().set_persist_path(path)
    }

    /// See [`Card::content_epoch`].
    pub fn content_epoch(&self) -> u64 {
        self.lock().content_epoch()
    }

    /// See [`Card::remote_begin`].
    pub fn remote_begin(&self, class: ObjectClass, id: &[u8]) -> Result<(), String> {
        self.lock().remote_begin(class, id)
    }

    /// See [`Card::remote_replace_file`].
    pub fn remote_replace_file(&self, id: &[u8], content: Vec<u8>) -> Result<(), String> {
        self.lock().remote_replace_file(id, content)
    }

    /// See [`Card::remote_replace_key`].
    pub fn remote_replace_key(&self, id: &[u8]) -> Result<Vec<u8>, String> {
        self.lock().remote_replace_key(id)
    }

    /// See [`Card::remote_delete`].
    pub fn remote_delete(&self, class: ObjectClass, id: &[u8]) -> Result<(), String> {
        self.lock().remote_delete(class, id)
    }

    /// See [`Card::remote_add_file`].
    pub fn remote_add_file(
        &self,
        id: &[u8],
        label: Option<Vec<u8>>,
        usage: u8,
        content: Vec<u8>,
    ) -> Result<(), String> {
        self.lock().remote_add_file(id, label, usage, content)
    }

    /// See [`Card::remote_add_secret`].
    pub fn remote_add_secret(
        &self,
        id: &[u8],
        label: Option<Vec<u8>>,
        kd: u8,
        value: Vec<u8>,
    ) -> Result<(), String> {
        self.lock().remote_add_secret(id, label, kd, value)
    }

    /// See [`Card::remote_replace_secret`].
    pub fn remote_replace_secret(&self, id: &[u8], value: Vec<u8>) -> Result<(), String> {
        self.lock().remote_replace_secret(id, value)
    }

    /// See [`Card::remote_end`].
    pub fn remote_end(&self) -> Result<Vec<(ObjectClass, Vec<u8>)>, String> {
        self.lock().remote_end()
    }

    /// See [`Card::remote_session`].
    pub fn remote_session(&self) -> Option<Vec<(ObjectClass, Vec<u8>)>> {
        self.lock().remote_session()
    }
}
