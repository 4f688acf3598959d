//! 5.4 General-purpose functions: what a module answers before `C_Initialize`,
//! `C_GetInterfaceList`/`C_GetInterface` (3.0), the `C_Initialize` argument matrix (with mutex
//! callbacks), `C_Finalize` and `C_GetInfo`.

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki_sys::*;

use super::CONFIG_STRING;
use super::helpers::os_locking_args;
use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::{Report, padding_ok};

pub(super) fn before_init(m: &Module, r: &mut Report) {
    let mut info: CK_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetInfo, &mut info);
    r.check("preinit.get_info", "C_GetInfo", rv, "");
    let mut n = 0;
    let rv = call!(m, C_GetSlotList, CK_FALSE, null_mut(), &mut n);
    r.check(
        "preinit.get_slot_list",
        "C_GetSlotList(FALSE, NULL)",
        rv,
        "",
    );
    let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetSlotInfo, 0, &mut si);
    r.check("preinit.get_slot_info", "C_GetSlotInfo(0)", rv, "");
    let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetTokenInfo, 0, &mut ti);
    r.check("preinit.get_token_info", "C_GetTokenInfo(0)", rv, "");
    let rv = call!(m, C_GetMechanismList, 0, null_mut(), &mut n);
    r.check(
        "preinit.get_mechanism_list",
        "C_GetMechanismList(0)",
        rv,
        "",
    );
    let mut s = 0;
    let rv = call!(
        m,
        C_OpenSession,
        0,
        CKF_SERIAL_SESSION,
        null_mut(),
        None,
        &mut s
    );
    r.check("preinit.open_session", "C_OpenSession(0, SERIAL)", rv, "");
    let rv = call!(m, C_CloseAllSessions, 0);
    r.check("preinit.close_all", "C_CloseAllSessions(0)", rv, "");
    let mut buf = [0u8; 4];
    let rv = call!(m, C_GenerateRandom, 1, buf.as_mut_ptr(), 4);
    r.check("preinit.random", "C_GenerateRandom(1, 4)", rv, "");
    let mut slot = 0;
    let rv = call!(m, C_WaitForSlotEvent, CKF_DONT_BLOCK, &mut slot, null_mut());
    r.check(
        "preinit.wait_event",
        "C_WaitForSlotEvent(DONT_BLOCK)",
        rv,
        "",
    );
    let rv = call!(m, C_Finalize, null_mut());
    r.check("preinit.finalize", "C_Finalize(NULL)", rv, "");
    let get = m.symbol("C_GetFunctionList").unwrap();
    let get: unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV =
        unsafe { std::mem::transmute(get) };
    let rv = unsafe { get(null_mut()) };
    r.check(
        "preinit.function_list_null",
        "C_GetFunctionList(NULL)",
        rv,
        "",
    );
    let mut list: *mut CK_FUNCTION_LIST = null_mut();
    let rv = unsafe { get(&mut list) };
    let v = if list.is_null() {
        "NULL".into()
    } else {
        let v = unsafe { (*list).version };
        format!("version {}.{}", v.major, v.minor)
    };
    r.check("preinit.function_list", "C_GetFunctionList", rv, v);
}

type GetInterfaceList = unsafe extern "C" fn(*mut CK_INTERFACE, *mut CK_ULONG) -> CK_RV;
type GetInterface = unsafe extern "C" fn(
    *mut CK_UTF8CHAR,
    *mut CK_VERSION,
    *mut *mut CK_INTERFACE,
    CK_FLAGS,
) -> CK_RV;

fn describe_interface(i: &CK_INTERFACE) -> String {
    let name = if i.pInterfaceName.is_null() {
        "NULL".to_string()
    } else {
        unsafe { std::ffi::CStr::from_ptr(i.pInterfaceName as *const libc::c_char) }
            .to_string_lossy()
            .into_owned()
    };
    let v = if i.pFunctionList.is_null() {
        "NULL".to_string()
    } else {
        let v = unsafe { *(i.pFunctionList as *const CK_VERSION) };
        format!("{}.{}", v.major, v.minor)
    };
    let flags = if i.flags & CKF_INTERFACE_FORK_SAFE != 0 {
        "FORK_SAFE"
    } else {
        "0"
    };
    format!("{name:?} {v} flags={flags}")
}

