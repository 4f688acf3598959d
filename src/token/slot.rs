//! Slots (card endpoints) and tokens (a card with the IoT SAFE applet, connected).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki_sys::*;
use log::{info, warn};
use parking_lot::{Mutex, RwLock};

use crate::applet::{
    self, AppletChannel, AppletError, CardLink, CardObject, ConnectedCard, LinkLease, ObjectInfo,
    ProvenPair, Readers,
};
use crate::config::Config;
use crate::error::{Error, Result};

use super::handles::HandleAllocator;
use super::object::{self, Object};

/// Identifies one card object across cache rebuilds, so its handle stays the same.
pub type HandleKey = (CK_OBJECT_CLASS, Option<Vec<u8>>, Option<Vec<u8>>);

/// What the token knows about the card's objects.
struct Cache {
    /// As read from (or written to) the card.
    card_objects: Vec<CardObject>,
    /// Which public half belongs to a private key where the card does not say it.
    proven_pairs: Vec<ProvenPair>,
    /// The PKCS#11 view built from them.
    objects: Vec<Arc<Object>>,
}

pub struct Token {
    reader: String,
    /// The card's logical channel; an operation leases it for its whole APDU sequence.
    link: CardLink,
    cache: RwLock<Cache>,
    handles: Mutex<HashMap<HandleKey, CK_OBJECT_HANDLE>>,
    /// Where new object handles come from (the module's allocator).
    handle_allocator: Arc<HandleAllocator>,
    /// The card said a remote-management session completed (`63CF`): re-read the objects
    /// before the next operation.
    stale: AtomicBool,
    /// What GET DATA (application) said.
    pub app_info: applet::AppInfo,
    /// The card takes writes through the STORE DATA provisioning profile.
    pub writable: bool,
    pub label: String,
    pub serial: String,
    pub applet_version: u8,
    pub logged_in: AtomicBool,
    /// The security officer is logged in (`C_Login(CKU_SO)`).
    pub so_logged_in: AtomicBool,
    removed: AtomicBool,
    /// Who made the reader or modem, when it says (a modem's `AT+CGMI`).
    pub endpoint_manufacturer: Option<String>,
}

impl Token {
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub fn mark_removed(&self) {
        if !self.removed.swap(true, Ordering::AcqRel) {
            info!("token {:?} removed", self.label);
        }
    }

    pub fn object(&self, handle: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        self.cache
            .read()
            .objects
            .iter()
            .find(|o| o.handle == handle)
            .cloned()
    }

    /// The token's objects as they stand.
    pub fn objects(&self) -> Vec<Arc<Object>> {
        self.cache.read().objects.clone()
    }

    /// A copy of the card objects as the cache knows them.
    pub fn card_objects(&self) -> Vec<CardObject> {
        self.cache.read().card_objects.clone()
    }

    /// Rebuilds the PKCS#11 view from `card_objects` (with the pairing proofs known so far);
    /// unchanged objects keep their handles.
    pub fn set_card_objects(&self, card_objects: Vec<CardObject>) {
        let proven_pairs = self.cache.read().proven_pairs.clone();
        self.set_card_contents(card_objects, proven_pairs);
    }

    /// [`Token::set_card_objects`] after the card generated a key pair: `private`'s public half
    /// is the new `point` (any earlier proof for it is replaced).
    pub fn set_card_objects_with_pair(
        &self,
        card_objects: Vec<CardObject>,
        private: &ObjectInfo,
        point: [u8; 65],
    ) {
        let reference = private.reference();
        let mut proven_pairs = self.cache.read().proven_pairs.clone();
        proven_pairs.retain(|p| p.private != reference);
        proven_pairs.push(ProvenPair {
            private: reference,
            point: point.to_vec(),
        });
        self.set_card_contents(card_objects, proven_pairs);
    }

    fn set_card_contents(&self, card_objects: Vec<CardObject>, proven_pairs: Vec<ProvenPair>) {
        let mut handles = self.handles.lock();
        let objects = object::build_objects(&card_objects, &proven_pairs, |class, info| {
            *handles
                .entry((class, info.id.clone(), info.label.clone()))
                .or_insert_with(|| self.handle_allocator.object_handle())
        })
        .into_iter()
        .map(|mut o| {
            if self.writable {
                o.mark_writable_file();
            }
            Arc::new(o)
        })
        .collect();
        *self.cache.write() = Cache {
            card_objects,
            proven_pairs,
            objects,
        };
    }

