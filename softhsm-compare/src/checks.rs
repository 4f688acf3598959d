//! The checklist (the ecosystem reference §6.3), run identically against any module.
//!
//! Every check prints one normalised line (see `report.rs`). Values that differ between two
//! correct tokens by nature (slot IDs, serial numbers, library versions, signature bytes) are
//! never printed; their properties are (padding, lengths, "verifies").

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki_sys::*;

use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::*;

pub struct Options {
    pub token_label: String,
    pub pin: String,
    pub threads: usize,
    pub signatures_per_thread: usize,
}

const BOGUS_SLOT: CK_SLOT_ID = 0xDEAD_BEEF;
const BOGUS_HANDLE: CK_ULONG = 0x7FFF_FF01;
const BOGUS_ATTRIBUTE: CK_ATTRIBUTE_TYPE = 0x7FFF_FFF0;
const BOGUS_MECHANISM: CK_MECHANISM_TYPE = 0x8000_1234;
const CONFIG_STRING: &[u8] = b"\0"; // an empty TOML document / a non-NULL pReserved

pub fn run(m: &Module, o: &Options, r: &mut Report) {
    before_init(m, r);
    interfaces(m, r);
    init_matrix(m, r);
    let rv = call!(
        m,
        C_Initialize,
        &mut os_locking_args() as *mut _ as *mut c_void
    );
    r.check("init.for_checks", "C_Initialize(OS_LOCKING_OK)", rv, "");
    if rv != CKR_OK {
        return;
    }
    info(m, r);
    let Some((slot, other)) = slots(m, o, r) else {
        return;
    };
    token(m, slot, other, r);
    mechanisms(m, slot, r);
    sessions(m, o, slot, other, r);
    let s = open(m, slot, CKF_SERIAL_SESSION);
    let objs = objects(m, s, r);
    attributes(m, s, &objs, r);
    signing(m, s, &objs, r);
    digests(m, s, r);
    random(m, s, r);
    unsupported(m, o, slot, s, &objs, r);
    threads(m, o, slot, &objs, r);
    fork(m, slot, r);
    writes(m, slot, &objs, r);
    let rv = call!(m, C_CloseAllSessions, slot);
    r.check("end.close_all", "C_CloseAllSessions(token slot)", rv, "");
    let rv = call!(m, C_Finalize, null_mut());
    r.check("end.finalize", "C_Finalize(NULL)", rv, "");
}

// --- helpers ---------------------------------------------------------------------------------

fn os_locking_args() -> CK_C_INITIALIZE_ARGS {
    CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: null_mut(),
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

fn open(m: &Module, slot: CK_SLOT_ID, flags: CK_FLAGS) -> CK_SESSION_HANDLE {
    let mut s = 0;
    let rv = call!(m, C_OpenSession, slot, flags, null_mut(), None, &mut s);
    assert_eq!(rv, CKR_OK, "C_OpenSession({flags:#x}) = {}", rv_name(rv));
    s
}

fn attr<T>(t: CK_ATTRIBUTE_TYPE, v: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v as *const T as *mut c_void,
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

fn attr_bytes(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_ptr() as *mut c_void,
        ulValueLen: v.len() as CK_ULONG,
    }
}

fn mech(t: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: t,
        pParameter: null_mut(),
        ulParameterLen: 0,
    }
}

