//! Attribute templates from owned values, and the in-process object calls that take them:
//! `C_CreateObject`, `C_SetAttributeValue`, `C_CopyObject`, `C_VerifyInit` + `C_Verify`.

use cryptoki_sys::*;
use iotsafe_pkcs11::ffi::*;

/// A template whose values live as long as it does.
#[derive(Default, Clone)]
pub struct Template(Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>);

impl Template {
    pub fn new() -> Template {
        Template::default()
    }

    pub fn bytes(mut self, t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Template {
        self.0.push((t, v.to_vec()));
        self
    }

    pub fn ulong(self, t: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Template {
        self.bytes(t, &v.to_ne_bytes())
    }

    pub fn bool(self, t: CK_ATTRIBUTE_TYPE, v: bool) -> Template {
        self.bytes(t, &[v as u8])
    }

    pub fn class(self, class: CK_OBJECT_CLASS) -> Template {
        self.ulong(CKA_CLASS, class)
    }

    fn attributes(&mut self) -> Vec<CK_ATTRIBUTE> {
        self.0
            .iter_mut()
            .map(|(t, v)| CK_ATTRIBUTE {
                type_: *t,
                pValue: v.as_mut_ptr() as *mut _,
                ulValueLen: v.len() as CK_ULONG,
            })
            .collect()
    }
}

fn result<T>(rv: CK_RV, value: T) -> Result<T, CK_RV> {
    if rv == CKR_OK { Ok(value) } else { Err(rv) }
}

pub fn create_object(s: CK_SESSION_HANDLE, t: &Template) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut t = t.clone();
    let mut attrs = t.attributes();
    let mut h = 0;
    let rv = unsafe { C_CreateObject(s, attrs.as_mut_ptr(), attrs.len() as CK_ULONG, &mut h) };
    result(rv, h)
}

pub fn set_attributes(s: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, t: &Template) -> CK_RV {
    let mut t = t.clone();
    let mut attrs = t.attributes();
    unsafe { C_SetAttributeValue(s, object, attrs.as_mut_ptr(), attrs.len() as CK_ULONG) }
}

pub fn copy_object(
    s: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    t: &Template,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut t = t.clone();
    let mut attrs = t.attributes();
    let mut h = 0;
    let rv = unsafe {
        C_CopyObject(
            s,
            object,
            attrs.as_mut_ptr(),
            attrs.len() as CK_ULONG,
            &mut h,
        )
    };
    result(rv, h)
}

/// `C_VerifyInit` + `C_Verify` in one go: the first return value that is not `CKR_OK`.
pub fn verify(
    s: CK_SESSION_HANDLE,
    m: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
    data: &[u8],
    signature: &[u8],
) -> CK_RV {
    let mut mm = super::inprocess::mech(m);
    let rv = unsafe { C_VerifyInit(s, &mut mm, key) };
    if rv != CKR_OK {
        return rv;
    }
    unsafe {
        C_Verify(
            s,
            data.as_ptr() as *mut u8,
            data.len() as CK_ULONG,
            signature.as_ptr() as *mut u8,
            signature.len() as CK_ULONG,
        )
    }
}