    /// Gives the card object known as `to` the handle of `from` (a file the module moved to a
    /// new one, e.g. to change its label), so the application's handle stays valid.
    pub fn carry_handle(&self, from: HandleKey, to: HandleKey) {
        let mut handles = self.handles.lock();
        if let Some(h) = handles.remove(&from) {
            handles.insert(to, h);
        }
    }

    /// Forgets the handle of the card object known as `key` (an object another one replaced):
    /// the next object with that key gets a new handle, and the old one is invalid.
    pub fn forget_handle(&self, key: &HandleKey) {
        self.handles.lock().remove(key);
    }

    /// Re-reads every object from the card (inside an operation of `run`); pairing proofs
    /// that still hold are not made again.
    pub fn reload(&self, ch: &mut AppletChannel<'_>) -> applet::Result<()> {
        let known = self.cache.read().proven_pairs.clone();
        let contents = applet::read_card(ch, &self.reader, &known)?;
        self.set_card_contents(contents.objects, contents.proven_pairs);
        self.stale.store(false, Ordering::Release);
        info!("{}: object cache re-read", self.reader);
        Ok(())
    }

    /// Re-reads the objects on a leased channel, in a transaction of its own.
    fn reload_on(&self, lease: &mut LinkLease<'_>) -> Result<()> {
        lease.run_once(&mut |ch: &mut AppletChannel<'_>| self.reload(ch))?;
        Ok(())
    }

    /// Notes that the card reported a completed remote-management session.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Runs one operation's APDUs on the token's channel inside one card transaction
    /// (the applet layer reopens the channel and retries once after a card reset); a removed
    /// card marks the token removed, and a remote update re-reads the objects.
    pub fn run<R>(
        &self,
        mut op: impl FnMut(&mut AppletChannel<'_>) -> applet::Result<R>,
    ) -> Result<R> {
        if self.is_removed() {
            return Err(Error::new(CKR_DEVICE_REMOVED, "token was removed"));
        }
        let mut lease = self.link.lease();
        if self.stale.load(Ordering::Acquire)
            && let Err(e) = self.reload_on(&mut lease)
        {
            warn!(
                "{}: re-reading the objects after a remote update: {e}",
                self.reader
            );
        }
        let outcome = lease.run(&mut op);
        // The exchange itself broke (no whole answer), as when the card is pulled mid-APDU.
        let exchange_broke = matches!(
            &outcome,
            Err(AppletError::Malformed(_) | AppletError::Transport(_))
        );
        let mut result = outcome.map_err(Error::from);
        // A failed exchange with a card that is no longer there is a removal, whatever the
        // transport called it.
        if let Err(e) = &result
            && e.rv() == CKR_DEVICE_ERROR
            && !present_after_settling(&mut lease, exchange_broke)
        {
            result = Err(Error::new(
                CKR_DEVICE_REMOVED,
                format!("{} (the card is no longer present)", e.detail()),
            ));
        }
        if let Err(e) = &result
            && e.rv() == CKR_DEVICE_REMOVED
        {
            self.mark_removed();
        }
        // A remote update completed (63CF) or changed an object under us (6989): the next
        // operation first re-reads the objects, so no stale credential is ever used.
        let changed =
            matches!(&result, Err(e) if e.rv() == crate::error::CKR_IOTSAFE_OBJECT_CHANGED);
        if lease.take_remote_update() || changed {
            info!(
                "{}: the card's objects changed remotely; refreshing the cache",
                self.reader
            );
            self.mark_stale();
            // Right away, so that object lookups (0 APDUs) never serve the old credential.
            if let Err(e) = self.reload_on(&mut lease) {
                warn!(
                    "{}: re-reading the objects: {e} (retried before the next operation)",
                    self.reader
                );
            }
        }
        result
    }

    /// True while the card is still in the reader (no APDU sent). A busy channel means the
    /// card is in use, hence present.
    pub fn check_present(&self) -> bool {
        if self.is_removed() {
            return false;
        }
        match self.link.is_present() {
            Some(true) | None => true,
            Some(false) => {
                self.mark_removed();
                false
            }
        }
    }

    /// Closes the logical channel and leaves the card as it is.
    pub fn close(&self) {
        self.link.close(self.is_removed());
    }

    /// The token of a connected card: its label and serial from the configuration and the
    /// applet's identifier, its objects from the first card read.
    pub fn new(
        card: ConnectedCard,
        handle_allocator: Arc<HandleAllocator>,
        config: &Config,
        reader: &str,
    ) -> Token {
        let ConnectedCard {
            link,
            contents,
            writable,
            manufacturer,
        } = card;
        let app_info = contents.app_info;
        let identifier = &app_info.identifier;
        let serial = hex::encode_upper(&identifier[..identifier.len().min(8)]);
        let label = config.applet.token_label.clone().unwrap_or_else(|| {
            format!("IoT SAFE {}", serial.get(..8).unwrap_or(&serial))
                .trim()
                .to_string()
        });
        info!(
            "{reader}: IoT SAFE token {label:?}, {} card objects",
            contents.objects.len()
        );
        let token = Token {
            reader: reader.to_string(),
            link,
            cache: RwLock::new(Cache {
                card_objects: Vec::new(),
                proven_pairs: Vec::new(),
                objects: Vec::new(),
            }),
            handles: Mutex::new(HashMap::new()),
            handle_allocator,
            stale: AtomicBool::new(false),
            label,
            serial,
            applet_version: app_info.version.unwrap_or(0),
            app_info,
            writable,
            logged_in: AtomicBool::new(false),
            so_logged_in: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            endpoint_manufacturer: manufacturer,
        };
        token.set_card_contents(contents.objects, contents.proven_pairs);
        token
    }
}

pub struct Slot {
    pub id: CK_SLOT_ID,
    pub reader: String,
    /// What the endpoint said about its maker when a token was last connected; kept after the
    /// card goes, so `C_GetSlotInfo` does not change with the card.
    pub manufacturer: Mutex<Option<String>>,
    token: Mutex<Option<Arc<Token>>>,
    /// Serialises connection attempts to this slot's card (per slot, never global).
    connecting: Mutex<()>,
}

impl Slot {
    pub fn new(id: CK_SLOT_ID, reader: String) -> Self {
        Slot {
            id,
            reader,
            manufacturer: Mutex::new(None),
            token: Mutex::new(None),
            connecting: Mutex::new(()),
        }
    }

    /// The connected token, connecting first if needed. `Ok(None)`: no card or no applet.
    pub fn token(
        &self,
        readers: &Readers,
        config: &Config,
        handles: &Arc<HandleAllocator>,
    ) -> Result<Option<Arc<Token>>> {
        if let Some(t) = self.current_token() {
            return Ok(Some(t));
        }
        let _connecting = self.connecting.lock();
        if let Some(t) = self.current_token() {
            return Ok(Some(t));
        }
        match readers.connect(&self.reader).map_err(Error::from) {
            Ok(Some(card)) => {
                let token = Arc::new(Token::new(card, handles.clone(), config, &self.reader));
                if let Some(maker) = &token.endpoint_manufacturer {
                    *self.manufacturer.lock() = Some(maker.clone());
                }
                *self.token.lock() = Some(token.clone());
                Ok(Some(token))
            }
            Ok(None) => Ok(None),
            // Gone while being read: simply no token.
            Err(e) if e.rv() == CKR_DEVICE_REMOVED => Ok(None),
            // A card that is there but fails is a device error, not a missing token.
            Err(e) => {
                warn!("{}: reading the IoT SAFE applet failed: {e}", self.reader);
                Err(Error::new(CKR_DEVICE_ERROR, e.detail().to_string()))
            }
        }
    }

    /// The token as it stands, without connecting; drops a token whose card went away.
    pub fn current_token(&self) -> Option<Arc<Token>> {
        let mut guard = self.token.lock();
        match guard.as_ref() {
            Some(t) if !t.is_removed() => Some(t.clone()),
            Some(_) => {
                *guard = None;
                None
            }
            None => None,
        }
    }

    /// Closes the token's channel and connection (C_Finalize).
    pub fn close(&self) {
        if let Some(t) = self.token.lock().take() {
            t.close();
        }
    }
}

/// Whether the card is still there after a failed operation. After a broken exchange the reader
/// may not have noticed a removal yet: pcscd polls drivers without card events (vpcd among them)
/// every 400 ms, after the driver itself noticed the link go. It is asked again for up to 1.5 s
/// (three of those polls, with margin) before the failure counts as the card's; this costs
/// time only on that failure path.
fn present_after_settling(lease: &mut LinkLease<'_>, exchange_broke: bool) -> bool {
    const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);
    let checks = if exchange_broke { 15 } else { 0 };
    for _ in 0..checks {
        if !lease.is_present() {
            return false;
        }
        std::thread::sleep(SETTLE);
    }
    lease.is_present()
}
