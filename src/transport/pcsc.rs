//! PC/SC transport through pcsc-lite (`pcsc` crate).
//!
//! Two traps handled here: a `pcsc::Card` dropped implicitly resets the card (we always
//! disconnect with `LeaveCard`), and a pcscd restart invalidates the context (we establish a
//! new one on the next call).
//!
//! Every transaction is taken on a turn of the reader's lock (`turn_lock.rs`): pcsc-lite has no
//! queue for transactions, so processes of this module queue on the lock first, and the card
//! goes to the next of them as soon as an operation ends.

use std::ffi::CString;
use std::path::PathBuf;

use log::{debug, warn};
use parking_lot::Mutex;
use pcsc::{
    Card, Context, Disposition, Error as PcscError, MAX_BUFFER_SIZE, Protocols, Scope, ShareMode,
};

use super::turn_lock::{HeldTurn, Presence, TurnLock, warn_once_without_pcsc_turns};
use super::{CardConnection, ChannelRoute, ReaderSource, Transmit, TransportError, Turn};

fn map_err(e: PcscError) -> TransportError {
    match e {
        PcscError::NoSmartcard => TransportError::NoCard,
        PcscError::RemovedCard | PcscError::UnresponsiveCard => TransportError::CardRemoved,
        PcscError::ResetCard | PcscError::UnpoweredCard => TransportError::CardReset,
        PcscError::ReaderUnavailable
        | PcscError::UnknownReader
        | PcscError::NoReadersAvailable
        | PcscError::NoService
        | PcscError::ServiceStopped
        | PcscError::InvalidHandle => TransportError::ReaderUnavailable,
        PcscError::Timeout => TransportError::Timeout,
        other => TransportError::Other(format!("PC/SC: {other}")),
    }
}

/// All PC/SC readers visible through pcscd.
pub struct PcscReaders {
    context: Mutex<Option<Context>>,
    /// Where the readers' lock files are (default `/run/lock`).
    lock_dir: Option<PathBuf>,
}

impl PcscReaders {
    pub fn new(lock_dir: Option<PathBuf>) -> Self {
        PcscReaders {
            context: Mutex::new(None),
            lock_dir,
        }
    }

    fn context(&self) -> Result<Context, TransportError> {
        let mut guard = self.context.lock();
        if let Some(ctx) = guard.as_ref() {
            if ctx.is_valid().is_ok() {
                return Ok(ctx.clone());
            }
            debug!("PC/SC context no longer valid; establishing a new one");
        }
        let ctx = Context::establish(Scope::User).map_err(|e| {
            warn!("cannot reach pcscd: {e}");
            map_err(e)
        })?;
        *guard = Some(ctx.clone());
        Ok(ctx)
    }

    fn forget_context(&self) {
        *self.context.lock() = None;
    }
}

impl Default for PcscReaders {
    fn default() -> Self {
        Self::new(None)
    }
}

impl ReaderSource for PcscReaders {
    fn reader_names(&self) -> Result<Vec<String>, TransportError> {
        let ctx = self.context()?;
        match ctx.list_readers_owned() {
            Ok(names) => Ok(names
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()),
            Err(PcscError::NoReadersAvailable) => Ok(Vec::new()),
            Err(e) => {
                self.forget_context();
                Err(map_err(e))
            }
        }
    }

    fn card_present(&self, reader: &str) -> bool {
        let Ok(ctx) = self.context() else {
            return false;
        };
        let Ok(name) = CString::new(reader) else {
            return false;
        };
        let mut states = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
        match ctx.get_status_change(std::time::Duration::ZERO, &mut states) {
            Ok(()) => states[0].event_state().contains(pcsc::State::PRESENT),
            Err(e) => {
                debug!("SCardGetStatusChange({reader}): {e}");
                false
            }
        }
    }

    /// Each connection gets a PC/SC context of its own: pcsc-lite serialises the calls made on
    /// one context, and an `SCardConnect` waits inside pcscd while another handle holds the
    /// card's transaction — on a shared context that wait would block the very thread that
    /// holds the transaction, and the process would hang (as the channel pool of earlier
    /// versions did).
    fn connect(&self, reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError> {
        let ctx = Context::establish(Scope::User).map_err(|e| {
            warn!("cannot reach pcscd: {e}");
            map_err(e)
        })?;
        let name = CString::new(reader).map_err(|_| TransportError::Other("reader name".into()))?;
        let turns = TurnLock::for_pcsc_reader(reader, self.lock_dir.as_deref());
        // Before this connection's own turns count as use of the card.
        let (presence, may_have_restarted) = turns
            .as_ref()
            .map(|t| t.join(POWER_OFF_GRACE))
            .unwrap_or((None, false));
        // pcscd holds an SCardConnect back while another handle is inside a transaction, and
        // retries only every 100 ms: in the queue of turns it goes next instead.
        let turn = turns.as_ref().and_then(|t| t.turn_without_use().ok());
        let connected = ctx.connect(&name, ShareMode::Shared, Protocols::ANY);
        drop(turn);
        match connected {
            Ok(card) => Ok(Some(Box::new(PcscConnection {
                card: Some(card),
                turns,
                _presence: presence,
                may_have_restarted,
            }))),
            Err(PcscError::NoSmartcard) | Err(PcscError::RemovedCard) => Ok(None),
            Err(e) => {
                if matches!(
                    e,
                    PcscError::NoService | PcscError::ServiceStopped | PcscError::InvalidHandle
                ) {
                    self.forget_context();
                }
                Err(map_err(e))
            }
        }
    }
}

/// A little less than pcscd's: it powers a card down 5 s after its last client disconnected.
const POWER_OFF_GRACE: std::time::Duration = std::time::Duration::from_secs(4);

struct PcscConnection {
    card: Option<Card>,
    /// `None` when no lock file could be opened: transactions without turns.
    turns: Option<TurnLock>,
    _presence: Option<Presence>,
    /// Until the first transaction: no other process of this module was connected and none had
    /// used the card for longer than pcscd keeps an unused card powered.
    may_have_restarted: bool,
}

/// One PC/SC transaction on a turn of the reader's lock: APDUs go to the card while it is held;
/// dropping it ends the transaction, leaving the card as it is, and then the turn.
struct PcscTransaction<'a> {
    tx: Option<pcsc::Transaction<'a>>,
    may_have_restarted: bool,
    turn: Option<HeldTurn>,
}

