//! A session: its slot and token, its kind, and what it has under way (one search, one
//! cryptographic operation).

use std::sync::Arc;

use cryptoki_sys::*;

use super::operation::Operation;
use super::slot::Token;

pub struct Session {
    pub handle: CK_SESSION_HANDLE,
    pub slot_id: CK_SLOT_ID,
    pub token: Arc<Token>,
    pub flags: CK_FLAGS,
    /// The search between `C_FindObjectsInit` and `C_FindObjectsFinal`: the handles still to
    /// hand out, the next one last. Independent of `operation`.
    pub find: Option<Vec<CK_OBJECT_HANDLE>>,
    /// The active sign, verify or digest operation: one at a time.
    pub operation: Option<Operation>,
}

impl Session {
    pub fn new(
        handle: CK_SESSION_HANDLE,
        slot_id: CK_SLOT_ID,
        token: Arc<Token>,
        flags: CK_FLAGS,
    ) -> Self {
        Session {
            handle,
            slot_id,
            token,
            flags,
            find: None,
            operation: None,
        }
    }

    pub fn is_rw(&self) -> bool {
        self.flags & CKF_RW_SESSION != 0
    }
}
