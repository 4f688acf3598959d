//! Reading a caller's attribute template (already copied out of its memory by the FFI layer).

use cryptoki_sys::*;

use crate::error::{Error, Result};

/// A template as (type, value bytes) pairs.
pub type Template = [(CK_ATTRIBUTE_TYPE, Vec<u8>)];

pub fn find_attr(t: &Template, attr: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    t.iter()
        .find(|(a, _)| *a == attr)
        .map(|(_, v)| v.as_slice())
}

pub fn template_bool(t: &Template, attr: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
    match find_attr(t, attr) {
        None => Ok(None),
        Some([b]) => Ok(Some(*b != 0)),
        Some(_) => Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("attribute 0x{attr:x} is not a CK_BBOOL"),
        )),
    }
}

pub fn template_ulong(t: &Template, attr: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
    match find_attr(t, attr) {
        None => Ok(None),
        Some(v) => v
            .try_into()
            .map(|b| Some(CK_ULONG::from_ne_bytes(b)))
            .map_err(|_| {
                Error::new(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    format!("attribute 0x{attr:x} is not a CK_ULONG"),
                )
            }),
    }
}
