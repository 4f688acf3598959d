//! Fault injection: a card that misbehaves on purpose, for robustness tests of a host.
//!
//! [`FaultyCard`] wraps a [`Card`] and decorates its `transmit`; the card itself knows
//! nothing of faults. A fault is armed through the wrapper's cloneable [`Faults`] handle
//! ([`FaultyCard::faults`], [`SharedCard::faults`](crate::SharedCard::faults)), which works
//! without the card lock, optionally only for one INS, after a number of matching commands
//! have passed, and for a number of firings. Every transport sees it, because every
//! [`SharedCard`](crate::SharedCard) holds a `FaultyCard`: in-process, behind vpcd, and
//! behind the modem. Control socket: `fault <kind>[=<arg>] [ins=XX] [skip=N] [count=N]`,
//! `fault clear`, `fault` (list).
//!
//! | kind | effect on a matching command |
//! |---|---|
//! | `sw=XXXX` | processed, then answered with only that status word |
//! | `truncate=N` | processed, answer cut to its first N bytes |
//! | `endless-61xx` | answered `61 10`, and so is every GET RESPONSE until `fault clear` |
//! | `garbage` | processed, data replaced by pseudo-random bytes (at least 16), `9000` |
//! | `bad-tlv` | processed, answered `33 82 FF FF 00 01 90 00`: a TLV running past the end |
//! | `remove` | processed and answered, then the card is taken out ([`Card::remove`]) |
//! | `mute` | not answered: `transmit` blocks until `fault clear` (or the mute limit, default 30 s, then returns an empty answer: no response) |
//!
//! A card with nothing armed behaves exactly as without this module. A transport that
//! cannot survive a command left without an answer (pcscd's vpcd driver) refuses the
//! faults that cause one ([`Faults::refuse_unanswered`]).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::card::Card;

/// How long a mute card blocks `transmit` at most, unless changed with
/// [`Faults::set_mute_limit`].
pub const DEFAULT_MUTE_LIMIT: Duration = Duration::from_secs(30);

/// What a fault does to a matching command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with only this status word (the command is still processed).
    StatusWord(u16),
    /// Cut the answer to its first N bytes.
    Truncate(usize),
    /// `61 10` to this command and every GET RESPONSE after it, until cleared.
    Endless61xx,
    /// Pseudo-random data bytes with `9000`.
    Garbage,
    /// A TLV whose length runs past the end of the answer, with `9000`.
    BadTlv,
    /// Answer, then take the card out of its reader.
    Remove,
    /// Stop answering until cleared.
    Mute,
}

/// One armed fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Only commands with this INS (any when `None`).
    pub ins: Option<u8>,
    /// Matching commands to let through before firing.
    pub skip: u32,
    /// Firings; 0 = every matching command until cleared.
    pub count: u32,
}

impl Fault {
    /// Fires once, on the next command.
    pub fn new(kind: FaultKind) -> Fault {
        Fault {
            kind,
            ins: None,
            skip: 0,
            count: 1,
        }
    }

    /// Only for commands with this INS.
    pub fn on_ins(mut self, ins: u8) -> Fault {
        self.ins = Some(ins);
        self
    }

    /// After `n` matching commands have passed.
    pub fn skip(mut self, n: u32) -> Fault {
        self.skip = n;
        self
    }

    /// Fires `n` times (0 = until cleared).
    pub fn times(mut self, n: u32) -> Fault {
        self.count = n;
        self
    }

