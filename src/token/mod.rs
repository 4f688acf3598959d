//! PKCS#11 semantics without `unsafe` and without bytes on the wire: slots, tokens, sessions,
//! objects, operations. Global state is an `Arc<Module>` behind a `RwLock` that is only held
//! long enough to clone the `Arc`; card I/O never happens under a global lock.

pub mod error;
pub mod kdf;
pub mod keys;
pub mod mechanism;
pub mod object;
pub mod session;
pub mod slot;
pub mod store;
pub mod template;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cryptoki_sys::*;
use log::{debug, info};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::applet::Readers;
use crate::applet::objects::{HASH_SHA256, HASH_SHA384, HASH_SHA512};
use crate::config::Config;
use crate::error::{Error, Result};

use mechanism::{Hasher, fit_to_p256};
use object::{AttrValue, Object};
use session::{MessageInput, Session, SignOperation, VerifyOperation};
use slot::{Slot, Token};

pub const SIGNATURE_LEN: usize = 64;

static MODULE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

pub struct Module {
    pid: u32,
    config: Config,
    /// Where slots come from (PC/SC readers, modems).
    readers: Readers,
    slots: RwLock<Vec<Arc<Slot>>>,
    sessions: RwLock<HashMap<CK_SESSION_HANDLE, Arc<Mutex<Session>>>>,
    next_session: AtomicU64,
    /// Session objects (derived secret keys): handle → owner session, slot, object.
    session_objects: RwLock<HashMap<CK_OBJECT_HANDLE, SessionObject>>,
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

pub fn initialize(inline_config: Option<&str>) -> Result<()> {
    let mut guard = MODULE.write();
    if let Some(m) = guard.as_ref() {
        if m.pid == std::process::id() {
            return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED.into());
        }
        // Forked child: the parent's PC/SC context and card handles belong to the parent's
        // connection to pcscd. Forget them without releasing anything.
        if let Some(inherited) = guard.take() {
            std::mem::forget(inherited);
        }
    }
    let config = Config::load(inline_config)?;
    crate::init_logging(config.log.as_deref());
    let module = Module {
        pid: std::process::id(),
        readers: Readers::from_config(&config),
        config,
        slots: RwLock::new(Vec::new()),
        sessions: RwLock::new(HashMap::new()),
        next_session: AtomicU64::new(1),
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
        for slot in m.slots.read().iter() {
            slot.close();
        }
    }
    Ok(())
}

/// What `C_GetSlotInfo` reports.
pub struct SlotInfo {
    pub description: String,
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

