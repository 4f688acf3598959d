//! Sessions and the state of their active operations.

use std::sync::Arc;

use cryptoki_sys::*;

use super::mechanism::Hasher;
use super::object::Object;
use super::slot::Token;

pub struct SignOperation {
    pub mechanism: CK_MECHANISM_TYPE,
    pub key: Arc<Object>,
    /// Host-side hash for `CKM_ECDSA_SHA*`; `None` for raw `CKM_ECDSA`.
    pub hasher: Option<Hasher>,
    /// Raw `CKM_ECDSA` input collected by `C_SignUpdate`.
    pub buffer: Vec<u8>,
}

pub struct VerifyOperation {
    pub mechanism: CK_MECHANISM_TYPE,
    pub point: [u8; 65],
    pub hasher: Option<Hasher>,
    pub buffer: Vec<u8>,
}

pub struct Session {
    pub handle: CK_SESSION_HANDLE,
    pub slot_id: CK_SLOT_ID,
    pub token: Arc<Token>,
    pub flags: CK_FLAGS,
    pub find: Option<Vec<CK_OBJECT_HANDLE>>,
    pub sign: Option<SignOperation>,
    pub verify: Option<VerifyOperation>,
    pub digest: Option<Hasher>,
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
            sign: None,
            verify: None,
            digest: None,
        }
    }

    pub fn is_rw(&self) -> bool {
        self.flags & CKF_RW_SESSION != 0
    }
}
