//! Moving APDUs. Knows nothing of IoT SAFE: a reader source lists card endpoints and connects
//! to them; a connection runs one exclusive transaction at a time and transmits raw APDUs.

pub mod pcsc;

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// No card in the reader.
    NoCard,
    /// The card went away during or since the last exchange.
    CardRemoved,
    /// The card was reset by someone else: logical channels and selections are gone.
    CardReset,
    /// The reader itself is gone (unplugged, pcscd restarted).
    ReaderUnavailable,
    /// No answer within the configured time.
    Timeout,
    /// Anything else the transport reports.
    Other(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::NoCard => write!(f, "no card in the reader"),
            TransportError::CardRemoved => write!(f, "card removed"),
            TransportError::CardReset => write!(f, "card was reset"),
            TransportError::ReaderUnavailable => write!(f, "reader unavailable"),
            TransportError::Timeout => write!(f, "card did not answer in time"),
            TransportError::Other(s) => write!(f, "{s}"),
        }
    }
}

/// Sends one command APDU and returns the response (data ‖ SW1 SW2).
pub trait Transmit {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;
}

/// An open connection to one card.
pub trait CardConnection: Send {
    /// Runs `f` inside one exclusive transaction (PC/SC: `SCardBeginTransaction` …
    /// `SCardEndTransaction(LEAVE_CARD)`), so no other process interleaves APDUs.
    fn with_transaction(
        &mut self,
        f: &mut dyn FnMut(&mut dyn Transmit) -> Result<(), crate::Error>,
    ) -> Result<(), crate::Error>;

    /// True while the card is still there (no APDU is sent).
    fn is_present(&mut self) -> bool;

    /// Leaves the card as it is (never resets it) and closes the connection.
    fn disconnect(self: Box<Self>);
}

/// Where slots come from: PC/SC readers, or a test double.
pub trait ReaderSource: Send + Sync {
    /// Names of the readers currently known.
    fn reader_names(&self) -> Result<Vec<String>, TransportError>;
    /// Connects to the card in `reader`; `Ok(None)` when the reader has no card.
    fn connect(&self, reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError>;
}
