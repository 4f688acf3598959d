//! Sessions and login: open, close, look up, and the PKCS#11 login state machine.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cryptoki_sys::*;
use parking_lot::Mutex;

use crate::error::{Error, Result};

use super::module::Module;
use super::operation::{Operation, OperationKind};
use super::session::Session;
use super::slot::Token;

impl Module {
    pub fn open_session(&self, slot_id: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED.into());
        }
        let token = self.present_token(slot_id)?;
        // Read-write sessions are accepted although the token is write-protected: tools such
        // as pkcs11-tool --test and OpenSC's p11test always ask for one. Every write in them
        // still fails with CKR_TOKEN_WRITE_PROTECTED (see `refuse_write`).
        let handle = self.handles.session_handle();
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
    pub(super) fn on_card<R>(
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
                // Only a signature or verification can ask for the key's own login.
                let kind = s.lock().operation.as_ref().map(Operation::kind);
                if !matches!(kind, Some(OperationKind::Sign | OperationKind::Verify)) {
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

    pub fn check_session(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        self.session(handle).map(|_| ())
    }

    /// The error for a write to a token object: the session kind decides which one the
    /// specification names.
    pub fn refuse_write(&self, handle: CK_SESSION_HANDLE) -> Error {
        // Only for tokens that take no writes: `store` checks the session of a writable one.
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