/// All handles matching `template` (FindObjectsInit / FindObjects(16) / FindObjectsFinal).
fn find(
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
fn get(
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

fn get_bytes(
    m: &Module,
    s: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: CK_ATTRIBUTE_TYPE,
) -> Vec<u8> {
    get(m, s, o, t).2.unwrap_or_default()
}

fn as_ulong(v: &[u8]) -> Option<CK_ULONG> {
    (v.len() == 8).then(|| CK_ULONG::from_ne_bytes(v.try_into().unwrap()))
}

// --- 1. before C_Initialize ------------------------------------------------------------------

fn before_init(m: &Module, r: &mut Report) {
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

// --- 2. C_GetInterfaceList / C_GetInterface (PKCS#11 3.0) ------------------------------------

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

fn interfaces(m: &Module, r: &mut Report) {
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

// --- 3. C_Initialize argument matrix ---------------------------------------------------------

fn init_matrix(m: &Module, r: &mut Report) {
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

fn info(m: &Module, r: &mut Report) {
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

fn slot_list(m: &Module, present: CK_BBOOL) -> Vec<CK_SLOT_ID> {
    let mut n = 0;
    call!(m, C_GetSlotList, present, null_mut(), &mut n);
    let mut v = vec![0; n as usize];
    call!(m, C_GetSlotList, present, v.as_mut_ptr(), &mut n);
    v.truncate(n as usize);
    v
}

fn token_label(m: &Module, slot: CK_SLOT_ID) -> Option<String> {
    let mut t: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    (call!(m, C_GetTokenInfo, slot, &mut t) == CKR_OK)
        .then(|| String::from_utf8_lossy(&t.label).trim_end().to_string())
}

fn slots(m: &Module, o: &Options, r: &mut Report) -> Option<(CK_SLOT_ID, Option<CK_SLOT_ID>)> {
    for (present, name) in [(CK_FALSE, "FALSE"), (CK_TRUE, "TRUE")] {
        let mut n = 0;
        let rv = call!(m, C_GetSlotList, present, null_mut(), &mut n);
        r.check(
            &format!("slots.{}.count", name.to_lowercase()),
            &format!("C_GetSlotList({name}, NULL)"),
            rv,
            format!("count={n}"),
        );
        if n > 0 {
            let mut v = vec![0; n as usize];
            let mut k = n - 1;
            let rv = call!(m, C_GetSlotList, present, v.as_mut_ptr(), &mut k);
            r.check(
                &format!("slots.{}.short", name.to_lowercase()),
                &format!("C_GetSlotList({name}, count-1)"),
                rv,
                format!("count={k}"),
            );
            let mut k = n;
            let rv = call!(m, C_GetSlotList, present, v.as_mut_ptr(), &mut k);
            r.check(
                &format!("slots.{}.exact", name.to_lowercase()),
                &format!("C_GetSlotList({name}, count)"),
                rv,
                format!("count={k}"),
            );
        }
    }
    let rv = call!(m, C_GetSlotList, CK_FALSE, null_mut(), null_mut());
    r.check(
        "slots.null_count",
        "C_GetSlotList(FALSE, NULL, NULL)",
        rv,
        "",
    );

    let all = slot_list(m, CK_FALSE);
    let slot = all
        .iter()
        .copied()
        .find(|&s| token_label(m, s).as_deref() == Some(o.token_label.as_str()));
    let Some(slot) = slot else {
        r.fact("slots.token", "token with the given label", "NOT FOUND");
        return None;
    };
    let other = all.iter().copied().find(|&s| s != slot);
    r.fact(
        "slots.token",
        "token with the given label",
        format!("found; other slots: {}", all.len() - 1),
    );
    for (id, s) in [("slot.info.token", Some(slot)), ("slot.info.other", other)] {
        let Some(s) = s else { continue };
        let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
        let rv = call!(m, C_GetSlotInfo, s, &mut si);
        r.check(
            id,
            "C_GetSlotInfo",
            rv,
            format!(
                "flags={} slotDescription {} manufacturerID {}",
                flag_names(si.flags, SLOT_FLAGS),
                padding_ok(&si.slotDescription),
                padding_ok(&si.manufacturerID)
            ),
        );
    }
    let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetSlotInfo, BOGUS_SLOT, &mut si);
    r.check("slot.info.bogus", "C_GetSlotInfo(bogus slot)", rv, "");
    let rv = call!(m, C_GetSlotInfo, slot, null_mut());
    r.check("slot.info.null", "C_GetSlotInfo(slot, NULL)", rv, "");
    Some((slot, other))
}

fn token(m: &Module, slot: CK_SLOT_ID, other: Option<CK_SLOT_ID>, r: &mut Report) {
    let mut t: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetTokenInfo, slot, &mut t);
    r.check("token.label", "C_GetTokenInfo", rv, padded(&t.label));
    r.check(
        "token.flags",
        "C_GetTokenInfo",
        rv,
        flag_names(t.flags, TOKEN_FLAGS),
    );
    r.check(
        "token.padding",
        "C_GetTokenInfo",
        rv,
        format!(
            "label {} manufacturerID {} model {} serialNumber {}",
            padding_ok(&t.label),
            padding_ok(&t.manufacturerID),
            padding_ok(&t.model),
            padding_ok(&t.serialNumber)
        ),
    );
    r.check(
        "token.sessions",
        "C_GetTokenInfo",
        rv,
        format!(
            "max {} maxRw {} count {} rwCount {}",
            ulong(t.ulMaxSessionCount),
            ulong(t.ulMaxRwSessionCount),
            count(t.ulSessionCount),
            count(t.ulRwSessionCount)
        ),
    );
    r.check(
        "token.pin_len",
        "C_GetTokenInfo",
        rv,
        format!("min {} max {}", t.ulMinPinLen, t.ulMaxPinLen),
    );
    r.check(
        "token.memory",
        "C_GetTokenInfo",
        rv,
        format!(
            "public {}/{} private {}/{}",
            ulong(t.ulFreePublicMemory),
            ulong(t.ulTotalPublicMemory),
            ulong(t.ulFreePrivateMemory),
            ulong(t.ulTotalPrivateMemory)
        ),
    );
    let clock = if t.flags & CKF_CLOCK_ON_TOKEN != 0 {
        format!("clock, utcTime {}", padding_ok(&t.utcTime))
    } else {
        "no clock".into()
    };
    r.check("token.clock", "C_GetTokenInfo", rv, clock);
    if let Some(o) = other {
        let rv = call!(m, C_GetTokenInfo, o, &mut t);
        r.check("token.other_slot", "C_GetTokenInfo(other slot)", rv, "");
    }
    let rv = call!(m, C_GetTokenInfo, BOGUS_SLOT, &mut t);
    r.check("token.bogus_slot", "C_GetTokenInfo(bogus slot)", rv, "");
    let rv = call!(m, C_GetTokenInfo, slot, null_mut());
    r.check("token.null", "C_GetTokenInfo(slot, NULL)", rv, "");
}

// --- 5. mechanisms ---------------------------------------------------------------------------

fn mechanisms(m: &Module, slot: CK_SLOT_ID, r: &mut Report) {
    let mut n = 0;
    let rv = call!(m, C_GetMechanismList, slot, null_mut(), &mut n);
    r.check(
        "mech.list.count",
        "C_GetMechanismList(NULL)",
        rv,
        format!("count={n}"),
    );
    let mut v = vec![0; n as usize];
    if n > 0 {
        let mut k = n - 1;
        let rv = call!(m, C_GetMechanismList, slot, v.as_mut_ptr(), &mut k);
        r.check(
            "mech.list.short",
            "C_GetMechanismList(count-1)",
            rv,
            format!("count={k}"),
        );
    }
    let mut k = n;
    let rv = call!(m, C_GetMechanismList, slot, v.as_mut_ptr(), &mut k);
    v.truncate(k as usize);
    let known: Vec<String> = MECHANISMS
        .iter()
        .filter(|(t, _)| v.contains(t))
        .map(|(_, n)| n.to_string())
        .collect();
    r.check(
        "mech.list",
        "C_GetMechanismList(count)",
        rv,
        format!("of interest: {}", known.join(" ")),
    );
    for &(t, name) in MECHANISMS {
        let mut i: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
        let rv = call!(m, C_GetMechanismInfo, slot, t, &mut i);
        let out = if rv == CKR_OK {
            format!(
                "keySize {}..{} flags={}",
                i.ulMinKeySize,
                i.ulMaxKeySize,
                flag_names(i.flags, MECH_FLAGS)
            )
        } else {
            String::new()
        };
        r.check(
            &format!("mech.info.{name}"),
            &format!("C_GetMechanismInfo({name})"),
            rv,
            out,
        );
        if rv == CKR_OK && !v.contains(&t) {
            r.fact(
                &format!("mech.info.{name}.listed"),
                "in C_GetMechanismList",
                "NO",
            );
        }
    }
    let mut i: CK_MECHANISM_INFO = unsafe { std::mem::zeroed() };
    let rv = call!(m, C_GetMechanismInfo, slot, BOGUS_MECHANISM, &mut i);
    r.check(
        "mech.info.bogus",
        "C_GetMechanismInfo(vendor 0x80001234)",
        rv,
        "",
    );
    let rv = call!(m, C_GetMechanismInfo, slot, CKM_ECDSA, null_mut());
    r.check("mech.info.null", "C_GetMechanismInfo(ECDSA, NULL)", rv, "");
    let rv = call!(m, C_GetMechanismList, BOGUS_SLOT, null_mut(), &mut n);
    r.check(
        "mech.list.bogus_slot",
        "C_GetMechanismList(bogus slot)",
        rv,
        "",
    );
    let rv = call!(m, C_GetMechanismList, slot, null_mut(), null_mut());
    r.check(
        "mech.list.null_count",
        "C_GetMechanismList(slot, NULL, NULL)",
        rv,
        "",
    );
}

// --- 6. sessions and login -------------------------------------------------------------------

unsafe extern "C" fn notify(_: CK_SESSION_HANDLE, _: CK_NOTIFICATION, _: *mut c_void) -> CK_RV {
    CKR_OK
}

fn session_info(m: &Module, s: CK_SESSION_HANDLE) -> (CK_RV, String) {
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

fn sessions(m: &Module, o: &Options, slot: CK_SLOT_ID, other: Option<CK_SLOT_ID>, r: &mut Report) {
    let mut s = 0;
    let rv = call!(m, C_OpenSession, slot, 0, null_mut(), None, &mut s);
    r.check("session.open.no_serial", "C_OpenSession(flags=0)", rv, "");
    let ro = open(m, slot, CKF_SERIAL_SESSION);
    let (rv, i) = session_info(m, ro);
    r.check(
        "session.open.ro",
        "C_OpenSession(SERIAL); C_GetSessionInfo",
        rv,
        i,
    );
    let mut rw = 0;
    let rv = call!(
        m,
        C_OpenSession,
        slot,
        CKF_SERIAL_SESSION | CKF_RW_SESSION,
        null_mut(),
        None,
        &mut rw
    );
    r.check("session.open.rw", "C_OpenSession(SERIAL|RW)", rv, "");
    let (rv, i) = session_info(m, rw);
    r.check("session.info.rw", "C_GetSessionInfo(RW session)", rv, i);
    let mut app = 7u64;
    let mut sn = 0;
    let rv = call!(
        m,
        C_OpenSession,
        slot,
        CKF_SERIAL_SESSION,
        &mut app as *mut _ as *mut c_void,
        Some(notify),
        &mut sn
    );
    r.check(
        "session.open.notify",
        "C_OpenSession(SERIAL, pApplication, Notify)",
        rv,
        "",
    );
    let mut t: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    call!(m, C_GetTokenInfo, slot, &mut t);
    r.fact(
        "session.count",
        "C_GetTokenInfo with 3 sessions (1 RW) open",
        format!(
            "count {} rwCount {}",
            count(t.ulSessionCount),
            count(t.ulRwSessionCount)
        ),
    );
    let rv = call!(m, C_CloseSession, sn);
    r.check("session.close", "C_CloseSession", rv, "");
    let rv = call!(m, C_CloseSession, sn);
    r.check(
        "session.close.again",
        "C_CloseSession(closed handle)",
        rv,
        "",
    );
    let rv = call!(
        m,
        C_OpenSession,
        BOGUS_SLOT,
        CKF_SERIAL_SESSION,
        null_mut(),
        None,
        &mut s
    );
    r.check(
        "session.open.bogus_slot",
        "C_OpenSession(bogus slot)",
        rv,
        "",
    );
    if let Some(other) = other {
        let rv = call!(
            m,
            C_OpenSession,
            other,
            CKF_SERIAL_SESSION,
            null_mut(),
            None,
            &mut s
        );
        r.check(
            "session.open.other_slot",
            "C_OpenSession(other slot)",
            rv,
            "",
        );
        if rv == CKR_OK {
            call!(m, C_CloseSession, s);
        }
    }
    let rv = call!(
        m,
        C_OpenSession,
        slot,
        CKF_SERIAL_SESSION,
        null_mut(),
        None,
        null_mut()
    );
    r.check("session.open.null", "C_OpenSession(phSession NULL)", rv, "");
    let (rv, _) = session_info(m, BOGUS_HANDLE);
    r.check(
        "session.info.bogus",
        "C_GetSessionInfo(bogus handle)",
        rv,
        "",
    );
    let rv = call!(m, C_GetSessionInfo, ro, null_mut());
    r.check("session.info.null", "C_GetSessionInfo(NULL)", rv, "");

    // Login state is per token: both sessions follow it.
    let mut pin = o.pin.clone().into_bytes();
    let rv = call!(
        m,
        C_Login,
        ro,
        CKU_USER,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    );
    r.check("login.user", "C_Login(USER, pin)", rv, "");
    let (_, a) = session_info(m, ro);
    let (_, b) = session_info(m, rw);
    r.fact(
        "login.user.states",
        "C_GetSessionInfo of the RO and RW session",
        format!("{a}; {b}"),
    );
    let rv = call!(
        m,
        C_Login,
        rw,
        CKU_USER,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    );
    r.check("login.user.again", "C_Login(USER) again", rv, "");
    let rv = call!(m, C_Logout, rw);
    r.check("logout", "C_Logout", rv, "");
    let (_, a) = session_info(m, ro);
    r.fact("logout.state", "C_GetSessionInfo after logout", a);
    let rv = call!(m, C_Logout, ro);
    r.check("logout.again", "C_Logout again", rv, "");
    let mut wrong = b"99999999".to_vec();
    let rv = call!(
        m,
        C_Login,
        ro,
        CKU_USER,
        wrong.as_mut_ptr(),
        wrong.len() as CK_ULONG
    );
    r.check("login.wrong_pin", "C_Login(USER, wrong pin)", rv, "");
    if rv == CKR_OK {
        call!(m, C_Logout, ro);
    }
    let rv = call!(
        m,
        C_Login,
        ro,
        CKU_SO,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    );
    r.check("login.so", "C_Login(SO) with a RO session open", rv, "");
    if rv == CKR_OK {
        call!(m, C_Logout, ro);
    }
    let rv = call!(m, C_Login, ro, 5, pin.as_mut_ptr(), pin.len() as CK_ULONG);
    r.check("login.bad_user_type", "C_Login(user type 5)", rv, "");
    let rv = call!(
        m,
        C_Login,
        ro,
        CKU_CONTEXT_SPECIFIC,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    );
    r.check(
        "login.context_specific",
        "C_Login(CONTEXT_SPECIFIC) with no operation",
        rv,
        "",
    );
    let rv = call!(
        m,
        C_Login,
        BOGUS_HANDLE,
        CKU_USER,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    );
    r.check("login.bogus_session", "C_Login(bogus session)", rv, "");
    let rv = call!(m, C_CloseAllSessions, slot);
    r.check(
        "session.close_all",
        "C_CloseAllSessions(token slot)",
        rv,
        "",
    );
    let (rv, _) = session_info(m, ro);
    r.check(
        "session.close_all.after",
        "C_GetSessionInfo(closed by CloseAllSessions)",
        rv,
        "",
    );
    let rv = call!(m, C_CloseAllSessions, BOGUS_SLOT);
    r.check(
        "session.close_all.bogus",
        "C_CloseAllSessions(bogus slot)",
        rv,
        "",
    );
}

// --- 7. objects and find templates -----------------------------------------------------------

/// The objects of the mirrored card, by name ("privkey.client", "cert.ca", ...).
pub struct Objects(pub Vec<(String, CK_OBJECT_HANDLE)>);

impl Objects {
    pub fn get(&self, name: &str) -> Option<CK_OBJECT_HANDLE> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, h)| h)
    }
}

fn class_name(c: CK_OBJECT_CLASS) -> String {
    match c {
        CKO_DATA => "data".into(),
        CKO_CERTIFICATE => "cert".into(),
        CKO_PUBLIC_KEY => "pubkey".into(),
        CKO_PRIVATE_KEY => "privkey".into(),
        CKO_SECRET_KEY => "secret".into(),
        c => format!("class{c:#x}"),
    }
}

fn object_name(m: &Module, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> String {
    let class = as_ulong(&get_bytes(m, s, o, CKA_CLASS)).unwrap_or(u64::MAX);
    let label = String::from_utf8_lossy(&get_bytes(m, s, o, CKA_LABEL)).into_owned();
    format!("{}.{}", class_name(class), label)
}

fn objects(m: &Module, s: CK_SESSION_HANDLE, r: &mut Report) -> Objects {
    let (rv, all) = find(m, s, &mut []);
    let mut names: Vec<String> = all
        .iter()
        .map(|&o| {
            let id = hex(&get_bytes(m, s, o, CKA_ID));
            format!("{}#{id}", object_name(m, s, o))
        })
        .collect();
    names.sort();
    r.check(
        "find.all",
        "C_FindObjects(empty template)",
        rv,
        format!("{} objects: {}", all.len(), names.join(" ")),
    );
    let objs = Objects(all.iter().map(|&o| (object_name(m, s, o), o)).collect());

    let t = CK_TRUE;
    let f = CK_FALSE;
    let ec = CKK_EC;
    let id01 = [1u8];
    let id99 = [0x99u8];
    let client = b"client";
    let id10 = [0x10u8];
    let generic = CKK_GENERIC_SECRET;
    let secret_class = CKO_SECRET_KEY;
    let classes: [(CK_OBJECT_CLASS, &str); 8] = [
        (CKO_PRIVATE_KEY, "privkey"),
        (CKO_PUBLIC_KEY, "pubkey"),
        (CKO_CERTIFICATE, "cert"),
        (CKO_DATA, "data"),
        (CKO_SECRET_KEY, "secret"),
        (CKO_PROFILE, "profile"),
        (CKO_HW_FEATURE, "hw_feature"),
        (CKO_MECHANISM, "mechanism"),
    ];
    for (c, name) in classes {
        let (rv, v) = find(m, s, &mut [attr(CKA_CLASS, &c)]);
        r.check(
            &format!("find.class.{name}"),
            &format!("C_FindObjects(CLASS={name})"),
            rv,
            format!("{}", v.len()),
        );
    }
    let priv_class = CKO_PRIVATE_KEY;
    let templates: Vec<(&str, &str, Vec<CK_ATTRIBUTE>)> = vec![
        ("find.id01", "ID=01", vec![attr_bytes(CKA_ID, &id01)]),
        ("find.id99", "ID=99", vec![attr_bytes(CKA_ID, &id99)]),
        (
            "find.label_client",
            "LABEL=client",
            vec![attr_bytes(CKA_LABEL, client)],
        ),
        (
            "find.label_client_private",
            "LABEL=client CLASS=privkey",
            vec![attr_bytes(CKA_LABEL, client), attr(CKA_CLASS, &priv_class)],
        ),
        (
            "find.key_type_ec",
            "KEY_TYPE=EC",
            vec![attr(CKA_KEY_TYPE, &ec)],
        ),
        ("find.token_true", "TOKEN=true", vec![attr(CKA_TOKEN, &t)]),
        ("find.token_false", "TOKEN=false", vec![attr(CKA_TOKEN, &f)]),
        (
            "find.private_true",
            "PRIVATE=true",
            vec![attr(CKA_PRIVATE, &t)],
        ),
        ("find.sign_true", "SIGN=true", vec![attr(CKA_SIGN, &t)]),
        (
            "find.derive_true",
            "DERIVE=true",
            vec![attr(CKA_DERIVE, &t)],
        ),
        ("find.id10", "ID=10", vec![attr_bytes(CKA_ID, &id10)]),
        (
            "find.label_psk_identity",
            "LABEL=urn:imei:359000000000001",
            vec![attr_bytes(CKA_LABEL, b"urn:imei:359000000000001")],
        ),
        (
            "find.label_psk_secret",
            "LABEL=tls13-psk CLASS=secret",
            vec![
                attr_bytes(CKA_LABEL, b"tls13-psk"),
                attr(CKA_CLASS, &secret_class),
            ],
        ),
        (
            "find.key_type_generic_secret",
            "KEY_TYPE=GENERIC_SECRET",
            vec![attr(CKA_KEY_TYPE, &generic)],
        ),
        (
            "find.bogus_attribute",
            "attribute 0x7FFFFFF0",
            vec![attr(BOGUS_ATTRIBUTE, &t)],
        ),
        (
            "find.empty_label",
            "LABEL=\"\"",
            vec![attr_bytes(CKA_LABEL, b"")],
        ),
    ];
    for (id, what, mut tpl) in templates {
        let (rv, v) = find(m, s, &mut tpl);
        let mut names: Vec<String> = v.iter().map(|&o| object_name(m, s, o)).collect();
        names.sort();
        r.check(
            id,
            &format!("C_FindObjects({what})"),
            rv,
            format!("{}: {}", v.len(), names.join(" ")),
        );
    }

    // Operation state rules.
    let rv = call!(m, C_FindObjectsInit, s, null_mut(), 0);
    let rv2 = call!(m, C_FindObjectsInit, s, null_mut(), 0);
    r.check(
        "find.init_twice",
        "C_FindObjectsInit while active",
        rv2,
        format!("first {}", rv_name(rv)),
    );
    let mut one = 0;
    let mut n = 0;
    let mut count = 0;
    loop {
        let rv = call!(m, C_FindObjects, s, &mut one, 1, &mut n);
        if rv != CKR_OK || n == 0 {
            break;
        }
        count += 1;
    }
    r.fact(
        "find.one_by_one",
        "C_FindObjects(max 1) until 0",
        format!("{count} objects"),
    );
    let rv = call!(m, C_FindObjects, s, null_mut(), 1, &mut n);
    r.check("find.null_out", "C_FindObjects(NULL, 1)", rv, "");
    let rv = call!(m, C_FindObjectsFinal, s);
    r.check("find.final", "C_FindObjectsFinal", rv, "");
    let rv = call!(m, C_FindObjects, s, &mut one, 1, &mut n);
    r.check("find.without_init", "C_FindObjects without init", rv, "");
    let rv = call!(m, C_FindObjectsFinal, s);
    r.check(
        "find.final_without_init",
        "C_FindObjectsFinal without init",
        rv,
        "",
    );
    let rv = call!(m, C_FindObjectsInit, s, null_mut(), 1);
    r.check("find.null_template", "C_FindObjectsInit(NULL, 1)", rv, "");
    if rv == CKR_OK {
        call!(m, C_FindObjectsFinal, s);
    }
    let rv = call!(m, C_FindObjectsInit, BOGUS_HANDLE, null_mut(), 0);
    r.check(
        "find.bogus_session",
        "C_FindObjectsInit(bogus session)",
        rv,
        "",
    );
    objs
}

// --- 8. attributes ---------------------------------------------------------------------------

const COMMON: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_CLASS, "CLASS"),
    (CKA_TOKEN, "TOKEN"),
    (CKA_PRIVATE, "PRIVATE"),
    (CKA_MODIFIABLE, "MODIFIABLE"),
    (CKA_COPYABLE, "COPYABLE"),
    (CKA_DESTROYABLE, "DESTROYABLE"),
    (CKA_LABEL, "LABEL"),
    (CKA_ID, "ID"),
    (CKA_UNIQUE_ID, "UNIQUE_ID"),
];
const KEY: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_KEY_TYPE, "KEY_TYPE"),
    (CKA_START_DATE, "START_DATE"),
    (CKA_END_DATE, "END_DATE"),
    (CKA_DERIVE, "DERIVE"),
    (CKA_LOCAL, "LOCAL"),
    (CKA_KEY_GEN_MECHANISM, "KEY_GEN_MECHANISM"),
    (CKA_ALLOWED_MECHANISMS, "ALLOWED_MECHANISMS"),
    (CKA_SUBJECT, "SUBJECT"),
    (CKA_EC_PARAMS, "EC_PARAMS"),
    (CKA_EC_POINT, "EC_POINT"),
    (CKA_PUBLIC_KEY_INFO, "PUBLIC_KEY_INFO"),
];
const PRIVATE: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_SENSITIVE, "SENSITIVE"),
    (CKA_DECRYPT, "DECRYPT"),
    (CKA_SIGN, "SIGN"),
    (CKA_SIGN_RECOVER, "SIGN_RECOVER"),
    (CKA_UNWRAP, "UNWRAP"),
    (CKA_EXTRACTABLE, "EXTRACTABLE"),
    (CKA_ALWAYS_SENSITIVE, "ALWAYS_SENSITIVE"),
    (CKA_NEVER_EXTRACTABLE, "NEVER_EXTRACTABLE"),
    (CKA_WRAP_WITH_TRUSTED, "WRAP_WITH_TRUSTED"),
    (CKA_ALWAYS_AUTHENTICATE, "ALWAYS_AUTHENTICATE"),
    (CKA_VALUE, "VALUE"),
];
const PUBLIC: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_ENCRYPT, "ENCRYPT"),
    (CKA_VERIFY, "VERIFY"),
    (CKA_VERIFY_RECOVER, "VERIFY_RECOVER"),
    (CKA_WRAP, "WRAP"),
    (CKA_TRUSTED, "TRUSTED"),
    (CKA_VALUE, "VALUE"),
];
const SECRET: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_KEY_TYPE, "KEY_TYPE"),
    (CKA_START_DATE, "START_DATE"),
    (CKA_END_DATE, "END_DATE"),
    (CKA_DERIVE, "DERIVE"),
    (CKA_LOCAL, "LOCAL"),
    (CKA_KEY_GEN_MECHANISM, "KEY_GEN_MECHANISM"),
    (CKA_ALLOWED_MECHANISMS, "ALLOWED_MECHANISMS"),
    (CKA_SENSITIVE, "SENSITIVE"),
    (CKA_ENCRYPT, "ENCRYPT"),
    (CKA_DECRYPT, "DECRYPT"),
    (CKA_SIGN, "SIGN"),
    (CKA_VERIFY, "VERIFY"),
    (CKA_WRAP, "WRAP"),
    (CKA_UNWRAP, "UNWRAP"),
    (CKA_EXTRACTABLE, "EXTRACTABLE"),
    (CKA_ALWAYS_SENSITIVE, "ALWAYS_SENSITIVE"),
    (CKA_NEVER_EXTRACTABLE, "NEVER_EXTRACTABLE"),
    (CKA_WRAP_WITH_TRUSTED, "WRAP_WITH_TRUSTED"),
    (CKA_TRUSTED, "TRUSTED"),
    (CKA_CHECK_VALUE, "CHECK_VALUE"),
    (CKA_VALUE, "VALUE"),
    (CKA_VALUE_LEN, "VALUE_LEN"),
];
const CERT: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_CERTIFICATE_TYPE, "CERTIFICATE_TYPE"),
    (CKA_TRUSTED, "TRUSTED"),
    (CKA_CERTIFICATE_CATEGORY, "CERTIFICATE_CATEGORY"),
    (CKA_CHECK_VALUE, "CHECK_VALUE"),
    (CKA_START_DATE, "START_DATE"),
    (CKA_END_DATE, "END_DATE"),
    (CKA_PUBLIC_KEY_INFO, "PUBLIC_KEY_INFO"),
    (CKA_SUBJECT, "SUBJECT"),
    (CKA_ISSUER, "ISSUER"),
    (CKA_SERIAL_NUMBER, "SERIAL_NUMBER"),
    (CKA_VALUE, "VALUE"),
    (CKA_URL, "URL"),
    (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, "HASH_OF_SUBJECT_PUBLIC_KEY"),
    (CKA_HASH_OF_ISSUER_PUBLIC_KEY, "HASH_OF_ISSUER_PUBLIC_KEY"),
    (CKA_JAVA_MIDP_SECURITY_DOMAIN, "JAVA_MIDP_SECURITY_DOMAIN"),
    (CKA_NAME_HASH_ALGORITHM, "NAME_HASH_ALGORITHM"),
];