    fn slot(&self, id: CK_SLOT_ID) -> Result<Arc<Slot>> {
        self.slots
            .read()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| CKR_SLOT_ID_INVALID.into())
    }

    fn token(&self, slot: &Slot) -> Result<Option<Arc<Token>>> {
        slot.token(&self.readers, &self.config)
    }

    fn present_token(&self, slot_id: CK_SLOT_ID) -> Result<Arc<Token>> {
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
        Ok(SlotInfo {
            description: slot.reader.clone(),
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

    pub fn open_session(&self, slot_id: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED.into());
        }
        let token = self.present_token(slot_id)?;
        // Read-write sessions are accepted although the token is write-protected: tools such
        // as pkcs11-tool --test and OpenSC's p11test always ask for one. Every write in them
        // still fails with CKR_TOKEN_WRITE_PROTECTED (see `refuse_write`).
        let handle = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(handle, slot_id, token, flags);
        self.sessions
            .write()
            .insert(handle, Arc::new(Mutex::new(session)));
        Ok(handle)
    }

    /// The session, or `CKR_DEVICE_REMOVED` once (then it is gone: `CKR_SESSION_HANDLE_INVALID`)
    /// when its token went away.
    pub fn session(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>> {
        let s = self
            .sessions
            .read()
            .get(&handle)
            .cloned()
            .ok_or_else(|| Error::from(CKR_SESSION_HANDLE_INVALID))?;
        if s.lock().token.is_removed() {
            self.sessions.write().remove(&handle);
            return Err(Error::new(
                CKR_DEVICE_REMOVED,
                "the session's token was removed",
            ));
        }
        Ok(s)
    }

    /// Runs a session's card operation. When it finds the card gone, this session has now
    /// been told (`CKR_DEVICE_REMOVED`) and is closed: its handle is invalid from here on.
    fn on_card<R>(
        &self,
        handle: CK_SESSION_HANDLE,
        token: &Token,
        op: impl FnMut(&mut crate::applet::AppletChannel<'_>) -> crate::applet::Result<R>,
    ) -> Result<R> {
        let result = token.run(op);
        if let Err(e) = &result
            && e.rv() == CKR_DEVICE_REMOVED
        {
            self.sessions.write().remove(&handle);
        }
        result
    }

    pub fn close_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let removed = self.sessions.write().remove(&handle);
        let session = removed.ok_or_else(|| Error::from(CKR_SESSION_HANDLE_INVALID))?;
        self.session_objects
            .write()
            .retain(|_, o| o.owner != handle);
        let (slot_id, token) = {
            let s = session.lock();
            (s.slot_id, s.token.clone())
        };
        self.logout_if_last(slot_id, &token);
        Ok(())
    }

    pub fn close_all_sessions(&self, slot_id: CK_SLOT_ID) -> Result<()> {
        let slot = self.slot(slot_id)?;
        self.sessions
            .write()
            .retain(|_, s| s.lock().slot_id != slot_id);
        self.session_objects
            .write()
            .retain(|_, o| o.slot_id != slot_id);
        if let Some(t) = slot.current_token() {
            t.logged_in.store(false, Ordering::Release);
        }
        Ok(())
    }

    fn logout_if_last(&self, slot_id: CK_SLOT_ID, token: &Token) {
        let any_left = self
            .sessions
            .read()
            .values()
            .any(|s| s.lock().slot_id == slot_id);
        if !any_left {
            token.logged_in.store(false, Ordering::Release);
        }
    }

    pub fn session_info(
        &self,
        handle: CK_SESSION_HANDLE,
    ) -> Result<(CK_SLOT_ID, CK_STATE, CK_FLAGS)> {
        let s = self.session(handle)?;
        let s = s.lock();
        let logged_in = s.token.logged_in.load(Ordering::Acquire);
        let state = match (s.is_rw(), logged_in) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        Ok((s.slot_id, state, s.flags))
    }

    /// IoT.05 has no PIN: login only moves the PKCS#11 state machine, the card is not involved.
    pub fn login(&self, handle: CK_SESSION_HANDLE, user_type: CK_USER_TYPE) -> Result<()> {
        let s = self.session(handle)?;
        let token = s.lock().token.clone();
        match user_type {
            CKU_USER => {
                if token.logged_in.swap(true, Ordering::AcqRel) {
                    return Err(CKR_USER_ALREADY_LOGGED_IN.into());
                }
                Ok(())
            }
            // IoT.05 has no security officer.
            CKU_SO => {
                let slot_id = s.lock().slot_id;
                let ro_exists = self.sessions.read().values().any(|o| {
                    o.try_lock()
                        .is_none_or(|o| o.slot_id == slot_id && !o.is_rw())
                });
                if ro_exists {
                    Err(CKR_SESSION_READ_ONLY_EXISTS.into())
                } else {
                    Err(Error::new(
                        CKR_USER_TYPE_INVALID,
                        "IoT SAFE has no security officer",
                    ))
                }
            }
            CKU_CONTEXT_SPECIFIC => {
                let s = s.lock();
                if s.sign.is_none() && s.verify.is_none() {
                    return Err(CKR_OPERATION_NOT_INITIALIZED.into());
                }
                Ok(())
            }
            _ => Err(CKR_USER_TYPE_INVALID.into()),
        }
    }

    pub fn logout(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(handle)?;
        let token = s.lock().token.clone();
        if !token.logged_in.swap(false, Ordering::AcqRel) {
            return Err(CKR_USER_NOT_LOGGED_IN.into());
        }
        Ok(())
    }

    pub fn object(
        &self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<Arc<Object>> {
        let s = self.session(handle)?;
        let (token, slot_id) = {
            let s = s.lock();
            (s.token.clone(), s.slot_id)
        };
        if let Some(o) = token.object(object) {
            return Ok(o);
        }
        self.session_objects
            .read()
            .get(&object)
            .filter(|o| o.slot_id == slot_id)
            .map(|o| o.object.clone())
            .ok_or_else(|| CKR_OBJECT_HANDLE_INVALID.into())
    }

    /// Adds a session object owned by `owner`.
    pub fn add_session_object(
        &self,
        owner: CK_SESSION_HANDLE,
        slot_id: CK_SLOT_ID,
        object: Object,
    ) -> CK_OBJECT_HANDLE {
        let handle = object.handle;
        self.session_objects.write().insert(
            handle,
            SessionObject {
                owner,
                slot_id,
                object: Arc::new(object),
            },
        );
        handle
    }

    /// `C_DestroyObject`: session objects go at once; token objects are writes.
    pub fn destroy_object(
        &self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let found = self.object(handle, object)?;
        if self.session_objects.write().remove(&found.handle).is_some() {
            return Ok(());
        }
        self.destroy_token_object(handle, &found)
    }

    pub fn find_init(
        &self,
        handle: CK_SESSION_HANDLE,
        template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if s.find.is_some() {
            return Err(CKR_OPERATION_ACTIVE.into());
        }
        let session_objects: Vec<Arc<Object>> = self
            .session_objects
            .read()
            .values()
            .filter(|o| o.slot_id == s.slot_id)
            .map(|o| o.object.clone())
            .collect();
        let mut found: Vec<CK_OBJECT_HANDLE> = s
            .token
            .objects()
            .iter()
            .chain(session_objects.iter())
            .filter(|o| o.matches(template))
            .map(|o| o.handle)
            .collect();
        found.reverse(); // popped from the end, so results come in object order
        s.find = Some(found);
        Ok(())
    }

    pub fn find(&self, handle: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        let remaining = s
            .find
            .as_mut()
            .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
        let mut out = Vec::new();
        while out.len() < max {
            match remaining.pop() {
                Some(h) => out.push(h),
                None => break,
            }
        }
        Ok(out)
    }

    pub fn find_final(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        s.find
            .take()
            .map(|_| ())
            .ok_or_else(|| CKR_OPERATION_NOT_INITIALIZED.into())
    }

    pub fn sign_init(
        &self,
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        has_param: bool,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if s.sign.is_some() {
            return Err(CKR_OPERATION_ACTIVE.into());
        }
        let (mechanism, key) = operation_key(
            &s.token,
            mech,
            has_param,
            key,
            (CKF_SIGN, CKO_PRIVATE_KEY, CKA_SIGN),
        )?;
        s.sign = Some(SignOperation {
            mechanism,
            key,
            input: MessageInput::new(mechanism),
        });
        Ok(())
    }

    /// The signature length of the active operation (0 APDUs; the operation stays active).
    pub fn sign_len(&self, handle: CK_SESSION_HANDLE) -> Result<usize> {
        let s = self.session(handle)?;
        let s = s.lock();
        s.sign
            .as_ref()
            .map(|_| SIGNATURE_LEN)
            .ok_or_else(|| CKR_OPERATION_NOT_INITIALIZED.into())
    }

    pub fn sign_update(&self, handle: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        let op = s
            .sign
            .as_mut()
            .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
        op.input.update(data);
        Ok(())
    }

    /// Finishes the operation (single-part with `data`, or multi-part without) on the card.
    /// The operation ends whatever the outcome.
    pub fn sign_finish(
        &self,
        handle: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
    ) -> Result<[u8; SIGNATURE_LEN]> {
        let session = self.session(handle)?;
        let (op, token) = {
            let mut s = session.lock();
            let op = s
                .sign
                .take()
                .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
            (op, s.token.clone())
        };
        let SignOperation { key, input, .. } = op;
        let digest = input.finish(data);
        let (algorithm, to_sign) = card_hash_for(&key, &digest)?;
        self.on_card(handle, &token, |ch| {
            ch.sign_hash(&key.card, algorithm, &to_sign)
        })
    }

    pub fn verify_init(
        &self,
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        has_param: bool,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if s.verify.is_some() {
            return Err(CKR_OPERATION_ACTIVE.into());
        }
        let (mechanism, key) = operation_key(
            &s.token,
            mech,
            has_param,
            key,
            (CKF_VERIFY, CKO_PUBLIC_KEY, CKA_VERIFY),
        )?;
        let point = key
            .point
            .ok_or_else(|| Error::from(CKR_KEY_HANDLE_INVALID))?;
        s.verify = Some(VerifyOperation {
            mechanism,
            point,
            input: MessageInput::new(mechanism),
        });
        Ok(())
    }

    pub fn verify_update(&self, handle: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        let op = s
            .verify
            .as_mut()
            .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
        op.input.update(data);
        Ok(())
    }

    /// Verifies on the host with the cached public key (0 APDUs). Ends the operation.
    pub fn verify_finish(
        &self,
        handle: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        let s = self.session(handle)?;
        let op = s
            .lock()
            .verify
            .take()
            .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
        let VerifyOperation { point, input, .. } = op;
        let digest = input.finish(data);
        if signature.len() != SIGNATURE_LEN {
            return Err(CKR_SIGNATURE_LEN_RANGE.into());
        }
        let vk = VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| Error::new(CKR_KEY_HANDLE_INVALID, "public key is not on P-256"))?;
        let sig =
            Signature::from_slice(signature).map_err(|_| Error::from(CKR_SIGNATURE_INVALID))?;
        vk.verify_prehash(&fit_to_p256(&digest), &sig)
            .map_err(|_| Error::from(CKR_SIGNATURE_INVALID))
    }

    pub fn digest_init(
        &self,
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        has_param: bool,
    ) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if s.digest.is_some() {
            return Err(CKR_OPERATION_ACTIVE.into());
        }
        let hasher = mechanism::find(mech)
            .filter(|m| m.flags & CKF_DIGEST != 0)
            .and_then(|m| Hasher::new(m.mechanism))
            .ok_or_else(|| Error::from(CKR_MECHANISM_INVALID))?;
        if has_param {
            return Err(CKR_MECHANISM_PARAM_INVALID.into());
        }
        s.digest = Some(hasher);
        Ok(())
    }

    pub fn digest_len(&self, handle: CK_SESSION_HANDLE) -> Result<usize> {
        let s = self.session(handle)?;
        let s = s.lock();
        s.digest
            .as_ref()
            .map(|h| h.output_len())
            .ok_or_else(|| CKR_OPERATION_NOT_INITIALIZED.into())
    }

    pub fn digest_update(&self, handle: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        let h = s
            .digest
            .as_mut()
            .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
        h.update(data);
        Ok(())
    }

    pub fn digest_finish(&self, handle: CK_SESSION_HANDLE, data: Option<&[u8]>) -> Result<Vec<u8>> {
        let s = self.session(handle)?;
        let mut h = s
            .lock()
            .digest
            .take()
            .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
        if let Some(d) = data {
            h.update(d);
        }
        Ok(h.finish())
    }

    /// Ends the session's operations named by `flags` (`CKF_SIGN`, `CKF_VERIFY`, `CKF_DIGEST`,
    /// `CKF_FIND_OBJECTS`), as `C_SessionCancel` does.
    pub fn end_operations(&self, handle: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if flags & CKF_SIGN != 0 {
            s.sign = None;
        }
        if flags & CKF_VERIFY != 0 {
            s.verify = None;
        }
        if flags & CKF_DIGEST != 0 {
            s.digest = None;
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            s.find = None;
        }
        Ok(())
    }

    /// The rule of `C_Sign`, `C_*Update`, `C_*Final`, `C_Verify` and `C_Digest`: a call that
    /// fails ends the operation, except a `CKR_BUFFER_TOO_SMALL` answer.
    pub fn end_on_error(&self, handle: CK_SESSION_HANDLE, flags: CK_FLAGS, result: &Result<()>) {
        if let Err(e) = result
            && e.rv() != CKR_BUFFER_TOO_SMALL
        {
            let _ = self.end_operations(handle, flags);
        }
    }

    pub fn generate_random(&self, handle: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        let s = self.session(handle)?;
        let token = s.lock().token.clone();
        if out.is_empty() {
            return Ok(());
        }
        self.on_card(handle, &token, |ch| ch.get_random(out))
    }

    pub fn check_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        self.session(handle).map(|_| ())
    }

    /// The error for a write to a token object: the session kind decides which one the
    /// specification names.
    pub fn refuse_write(&self, handle: CK_SESSION_HANDLE) -> Error {
        // (Writable tokens take the write path before this is reached.)
        match self.session(handle) {
            Err(e) => e,
            Ok(s) if s.lock().is_rw() => {
                Error::new(CKR_TOKEN_WRITE_PROTECTED, "the token is write-protected")
            }
            Ok(_) => Error::new(
                CKR_SESSION_READ_ONLY,
                "writing a token object needs a read-write session",
            ),
        }
    }
}

