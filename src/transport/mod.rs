//! Moving APDUs. Knows nothing of IoT SAFE: a reader source lists card endpoints and connects
//! to them; a connection runs one exclusive transaction at a time and transmits raw APDUs.

pub mod at;
mod control_device;
pub mod mbim;
#[cfg(feature = "pcsc")]
pub mod pcsc;
#[cfg(not(feature = "pcsc"))]
#[path = "pcsc_not_built.rs"]
pub mod pcsc;
pub mod qmi;
pub mod sources;
#[cfg_attr(not(feature = "pcsc"), allow(dead_code))] // PC/SC readers' turns.
mod turn_lock;

pub use sources::{
    ConfiguredReaders, ControlSettings, ModemEndpoint, ModemLink, ReaderFilter,
    reader_source_override, set_reader_source_override,
};

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
    /// The transport cannot carry this route (e.g. a transport-managed channel on PC/SC).
    UnsupportedRoute,
    /// This user may not open the device (its file permissions, or a daemon that refuses
    /// it); the text names the device and what is missing.
    PermissionDenied(String),
    /// Anything else the transport reports.
    Other(String),
}

impl TransportError {
    /// `PermissionDenied` for `device` with what its node says (owner, group, mode), when
    /// `e` is a permission error; `None` otherwise.
    pub(crate) fn permission(device: &str, e: &std::io::Error) -> Option<TransportError> {
        use std::os::unix::fs::MetadataExt;
        if e.kind() != std::io::ErrorKind::PermissionDenied {
            return None;
        }
        let node = std::fs::metadata(device)
            .map(|m| {
                format!(
                    " (owner uid {}, group gid {}, mode {:04o})",
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o7777
                )
            })
            .unwrap_or_default();
        Some(TransportError::PermissionDenied(format!(
            "permission denied opening {device}{node}: this user needs read and write access, \
             e.g. membership of the device's group (run `iotsafe-pkcs11 doctor`)"
        )))
    }

    /// The card (or the whole reader) is gone, as opposed to a failed exchange.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            TransportError::CardRemoved
                | TransportError::NoCard
                | TransportError::CardReset
                | TransportError::ReaderUnavailable
        )
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::NoCard => write!(f, "no card in the reader"),
            TransportError::CardRemoved => write!(f, "card removed"),
            TransportError::CardReset => write!(f, "card was reset"),
            TransportError::ReaderUnavailable => write!(f, "reader unavailable"),
            TransportError::Timeout => write!(f, "card did not answer in time"),
            TransportError::UnsupportedRoute => {
                write!(f, "this transport has no transport-managed channels")
            }
            TransportError::PermissionDenied(s) | TransportError::Other(s) => write!(f, "{s}"),
        }
    }
}

/// Whether this process can take turns on the modem port `device` in the lock directory every
/// process of the module uses (`lock_dir`, default `/run/lock`): the directory, or the file
/// that refuses this user and why (the module then falls back to the temporary directory and
/// takes no turns with the processes of other users).
pub fn check_modem_turn_files(
    device: &str,
    lock_dir: Option<&std::path::Path>,
) -> Result<std::path::PathBuf, (std::path::PathBuf, std::io::Error)> {
    turn_lock::TurnLock::check_tty_files(device, lock_dir)
}

/// Sends one command APDU and returns the response (data ‖ SW1 SW2).
pub trait Transmit {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError>;

    /// The largest command data field this path carries in one APDU (a modem's command-line
    /// limit makes it smaller than the 255 bytes of a short APDU). Multi-block commands split
    /// their data accordingly.
    fn max_command_data(&self) -> usize {
        255
    }
}

/// How the applet's logical channel is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRoute {
    /// The channel number travels in the CLA byte (PC/SC, AT+CSIM); 0 is the basic channel.
    Cla(u8),
    /// The transport owns the channel (an AT+CCHO session id, an MBIM or QMI channel number);
    /// commands are sent with channel bits 0 and the transport (or the modem) puts in the real
    /// channel.
    Session(SessionId),
}

/// A transport's name for a channel it manages, kept as the modem wrote it: Sierra modules
/// answer `+CCHO` with an opaque hex string (`00000000038aa32f`) that must go back to
/// `AT+CGLA` unchanged, others with a decimal number. At most [`SessionId::MAX_LEN`] ASCII
/// letters and digits; `Copy`, so routes stay plain values.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    len: u8,
    text: [u8; SessionId::MAX_LEN],
}

impl SessionId {
    pub const MAX_LEN: usize = 24;