    /// Parses the control-socket form: `<kind>[=<arg>] [ins=XX] [skip=N] [count=N]`.
    pub fn parse(text: &str) -> Result<Fault, String> {
        let mut words = text.split_whitespace();
        let first = words.next().ok_or("fault: missing kind")?;
        let (name, arg) = match first.split_once('=') {
            Some((n, a)) => (n, Some(a)),
            None => (first, None),
        };
        let need = |what: &str| arg.ok_or(format!("fault {name}: needs ={what}"));
        let kind = match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "sw" => FaultKind::StatusWord(
                u16::from_str_radix(need("XXXX")?, 16).map_err(|_| "sw: 4 hex digits")?,
            ),
            "truncate" => {
                FaultKind::Truncate(need("N")?.parse().map_err(|_| "truncate: a number")?)
            }
            "endless-61xx" | "endless61" => FaultKind::Endless61xx,
            "garbage" => FaultKind::Garbage,
            "bad-tlv" => FaultKind::BadTlv,
            "remove" => FaultKind::Remove,
            "mute" => FaultKind::Mute,
            other => {
                return Err(format!(
                    "unknown fault {other:?} (sw=XXXX truncate=N endless-61xx garbage bad-tlv remove mute)"
                ));
            }
        };
        let mut fault = Fault::new(kind);
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or(format!("fault: bad option {w:?}"))?;
            match k {
                "ins" => fault.ins = Some(u8::from_str_radix(v, 16).map_err(|_| "ins: hex")?),
                "skip" => fault.skip = v.parse().map_err(|_| "skip: a number")?,
                "count" => fault.count = v.parse().map_err(|_| "count: a number")?,
                _ => return Err(format!("fault: unknown option {k:?} (ins skip count)")),
            }
        }
        Ok(fault)
    }

    fn to_json(&self) -> Value {
        let kind = match &self.kind {
            FaultKind::StatusWord(sw) => format!("sw={sw:04X}"),
            FaultKind::Truncate(n) => format!("truncate={n}"),
            FaultKind::Endless61xx => "endless-61xx".into(),
            FaultKind::Garbage => "garbage".into(),
            FaultKind::BadTlv => "bad-tlv".into(),
            FaultKind::Remove => "remove".into(),
            FaultKind::Mute => "mute".into(),
        };
        json!({
            "kind": kind,
            "ins": self.ins.map(|i| format!("{i:02X}")),
            "skip": self.skip,
            "count": self.count,
        })
    }

    /// Whether the fault leaves a command without an answer (`mute`; `truncate=0`, an
    /// empty answer).
    pub fn leaves_unanswered(&self) -> bool {
        matches!(self.kind, FaultKind::Mute | FaultKind::Truncate(0))
    }
}

#[derive(Debug)]
struct State {
    armed: Vec<Fault>,
    fired: u64,
    endless: bool,
    muted: bool,
    mute_limit: Duration,
    /// Incremented to end the current mute waits without an answer (card removed).
    mute_wait_generation: u64,
    /// Why faults that leave a command unanswered are refused (see
    /// [`Faults::refuse_unanswered`]).
    unanswered_refusal: Option<String>,
    rng: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            armed: Vec::new(),
            fired: 0,
            endless: false,
            muted: false,
            mute_limit: DEFAULT_MUTE_LIMIT,
            mute_wait_generation: 0,
            unanswered_refusal: None,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    unmuted: Condvar,
}