fn is_bool(t: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        t,
        CKA_TOKEN
            | CKA_PRIVATE
            | CKA_MODIFIABLE
            | CKA_COPYABLE
            | CKA_DESTROYABLE
            | CKA_DERIVE
            | CKA_LOCAL
            | CKA_SENSITIVE
            | CKA_DECRYPT
            | CKA_SIGN
            | CKA_SIGN_RECOVER
            | CKA_UNWRAP
            | CKA_EXTRACTABLE
            | CKA_ALWAYS_SENSITIVE
            | CKA_NEVER_EXTRACTABLE
            | CKA_WRAP_WITH_TRUSTED
            | CKA_ALWAYS_AUTHENTICATE
            | CKA_ENCRYPT
            | CKA_VERIFY
            | CKA_VERIFY_RECOVER
            | CKA_WRAP
            | CKA_TRUSTED
    )
}

fn render(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> String {
    if is_bool(t) && v.len() == 1 {
        return (v[0] != 0).to_string();
    }
    match t {
        CKA_LABEL | CKA_URL => format!("{:?}", String::from_utf8_lossy(v)),
        CKA_UNIQUE_ID => format!("{} bytes", v.len()),
        CKA_CLASS => as_ulong(v).map(class_name).unwrap_or_else(|| bytes(v)),
        CKA_KEY_TYPE
        | CKA_VALUE_LEN
        | CKA_CERTIFICATE_TYPE
        | CKA_CERTIFICATE_CATEGORY
        | CKA_JAVA_MIDP_SECURITY_DOMAIN => as_ulong(v)
            .map(|x| x.to_string())
            .unwrap_or_else(|| bytes(v)),
        CKA_KEY_GEN_MECHANISM | CKA_NAME_HASH_ALGORITHM => {
            as_ulong(v).map(ulong_or_mech).unwrap_or_else(|| bytes(v))
        }
        CKA_ALLOWED_MECHANISMS => v
            .chunks(8)
            .filter_map(as_ulong)
            .map(mech_name)
            .collect::<Vec<_>>()
            .join(","),
        _ => bytes(v),
    }
}

fn ulong_or_mech(x: CK_ULONG) -> String {
    if x == CK_UNAVAILABLE_INFORMATION {
        "UNAVAILABLE".into()
    } else {
        mech_name(x)
    }
}

fn attributes(m: &Module, s: CK_SESSION_HANDLE, objs: &Objects, r: &mut Report) {
    for (name, o) in &objs.0 {
        let class = as_ulong(&get_bytes(m, s, *o, CKA_CLASS)).unwrap_or(u64::MAX);
        let mut list: Vec<(CK_ATTRIBUTE_TYPE, &str)> = COMMON.to_vec();
        match class {
            CKO_PRIVATE_KEY => {
                list.extend_from_slice(KEY);
                list.extend_from_slice(PRIVATE);
            }
            CKO_PUBLIC_KEY => {
                list.extend_from_slice(KEY);
                list.extend_from_slice(PUBLIC);
            }
            CKO_SECRET_KEY => list.extend_from_slice(SECRET),
            CKO_CERTIFICATE => list.extend_from_slice(CERT),
            _ => {}
        }
        for (t, aname) in list {
            let (rv, len, v) = get(m, s, *o, t);
            let out = match v {
                // The peer container holds whichever point the last ECDH put there (tests and
                // pkcs11-tool --test derive with fresh keys): compare its size, not its bytes.
                Some(v)
                    if name.ends_with(".peer")
                        && matches!(t, CKA_EC_POINT | CKA_PUBLIC_KEY_INFO) =>
                {
                    format!("{} bytes (the last ECDH peer's key)", v.len())
                }
                Some(v) => render(t, &v),
                None => format!("len={}", ulong(len)),
            };
            r.check(
                &format!("attr.{name}.{aname}"),
                "C_GetAttributeValue",
                rv,
                out,
            );
        }
    }

    let Some(k) = objs.get("privkey.client") else {
        r.fact("attr.special", "private key labelled client", "NOT FOUND");
        return;
    };
    // Valid + invalid in one call: the valid one is filled, the invalid one is UNAVAILABLE.
    let mut label = [0u8; 64];
    let mut id = [0u8; 16];
    let mut junk = [0u8; 16];
    let mut t = [
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_mut_ptr() as *mut c_void,
            ulValueLen: 64,
        },
        CK_ATTRIBUTE {
            type_: BOGUS_ATTRIBUTE,
            pValue: junk.as_mut_ptr() as *mut c_void,
            ulValueLen: 16,
        },
        CK_ATTRIBUTE {
            type_: CKA_ID,
            pValue: id.as_mut_ptr() as *mut c_void,
            ulValueLen: 16,
        },
    ];
    let rv = call!(m, C_GetAttributeValue, s, k, t.as_mut_ptr(), 3);
    r.check(
        "attr.mixed_invalid",
        "C_GetAttributeValue(LABEL, 0x7FFFFFF0, ID)",
        rv,
        format!(
            "lens {} {} {}; label {:?}",
            ulong(t[0].ulValueLen),
            ulong(t[1].ulValueLen),
            ulong(t[2].ulValueLen),
            String::from_utf8_lossy(&label[..(t[0].ulValueLen.min(64)) as usize])
        ),
    );
    let mut value = [0u8; 64];
    let mut t = [
        CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: value.as_mut_ptr() as *mut c_void,
            ulValueLen: 64,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_mut_ptr() as *mut c_void,
            ulValueLen: 64,
        },
    ];
    let rv = call!(m, C_GetAttributeValue, s, k, t.as_mut_ptr(), 2);
    r.check(
        "attr.sensitive_mixed",
        "C_GetAttributeValue(VALUE of private key, LABEL)",
        rv,
        format!("lens {} {}", ulong(t[0].ulValueLen), ulong(t[1].ulValueLen)),
    );
    let mut t = [
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_mut_ptr() as *mut c_void,
            ulValueLen: 1,
        },
        CK_ATTRIBUTE {
            type_: CKA_ID,
            pValue: id.as_mut_ptr() as *mut c_void,
            ulValueLen: 16,
        },
    ];
    let rv = call!(m, C_GetAttributeValue, s, k, t.as_mut_ptr(), 2);
    r.check(
        "attr.short_buffer",
        "C_GetAttributeValue(LABEL in 1 byte, ID)",
        rv,
        format!("lens {} {}", ulong(t[0].ulValueLen), ulong(t[1].ulValueLen)),
    );
    let mut t = [CK_ATTRIBUTE {
        type_: CKA_LABEL,
        pValue: null_mut(),
        ulValueLen: 0,
    }];
    let rv = call!(m, C_GetAttributeValue, s, BOGUS_HANDLE, t.as_mut_ptr(), 1);
    r.check(
        "attr.bogus_object",
        "C_GetAttributeValue(bogus object)",
        rv,
        "",
    );
    let rv = call!(m, C_GetAttributeValue, BOGUS_HANDLE, k, t.as_mut_ptr(), 1);
    r.check(
        "attr.bogus_session",
        "C_GetAttributeValue(bogus session)",
        rv,
        "",
    );
    let rv = call!(m, C_GetAttributeValue, s, k, null_mut(), 1);
    r.check("attr.null_template", "C_GetAttributeValue(NULL, 1)", rv, "");
    let rv = call!(m, C_GetAttributeValue, s, k, t.as_mut_ptr(), 0);
    r.check("attr.zero_count", "C_GetAttributeValue(count 0)", rv, "");

    // The same for a PSK (a sensitive secret key).
    if let Some(psk) = objs.get("secret.device-psk") {
        let mut t = [
            CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: value.as_mut_ptr() as *mut c_void,
                ulValueLen: 64,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: label.as_mut_ptr() as *mut c_void,
                ulValueLen: 64,
            },
        ];
        let rv = call!(m, C_GetAttributeValue, s, psk, t.as_mut_ptr(), 2);
        r.check(
            "attr.secret.sensitive_mixed",
            "C_GetAttributeValue(VALUE of secret key device-psk, LABEL)",
            rv,
            format!("lens {} {}", ulong(t[0].ulValueLen), ulong(t[1].ulValueLen)),
        );
    } else {
        r.fact(
            "attr.secret.special",
            "secret key labelled device-psk",
            "NOT FOUND",
        );
    }

    // Consistency: the public key and the certificate carry the same key.
    if let (Some(p), Some(c)) = (objs.get("pubkey.client"), objs.get("cert.client")) {
        let point = get_bytes(m, s, p, CKA_EC_POINT);
        let der = get_bytes(m, s, c, CKA_VALUE);
        let same = crate::setup::cert_point(&der)
            .map(|q| point.len() > 2 && point[2..] == q[..])
            .unwrap_or(false);
        r.fact(
            "attr.consistency.point",
            "pubkey EC_POINT = DER OCTET STRING of the certificate's point",
            same.to_string(),
        );
        let spki = get_bytes(m, s, k, CKA_PUBLIC_KEY_INFO);
        let cert_spki = crate::setup::cert_spki(&der).unwrap_or_default();
        r.fact(
            "attr.consistency.spki",
            "privkey PUBLIC_KEY_INFO = certificate SPKI",
            if spki.is_empty() {
                "not available".into()
            } else {
                (spki == cert_spki).to_string()
            },
        );
    }
}

