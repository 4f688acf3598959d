//! The module's reader source replaced by simulated cards in this process: a reader per
//! [`SimReader`], each with a card from the simulator library. This file is the only place
//! where the tests name the module's transport traits and its reader-source override.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iotsafe_pkcs11::transport::{
    CardConnection, ChannelRoute, ReaderSource, Transmit, TransportError, Turn,
};
use iotsafe_sim::SharedCard;

/// One simulated reader with its card.
#[derive(Clone)]
pub struct SimReader {
    pub name: String,
    pub card: SharedCard,
    pub present: Arc<AtomicBool>,
    /// Set to make the next APDU fail the way PC/SC reports a card reset by someone else
    /// (SCARD_W_RESET_CARD); the card is power-cycled at that moment.
    pub reset_pending: Arc<AtomicBool>,
    /// Nanoseconds spent inside the card's `transmit` (the card's own work and latency), so
    /// benchmarks can tell the module's time from the card's.
    pub card_nanos: Arc<AtomicU64>,
}

/// How long the in-process reader waits for a mute card (`iotsafe_sim::FaultKind::Mute`)
/// before it reports a timeout, as a PC/SC reader driver does (`SCARD_E_TIMEOUT`).
pub const READER_TIMEOUT: Duration = Duration::from_millis(300);

pub struct SimReaders(pub Vec<SimReader>);

struct SimConnection {
    card: SharedCard,
    present: Arc<AtomicBool>,
    reset_pending: Arc<AtomicBool>,
    card_nanos: Arc<AtomicU64>,
}

impl SimConnection {
    /// The reader's flag and the card's own presence (a `remove` fault takes it out).
    fn present(&self) -> bool {
        self.present.load(Ordering::SeqCst) && self.card.is_present()
    }
}

struct SimPipe<'a>(&'a SimConnection);

impl Transmit for SimPipe<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        if !self.0.present() {
            return Err(TransportError::CardRemoved);
        }
        if self.0.reset_pending.swap(false, Ordering::SeqCst) {
            self.0.card.reset();
            return Err(TransportError::CardReset);
        }
        let start = Instant::now();
        let response = self.0.card.transmit(command);
        self.0
            .card_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if response.is_empty() {
            // A mute card: the reader gave up after READER_TIMEOUT (the card's mute limit).
            return Err(TransportError::Timeout);
        }
        Ok(response)
    }
}

impl Turn for SimPipe<'_> {
    fn set_route(&mut self, route: ChannelRoute) -> Result<(), TransportError> {
        match route {
            ChannelRoute::Cla(_) => Ok(()),
            ChannelRoute::Session(_) => Err(TransportError::UnsupportedRoute),
        }
    }
}

impl CardConnection for SimConnection {
    fn transaction(&mut self, _route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        Ok(Box::new(SimPipe(self)))
    }
    fn reconnect(&mut self) -> Result<(), TransportError> {
        if self.present() {
            Ok(())
        } else {
            Err(TransportError::CardRemoved)
        }
    }
    fn is_present(&mut self) -> bool {
        self.present()
    }
    fn disconnect(self: Box<Self>) {}
}

impl ReaderSource for SimReaders {
    fn reader_names(&self) -> Result<Vec<String>, TransportError> {
        Ok(self.0.iter().map(|r| r.name.clone()).collect())
    }
    fn connect(&self, reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError> {
        let r = self
            .0
            .iter()
            .find(|r| r.name == reader)
            .ok_or(TransportError::ReaderUnavailable)?;
        if !r.present.load(Ordering::SeqCst) || !r.card.is_present() {
            return Ok(None);
        }
        Ok(Some(Box::new(SimConnection {
            card: r.card.clone(),
            present: r.present.clone(),
            reset_pending: r.reset_pending.clone(),
            card_nanos: r.card_nanos.clone(),
        })))
    }
    fn card_present(&self, reader: &str) -> bool {
        self.0
            .iter()
            .any(|r| r.name == reader && r.present.load(Ordering::SeqCst) && r.card.is_present())
    }
}

/// Puts `readers` in place of the PC/SC readers for the next `C_Initialize`.
pub fn plug_in_sim_readers(readers: &[SimReader]) {
    iotsafe_pkcs11::transport::set_reader_source_override(Some(Arc::new(SimReaders(
        readers.to_vec(),
    ))));
}

/// Gives the module its configured readers (PC/SC, modems) back.
pub fn unplug_sim_readers() {
    iotsafe_pkcs11::transport::set_reader_source_override(None);
}