/// The faults of one card: a cloneable handle, usable while another thread is inside
/// `transmit` (a mute card holds the card lock, so clearing must not need it).
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Shared>);

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms a fault (faults fire in the order they were armed; one per command). A fault
    /// refused by [`Faults::refuse_unanswered`] is not armed; the reason goes to stderr
    /// ([`Faults::try_arm`] returns it instead).
    pub fn arm(&self, fault: Fault) {
        if let Err(e) = self.try_arm(fault) {
            eprintln!("iotsafe-sim: {e}");
        }
    }

    /// Arms a fault, or says why it is refused (see [`Faults::refuse_unanswered`]).
    pub fn try_arm(&self, fault: Fault) -> Result<(), String> {
        let mut s = self.state();
        if let Some(reason) = &s.unanswered_refusal
            && fault.leaves_unanswered()
        {
            let kind = &fault.to_json()["kind"];
            return Err(format!(
                "fault {} refused: it leaves a command without an answer, and {reason}",
                kind.as_str().unwrap_or("?")
            ));
        }
        s.armed.push(fault);
        Ok(())
    }

    /// From now on refuses the faults that leave a command without an answer (`mute`,
    /// `truncate=0`), saying `reason` (the transport that cannot survive one). Faults armed
    /// before are kept.
    pub fn refuse_unanswered(&self, reason: &str) {
        self.state().unanswered_refusal = Some(reason.to_string());
    }

    /// Disarms everything, ends an endless `61xx` and wakes a mute card.
    pub fn clear(&self) {
        let mut s = self.state();
        s.armed.clear();
        s.endless = false;
        s.muted = false;
        self.0.unmuted.notify_all();
    }

    /// Faults that have fired since the card was created.
    pub fn fired(&self) -> u64 {
        self.state().fired
    }

    /// Faults still armed.
    pub fn armed(&self) -> Vec<Fault> {
        self.state().armed.clone()
    }

    /// Whether the card is mute now.
    pub fn is_muted(&self) -> bool {
        self.state().muted
    }

    /// How long a mute card blocks one `transmit` before it returns an empty answer (an
    /// in-process reader that models a driver timeout sets this short).
    pub fn set_mute_limit(&self, limit: Duration) {
        self.state().mute_limit = limit;
    }

    /// The faults as JSON (control socket).
    pub fn to_json(&self) -> Value {
        let s = self.state();
        json!({
            "armed": s.armed.iter().map(Fault::to_json).collect::<Vec<_>>(),
            "fired": s.fired,
            "muted": s.muted,
            "endless_61xx": s.endless,
        })
    }

    /// The fault that fires for `command` now, if any (consumes skips and counts).
    fn take(&self, command: &[u8]) -> Option<FaultKind> {
        let ins = command.get(1).copied();
        let mut s = self.state();
        if s.endless && ins == Some(0xC0) {
            s.fired += 1;
            return Some(FaultKind::Endless61xx);
        }
        let i = s
            .armed
            .iter()
            .position(|f| f.ins.is_none() || f.ins == ins)?;
        let f = &mut s.armed[i];
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        let kind = f.kind.clone();
        match f.count {
            0 => {}
            1 => {
                s.armed.remove(i);
            }
            n => f.count = n - 1,
        }
        s.fired += 1;
        match kind {
            FaultKind::Endless61xx => s.endless = true,
            FaultKind::Mute => s.muted = true,
            _ => {}
        }
        Some(kind)
    }

    /// Ends the mute waits in progress at once without an answer (the card left its
    /// reader); the card stays mute.
    pub(crate) fn abandon_mute_waits(&self) {
        self.state().mute_wait_generation += 1;
        self.0.unmuted.notify_all();
    }

    /// Blocks while mute, at most the mute limit. True when unmuted in time.
    pub(crate) fn wait_unmuted(&self) -> bool {
        let mut s = self.state();
        let deadline = Instant::now() + s.mute_limit;
        let generation = s.mute_wait_generation;
        while s.muted {
            let now = Instant::now();
            if now >= deadline || s.mute_wait_generation != generation {
                return false;
            }
            s = self
                .0
                .unmuted
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn garbage(&self, len: usize) -> Vec<u8> {
        let mut s = self.state();
        let mut out = Vec::with_capacity(len.max(16) + 2);
        for _ in 0..len.max(16) {
            // xorshift64
            s.rng ^= s.rng << 13;
            s.rng ^= s.rng >> 7;
            s.rng ^= s.rng << 17;
            out.push(s.rng as u8);
        }
        out.extend_from_slice(&[0x90, 0x00]);
        out
    }
}

/// How an exchange started by [`FaultyCard::start_exchange`] goes on.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// The answer (possibly faulted).
    Answered(Vec<u8>),
    /// The card is mute: wait for it, then process the command.
    Mute,
}

/// A [`Card`] with fault injection in front of its [`transmit`](FaultyCard::transmit).
/// Everything else is the card's: the wrapper dereferences to it.
#[derive(Debug)]
pub struct FaultyCard {
    card: Card,
    faults: Faults,
}

impl FaultyCard {
    /// Wraps a card; nothing is armed.
    pub fn new(card: Card) -> FaultyCard {
        FaultyCard {
            card,
            faults: Faults::default(),
        }
    }

    /// The fault handle (see the module documentation).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// [`Card::transmit`] with the armed fault, if any, applied. Latency and counters
    /// apply to every command, also to one a fault keeps from the card. A mute card blocks
    /// here with `self` borrowed; [`SharedCard`](crate::SharedCard) waits without its lock.
    pub fn transmit(&mut self, command: &[u8]) -> Vec<u8> {
        match self.start_exchange(command) {
            Exchange::Answered(reply) => reply,
            Exchange::Mute if self.faults.wait_unmuted() => self.process_after_mute(command),
            Exchange::Mute => Vec::new(),
        }
    }

    /// The command once the card is no longer mute: processed as without a fault.
    pub(crate) fn process_after_mute(&mut self, command: &[u8]) -> Vec<u8> {
        self.card.process(command)
    }

    /// The part of [`FaultyCard::transmit`] that does not wait: the answer, or
    /// [`Exchange::Mute`] when the caller must wait for the card to speak again
    /// ([`Faults::wait_unmuted`]) and then call [`FaultyCard::process_after_mute`].
    pub(crate) fn start_exchange(&mut self, command: &[u8]) -> Exchange {
        let card = &mut self.card;
        let faults = &self.faults;
        card.begin_apdu(command);
        let Some(kind) = faults.take(command) else {
            if faults.is_muted() {
                return Exchange::Mute;
            }
            return Exchange::Answered(card.process(command));
        };
        if kind == FaultKind::Mute {
            return Exchange::Mute;
        }
        Exchange::Answered(Self::apply(card, faults, kind, command))
    }

