//! [`SharedCard`]: one card shared by threads and transports, fault injection in front
//! (a [`FaultyCard`] behind `Arc<Mutex<_>>`), and [`CardSlot`], what a transport (modem,
//! vpcd) needs from a card in its reader.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::card::{Card, CardOptions, CardStats};
use crate::faults::{Exchange, Faults, FaultyCard};
use crate::profile::{ObjectClass, Profile};

/// What a transport needs from the card in its reader: the APDU exchange and presence.
pub trait CardSlot: Clone + Send + Sync + 'static {
    /// Processes one command APDU; returns response data ‖ SW1 SW2 (empty: no answer).
    fn transmit(&self, command: &[u8]) -> Vec<u8>;
    /// Whether the card is in its reader.
    fn is_present(&self) -> bool;
    /// Changes with every removal, so a removal followed by an insertion is noticed.
    fn presence_epoch(&self) -> u64;
    /// Changes with every power cycle (reset, removal, insertion).
    fn power_epoch(&self) -> u64;
    /// The answer-to-reset (modems that report it: MBIM's UICC ATR query).
    fn atr(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// A [`Card`] shareable between threads, with fault injection (`Arc<Mutex<FaultyCard>>`).
/// Each call holds the lock for one APDU, so latencies serialise like on a real card.
/// A mute card keeps other APDUs waiting but not the other calls (stats, `fault clear`,
/// remove, insert): `transmit` waits for it to speak again without the card lock.
#[derive(Debug, Clone)]
pub struct SharedCard {
    card: Arc<Mutex<FaultyCard>>,
    /// Taken by `transmit` for a whole exchange, a mute wait included: one APDU at a time.
    exchange_turn: Arc<Mutex<()>>,
    faults: Faults,
}

impl SharedCard {
    /// Wraps a card.
    pub fn new(card: Card) -> SharedCard {
        let card = FaultyCard::new(card);
        SharedCard {
            faults: card.faults(),
            card: Arc::new(Mutex::new(card)),
            exchange_turn: Arc::new(Mutex::new(())),
        }
    }

    /// Creates a card and wraps it.
    pub fn from_profile(profile: Profile, options: CardOptions) -> SharedCard {
        SharedCard::new(Card::new(profile, options))
    }

    /// Locks the card (poisoning is ignored). The guard dereferences to the [`Card`].
    pub fn lock(&self) -> MutexGuard<'_, FaultyCard> {
        self.card.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`FaultyCard::transmit`]; a mute card is waited for without the card lock.
    pub fn transmit(&self, command: &[u8]) -> Vec<u8> {
        let _turn = self.exchange_turn.lock().unwrap_or_else(|e| e.into_inner());
        let started = self.lock().start_exchange(command);
        match started {
            Exchange::Answered(reply) => reply,
            Exchange::Mute if self.faults.wait_unmuted() => self.lock().process_after_mute(command),
            Exchange::Mute => Vec::new(),
        }
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

    /// See [`Card::remove`]. A `transmit` waiting for a mute card returns at once without
    /// an answer (the card stays mute).
    pub fn remove(&self) {
        self.lock().remove();
        self.faults.abandon_mute_waits();
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
    pub fn with<R>(&self, f: impl FnOnce(&mut FaultyCard) -> R) -> R {
        f(&mut self.lock())
    }

    /// The card's fault handle (needs no lock).
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// See [`Card::max_channels`].
    pub fn max_channels(&self) -> u8 {
        self.lock().max_channels()
    }

    /// Sets [`CardOptions::max_channels`] (`None`: the profile's limit).
    pub fn set_max_channels(&self, max: Option<u8>) {
        self.lock().options_mut().max_channels = max;
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

impl CardSlot for SharedCard {
    fn transmit(&self, command: &[u8]) -> Vec<u8> {
        SharedCard::transmit(self, command)
    }
    fn is_present(&self) -> bool {
        SharedCard::is_present(self)
    }
    fn presence_epoch(&self) -> u64 {
        SharedCard::presence_epoch(self)
    }
    fn power_epoch(&self) -> u64 {
        self.lock().power_epoch()
    }
    fn atr(&self) -> Vec<u8> {
        SharedCard::atr(self)
    }
}