// --- 9. signatures and verification ----------------------------------------------------------

const MESSAGE: &[u8] = b"IoT SAFE differential check: the same message for every module";

/// Verifies `sig` (raw r||s) over `prehash` with the public key `point` (DER OCTET STRING).
pub fn host_verify(point: &[u8], prehash: &[u8], sig: &[u8]) -> &'static str {
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

fn sign_once(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    k: CK_OBJECT_HANDLE,
    data: &[u8],
) -> (CK_RV, Vec<u8>) {
    let mut mm = mech(mechanism);
    let rv = call!(m, C_SignInit, s, &mut mm, k);
    if rv != CKR_OK {
        return (rv, vec![]);
    }
    let mut sig = vec![0u8; 256];
    let mut len: CK_ULONG = 256;
    let rv = call!(
        m,
        C_Sign,
        s,
        data.as_ptr() as *mut u8,
        data.len() as CK_ULONG,
        sig.as_mut_ptr(),
        &mut len
    );
    sig.truncate(if rv == CKR_OK { len as usize } else { 0 });
    (rv, sig)
}

fn verify_once(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    p: CK_OBJECT_HANDLE,
    data: &[u8],
    sig: &[u8],
) -> CK_RV {
    let mut mm = mech(mechanism);
    let rv = call!(m, C_VerifyInit, s, &mut mm, p);
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

fn digest_of(mechanism: CK_MECHANISM_TYPE, data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    match mechanism {
        CKM_ECDSA_SHA256 => sha2::Sha256::digest(data).to_vec(),
        CKM_ECDSA_SHA384 => sha2::Sha384::digest(data).to_vec(),
        CKM_ECDSA_SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => data.to_vec(),
    }
}

fn signing(m: &Module, s: CK_SESSION_HANDLE, objs: &Objects, r: &mut Report) {
    let (Some(k), Some(p)) = (objs.get("privkey.client"), objs.get("pubkey.client")) else {
        r.fact("sign", "client key pair", "NOT FOUND");
        return;
    };
    let point = get_bytes(m, s, p, CKA_EC_POINT);
    let hash = digest_of(CKM_ECDSA_SHA256, MESSAGE);

    // Length rules of C_Sign (raw ECDSA over a SHA-256 hash).
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_SignInit, s, &mut mm, k);
    r.check("sign.ecdsa.init", "C_SignInit(ECDSA, privkey)", rv, "");
    let mut len: CK_ULONG = 0;
    let rv = call!(
        m,
        C_Sign,
        s,
        hash.as_ptr() as *mut u8,
        32,
        null_mut(),
        &mut len
    );
    r.check(
        "sign.ecdsa.size_query",
        "C_Sign(32 bytes, NULL)",
        rv,
        format!("len={len}"),
    );
    let mut sig = vec![0u8; 128];
    let mut len: CK_ULONG = 10;
    let rv = call!(
        m,
        C_Sign,
        s,
        hash.as_ptr() as *mut u8,
        32,
        sig.as_mut_ptr(),
        &mut len
    );
    r.check(
        "sign.ecdsa.short",
        "C_Sign(32 bytes, 10-byte buffer)",
        rv,
        format!("len={len}"),
    );
    let mut len: CK_ULONG = 128;
    let rv = call!(
        m,
        C_Sign,
        s,
        hash.as_ptr() as *mut u8,
        32,
        sig.as_mut_ptr(),
        &mut len
    );
    sig.truncate(len as usize);
    r.check(
        "sign.ecdsa.retry",
        "C_Sign(32 bytes, 128-byte buffer) after BUFFER_TOO_SMALL",
        rv,
        format!("len={len} {}", host_verify(&point, &hash, &sig)),
    );
    let mut len: CK_ULONG = 128;
    let mut junk = [0u8; 128];
    let rv = call!(
        m,
        C_Sign,
        s,
        hash.as_ptr() as *mut u8,
        32,
        junk.as_mut_ptr(),
        &mut len
    );
    r.check("sign.ecdsa.ended", "C_Sign again (operation ended)", rv, "");

    let rv = verify_once(m, s, CKM_ECDSA, p, &hash, &sig);
    r.check(
        "verify.ecdsa",
        "C_Verify(ECDSA, pubkey, good signature)",
        rv,
        "",
    );
    let mut bad = sig.clone();
    if let Some(b) = bad.get_mut(10) {
        *b ^= 1;
    }
    let rv = verify_once(m, s, CKM_ECDSA, p, &hash, &bad);
    r.check("verify.ecdsa.bad", "C_Verify(ECDSA, flipped bit)", rv, "");
    let rv = verify_once(
        m,
        s,
        CKM_ECDSA,
        p,
        &hash,
        &sig[..sig.len().saturating_sub(1)],
    );
    r.check(
        "verify.ecdsa.short_sig",
        "C_Verify(ECDSA, 63-byte signature)",
        rv,
        "",
    );
    let rv = verify_once(m, s, CKM_ECDSA, k, &hash, &sig);
    r.check(
        "verify.with_private_key",
        "C_VerifyInit(ECDSA, privkey)",
        rv,
        "",
    );

    // Raw ECDSA over inputs of several lengths.
    for n in [0usize, 1, 16, 20, 31, 32, 33, 48, 64, 65, 100] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
        let (rv, sig) = sign_once(m, s, CKM_ECDSA, k, &data);
        let out = if rv == CKR_OK {
            let v = verify_once(m, s, CKM_ECDSA, p, &data, &sig);
            format!(
                "len={} verify {} {}",
                sig.len(),
                rv_name(v),
                host_verify(&point, &data, &sig)
            )
        } else {
            String::new()
        };
        r.check(
            &format!("sign.ecdsa.data_len.{n}"),
            &format!("C_Sign(ECDSA, {n} bytes)"),
            rv,
            out,
        );
    }

    // Hash-and-sign mechanisms, single- and multi-part.
    for (mechanism, name) in [
        (CKM_ECDSA_SHA256, "ECDSA_SHA256"),
        (CKM_ECDSA_SHA384, "ECDSA_SHA384"),
        (CKM_ECDSA_SHA512, "ECDSA_SHA512"),
    ] {
        let (rv, sig) = sign_once(m, s, mechanism, k, MESSAGE);
        let out = if rv == CKR_OK {
            let v = verify_once(m, s, mechanism, p, MESSAGE, &sig);
            format!(
                "len={} verify {} {}",
                sig.len(),
                rv_name(v),
                host_verify(&point, &digest_of(mechanism, MESSAGE), &sig)
            )
        } else {
            String::new()
        };
        r.check(
            &format!("sign.{name}.single"),
            &format!("C_Sign({name}, message)"),
            rv,
            out,
        );

        let mut mm = mech(mechanism);
        let rv = call!(m, C_SignInit, s, &mut mm, k);
        if rv == CKR_OK {
            let (a, b) = MESSAGE.split_at(20);
            let rv1 = call!(
                m,
                C_SignUpdate,
                s,
                a.as_ptr() as *mut u8,
                a.len() as CK_ULONG
            );
            let rv2 = call!(
                m,
                C_SignUpdate,
                s,
                b.as_ptr() as *mut u8,
                b.len() as CK_ULONG
            );
            let mut len: CK_ULONG = 0;
            let rv3 = call!(m, C_SignFinal, s, null_mut(), &mut len);
            let mut sig = vec![0u8; 128];
            let mut len2: CK_ULONG = 128;
            let rv4 = call!(m, C_SignFinal, s, sig.as_mut_ptr(), &mut len2);
            sig.truncate(len2 as usize);
            // Multi-part verification too.
            let mut mm = mech(mechanism);
            let mut v = call!(m, C_VerifyInit, s, &mut mm, p);
            if v == CKR_OK {
                call!(
                    m,
                    C_VerifyUpdate,
                    s,
                    a.as_ptr() as *mut u8,
                    a.len() as CK_ULONG
                );
                call!(
                    m,
                    C_VerifyUpdate,
                    s,
                    b.as_ptr() as *mut u8,
                    b.len() as CK_ULONG
                );
                v = call!(m, C_VerifyFinal, s, sig.as_mut_ptr(), sig.len() as CK_ULONG);
            }
            r.check(
                &format!("sign.{name}.multi"),
                &format!("C_SignUpdate x2, C_SignFinal(NULL), C_SignFinal({name})"),
                rv4,
                format!(
                    "updates {} {} size query {} len={} final len={} verify-multi {} {}",
                    rv_name(rv1),
                    rv_name(rv2),
                    rv_name(rv3),
                    len,
                    len2,
                    rv_name(v),
                    host_verify(&point, &digest_of(mechanism, MESSAGE), &sig)
                ),
            );
        } else {
            r.check(
                &format!("sign.{name}.multi"),
                &format!("C_SignInit({name})"),
                rv,
                "",
            );
        }
    }

    // Raw ECDSA is single-part.
    let mut mm = mech(CKM_ECDSA);
    call!(m, C_SignInit, s, &mut mm, k);
    let rv = call!(m, C_SignUpdate, s, hash.as_ptr() as *mut u8, 32);
    r.check("sign.ecdsa.update", "C_SignUpdate(ECDSA)", rv, "");
    let mut len: CK_ULONG = 128;
    let mut buf = [0u8; 128];
    if rv == CKR_OK {
        call!(m, C_SignFinal, s, buf.as_mut_ptr(), &mut len);
    }
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_SignInit, s, &mut mm, k);
    r.check(
        "sign.after_failed_update",
        "C_SignInit after the failed C_SignUpdate",
        rv,
        "",
    );
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_SignInit, s, &mut mm, k);
    r.check("sign.init_twice", "C_SignInit while active", rv, "");
    let rv = call!(
        m,
        C_Sign,
        s,
        hash.as_ptr() as *mut u8,
        32,
        null_mut(),
        null_mut()
    );
    r.check("sign.null_len", "C_Sign(NULL, NULL length)", rv, "");
    let mut len: CK_ULONG = 128;
    let rv = call!(
        m,
        C_Sign,
        s,
        hash.as_ptr() as *mut u8,
        32,
        buf.as_mut_ptr(),
        &mut len
    );
    r.check("sign.after_null_len", "C_Sign after ARGUMENTS_BAD", rv, "");
    let mut len: CK_ULONG = 128;
    let rv = call!(
        m,
        C_Sign,
        s,
        hash.as_ptr() as *mut u8,
        32,
        buf.as_mut_ptr(),
        &mut len
    );
    r.check("sign.without_init", "C_Sign without C_SignInit", rv, "");

    // Wrong keys and mechanisms.
    let cases: Vec<(&str, &str, CK_MECHANISM_TYPE, Option<CK_OBJECT_HANDLE>)> = vec![
        (
            "sign.key.public",
            "C_SignInit(ECDSA, pubkey)",
            CKM_ECDSA,
            Some(p),
        ),
        (
            "sign.key.no_sign",
            "C_SignInit(ECDSA, ecdh key without CKA_SIGN)",
            CKM_ECDSA,
            objs.get("privkey.ecdh"),
        ),
        (
            "sign.key.cert",
            "C_SignInit(ECDSA, certificate)",
            CKM_ECDSA,
            objs.get("cert.client"),
        ),
        (
            "sign.key.bogus",
            "C_SignInit(ECDSA, bogus handle)",
            CKM_ECDSA,
            Some(BOGUS_HANDLE),
        ),
        (
            "sign.mech.rsa",
            "C_SignInit(RSA_PKCS, EC key)",
            CKM_RSA_PKCS,
            Some(k),
        ),
        (
            "sign.mech.sha256",
            "C_SignInit(SHA256, EC key)",
            CKM_SHA256,
            Some(k),
        ),
        (
            "sign.mech.bogus",
            "C_SignInit(vendor 0x80001234)",
            BOGUS_MECHANISM,
            Some(k),
        ),
    ];
    for (id, what, mechanism, key) in cases {
        let Some(key) = key else { continue };
        let mut mm = mech(mechanism);
        let rv = call!(m, C_SignInit, s, &mut mm, key);
        if rv == CKR_OK {
            let mut len: CK_ULONG = 128;
            call!(
                m,
                C_Sign,
                s,
                hash.as_ptr() as *mut u8,
                32,
                buf.as_mut_ptr(),
                &mut len
            );
        }
        r.check(id, what, rv, "");
    }
    let rv = call!(m, C_SignInit, s, null_mut(), k);
    r.check("sign.mech.null", "C_SignInit(NULL mechanism)", rv, "");
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_SignInit, BOGUS_HANDLE, &mut mm, k);
    r.check("sign.bogus_session", "C_SignInit(bogus session)", rv, "");
    let mut mm = mech(CKM_ECDSA);
    mm.pParameter = buf.as_mut_ptr() as *mut c_void;
    mm.ulParameterLen = 4;
    let rv = call!(m, C_SignInit, s, &mut mm, k);
    if rv == CKR_OK {
        let mut len: CK_ULONG = 128;
        call!(
            m,
            C_Sign,
            s,
            hash.as_ptr() as *mut u8,
            32,
            buf.as_mut_ptr(),
            &mut len
        );
    }
    r.check(
        "sign.mech.with_parameter",
        "C_SignInit(ECDSA with a 4-byte parameter)",
        rv,
        "",
    );
}

