//! The module state: slots and their tokens, the open sessions and session objects, the
//! handle allocator. Global state is an `Arc<Module>` behind a `RwLock` that is only held long
//! enough to clone the `Arc`; card I/O never happens under a global lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cryptoki_sys::*;
use log::{debug, info, warn};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::applet::Readers;
use crate::config::Config;
use crate::error::{Error, Result};

use super::handles::HandleAllocator;
use super::kdf;
use super::mechanism;
use super::object::Object;
use super::session::Session;
use super::slot::{Slot, Token};

static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

pub struct Module {
    pid: u32,
    config: Config,
    /// Where slots come from (PC/SC readers, modems).
    readers: Readers,
    slots: RwLock<Vec<Arc<Slot>>>,
    pub(super) sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<Mutex<Session>>>>,
    /// Session and object handles, never reused while the module is initialised.
    pub(super) handles: Arc<HandleAllocator>,
    /// Session objects (data objects, certificates, public keys, secret keys): handle → owner
    /// session, slot, object.
    pub(super) session_objects: RwLock<HashMap<CK_OBJECT_HANDLE, SessionObject>>,
    /// Card presence per slot as last reported by `C_WaitForSlotEvent`.
    reported_presence: Mutex<HashMap<CK_SLOT_ID, bool>>,
    /// Set by `C_Finalize`; wakes a thread blocked in `C_WaitForSlotEvent`.
    finalized: AtomicBool,
    wake: Condvar,
}

/// An object that lives as long as the session that created it.
pub struct SessionObject {
    pub owner: CK_SESSION_HANDLE,
    pub slot_id: CK_SLOT_ID,
    pub object: Arc<Object>,
}

/// How often a blocking `C_WaitForSlotEvent` looks at the readers.
const SLOT_EVENT_POLL: Duration = Duration::from_millis(200);

/// The initialised module, or `CKR_CRYPTOKI_NOT_INITIALIZED` (also in a forked child that has
/// not called `C_Initialize` itself).
pub fn module() -> Result<Arc<Module>> {
    match MODULE.read().as_ref() {
        Some(m) if m.pid == std::process::id() => Ok(m.clone()),
        _ => Err(CKR_CRYPTOKI_NOT_INITIALIZED.into()),
    }
}

/// What `C_Initialize` was given besides the locking arguments.
pub enum InitReserved<'a> {
    /// `pReserved` was NULL (or there were no arguments).
    Null,
    /// `pReserved` was not NULL: the reader of the string it points to, called only when the
    /// configuration says to expect one (it reads through the caller's pointer).
    Given(&'a dyn Fn() -> Result<String>),
}

/// `C_Initialize`: the configuration file, then `pReserved` when the file (or
/// `IOTSAFE_PKCS11_INIT_RESERVED`) says it carries a configuration.
pub fn initialize(reserved: InitReserved<'_>) -> Result<()> {
    let mut guard = MODULE.write();
    take_inherited(&mut guard)?;
    let config = configuration(reserved).inspect_err(|e| {
        // The configuration names the log filter; without one, the reason must still be seen.
        crate::init_logging(None);
        // `ffi::entry` logs device problems (CKR_GENERAL_ERROR) at warn already; the caller's
        // errors (CKR_ARGUMENTS_BAD) only at debug, but a refused pReserved must be seen.
        if !e.is_device_problem() {
            warn!("C_Initialize: {e}");
        }
    })?;
    start(&mut guard, config)
}

/// Initialises the module with a configuration given as data (for programs that link the
/// module as a Rust library, and tests); the same as `C_Initialize` otherwise.
pub fn initialize_with(config: Config) -> Result<()> {
    let mut guard = MODULE.write();
    take_inherited(&mut guard)?;
    start(&mut guard, config)
}

/// `CKR_CRYPTOKI_ALREADY_INITIALIZED` in the process that initialised; in a forked child the
/// parent's PC/SC context and card handles belong to the parent's connection to pcscd: they
/// are forgotten without releasing anything.
fn take_inherited(guard: &mut Option<Arc<Module>>) -> Result<()> {
    if let Some(m) = guard.as_ref() {
        if m.pid == std::process::id() {
            return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED.into());
        }
        if let Some(inherited) = guard.take() {
            std::mem::forget(inherited);
        }
    }
    Ok(())
}