    /// Processes `command` (unless the fault keeps it from the card) and answers as `kind` says.
    fn apply(card: &mut Card, faults: &Faults, kind: FaultKind, command: &[u8]) -> Vec<u8> {
        if kind == FaultKind::Endless61xx {
            if command.get(1) != Some(&0xC0) {
                let _ = card.process(command);
            }
            return vec![0x61, 0x10];
        }
        let reply = card.process(command);
        match kind {
            FaultKind::StatusWord(sw) => sw.to_be_bytes().to_vec(),
            FaultKind::Truncate(n) => reply[..n.min(reply.len())].to_vec(),
            FaultKind::Garbage => faults.garbage(reply.len().saturating_sub(2)),
            FaultKind::BadTlv => vec![0x33, 0x82, 0xFF, 0xFF, 0x00, 0x01, 0x90, 0x00],
            FaultKind::Remove => {
                card.remove();
                reply
            }
            FaultKind::Mute | FaultKind::Endless61xx => reply,
        }
    }
}

impl std::ops::Deref for FaultyCard {
    type Target = Card;
    fn deref(&self) -> &Card {
        &self.card
    }
}

impl std::ops::DerefMut for FaultyCard {
    fn deref_mut(&mut self) -> &mut Card {
        &mut self.card
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedCard;
    use crate::card::CardOptions;

    fn card() -> FaultyCard {
        FaultyCard::new(Card::new(crate::default_profile(), CardOptions::default()))
    }

    const OPEN_CHANNEL: [u8; 5] = [0x00, 0x70, 0x00, 0x00, 0x01];

    #[test]
    fn parse_control_forms() {
        assert_eq!(
            Fault::parse("sw=6F00 ins=2B skip=1 count=0").unwrap(),
            Fault::new(FaultKind::StatusWord(0x6F00))
                .on_ins(0x2B)
                .skip(1)
                .times(0)
        );
        assert_eq!(
            Fault::parse("truncate=3").unwrap().kind,
            FaultKind::Truncate(3)
        );
        assert!(Fault::parse("sw").is_err());
        assert!(Fault::parse("nonsense").is_err());
        assert!(Fault::parse("mute when=now").is_err());
    }

    #[test]
    fn nothing_armed_is_the_plain_card() {
        let mut c = card();
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x01, 0x90, 0x00]);
        assert_eq!(c.faults().fired(), 0);
    }

    #[test]
    fn status_word_truncate_garbage_and_counts() {
        let mut c = card();
        let f = c.faults();
        f.arm(
            Fault::new(FaultKind::StatusWord(0x6F00))
                .on_ins(0x70)
                .skip(1),
        );
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x01, 0x90, 0x00]);
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x6F, 0x00]);
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x03, 0x90, 0x00]);
        f.arm(Fault::new(FaultKind::Truncate(1)).times(2));
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x04]);
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x05]);
        f.arm(Fault::new(FaultKind::Garbage));
        let g = c.transmit(&OPEN_CHANNEL);
        assert_eq!(g.len(), 18);
        assert_eq!(&g[16..], &[0x90, 0x00]);
        assert_eq!(f.fired(), 4);
        assert!(f.armed().is_empty());
    }

    #[test]
    fn endless_61xx_until_cleared() {
        let mut c = card();
        let f = c.faults();
        f.arm(Fault::new(FaultKind::Endless61xx));
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x61, 0x10]);
        for _ in 0..5 {
            assert_eq!(c.transmit(&[0x00, 0xC0, 0, 0, 0x10]), vec![0x61, 0x10]);
        }
        f.clear();
        assert_eq!(c.transmit(&[0x00, 0xC0, 0, 0, 0x10]), vec![0x69, 0x85]);
    }

    #[test]
    fn remove_after_answering() {
        let mut c = card();
        c.faults().arm(Fault::new(FaultKind::Remove));
        assert_eq!(c.transmit(&OPEN_CHANNEL), vec![0x01, 0x90, 0x00]);
        assert!(!c.is_present());
    }

    #[test]
    fn mute_blocks_until_cleared_or_the_limit() {
        let card = SharedCard::from_profile(crate::default_profile(), CardOptions::default());
        let f = card.faults();
        f.set_mute_limit(Duration::from_millis(50));
        f.arm(Fault::new(FaultKind::Mute));
        assert_eq!(card.transmit(&OPEN_CHANNEL), Vec::<u8>::new());
        assert!(f.is_muted());
        f.set_mute_limit(Duration::from_secs(10));
        let clearer = {
            let f = f.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                f.clear();
            })
        };
        let start = Instant::now();
        assert_eq!(card.transmit(&OPEN_CHANNEL), vec![0x01, 0x90, 0x00]);
        assert!(start.elapsed() < Duration::from_secs(5));
        clearer.join().unwrap();
    }
}