// --- 10. digests ----------------------------------------------------------------------------

fn digests(m: &Module, s: CK_SESSION_HANDLE, r: &mut Report) {
    for (mechanism, name) in [
        (CKM_SHA256, "SHA256"),
        (CKM_SHA384, "SHA384"),
        (CKM_SHA512, "SHA512"),
    ] {
        let mut mm = mech(mechanism);
        let rv = call!(m, C_DigestInit, s, &mut mm);
        if rv != CKR_OK {
            r.check(
                &format!("digest.{name}"),
                &format!("C_DigestInit({name})"),
                rv,
                "",
            );
            continue;
        }
        let mut len: CK_ULONG = 0;
        let rv0 = call!(
            m,
            C_Digest,
            s,
            b"abc".as_ptr() as *mut u8,
            3,
            null_mut(),
            &mut len
        );
        let mut out = vec![0u8; 64];
        let mut short: CK_ULONG = 4;
        let rv1 = call!(
            m,
            C_Digest,
            s,
            b"abc".as_ptr() as *mut u8,
            3,
            out.as_mut_ptr(),
            &mut short
        );
        let mut full: CK_ULONG = 64;
        let rv2 = call!(
            m,
            C_Digest,
            s,
            b"abc".as_ptr() as *mut u8,
            3,
            out.as_mut_ptr(),
            &mut full
        );
        out.truncate(full as usize);
        r.check(
            &format!("digest.{name}"),
            &format!("C_Digest({name}, \"abc\"): NULL, 4-byte buffer, 64-byte buffer"),
            rv2,
            format!(
                "size {} len={len}; short {} len={short}; {}",
                rv_name(rv0),
                rv_name(rv1),
                hex(&out[..out.len().min(8)])
            ),
        );
        let mut mm = mech(mechanism);
        call!(m, C_DigestInit, s, &mut mm);
        let rv1 = call!(m, C_DigestUpdate, s, b"a".as_ptr() as *mut u8, 1);
        let rv2 = call!(m, C_DigestUpdate, s, b"bc".as_ptr() as *mut u8, 2);
        let mut out = vec![0u8; 64];
        let mut full: CK_ULONG = 64;
        let rv3 = call!(m, C_DigestFinal, s, out.as_mut_ptr(), &mut full);
        out.truncate(full as usize);
        r.check(
            &format!("digest.{name}.multi"),
            &format!("C_DigestUpdate(a), (bc), C_DigestFinal({name})"),
            rv3,
            format!(
                "updates {} {} {}",
                rv_name(rv1),
                rv_name(rv2),
                hex(&out[..out.len().min(8)])
            ),
        );
    }
    let mut out = [0u8; 64];
    let mut full: CK_ULONG = 64;
    let rv = call!(
        m,
        C_Digest,
        s,
        b"abc".as_ptr() as *mut u8,
        3,
        out.as_mut_ptr(),
        &mut full
    );
    r.check("digest.without_init", "C_Digest without init", rv, "");
    let mut mm = mech(CKM_SHA256);
    call!(m, C_DigestInit, s, &mut mm);
    let rv = call!(m, C_DigestInit, s, &mut mm);
    r.check("digest.init_twice", "C_DigestInit while active", rv, "");
    call!(
        m,
        C_Digest,
        s,
        b"abc".as_ptr() as *mut u8,
        3,
        out.as_mut_ptr(),
        &mut full
    );
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_DigestInit, s, &mut mm);
    r.check("digest.mech.ecdsa", "C_DigestInit(ECDSA)", rv, "");
    let mut mm = mech(CKM_SHA_1);
    let rv = call!(m, C_DigestInit, s, &mut mm);
    if rv == CKR_OK {
        let mut full: CK_ULONG = 64;
        call!(
            m,
            C_Digest,
            s,
            b"abc".as_ptr() as *mut u8,
            3,
            out.as_mut_ptr(),
            &mut full
        );
    }
    r.check("digest.mech.sha1", "C_DigestInit(SHA_1)", rv, "");
}

