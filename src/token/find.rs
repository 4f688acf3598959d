//! Objects as a session sees them: by handle (token objects, then its slot's session
//! objects) and by template (`C_FindObjects*`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cryptoki_sys::*;

use crate::error::{Error, Result};

use super::module::{Module, SessionObject};
use super::object::{AttrValue, Object};
use super::slot::Token;
use super::template::{Template, template_bool};

/// Private objects are seen only while the user is logged in.
fn visible(object: &Object, token: &Token) -> bool {
    !object.bool_attribute(CKA_PRIVATE) || token.logged_in.load(Ordering::Acquire)
}

/// `C_CreateObject`, `C_CopyObject`, `C_DeriveKey`: "only public objects can be created unless
/// the normal user is logged in" (PKCS#11 3.0 §5.7, §5.18). Refused before any card work, so
/// that no object is made that its own session could not see.
pub(super) fn may_create(template: &Template, token: &Token) -> Result<()> {
    if template_bool(template, CKA_PRIVATE)? == Some(true)
        && !token.logged_in.load(Ordering::Acquire)
    {
        return Err(Error::new(
            CKR_USER_NOT_LOGGED_IN,
            "private objects need the user logged in",
        ));
    }
    Ok(())
}

impl Module {
    /// The object as session `handle` sees it: one of its token's, or a session object of its
    /// slot.
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
        self.session_object(slot_id, &token, object)
            .ok_or_else(|| CKR_OBJECT_HANDLE_INVALID.into())
    }

    /// A session object of slot `slot_id` as its sessions see it: a private one only while
    /// the user is logged in (PKCS#11 §4.4).
    pub(super) fn session_object(
        &self,
        slot_id: CK_SLOT_ID,
        token: &Token,
        object: CK_OBJECT_HANDLE,
    ) -> Option<Arc<Object>> {
        self.session_objects
            .read()
            .get(&object)
            .filter(|o| o.slot_id == slot_id && visible(&o.object, token))
            .map(|o| o.object.clone())
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
        if self.is_session_object(found.handle) {
            if !found.bool_attribute(CKA_DESTROYABLE) {
                return Err(Error::new(
                    CKR_ACTION_PROHIBITED,
                    "the object is not destroyable (CKA_DESTROYABLE false)",
                ));
            }
            self.session_objects.write().remove(&found.handle);
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
            .filter(|o| o.slot_id == s.slot_id && visible(&o.object, &s.token))
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
}

/// True when the attribute exists (used by the FFI layer's `C_GetAttributeValue`).
pub fn attribute_value(object: &Object, t: CK_ATTRIBUTE_TYPE) -> Option<&AttrValue> {
    object.attribute(t)
}