    /// The id as the transport wrote it; `None` unless 1..=24 ASCII letters and digits.
    pub fn parse(text: &str) -> Option<SessionId> {
        let bytes = text.as_bytes();
        if bytes.is_empty()
            || bytes.len() > SessionId::MAX_LEN
            || !bytes.iter().all(u8::is_ascii_alphanumeric)
        {
            return None;
        }
        let mut id = SessionId {
            len: bytes.len() as u8,
            text: [0; SessionId::MAX_LEN],
        };
        id.text[..bytes.len()].copy_from_slice(bytes);
        Some(id)
    }

    /// A numeric id (an MBIM or QMI channel number) in decimal.
    pub fn number(n: u32) -> SessionId {
        // A u32 in decimal is at most 10 digits, always a valid id.
        let mut id = SessionId {
            len: 0,
            text: [0; SessionId::MAX_LEN],
        };
        let digits = n.to_string();
        id.text[..digits.len()].copy_from_slice(digits.as_bytes());
        id.len = digits.len() as u8;
        id
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics are ever stored.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or("")
    }

    /// The id read as a decimal number (the transports that number their channels).
    pub fn as_number(&self) -> Option<u32> {
        self.as_str().parse().ok()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.as_str())
    }
}

impl ChannelRoute {
    /// The channel number to encode in the CLA byte.
    pub fn cla_channel(self) -> u8 {
        match self {
            ChannelRoute::Cla(ch) => ch,
            ChannelRoute::Session(_) => 0,
        }
    }
}

/// The outcome of asking a transport to open a channel and select an applet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOpen {
    /// This transport leaves channels to MANAGE CHANNEL / SELECT APDUs.
    NotManaged,
    /// Opened, with this session id; the applet is selected on it.
    Opened(SessionId),
    /// The card has no applet with that AID.
    NoApplet,
    /// The card (or modem) has no logical channel left.
    NoChannelFree,
}

/// One turn on the card: while it is held, no other process or session of this module sends
/// anything to the card, and APDUs go to the route set last.
pub trait Turn: Transmit {
    /// Where the next APDUs go (the transaction's route until changed).
    fn set_route(&mut self, route: ChannelRoute) -> Result<(), TransportError>;

    /// Transports that manage logical channels themselves (AT+CCHO) open one here and select
    /// `aid` on it.
    fn open_session(&mut self, _aid: &[u8]) -> Result<SessionOpen, TransportError> {
        Ok(SessionOpen::NotManaged)
    }

    /// Closes a channel opened by `open_session`.
    fn close_session(&mut self, _session: SessionId) -> Result<(), TransportError> {
        Ok(())
    }

    /// The endpoint's note: a few bytes every process of this module that uses the card sees,
    /// read and written only during a turn (the layer above gives them their meaning). `None`
    /// when the transport keeps no notes; empty when there is none yet (or it cannot be read).
    fn read_note(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Replaces the endpoint's note; a failure is logged and leaves no note the next reader
    /// could mistake for a whole one (the layer above checks its own notes).
    fn write_note(&mut self, _note: &[u8]) {}

    /// Whether the card may have been powered down (every logical channel closed) before this
    /// connection was made, as far as the transport can tell without an APDU: then a channel
    /// the note records is not worth trying first.
    fn card_may_have_restarted(&self) -> bool {
        false
    }
}

/// An open connection to one card.
pub trait CardConnection: Send {
    /// Begins one turn on the card (an exclusive transaction: PC/SC `SCardBeginTransaction`,
    /// a modem's port lock), with APDUs going to `route`, so no other process or session
    /// interleaves with the sequence. The turn ends when the guard is dropped (PC/SC:
    /// `SCardEndTransaction(LEAVE_CARD)`).
    fn transaction(&mut self, route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError>;

    /// After the card was reset (by another process, a power cycle): reconnect without
    /// resetting it again. Logical channels and selections are gone afterwards.
    fn reconnect(&mut self) -> Result<(), TransportError> {
        Err(TransportError::CardReset)
    }

    /// True while the card is still there (no APDU is sent).
    fn is_present(&mut self) -> bool;

    /// Who made the endpoint, when it says (a modem's `AT+CGMI`), for `C_GetSlotInfo`.
    fn manufacturer(&self) -> Option<String> {
        None
    }

    /// Leaves the card as it is (never resets it) and closes the connection.
    fn disconnect(self: Box<Self>);
}

/// Where slots come from: PC/SC readers, modems, or a test double.
pub trait ReaderSource: Send + Sync {
    /// Names of the endpoints currently known.
    fn reader_names(&self) -> Result<Vec<String>, TransportError>;
    /// Connects to the card in `reader`; `Ok(None)` when there is no card (or no modem).
    fn connect(&self, reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError>;
    /// Whether a card seems present in `reader`, without sending an APDU (slot events).
    fn card_present(&self, reader: &str) -> bool;
    /// Whether `reader` is a modem (else a PC/SC reader).
    fn is_modem(&self, _reader: &str) -> bool {
        false
    }
}