pub(super) fn interfaces(m: &Module, r: &mut Report) {
    let list = m.symbol("C_GetInterfaceList");
    let one = m.symbol("C_GetInterface");
    r.fact(
        "iface.exported",
        "dlsym C_GetInterfaceList, C_GetInterface",
        format!(
            "{}, {}",
            if list.is_some() { "exported" } else { "absent" },
            if one.is_some() { "exported" } else { "absent" }
        ),
    );
    if let Some(p) = list {
        let f: GetInterfaceList = unsafe { std::mem::transmute(p) };
        let mut n = 0;
        let rv = unsafe { f(null_mut(), &mut n) };
        r.check(
            "iface.list_count",
            "C_GetInterfaceList(NULL)",
            rv,
            format!("count={n}"),
        );
        let rv = unsafe { f(null_mut(), null_mut()) };
        r.check(
            "iface.list_null_count",
            "C_GetInterfaceList(NULL, NULL)",
            rv,
            "",
        );
        if n > 1 {
            let mut short = vec![unsafe { std::mem::zeroed::<CK_INTERFACE>() }; n as usize - 1];
            let mut k = n - 1;
            let rv = unsafe { f(short.as_mut_ptr(), &mut k) };
            r.check(
                "iface.list_short",
                "C_GetInterfaceList(count-1)",
                rv,
                format!("count={k}"),
            );
        }
        let mut all = vec![unsafe { std::mem::zeroed::<CK_INTERFACE>() }; n as usize];
        let mut k = n;
        let rv = unsafe { f(all.as_mut_ptr(), &mut k) };
        let desc: Vec<String> = all[..k as usize].iter().map(describe_interface).collect();
        r.check(
            "iface.list",
            "C_GetInterfaceList(count)",
            rv,
            desc.join("; "),
        );
    }
    if let Some(p) = one {
        let f: GetInterface = unsafe { std::mem::transmute(p) };
        let mut out: *mut CK_INTERFACE = null_mut();
        let rv = unsafe { f(null_mut(), null_mut(), &mut out, 0) };
        let d = if rv == CKR_OK && !out.is_null() {
            describe_interface(unsafe { &*out })
        } else {
            String::new()
        };
        r.check("iface.default", "C_GetInterface(NULL, NULL)", rv, d);
        let mut name = *b"PKCS 11\0";
        for (id, major, minor) in [
            ("iface.v3_0", 3u8, 0u8),
            ("iface.v2_40", 2, 40),
            ("iface.v9_9", 9, 9),
        ] {
            let mut v = CK_VERSION { major, minor };
            let mut out: *mut CK_INTERFACE = null_mut();
            let rv = unsafe { f(name.as_mut_ptr(), &mut v, &mut out, 0) };
            let d = if rv == CKR_OK && !out.is_null() {
                describe_interface(unsafe { &*out })
            } else {
                String::new()
            };
            r.check(
                id,
                &format!("C_GetInterface(\"PKCS 11\", {major}.{minor})"),
                rv,
                d,
            );
        }
        let mut bad = *b"Vendor X\0";
        let mut out: *mut CK_INTERFACE = null_mut();
        let rv = unsafe { f(bad.as_mut_ptr(), null_mut(), &mut out, 0) };
        r.check("iface.unknown_name", "C_GetInterface(\"Vendor X\")", rv, "");
        let rv = unsafe { f(null_mut(), null_mut(), null_mut(), 0) };
        r.check("iface.null_out", "C_GetInterface(NULL, NULL, NULL)", rv, "");
        let mut out: *mut CK_INTERFACE = null_mut();
        let rv = unsafe { f(null_mut(), null_mut(), &mut out, CKF_INTERFACE_FORK_SAFE) };
        r.check(
            "iface.fork_safe",
            "C_GetInterface(NULL, NULL, FORK_SAFE)",
            rv,
            "",
        );
    }
}

// Mutex callbacks for the init matrix: a spin lock in a boxed AtomicBool (lock and unlock
// arrive as separate calls, so no guard can be held).
unsafe extern "C" fn create_mutex(out: *mut *mut c_void) -> CK_RV {
    if out.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let m = Box::new(AtomicBool::new(false));
    unsafe { *out = Box::into_raw(m) as *mut c_void };
    CKR_OK
}
unsafe extern "C" fn destroy_mutex(m: *mut c_void) -> CK_RV {
    if m.is_null() {
        return CKR_MUTEX_BAD;
    }
    drop(unsafe { Box::from_raw(m as *mut AtomicBool) });
    CKR_OK
}
unsafe extern "C" fn raw_lock(m: *mut c_void) -> CK_RV {
    if m.is_null() {
        return CKR_MUTEX_BAD;
    }
    let flag = unsafe { &*(m as *const AtomicBool) };
    while flag
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::hint::spin_loop();
    }
    CKR_OK
}
unsafe extern "C" fn raw_unlock(m: *mut c_void) -> CK_RV {
    if m.is_null() {
        return CKR_MUTEX_BAD;
    }
    let flag = unsafe { &*(m as *const AtomicBool) };
    if flag.swap(false, Ordering::Release) {
        CKR_OK
    } else {
        CKR_MUTEX_NOT_LOCKED
    }
}

