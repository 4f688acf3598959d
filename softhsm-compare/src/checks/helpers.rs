//! Shared pieces of the checks: `C_Initialize` arguments, sessions and login, templates, find,
//! attribute reads, slots by label, the call shapes several functions share (init with a key,
//! data in and out, update), one signature and its verification on the host.

use std::ffi::c_void;
use std::ptr::null_mut;

use cryptoki_sys::*;

use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::{SESSION_FLAGS, flag_names, state_name};

pub(super) fn os_locking_args() -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: null_mut(),
    }
}

/// `C_OpenSession` without application or callback: (rv, handle).
pub(super) fn open_session(
    m: &Module,
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
) -> (CK_RV, CK_SESSION_HANDLE) {
    let mut s = 0;
    let rv = call!(m, C_OpenSession, slot, flags, null_mut(), None, &mut s);
    (rv, s)
}

/// A session the checks need (panics when the module cannot open one).
pub(super) fn open(m: &Module, slot: CK_SLOT_ID, flags: CK_FLAGS) -> CK_SESSION_HANDLE {
    let (rv, s) = open_session(m, slot, flags);
    assert_eq!(rv, CKR_OK, "C_OpenSession({flags:#x}) = {}", rv_name(rv));
    s
}

pub(super) fn login(m: &Module, s: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> CK_RV {
    call!(
        m,
        C_Login,
        s,
        user,
        pin.as_ptr() as *mut u8,
        pin.len() as CK_ULONG
    )
}

pub(super) fn attr<T>(t: CK_ATTRIBUTE_TYPE, v: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v as *const T as *mut c_void,
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

pub(super) fn attr_bytes(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_ptr() as *mut c_void,
        ulValueLen: v.len() as CK_ULONG,
    }
}

/// A template entry the module fills: `buf` and its length.
pub(super) fn attr_out(t: CK_ATTRIBUTE_TYPE, buf: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: buf.as_mut_ptr() as *mut c_void,
        ulValueLen: buf.len() as CK_ULONG,
    }
}

pub(super) fn mech(t: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: t,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// All handles matching `template` (FindObjectsInit / FindObjects(16) / FindObjectsFinal).
pub(super) fn find(
    m: &Module,
    s: CK_SESSION_HANDLE,
    template: &mut [CK_ATTRIBUTE],
) -> (CK_RV, Vec<CK_OBJECT_HANDLE>) {
    let rv = call!(
        m,
        C_FindObjectsInit,
        s,
        template.as_mut_ptr(),
        template.len() as CK_ULONG
    );
    if rv != CKR_OK {
        return (rv, vec![]);
    }
    let mut all = Vec::new();
    loop {
        let mut buf = [0 as CK_OBJECT_HANDLE; 16];
        let mut n = 0;
        let rv = call!(m, C_FindObjects, s, buf.as_mut_ptr(), 16, &mut n);
        if rv != CKR_OK {
            call!(m, C_FindObjectsFinal, s);
            return (rv, all);
        }
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n as usize]);
    }
    let rv = call!(m, C_FindObjectsFinal, s);
    (rv, all)
}

/// (rv, value) of one attribute: size query, then fetch with the exact size.
pub(super) fn get(
    m: &Module,
    s: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> (CK_RV, CK_ULONG, Option<Vec<u8>>) {
    let mut a = CK_ATTRIBUTE {
        type_: t,
        pValue: null_mut(),
        ulValueLen: 0,
    };
    let rv = call!(m, C_GetAttributeValue, s, o, &mut a, 1);
    if rv != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION {
        return (rv, a.ulValueLen, None);
    }
    let len = a.ulValueLen;
    let mut buf = vec![0u8; len as usize];
    a.pValue = buf.as_mut_ptr() as *mut c_void;
    let rv = call!(m, C_GetAttributeValue, s, o, &mut a, 1);
    if rv != CKR_OK {
        return (rv, a.ulValueLen, None);
    }
    buf.truncate(a.ulValueLen as usize);
    (rv, len, Some(buf))
}

pub(super) fn get_bytes(
    m: &Module,
    s: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> Vec<u8> {
    get(m, s, o, t).2.unwrap_or_default()
}

pub(super) fn as_ulong(v: &[u8]) -> Option<CK_ULONG> {
    (v.len() == 8).then(|| CK_ULONG::from_ne_bytes(v.try_into().unwrap()))
}

pub(super) fn slot_list(m: &Module, present: CK_BBOOL) -> Vec<CK_SLOT_ID> {
    let mut n = 0;
    call!(m, C_GetSlotList, present, null_mut(), &mut n);
    let mut v = vec![0; n as usize];
    call!(m, C_GetSlotList, present, v.as_mut_ptr(), &mut n);
    v.truncate(n as usize);
    v
}

pub(super) fn token_label(m: &Module, slot: CK_SLOT_ID) -> Option<String> {
    let mut t: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    (call!(m, C_GetTokenInfo, slot, &mut t) == CKR_OK)
        .then(|| String::from_utf8_lossy(&t.label).trim_end().to_string())
}

/// The first of `slots` whose token has this label.
pub(super) fn slot_with_label(m: &Module, slots: &[CK_SLOT_ID], label: &str) -> Option<CK_SLOT_ID> {
    slots
        .iter()
        .copied()
        .find(|&s| token_label(m, s).as_deref() == Some(label))
}

pub(super) fn session_info(m: &Module, s: CK_SESSION_HANDLE) -> (CK_RV, String) {
    let mut i: CK_SESSION_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetSessionInfo, s, &mut i);
    (
        rv,
        if rv == CKR_OK {
            format!(
                "state={} flags={} deviceError={}",
                state_name(i.state),
                flag_names(i.flags, SESSION_FLAGS),
                i.ulDeviceError
            )
        } else {
            String::new()
        },
    )
}

/// Verifies `sig` (raw r||s) over `prehash` with the public key `point` (DER OCTET STRING).
pub(super) fn host_verify(point: &[u8], prehash: &[u8], sig: &[u8]) -> &'static str {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    if point.len() < 3 {
        return "no public key";
    }
    let Ok(vk) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point[2..]) else {
        return "bad public key";
    };
    let Ok(sig) = p256::ecdsa::Signature::from_slice(sig) else {
        return "not r||s";
    };
    match vk.verify_prehash(prehash, &sig) {
        Ok(()) => "host-verified",
        Err(_) => "HOST-REJECTED",
    }
}