// --- 11. random ----------------------------------------------------------------------------

fn random(m: &Module, s: CK_SESSION_HANDLE, r: &mut Report) {
    for n in [0usize, 1, 32, 1000] {
        let mut buf = vec![0u8; n.max(1)];
        let rv = call!(m, C_GenerateRandom, s, buf.as_mut_ptr(), n as CK_ULONG);
        let zero = n >= 32 && buf.iter().all(|&b| b == 0);
        r.check(
            &format!("random.{n}"),
            &format!("C_GenerateRandom({n})"),
            rv,
            if zero { "ALL ZERO" } else { "" },
        );
    }
    let rv = call!(m, C_GenerateRandom, s, null_mut(), 10);
    r.check("random.null", "C_GenerateRandom(NULL, 10)", rv, "");
    let mut buf = [0u8; 4];
    let rv = call!(m, C_GenerateRandom, BOGUS_HANDLE, buf.as_mut_ptr(), 4);
    r.check(
        "random.bogus_session",
        "C_GenerateRandom(bogus session)",
        rv,
        "",
    );
    let mut seed = *b"seed";
    let rv = call!(m, C_SeedRandom, s, seed.as_mut_ptr(), 4);
    r.check("random.seed", "C_SeedRandom(4 bytes)", rv, "");
}

// --- 12. functions the token does not offer ------------------------------------------------

fn unsupported(
    m: &Module,
    o: &Options,
    slot: CK_SLOT_ID,
    s: CK_SESSION_HANDLE,
    objs: &Objects,
    r: &mut Report,
) {
    let k = objs.get("privkey.client").unwrap_or(BOGUS_HANDLE);
    let p = objs.get("pubkey.client").unwrap_or(BOGUS_HANDLE);
    let mut buf = [0u8; 256];
    let mut len: CK_ULONG = 256;
    let mut out = [0u8; 256];
    let mut olen: CK_ULONG = 256;

    let rv = call!(m, C_GetOperationState, s, null_mut(), &mut len);
    r.check(
        "unsup.get_operation_state",
        "C_GetOperationState(no operation)",
        rv,
        "",
    );
    let mut mm = mech(CKM_ECDSA_SHA256);
    if call!(m, C_SignInit, s, &mut mm, k) == CKR_OK {
        call!(m, C_SignUpdate, s, buf.as_mut_ptr(), 8);
        let mut len: CK_ULONG = 0;
        let rv = call!(m, C_GetOperationState, s, null_mut(), &mut len);
        r.check(
            "unsup.get_operation_state.sign",
            "C_GetOperationState(during ECDSA_SHA256 sign)",
            rv,
            "",
        );
        let mut l: CK_ULONG = 256;
        call!(m, C_SignFinal, s, out.as_mut_ptr(), &mut l);
    }
    let rv = call!(m, C_SetOperationState, s, buf.as_mut_ptr(), 16, 0, 0);
    r.check(
        "unsup.set_operation_state",
        "C_SetOperationState(16 junk bytes)",
        rv,
        "",
    );

    let rw = {
        let mut h = 0;
        call!(
            m,
            C_OpenSession,
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            null_mut(),
            None,
            &mut h
        );
        h
    };
    let mut so = b"87654321".to_vec();
    let mut label = [b' '; 32];
    let rv = call!(
        m,
        C_InitToken,
        slot,
        so.as_mut_ptr(),
        so.len() as CK_ULONG,
        label.as_mut_ptr()
    );
    r.check(
        "unsup.init_token",
        "C_InitToken(wrong SO PIN, sessions open)",
        rv,
        "",
    );
    let mut pin = o.pin.clone().into_bytes();
    let rv = call!(m, C_InitPIN, rw, pin.as_mut_ptr(), pin.len() as CK_ULONG);
    r.check("unsup.init_pin", "C_InitPIN(RW session, not SO)", rv, "");
    let mut old = b"99999999".to_vec();
    let rv = call!(
        m,
        C_SetPIN,
        rw,
        old.as_mut_ptr(),
        old.len() as CK_ULONG,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    );
    r.check(
        "unsup.set_pin",
        "C_SetPIN(RW session, wrong old PIN)",
        rv,
        "",
    );
    call!(m, C_CloseSession, rw);

    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_EncryptInit, s, &mut mm, p);
    r.check("unsup.encrypt_init", "C_EncryptInit(ECDSA, pubkey)", rv, "");
    let rv = call!(
        m,
        C_Encrypt,
        s,
        buf.as_mut_ptr(),
        16,
        out.as_mut_ptr(),
        &mut olen
    );
    r.check("unsup.encrypt", "C_Encrypt without init", rv, "");
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_DecryptInit, s, &mut mm, k);
    r.check(
        "unsup.decrypt_init",
        "C_DecryptInit(ECDSA, privkey)",
        rv,
        "",
    );
    let rv = call!(
        m,
        C_Decrypt,
        s,
        buf.as_mut_ptr(),
        16,
        out.as_mut_ptr(),
        &mut olen
    );
    r.check("unsup.decrypt", "C_Decrypt without init", rv, "");
    let rv = call!(m, C_DigestKey, s, k);
    r.check("unsup.digest_key", "C_DigestKey without digest", rv, "");
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_SignRecoverInit, s, &mut mm, k);
    r.check(
        "unsup.sign_recover_init",
        "C_SignRecoverInit(ECDSA)",
        rv,
        "",
    );
    let mut mm = mech(CKM_ECDSA);
    let rv = call!(m, C_VerifyRecoverInit, s, &mut mm, p);
    r.check(
        "unsup.verify_recover_init",
        "C_VerifyRecoverInit(ECDSA)",
        rv,
        "",
    );
    let rv = call!(
        m,
        C_DigestEncryptUpdate,
        s,
        buf.as_mut_ptr(),
        16,
        out.as_mut_ptr(),
        &mut olen
    );
    r.check(
        "unsup.digest_encrypt_update",
        "C_DigestEncryptUpdate",
        rv,
        "",
    );
    let rv = call!(
        m,
        C_DecryptDigestUpdate,
        s,
        buf.as_mut_ptr(),
        16,
        out.as_mut_ptr(),
        &mut olen
    );
    r.check(
        "unsup.decrypt_digest_update",
        "C_DecryptDigestUpdate",
        rv,
        "",
    );
    let rv = call!(
        m,
        C_SignEncryptUpdate,
        s,
        buf.as_mut_ptr(),
        16,
        out.as_mut_ptr(),
        &mut olen
    );
    r.check("unsup.sign_encrypt_update", "C_SignEncryptUpdate", rv, "");
    let rv = call!(
        m,
        C_DecryptVerifyUpdate,
        s,
        buf.as_mut_ptr(),
        16,
        out.as_mut_ptr(),
        &mut olen
    );
    r.check(
        "unsup.decrypt_verify_update",
        "C_DecryptVerifyUpdate",
        rv,
        "",
    );

    let mut mm = mech(CKM_AES_KEY_GEN);
    let mut h = 0;
    let rv = call!(m, C_GenerateKey, s, &mut mm, null_mut(), 0, &mut h);
    r.check(
        "unsup.generate_key",
        "C_GenerateKey(AES_KEY_GEN, empty template)",
        rv,
        "",
    );
    if rv == CKR_OK {
        call!(m, C_DestroyObject, s, h);
    }
    let mut mm = mech(CKM_AES_KEY_WRAP);
    let rv = call!(m, C_WrapKey, s, &mut mm, p, k, out.as_mut_ptr(), &mut olen);
    r.check(
        "unsup.wrap_key",
        "C_WrapKey(AES_KEY_WRAP, pubkey, privkey)",
        rv,
        "",
    );
    let mut mm = mech(CKM_AES_KEY_WRAP);
    let rv = call!(
        m,
        C_UnwrapKey,
        s,
        &mut mm,
        k,
        buf.as_mut_ptr(),
        24,
        null_mut(),
        0,
        &mut h
    );
    r.check(
        "unsup.unwrap_key",
        "C_UnwrapKey(AES_KEY_WRAP, privkey, 24 bytes)",
        rv,
        "",
    );
    let mut mm = mech(CKM_ECDH1_DERIVE);
    let rv = call!(m, C_DeriveKey, s, &mut mm, k, null_mut(), 0, &mut h);
    r.check(
        "unsup.derive_key",
        "C_DeriveKey(ECDH1_DERIVE without parameters)",
        rv,
        "",
    );
    let rv = call!(m, C_GetFunctionStatus, s);
    r.check("unsup.get_function_status", "C_GetFunctionStatus", rv, "");
    let rv = call!(m, C_CancelFunction, s);
    r.check("unsup.cancel_function", "C_CancelFunction", rv, "");
    let mut ev = 0;
    let rv = call!(m, C_WaitForSlotEvent, CKF_DONT_BLOCK, &mut ev, null_mut());
    r.check(
        "unsup.wait_for_slot_event",
        "C_WaitForSlotEvent(DONT_BLOCK)",
        rv,
        "",
    );

    // The 3.0 additions, through the 3.0 interface where the module has one.
    if let Some(f3) = function_list_3_0(m) {
        let f3 = unsafe { &*f3 };
        let rv = unsafe { f3.C_SessionCancel.unwrap()(s, CKF_SIGN) };
        r.check(
            "unsup.v3.session_cancel",
            "C_SessionCancel(SIGN, none active)",
            rv,
            "",
        );
        let mut user = b"user".to_vec();
        let rv = unsafe {
            f3.C_LoginUser.unwrap()(
                s,
                CKU_USER,
                pin.as_mut_ptr(),
                pin.len() as CK_ULONG,
                user.as_mut_ptr(),
                user.len() as CK_ULONG,
            )
        };
        r.check(
            "unsup.v3.login_user",
            "C_LoginUser(USER, pin, \"user\")",
            rv,
            "",
        );
        if rv == CKR_OK {
            call!(m, C_Logout, s);
        }
        let mut mm = mech(CKM_ECDSA);
        let rv = unsafe { f3.C_MessageSignInit.unwrap()(s, &mut mm, k) };
        r.check(
            "unsup.v3.message_sign_init",
            "C_MessageSignInit(ECDSA)",
            rv,
            "",
        );
        let mut mm = mech(CKM_AES_GCM);
        let rv = unsafe { f3.C_MessageEncryptInit.unwrap()(s, &mut mm, k) };
        r.check(
            "unsup.v3.message_encrypt_init",
            "C_MessageEncryptInit(AES_GCM)",
            rv,
            "",
        );
    }
}