fn configuration(reserved: InitReserved<'_>) -> Result<Config> {
    let file = Config::load_file()?;
    let InitReserved::Given(read_reserved) = reserved else {
        return Ok(file);
    };
    if !file.accepts_init_reserved() {
        return Err(Error::new(
            CKR_ARGUMENTS_BAD,
            "pReserved is not NULL; to pass a configuration string in it (p11-kit \
             x-init-reserved), set init_reserved = true in the configuration file or \
             IOTSAFE_PKCS11_INIT_RESERVED=1",
        ));
    }
    let text = read_reserved()?;
    if text.trim().is_empty() {
        return Ok(file);
    }
    Ok(Config::parse(&text, "passed in C_Initialize's pReserved")?)
}

fn start(guard: &mut Option<Arc<Module>>, config: Config) -> Result<()> {
    crate::init_logging(config.log.as_deref());
    let module = Module {
        pid: std::process::id(),
        readers: Readers::from_config(&config),
        config,
        slots: RwLock::new(Vec::new()),
        sessions: RwLock::new(HashMap::new()),
        handles: Arc::new(HandleAllocator::new()),
        session_objects: RwLock::new(HashMap::new()),
        reported_presence: Mutex::new(HashMap::new()),
        finalized: AtomicBool::new(false),
        wake: Condvar::new(),
    };
    module.refresh_slots();
    module.take_slot_events();
    info!("initialised: {} slot(s)", module.slots.read().len());
    *guard = Some(Arc::new(module));
    Ok(())
}

pub fn finalize() -> Result<()> {
    let taken = {
        let mut guard = MODULE.write();
        match guard.as_ref() {
            None => return Err(CKR_CRYPTOKI_NOT_INITIALIZED.into()),
            Some(m) if m.pid != std::process::id() => {
                if let Some(inherited) = guard.take() {
                    std::mem::forget(inherited);
                }
                return Ok(());
            }
            Some(_) => guard.take(),
        }
    };
    if let Some(m) = taken {
        m.finalized.store(true, Ordering::Release);
        {
            let _guard = m.reported_presence.lock();
            m.wake.notify_all();
        }
        m.sessions.write().clear();
        m.session_objects.write().clear();
        for slot in m.slots.read().iter() {
            slot.close();
        }
    }
    Ok(())
}

/// What `C_GetSlotInfo` reports.
pub struct SlotInfo {
    pub description: String,
    /// A modem's `AT+CGMI` (else "modem"), or "PC/SC reader".
    pub manufacturer: String,
    pub token_present: bool,
}

/// What `C_GetTokenInfo` reports.
pub struct TokenInfo {
    pub label: String,
    pub serial: String,
    pub applet_version: u8,
    pub session_count: usize,
    pub rw_session_count: usize,
    pub writable: bool,
}

impl Module {
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Adds readers that appeared since the last look; slot IDs never change.
    fn refresh_slots(&self) {
        let names = match self.readers.names() {
            Ok(n) => n,
            Err(e) => {
                debug!("listing readers: {e}");
                return;
            }
        };
        let mut slots = self.slots.write();
        for name in names {
            if slots.iter().any(|s| s.reader == name) {
                continue;
            }
            let id = slots.len() as CK_SLOT_ID;
            debug!("slot {id}: {name}");
            slots.push(Arc::new(Slot::new(id, name)));
        }
    }

    /// Slots whose card presence changed since it was last reported (and records the new
    /// state). No APDU is sent.
    fn take_slot_events(&self) -> Vec<CK_SLOT_ID> {
        let slots: Vec<Arc<Slot>> = self.slots.read().clone();
        let mut reported = self.reported_presence.lock();
        let mut changed = Vec::new();
        for slot in slots {
            let present = self.readers.card_present(&slot.reader);
            if reported.insert(slot.id, present) != Some(present) {
                changed.push(slot.id);
            }
        }
        changed
    }