/// `(pointer, name)` of a function of a function list (`m.f()`, or a 3.0 list), for the call
/// shapes below that several functions share.
macro_rules! function {
    ($list:expr, $f:ident) => {
        ($list.$f, stringify!($f))
    };
}
pub(super) use function;

/// The function of a `(pointer, name)` pair; a list without it is a broken module.
pub(super) fn present<F>((function, name): (Option<F>, &str)) -> F {
    function.unwrap_or_else(|| panic!("{name} missing in the function list"))
}

/// The shape of `C_SignInit`, `C_VerifyInit`, `C_EncryptInit`, ...: a mechanism (here without
/// parameter) and a key.
pub(super) fn init_with_key(
    function: (CK_C_SignInit, &str),
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let mut mm = mech(mechanism);
    unsafe { present(function)(s, &mut mm, key) }
}

/// The shape of `C_Sign`, `C_Digest`, `C_Encrypt`, the dual-function updates, ...: `data` in,
/// `out` (NULL: the length only) and `len` (in and out; NULL allowed) out.
pub(super) fn data_in_out(
    function: (CK_C_Sign, &str),
    s: CK_SESSION_HANDLE,
    data: &[u8],
    out: *mut u8,
    len: *mut CK_ULONG,
) -> CK_RV {
    let data_len = data.len() as CK_ULONG;
    unsafe { present(function)(s, data.as_ptr() as *mut u8, data_len, out, len) }
}

/// The shape of `C_SignUpdate`, `C_VerifyUpdate`, `C_DigestUpdate`: one part of the data.
pub(super) fn update(
    function: (CK_C_SignUpdate, &str),
    s: CK_SESSION_HANDLE,
    part: &[u8],
) -> CK_RV {
    unsafe { present(function)(s, part.as_ptr() as *mut u8, part.len() as CK_ULONG) }
}

pub(super) fn sign_init(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    init_with_key(function!(m.f(), C_SignInit), s, mechanism, key)
}

/// `C_Sign` over `data` into `out` (NULL: the length only); `len` in and out (NULL allowed).
pub(super) fn sign(
    m: &Module,
    s: CK_SESSION_HANDLE,
    data: &[u8],
    out: *mut u8,
    len: *mut CK_ULONG,
) -> CK_RV {
    data_in_out(function!(m.f(), C_Sign), s, data, out, len)
}

/// `C_SignInit` and `C_Sign` into a 256-byte buffer: (rv, signature).
pub(super) fn sign_once(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    k: CK_OBJECT_HANDLE,
    data: &[u8],
) -> (CK_RV, Vec<u8>) {
    let rv = sign_init(m, s, mechanism, k);
    if rv != CKR_OK {
        return (rv, vec![]);
    }
    let mut sig = vec![0u8; 256];
    let mut len: CK_ULONG = 256;
    let rv = sign(m, s, data, sig.as_mut_ptr(), &mut len);
    sig.truncate(if rv == CKR_OK { len as usize } else { 0 });
    (rv, sig)
}

pub(super) fn verify_once(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    p: CK_OBJECT_HANDLE,
    data: &[u8],
    sig: &[u8],
) -> CK_RV {
    let rv = init_with_key(function!(m.f(), C_VerifyInit), s, mechanism, p);
    if rv != CKR_OK {
        return rv;
    }
    call!(
        m,
        C_Verify,
        s,
        data.as_ptr() as *mut u8,
        data.len() as CK_ULONG,
        sig.as_ptr() as *mut u8,
        sig.len() as CK_ULONG
    )
}

pub(super) fn digest_of(mechanism: CK_MECHANISM_TYPE, data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    match mechanism {
        CKM_ECDSA_SHA256 => sha2::Sha256::digest(data).to_vec(),
        CKM_ECDSA_SHA384 => sha2::Sha384::digest(data).to_vec(),
        CKM_ECDSA_SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => data.to_vec(),
    }
}