/// The module's "PKCS 11" 3.0 function list, when it exports C_GetInterface.
fn function_list_3_0(m: &Module) -> Option<*const CK_FUNCTION_LIST_3_0> {
    let p = m.symbol("C_GetInterface")?;
    let f: GetInterface = unsafe { std::mem::transmute(p) };
    let mut name = *b"PKCS 11\0";
    let mut v = CK_VERSION { major: 3, minor: 0 };
    let mut out: *mut CK_INTERFACE = null_mut();
    let rv = unsafe { f(name.as_mut_ptr(), &mut v, &mut out, 0) };
    (rv == CKR_OK && !out.is_null())
        .then(|| unsafe { (*out).pFunctionList as *const CK_FUNCTION_LIST_3_0 })
}

// --- 13. threads ---------------------------------------------------------------------------

fn threads(m: &Module, o: &Options, slot: CK_SLOT_ID, objs: &Objects, r: &mut Report) {
    let (Some(k), Some(p)) = (objs.get("privkey.client"), objs.get("pubkey.client")) else {
        return;
    };
    let s0 = open(m, slot, CKF_SERIAL_SESSION);
    let point = get_bytes(m, s0, p, CKA_EC_POINT);
    call!(m, C_CloseSession, s0);
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.threads)
            .map(|t| {
                let point = &point;
                scope.spawn(move || {
                    let mut ok = 0;
                    let mut errors = Vec::new();
                    let mut s = 0;
                    let rv = call!(
                        m,
                        C_OpenSession,
                        slot,
                        CKF_SERIAL_SESSION,
                        null_mut(),
                        None,
                        &mut s
                    );
                    if rv != CKR_OK {
                        return (0, vec![format!("C_OpenSession {}", rv_name(rv))]);
                    }
                    for i in 0..o.signatures_per_thread {
                        let data = digest_of(
                            CKM_ECDSA_SHA256,
                            format!("thread {t} signature {i}").as_bytes(),
                        );
                        let (rv, sig) = sign_once(m, s, CKM_ECDSA, k, &data);
                        if rv != CKR_OK {
                            errors.push(format!("C_Sign {}", rv_name(rv)));
                        } else if host_verify(point, &data, &sig) == "host-verified" {
                            ok += 1;
                        } else {
                            errors.push("bad signature".into());
                        }
                        let mut rnd = [0u8; 16];
                        let rv = call!(m, C_GenerateRandom, s, rnd.as_mut_ptr(), 16);
                        if rv != CKR_OK {
                            errors.push(format!("C_GenerateRandom {}", rv_name(rv)));
                        }
                    }
                    call!(m, C_CloseSession, s);
                    (ok, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: usize = results.iter().map(|(n, _)| n).sum();
    let mut errors: Vec<String> = results.into_iter().flat_map(|(_, e)| e).collect();
    errors.sort();
    errors.dedup();
    r.fact(
        "threads.sign",
        &format!(
            "{} threads x {} C_Sign(ECDSA) + C_GenerateRandom, own session each",
            o.threads, o.signatures_per_thread
        ),
        format!(
            "{ok}/{} verified; errors: {}",
            o.threads * o.signatures_per_thread,
            if errors.is_empty() {
                "none".into()
            } else {
                errors.join(", ")
            }
        ),
    );
}

// --- 14. fork ------------------------------------------------------------------------------

/// Runs `child` in a forked child (bounded by alarm) and returns the lines it wrote.
fn in_child(child: impl FnOnce() -> Vec<String>) -> Vec<String> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe {
            libc::close(fds[0]);
            libc::alarm(60);
        }
        let lines = child();
        let mut w = unsafe { std::fs::File::from_raw_fd(fds[1]) };
        let _ = w.write_all(lines.join("\n").as_bytes());
        drop(w);
        unsafe { libc::_exit(0) };
    }
    unsafe { libc::close(fds[1]) };
    let mut text = String::new();
    let mut rd = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let _ = rd.read_to_string(&mut text);
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        lines.push(format!(
            "fork.child_died | child process | status {status:#x}"
        ));
    }
    lines
}

fn sign_in_fresh_session(m: &Module, label: &str) -> String {
    let all = slot_list(m, CK_TRUE);
    let Some(slot) = all
        .iter()
        .copied()
        .find(|&s| token_label(m, s).as_deref() == Some(label))
    else {
        return format!("token not found among {} slots", all.len());
    };
    let mut s = 0;
    let rv = call!(
        m,
        C_OpenSession,
        slot,
        CKF_SERIAL_SESSION,
        null_mut(),
        None,
        &mut s
    );
    if rv != CKR_OK {
        return format!("C_OpenSession {}", rv_name(rv));
    }
    let class = CKO_PRIVATE_KEY;
    let (_, keys) = find(
        m,
        s,
        &mut [attr(CKA_CLASS, &class), attr_bytes(CKA_LABEL, b"client")],
    );
    let (_, pubs) = find(
        m,
        s,
        &mut [
            attr_bytes(CKA_LABEL, b"client"),
            attr(CKA_CLASS, &CKO_PUBLIC_KEY),
        ],
    );
    let (Some(&k), Some(&p)) = (keys.first(), pubs.first()) else {
        return "key pair not found".into();
    };
    let point = get_bytes(m, s, p, CKA_EC_POINT);
    let data = digest_of(CKM_ECDSA_SHA256, b"fork");
    let (rv, sig) = sign_once(m, s, CKM_ECDSA, k, &data);
    call!(m, C_CloseSession, s);
    if rv != CKR_OK {
        return format!("C_Sign {}", rv_name(rv));
    }
    host_verify(&point, &data, &sig).to_string()
}

fn fork(m: &Module, slot: CK_SLOT_ID, r: &mut Report) {
    let label = token_label(m, slot).unwrap_or_default();
    let mut parent: CK_INFO = unsafe { std::mem::zeroed() };
    call!(m, C_GetInfo, &mut parent);
    // A session of the parent, open across the fork.
    let ps = open(m, slot, CKF_SERIAL_SESSION);

    // 1. The child uses the parent's state without re-initialising.
    let lines = in_child(|| {
        let (rv, _) = session_info(m, ps);
        let mut n = 0;
        let rv2 = call!(m, C_GetSlotList, CK_TRUE, null_mut(), &mut n);
        vec![
            format!(
                "fork.no_reinit.session | child: C_GetSessionInfo(parent's session) | {}",
                rv_name(rv)
            ),
            format!(
                "fork.no_reinit.slot_list | child: C_GetSlotList | {}",
                rv_name(rv2)
            ),
        ]
    });
    lines.into_iter().for_each(|l| r.push(l));

    // 2. The child calls C_Initialize (pkcs11-tool --test-fork, the PKCS#11 usage guide).
    let lines = in_child(|| {
        let rv = call!(
            m,
            C_Initialize,
            &mut os_locking_args() as *mut _ as *mut c_void
        );
        let mut out = vec![format!(
            "fork.init | child: C_Initialize(OS_LOCKING_OK) | {}",
            rv_name(rv)
        )];
        let mut info: CK_INFO = unsafe { std::mem::zeroed() };
        call!(m, C_GetInfo, &mut info);
        let same = info.cryptokiVersion.major == parent.cryptokiVersion.major
            && info.cryptokiVersion.minor == parent.cryptokiVersion.minor
            && info.manufacturerID == parent.manufacturerID
            && info.libraryDescription == parent.libraryDescription
            && info.flags == parent.flags;
        out.push(format!(
            "fork.init.info_same | child: C_GetInfo equals the parent's | {same}"
        ));
        out.push(format!(
            "fork.init.sign | child: open session, find, C_Sign(ECDSA) | {}",
            sign_in_fresh_session(m, &label)
        ));
        out.push(format!(
            "fork.init.finalize | child: C_Finalize | {}",
            rv_name(call!(m, C_Finalize, null_mut()))
        ));
        out
    });
    lines.into_iter().for_each(|l| r.push(l));

    // 3. The child finalizes first, then initialises (what pkcs11-provider does).
    let lines = in_child(|| {
        let rv1 = call!(m, C_Finalize, null_mut());
        let rv2 = call!(
            m,
            C_Initialize,
            &mut os_locking_args() as *mut _ as *mut c_void
        );
        vec![
            format!(
                "fork.reinit.finalize | child: C_Finalize | {}",
                rv_name(rv1)
            ),
            format!(
                "fork.reinit.init | child: C_Initialize(OS_LOCKING_OK) | {}",
                rv_name(rv2)
            ),
            format!(
                "fork.reinit.sign | child: open session, find, C_Sign(ECDSA) | {}",
                sign_in_fresh_session(m, &label)
            ),
        ]
    });
    lines.into_iter().for_each(|l| r.push(l));

    let (rv, _) = session_info(m, ps);
    r.check(
        "fork.parent.session",
        "parent after the children: C_GetSessionInfo(its session)",
        rv,
        "",
    );
    r.fact(
        "fork.parent.sign",
        "parent after the children: C_Sign(ECDSA)",
        sign_in_fresh_session(m, &label),
    );
    call!(m, C_CloseSession, ps);
}

// --- 15. writes (last) --------------------------------------------------------------------

fn writes(m: &Module, slot: CK_SLOT_ID, objs: &Objects, r: &mut Report) {
    let ro = open(m, slot, CKF_SERIAL_SESSION);
    let mut rw = 0;
    let rv = call!(
        m,
        C_OpenSession,
        slot,
        CKF_SERIAL_SESSION | CKF_RW_SESSION,
        null_mut(),
        None,
        &mut rw
    );
    if rv != CKR_OK {
        r.check("write.open_rw", "C_OpenSession(SERIAL|RW)", rv, "");
        return;
    }
    let k = objs.get("privkey.client").unwrap_or(BOGUS_HANDLE);
    let label = b"client";
    for (id, s) in [("write.set_label.ro", ro), ("write.set_label.rw", rw)] {
        let mut t = [attr_bytes(CKA_LABEL, label)];
        let rv = call!(m, C_SetAttributeValue, s, k, t.as_mut_ptr(), 1);
        r.check(
            id,
            &format!(
                "C_SetAttributeValue(privkey, LABEL=client) in {} session",
                &id[16..]
            ),
            rv,
            "",
        );
    }
    // A PSK (IoT.04 I9: never changed or deleted by the device), in both sessions for the label
    // (rewriting the same label changes nothing), copied to a session object and destroyed in
    // the R/O session only.
    if let Some(psk) = objs.get("secret.device-psk") {
        for (id, s, kind) in [
            ("write.psk.set_label.ro", ro, "ro"),
            ("write.psk.set_label.rw", rw, "rw"),
        ] {
            let mut t = [attr_bytes(CKA_LABEL, b"device-psk")];
            let rv = call!(m, C_SetAttributeValue, s, psk, t.as_mut_ptr(), 1);
            r.check(
                id,
                &format!(
                    "C_SetAttributeValue(secret device-psk, LABEL=device-psk) in {kind} session"
                ),
                rv,
                "",
            );
        }
        let f = CK_FALSE;
        let mut tpl = [attr(CKA_TOKEN, &f)];
        let mut h = 0;
        let rv = call!(m, C_CopyObject, ro, psk, tpl.as_mut_ptr(), 1, &mut h);
        if rv == CKR_OK {
            call!(m, C_DestroyObject, ro, h);
        }
        r.check(
            "write.psk.copy_object",
            "C_CopyObject(secret device-psk, TOKEN=false)",
            rv,
            "",
        );
        let rv = call!(m, C_DestroyObject, ro, psk);
        r.check(
            "write.psk.destroy.ro",
            "C_DestroyObject(secret device-psk) in RO session",
            rv,
            "",
        );
    } else {
        r.fact("write.psk", "secret key labelled device-psk", "NOT FOUND");
    }

    let t = CK_TRUE;
    let f = CK_FALSE;
    let data = CKO_DATA;
    // Only writes that cannot leave anything behind on the shared simulated card: session
    // objects, and token writes in R/O sessions (which must fail with CKR_SESSION_READ_ONLY).
    for (id, s, token) in [
        ("write.create_session_object.ro", ro, &f),
        ("write.create_token_object.ro", ro, &t),
    ] {
        let mut tpl = [
            attr(CKA_CLASS, &data),
            attr(CKA_TOKEN, token),
            attr(CKA_PRIVATE, &f),
            attr_bytes(CKA_LABEL, b"tmp"),
        ];
        let mut h = 0;
        let rv = call!(m, C_CreateObject, s, tpl.as_mut_ptr(), 4, &mut h);
        if rv == CKR_OK {
            call!(m, C_DestroyObject, s, h);
        }
        r.check(id, "C_CreateObject(DATA, label tmp)", rv, "");
    }
    // Secret keys: a session one (a key the application brings, e.g. an imported PSK), and a
    // token one in the R/O session (must fail with CKR_SESSION_READ_ONLY).
    let secret = CKO_SECRET_KEY;
    let generic = CKK_GENERIC_SECRET;
    let value: Vec<u8> = (1..=32).collect();
    for (id, token) in [
        ("write.create_session_secret.ro", &f),
        ("write.create_token_secret.ro", &t),
    ] {
        let mut tpl = [
            attr(CKA_CLASS, &secret),
            attr(CKA_KEY_TYPE, &generic),
            attr(CKA_TOKEN, token),
            attr(CKA_PRIVATE, &f),
            attr(CKA_DERIVE, &t),
            attr_bytes(CKA_LABEL, b"tmp-secret"),
            attr_bytes(CKA_VALUE, &value),
        ];
        let mut h = 0;
        let rv = call!(
            m,
            C_CreateObject,
            ro,
            tpl.as_mut_ptr(),
            tpl.len() as CK_ULONG,
            &mut h
        );
        let mut out = String::new();
        if rv == CKR_OK {
            let shown: Vec<String> = [
                (CKA_CLASS, "CLASS"),
                (CKA_KEY_TYPE, "KEY_TYPE"),
                (CKA_TOKEN, "TOKEN"),
                (CKA_PRIVATE, "PRIVATE"),
                (CKA_DERIVE, "DERIVE"),
                (CKA_SENSITIVE, "SENSITIVE"),
                (CKA_EXTRACTABLE, "EXTRACTABLE"),
                (CKA_LABEL, "LABEL"),
                (CKA_VALUE_LEN, "VALUE_LEN"),
                (CKA_VALUE, "VALUE"),
            ]
            .iter()
            .map(|&(a, name)| match get(m, ro, h, a) {
                (CKR_OK, _, Some(v)) => format!("{name}={}", render(a, &v)),
                (rv, _, _) => format!("{name}:{}", rv_name(rv)),
            })
            .collect();
            let drv = call!(m, C_DestroyObject, ro, h);
            out = format!("{}; C_DestroyObject {}", shown.join(" "), rv_name(drv));
        }
        r.check(
            id,
            "C_CreateObject(SECRET_KEY GENERIC_SECRET, DERIVE, 32-byte VALUE)",
            rv,
            out,
        );
    }

    let mut tpl = [attr(CKA_TOKEN, &f)];
    let mut h = 0;
    let rv = call!(m, C_CopyObject, ro, k, tpl.as_mut_ptr(), 1, &mut h);
    if rv == CKR_OK {
        call!(m, C_DestroyObject, ro, h);
    }
    r.check(
        "write.copy_object",
        "C_CopyObject(privkey, TOKEN=false)",
        rv,
        "",
    );

    let params: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    {
        let (id, s, token) = ("write.generate_key_pair.session", ro, &f);
        let mut pubt = [
            attr_bytes(CKA_EC_PARAMS, &params),
            attr(CKA_TOKEN, token),
            attr(CKA_VERIFY, &t),
        ];
        let mut privt = [
            attr(CKA_TOKEN, token),
            attr(CKA_SIGN, &t),
            attr(CKA_SENSITIVE, &t),
            attr(CKA_PRIVATE, &f),
        ];
        let mut mm = mech(CKM_EC_KEY_PAIR_GEN);
        let (mut hp, mut hk) = (0, 0);
        let rv = call!(
            m,
            C_GenerateKeyPair,
            s,
            &mut mm,
            pubt.as_mut_ptr(),
            3,
            privt.as_mut_ptr(),
            4,
            &mut hp,
            &mut hk
        );
        if rv == CKR_OK {
            call!(m, C_DestroyObject, s, hp);
            call!(m, C_DestroyObject, s, hk);
        }
        r.check(id, "C_GenerateKeyPair(EC P-256)", rv, "");
    }
    let rv = call!(m, C_DestroyObject, rw, BOGUS_HANDLE);
    r.check(
        "write.destroy.bogus",
        "C_DestroyObject(bogus handle)",
        rv,
        "",
    );
    if let Some(ca) = objs.get("cert.ca") {
        let rv = call!(m, C_DestroyObject, ro, ca);
        r.check(
            "write.destroy.ro",
            "C_DestroyObject(cert ca) in RO session",
            rv,
            "",
        );
    }
    call!(m, C_CloseSession, rw);
    call!(m, C_CloseSession, ro);
}