pub(super) fn init_matrix(m: &Module, r: &mut Report) {
    let mut variants: Vec<(&str, &str, Option<CK_C_INITIALIZE_ARGS>)> = Vec::new();
    variants.push(("init.null", "C_Initialize(NULL)", None));
    variants.push((
        "init.os_locking",
        "C_Initialize(OS_LOCKING_OK)",
        Some(os_locking_args()),
    ));
    let mut cb = os_locking_args();
    cb.CreateMutex = Some(create_mutex);
    cb.DestroyMutex = Some(destroy_mutex);
    cb.LockMutex = Some(raw_lock);
    cb.UnlockMutex = Some(raw_unlock);
    variants.push((
        "init.os_locking_callbacks",
        "C_Initialize(OS_LOCKING_OK + 4 callbacks)",
        Some(cb),
    ));
    let mut only = cb;
    only.flags = 0;
    variants.push((
        "init.callbacks_only",
        "C_Initialize(4 callbacks, no flag)",
        Some(only),
    ));
    let mut partial = os_locking_args();
    partial.CreateMutex = Some(create_mutex);
    partial.DestroyMutex = Some(destroy_mutex);
    variants.push((
        "init.partial_callbacks",
        "C_Initialize(OS_LOCKING_OK + 2 of 4 callbacks)",
        Some(partial),
    ));
    let mut reserved = os_locking_args();
    reserved.pReserved = CONFIG_STRING.as_ptr() as *mut c_void;
    variants.push((
        "init.reserved",
        "C_Initialize(pReserved = \"\")",
        Some(reserved),
    ));
    let mut unknown_flag = os_locking_args();
    unknown_flag.flags |= CKF_LIBRARY_CANT_CREATE_OS_THREADS;
    variants.push((
        "init.cant_create_threads",
        "C_Initialize(OS_LOCKING_OK|LIBRARY_CANT_CREATE_OS_THREADS)",
        Some(unknown_flag),
    ));

    for (id, what, args) in variants {
        let rv = match args {
            None => call!(m, C_Initialize, null_mut()),
            Some(mut a) => call!(m, C_Initialize, &mut a as *mut _ as *mut c_void),
        };
        let fin = if rv == CKR_OK {
            format!(
                "then C_Finalize: {}",
                rv_name(call!(m, C_Finalize, null_mut()))
            )
        } else {
            String::new()
        };
        r.check(id, what, rv, fin);
    }

    let rv = call!(m, C_Initialize, null_mut());
    let rv2 = call!(m, C_Initialize, null_mut());
    r.check(
        "init.twice",
        "C_Initialize(NULL) twice: second",
        rv2,
        format!("first {}", rv_name(rv)),
    );
    let mut junk = 0u64;
    let rv = call!(m, C_Finalize, &mut junk as *mut _ as *mut c_void);
    r.check("finalize.reserved", "C_Finalize(non-NULL)", rv, "");
    let rv = call!(m, C_Finalize, null_mut());
    r.check("finalize.ok", "C_Finalize(NULL)", rv, "");
    let rv = call!(m, C_Finalize, null_mut());
    r.check("finalize.twice", "C_Finalize(NULL) again", rv, "");
    let mut info: CK_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetInfo, &mut info);
    r.check(
        "finalize.get_info_after",
        "C_GetInfo after C_Finalize",
        rv,
        "",
    );
}

// --- 4. C_GetInfo, slots, token ----------------------------------------------------------------

pub(super) fn info(m: &Module, r: &mut Report) {
    let mut a: CK_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetInfo, &mut a);
    r.check(
        "info.versions",
        "C_GetInfo",
        rv,
        format!(
            "cryptokiVersion {}.{}",
            a.cryptokiVersion.major, a.cryptokiVersion.minor
        ),
    );
    r.check("info.flags", "C_GetInfo", rv, format!("flags={}", a.flags));
    r.check(
        "info.padding",
        "C_GetInfo",
        rv,
        format!(
            "manufacturerID {} libraryDescription {} non-empty {}",
            padding_ok(&a.manufacturerID),
            padding_ok(&a.libraryDescription),
            !a.manufacturerID.iter().all(|&c| c == b' ')
                && !a.libraryDescription.iter().all(|&c| c == b' ')
        ),
    );
    let mut b: CK_INFO = unsafe { std::mem::zeroed() };
    call!(m, C_GetInfo, &mut b);
    let same = a.manufacturerID == b.manufacturerID
        && a.libraryDescription == b.libraryDescription
        && a.libraryVersion.major == b.libraryVersion.major
        && a.libraryVersion.minor == b.libraryVersion.minor;
    r.fact(
        "info.stable",
        "C_GetInfo twice gives the same fields",
        same.to_string(),
    );
    let rv = call!(m, C_GetInfo, null_mut());
    r.check("info.null", "C_GetInfo(NULL)", rv, "");
}

/// The module's "PKCS 11" 3.0 function list, when it exports C_GetInterface.
pub(super) fn function_list_3_0(m: &Module) -> Option<*const CK_FUNCTION_LIST_3_0> {
    let p = m.symbol("C_GetInterface")?;
    let f: GetInterface = unsafe { std::mem::transmute(p) };
    let mut name = *b"PKCS 11\0";
    let mut v = CK_VERSION { major: 3, minor: 0 };
    let mut out: *mut CK_INTERFACE = null_mut();
    let rv = unsafe { f(name.as_mut_ptr(), &mut v, &mut out, 0) };
    (rv == CKR_OK && !out.is_null())
        .then(|| unsafe { (*out).pFunctionList as *const CK_FUNCTION_LIST_3_0 })
}
