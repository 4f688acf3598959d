//! Sessions and the state of their active operations.

use std::sync::Arc;

use cryptoki_sys::*;

use super::mechanism::Hasher;
use super::object::Object;
use super::slot::Token;

/// What a signature or verification is computed over: a host-side hash for
/// `CKM_ECDSA_SHA*`, or the raw input of `CKM_ECDSA` collected as it comes.
pub enum MessageInput {
    Hashed(Hasher),
    Raw(Vec<u8>),
}

impl MessageInput {
    pub fn new(mechanism: CK_MECHANISM_TYPE) -> Self {
        match Hasher::new(mechanism) {
            Some(h) => MessageInput::Hashed(h),
            None => MessageInput::Raw(Vec::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            MessageInput::Hashed(h) => h.update(data),
            MessageInput::Raw(buffer) => buffer.extend_from_slice(data),
        }
    }

    /// The digest (or raw input) after a last part `data`.
    pub fn finish(mut self, data: Option<&[u8]>) -> Vec<u8> {
        if let Some(d) = data {
            self.update(d);
        }
        match self {
            MessageInput::Hashed(h) => h.finish(),
            MessageInput::Raw(buffer) => buffer,
        }
    }
}

pub struct SignOperation {
    pub mechanism: CK_MECHANISM_TYPE,
    pub key: Arc<Object>,
    pub input: MessageInput,
}

pub struct VerifyOperation {
    pub mechanism: CK_MECHANISM_TYPE,
    pub point: [u8; 65],
    pub input: MessageInput,
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