impl Drop for PcscTransaction<'_> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take()
            && let Err((_tx, e)) = tx.end(Disposition::LeaveCard)
        {
            debug!("SCardEndTransaction: {e}");
        }
    }
}

impl Transmit for PcscTransaction<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let card: &Card = self.tx.as_ref().ok_or(TransportError::CardRemoved)?;
        let mut buf = [0u8; MAX_BUFFER_SIZE];
        match card.transmit(command, &mut buf) {
            Ok(response) => Ok(response.to_vec()),
            Err(e) => {
                let mapped = map_err(e);
                // pcsc-lite reports a card pulled while an APDU is in flight as
                // SCARD_E_NOT_TRANSACTED; the card's state tells what really happened.
                if let TransportError::Other(_) = mapped {
                    let present = card
                        .status2_owned()
                        .map(|s| s.status().contains(pcsc::Status::PRESENT))
                        .unwrap_or(false);
                    if !present {
                        return Err(TransportError::CardRemoved);
                    }
                    // Present, but the exchange broke (pcsc-lite's SCARD_E_NOT_TRANSACTED when
                    // the card went away and came back): treat it as a reset, so the channel is
                    // reopened and the operation retried.
                    return Err(TransportError::CardReset);
                }
                Err(mapped)
            }
        }
    }
}

impl Turn for PcscTransaction<'_> {
    fn set_route(&mut self, route: ChannelRoute) -> Result<(), TransportError> {
        match route {
            ChannelRoute::Cla(_) => Ok(()),
            ChannelRoute::Session(_) => Err(TransportError::UnsupportedRoute),
        }
    }

    fn read_note(&mut self) -> Option<Vec<u8>> {
        self.turn.as_ref().map(HeldTurn::read_note)
    }

    fn write_note(&mut self, note: &[u8]) {
        if let Some(turn) = &self.turn {
            turn.write_note(note);
        }
    }

    fn card_may_have_restarted(&self) -> bool {
        self.may_have_restarted
    }
}

impl CardConnection for PcscConnection {
    fn transaction(&mut self, route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        if let ChannelRoute::Session(_) = route {
            return Err(TransportError::UnsupportedRoute);
        }
        let card = self.card.as_mut().ok_or(TransportError::CardRemoved)?;
        let turn = self
            .turns
            .as_ref()
            .and_then(|lock| lock.turn().inspect_err(warn_once_without_pcsc_turns).ok());
        let tx = card.transaction().map_err(map_err)?;
        Ok(Box::new(PcscTransaction {
            tx: Some(tx),
            may_have_restarted: std::mem::take(&mut self.may_have_restarted),
            turn,
        }))
    }

    fn reconnect(&mut self) -> Result<(), TransportError> {
        // Like SCardConnect, SCardReconnect waits for other handles' transactions.
        let _turn = self.turns.as_ref().and_then(|t| t.turn_without_use().ok());
        let card = self.card.as_mut().ok_or(TransportError::CardRemoved)?;
        card.reconnect(
            ShareMode::Shared,
            Protocols::ANY,
            pcsc::Disposition::LeaveCard,
        )
        .map_err(map_err)
    }

    fn is_present(&mut self) -> bool {
        match self.card.as_ref().map(|c| c.status2_owned()) {
            Some(Ok(status)) => status.status().contains(pcsc::Status::PRESENT),
            _ => false,
        }
    }

    fn disconnect(mut self: Box<Self>) {
        self.leave();
    }
}

impl PcscConnection {
    fn leave(&mut self) {
        if let Some(card) = self.card.take()
            && let Err((card, e)) = card.disconnect(Disposition::LeaveCard)
        {
            // Dropping would reset the card; leak the handle instead.
            debug!("SCardDisconnect: {e}");
            std::mem::forget(card);
        }
    }
}

impl Drop for PcscConnection {
    fn drop(&mut self) {
        self.leave();
    }
}