/// What C_SignInit and C_VerifyInit both check: a mechanism the token offers for `function`
/// (ECDSA takes no parameter) and a key of `class` whose `permission` attribute is set. Objects
/// of another class (a public key to sign with, a certificate) are refused as SoftHSM and
/// OpenSC do: the object does not permit the function.
fn operation_key(
    token: &Token,
    mech: CK_MECHANISM_TYPE,
    has_param: bool,
    key: CK_OBJECT_HANDLE,
    (function, class, permission): (CK_FLAGS, CK_OBJECT_CLASS, CK_ATTRIBUTE_TYPE),
) -> Result<(CK_MECHANISM_TYPE, Arc<Object>)> {
    let entry = mechanism::find(mech)
        .filter(|m| m.flags & function != 0)
        .ok_or_else(|| Error::from(CKR_MECHANISM_INVALID))?;
    if has_param {
        return Err(Error::new(
            CKR_MECHANISM_PARAM_INVALID,
            "ECDSA takes no parameter",
        ));
    }
    let key = token
        .object(key)
        .ok_or_else(|| Error::from(CKR_KEY_HANDLE_INVALID))?;
    let kind = if class == CKO_PRIVATE_KEY {
        "private"
    } else {
        "public"
    };
    if key.class != class {
        return Err(Error::new(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            format!("this operation needs a {kind} key"),
        ));
    }
    if !key.bool_attribute(permission) {
        return Err(Error::new(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            "the key does not allow this operation",
        ));
    }
    Ok((entry.mechanism, key))
}