    /// `C_WaitForSlotEvent`: the next slot whose card was inserted or removed. New readers
    /// count as insertions when they hold a card.
    pub fn wait_for_slot_event(&self, dont_block: bool) -> Result<CK_SLOT_ID> {
        let mut first_look = true;
        loop {
            if self.finalized.load(Ordering::Acquire) {
                return Err(Error::new(
                    CKR_CRYPTOKI_NOT_INITIALIZED,
                    "C_Finalize was called",
                ));
            }
            let known: Vec<CK_SLOT_ID> = self.slots.read().iter().map(|s| s.id).collect();
            self.refresh_slots();
            if first_look {
                // Readers that appear now start as "empty" so a card in them is an event.
                let mut reported = self.reported_presence.lock();
                for s in self.slots.read().iter().filter(|s| !known.contains(&s.id)) {
                    reported.entry(s.id).or_insert(false);
                }
                first_look = false;
            }
            if let Some(id) = self.take_slot_events().first() {
                return Ok(*id);
            }
            if dont_block {
                return Err(CKR_NO_EVENT.into());
            }
            let mut guard = self.reported_presence.lock();
            if !self.finalized.load(Ordering::Acquire) {
                self.wake.wait_for(&mut guard, SLOT_EVENT_POLL);
            }
        }
    }

    pub(super) fn slot(&self, id: CK_SLOT_ID) -> Result<Arc<Slot>> {
        self.slots
            .read()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| CKR_SLOT_ID_INVALID.into())
    }

    fn token(&self, slot: &Slot) -> Result<Option<Arc<Token>>> {
        slot.token(&self.readers, &self.config, &self.handles)
    }

    pub(super) fn present_token(&self, slot_id: CK_SLOT_ID) -> Result<Arc<Token>> {
        let slot = self.slot(slot_id)?;
        self.token(&slot)?
            .ok_or_else(|| CKR_TOKEN_NOT_PRESENT.into())
    }

    pub fn slot_list(&self, token_present: bool, refresh: bool) -> Result<Vec<CK_SLOT_ID>> {
        if refresh {
            self.refresh_slots();
        }
        let slots: Vec<Arc<Slot>> = self.slots.read().clone();
        let mut out = Vec::new();
        for slot in slots {
            // A card that fails while being read is present (C_OpenSession then reports
            // CKR_DEVICE_ERROR); one without the applet is not a token.
            if !token_present || !matches!(self.token(&slot), Ok(None)) {
                out.push(slot.id);
            }
        }
        Ok(out)
    }

    pub fn slot_info(&self, slot_id: CK_SLOT_ID) -> Result<SlotInfo> {
        let slot = self.slot(slot_id)?;
        let present = match slot.current_token() {
            Some(t) => t.check_present(),
            None => false,
        };
        let token_present = present || !matches!(self.token(&slot), Ok(None));
        let manufacturer = slot.manufacturer.lock().clone().unwrap_or_else(|| {
            if self.readers.is_modem(&slot.reader) {
                "modem".to_string()
            } else {
                "PC/SC reader".to_string()
            }
        });
        Ok(SlotInfo {
            description: slot.reader.clone(),
            manufacturer,
            token_present,
        })
    }

    pub fn token_info(&self, slot_id: CK_SLOT_ID) -> Result<TokenInfo> {
        let token = self.present_token(slot_id)?;
        let session_count = self
            .sessions
            .read()
            .values()
            .filter(|s| s.lock().slot_id == slot_id)
            .count();
        let rw_session_count = self
            .sessions
            .read()
            .values()
            .filter(|s| {
                let s = s.lock();
                s.slot_id == slot_id && s.is_rw()
            })
            .count();
        Ok(TokenInfo {
            rw_session_count,
            writable: token.writable,
            label: token.label.clone(),
            serial: token.serial.clone(),
            applet_version: token.applet_version,
            session_count,
        })
    }

    /// The mechanisms this slot's token really performs (from what the applet offers).
    pub fn mechanisms(
        &self,
        slot_id: CK_SLOT_ID,
    ) -> Result<Vec<&'static mechanism::MechanismEntry>> {
        let token = self.present_token(slot_id)?;
        Ok(mechanism::MECHANISMS
            .iter()
            .filter(|m| match m.mechanism {
                CKM_EC_KEY_PAIR_GEN => token
                    .app_info
                    .offers(crate::applet::objects::FUNCTION_KEY_GENERATION),
                CKM_ECDH1_DERIVE => token
                    .app_info
                    .offers(crate::applet::objects::FUNCTION_KEY_AGREEMENT),
                m if kdf::is_kdf_mechanism(m) => {
                    token.app_info.offers_derivation(kdf::card_algorithm(m))
                }
                _ => true,
            })
            .collect())
    }
}
