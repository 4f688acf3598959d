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
        let read_only = flags & CKF_RW_SESSION == 0;
        let mut sessions = self.sessions.write();
        if read_only && token.so_logged_in.load(Ordering::Acquire) {
            return Err(CKR_SESSION_READ_WRITE_SO_EXISTS.into());
        }
        let handle = self.handles.session_handle();
        let session = Session::new(handle, slot_id, token, flags);
        sessions.insert(handle, Arc::new(Mutex::new(session)));
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
            t.log_out();
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
            token.log_out();
        }
    }

    pub fn session_info(
        &self,
        handle: CK_SESSION_HANDLE,
    ) -> Result<(CK_SLOT_ID, CK_STATE, CK_FLAGS)> {
        let s = self.session(handle)?;
        let s = s.lock();
        let user = s.token.logged_in.load(Ordering::Acquire);
        let so = s.token.so_logged_in.load(Ordering::Acquire);
        let state = match (s.is_rw(), user, so) {
            // The SO logs in only when every session of the token is read-write.
            (_, _, true) => CKS_RW_SO_FUNCTIONS,
            (false, false, _) => CKS_RO_PUBLIC_SESSION,
            (false, true, _) => CKS_RO_USER_FUNCTIONS,
            (true, false, _) => CKS_RW_PUBLIC_SESSION,
            (true, true, _) => CKS_RW_USER_FUNCTIONS,
        };
        Ok((s.slot_id, state, s.flags))
    }

    /// IoT.05 has no PIN and the token needs no login (`CKF_LOGIN_REQUIRED` clear): login
    /// only moves the PKCS#11 state machine, the card is not involved, and any PIN is taken.
    /// That holds for the security officer too: `CKU_SO` is a valid user type (PKCS#11 3.0
    /// §5.1: `CKR_USER_TYPE_INVALID` is for values other than CKU_SO, CKU_USER and
    /// CKU_CONTEXT_SPECIFIC), so `C_Login(CKU_SO)` follows the §5.6 rules: refused while a
    /// read-only session of the token is open, one user type at a time.
    pub fn login(&self, handle: CK_SESSION_HANDLE, user_type: CK_USER_TYPE) -> Result<()> {
        let s = self.session(handle)?;
        let (token, slot_id) = {
            let s = s.lock();
            (s.token.clone(), s.slot_id)
        };
        let (mine, other) = match user_type {
            CKU_USER => (&token.logged_in, &token.so_logged_in),
            CKU_SO => (&token.so_logged_in, &token.logged_in),
            CKU_CONTEXT_SPECIFIC => {
                // Only a signature or verification can ask for the key's own login.
                let kind = s.lock().operation.as_ref().map(Operation::kind);
                if !matches!(kind, Some(OperationKind::Sign | OperationKind::Verify)) {
                    return Err(CKR_OPERATION_NOT_INITIALIZED.into());
                }
                return Ok(());
            }
            _ => return Err(CKR_USER_TYPE_INVALID.into()),
        };
        // Held while deciding, so a user and an SO logging in at once cannot both succeed
        // and no read-only session opens in between.
        let sessions = self.sessions.write();
        // The read-only rule first, as SoftHSM2 orders it.
        if user_type == CKU_SO {
            let read_only_open = sessions.values().any(|o| {
                o.try_lock()
                    .is_none_or(|o| o.slot_id == slot_id && !o.is_rw())
            });
            if read_only_open {
                return Err(CKR_SESSION_READ_ONLY_EXISTS.into());
            }
        }
        if mine.load(Ordering::Acquire) {
            return Err(CKR_USER_ALREADY_LOGGED_IN.into());
        }
        if other.load(Ordering::Acquire) {
            return Err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN.into());
        }
        mine.store(true, Ordering::Release);
        Ok(())
    }

    pub fn logout(&self, handle: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(handle)?;
        let token = s.lock().token.clone();
        if !token.log_out() {
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

impl Token {
    /// Logs out whoever is logged in; false when nobody was.
    fn log_out(&self) -> bool {
        let user = self.logged_in.swap(false, Ordering::AcqRel);
        let so = self.so_logged_in.swap(false, Ordering::AcqRel);
        user || so
    }
}