/// Chooses what the card signs in pad-and-sign mode: the input fitted to 32 bytes declared as
/// SHA-256 (every IoT SAFE key supports it; the ECDSA result is identical because P-256 ECDSA
/// only uses the leftmost 256 bits), or, for a key that refuses SHA-256, the full SHA-384/512
/// digest under its own algorithm.
fn card_hash_for(key: &Object, digest: &[u8]) -> Result<(u16, Vec<u8>)> {
    let allowed = key.card.hash_algorithms.unwrap_or(HASH_SHA256);
    if allowed & HASH_SHA256 != 0 {
        return Ok((HASH_SHA256, fit_to_p256(digest).to_vec()));
    }
    match digest.len() {
        48 if allowed & HASH_SHA384 != 0 => Ok((HASH_SHA384, digest.to_vec())),
        64 if allowed & HASH_SHA512 != 0 => Ok((HASH_SHA512, digest.to_vec())),
        _ => Err(Error::new(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            format!("the key allows hash mask {allowed:04X} only"),
        )),
    }
}

/// True when the attribute exists (used by the FFI layer's `C_GetAttributeValue`).
pub fn attribute_value(object: &Object, t: CK_ATTRIBUTE_TYPE) -> Option<&AttrValue> {
    object.attribute(t)
}
