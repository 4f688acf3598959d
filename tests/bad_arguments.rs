//! Bad arguments at the C boundary, table-driven: every `C_*` function with NULL for each
//! pointer parameter, invalid session / slot / object handles, before `C_Initialize`, wrong
//! lengths and operations in the wrong state. Each row names the `CK_RV` the PKCS#11 3.0
//! specification gives; a crash fails the whole binary, a panic inside the module shows as
//! `CKR_GENERAL_ERROR` and fails the row.
//!
//! Functions the module does not offer may answer `CKR_FUNCTION_NOT_SUPPORTED` to anything
//! (PKCS#11 §5.1.6: any function may return it); when they become supported, the same rows
//! expect the specification's code.
//!
//! `cargo test --test bad_arguments -- --nocapture` prints the table.

mod helpers;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::error::rv_name;
use iotsafe_pkcs11::ffi::*;

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();
const BAD_SESSION: CK_SESSION_HANDLE = 0xDEAD_BEEF;
const BAD_SLOT: CK_SLOT_ID = 0xBEEF;
const BAD_OBJECT: CK_OBJECT_HANDLE = 0xBAD0_0BAD;

/// Arguments for one generated call.
struct Args {
    session: CK_SESSION_HANDLE,
    slot: CK_SLOT_ID,
    object: CK_OBJECT_HANDLE,
    int: CK_ULONG,
    /// The pointer parameter (by position) that is NULL; `usize::MAX` = all of them.
    null_at: Option<usize>,
    /// Zeroed scratch memory every non-NULL pointer points to (large enough for any
    /// structure or 16-element array the function may read or write).
    junk: Vec<u64>,
}

impl Args {
    fn session(&self) -> CK_SESSION_HANDLE {
        self.session
    }
    fn slot(&self) -> CK_SLOT_ID {
        self.slot
    }
    fn object(&self) -> CK_OBJECT_HANDLE {
        self.object
    }
    fn int(&self) -> CK_ULONG {
        self.int
    }
    fn ptr<T>(&self, position: usize) -> *mut T {
        match self.null_at {
            Some(n) if n == position || n == usize::MAX => std::ptr::null_mut(),
            _ => self.junk.as_ptr() as *mut T,
        }
    }
}

struct Entry {
    name: &'static str,
    /// False for functions that answer `CKR_FUNCTION_NOT_SUPPORTED` today.
    supported: bool,
    /// One letter per parameter: S session, L slot, O object, P pointer, I integer, F flags,
    /// U user type, B bool, N notify callback.
    params: &'static str,
    call: fn(&Args) -> CK_RV,
}

fn args(session: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, null_at: Option<usize>) -> Args {
    Args {
        session,
        slot: 0,
        object,
        int: 0,
        null_at,
        junk: vec![0u64; 512],
    }
}

/// One checked row of the table.
struct Outcome {
    function: String,
    case: String,
    got: CK_RV,
    allowed: Vec<CK_RV>,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.allowed.contains(&self.got)
    }
}

fn report(rows: &[Outcome]) -> usize {
    println!("| function | case | expected | got |");
    println!("|---|---|---|---|");
    let mut bad = 0;
    for r in rows {
        let expected: Vec<String> = r.allowed.iter().map(|rv| rv_name(*rv)).collect();
        let mark = if r.ok() { "" } else { " **MISMATCH**" };
        if !r.ok() {
            bad += 1;
        }
        println!(
            "| {} | {} | {} | {}{mark} |",
            r.function,
            r.case,
            expected.join(" or "),
            rv_name(r.got)
        );
    }
    println!("{} rows, {bad} mismatches", rows.len());
    bad
}

/// The specification's code, or `CKR_FUNCTION_NOT_SUPPORTED` for a function not offered.
fn spec(e: &Entry, rv: CK_RV) -> Vec<CK_RV> {
    if e.supported {
        vec![rv]
    } else {
        vec![CKR_FUNCTION_NOT_SUPPORTED, rv]
    }
}

fn private_key(s: CK_SESSION_HANDLE) -> CK_OBJECT_HANDLE {
    object_by_label(s, CKO_PRIVATE_KEY, "client")
}

#[test]
fn every_function_before_c_initialize() {
    let _h = Harness::default();
    let mut rows = Vec::new();
    for e in FUNCTIONS {
        let a = args(1, 1, Some(usize::MAX));
        let got = (e.call)(&a);
        rows.push(Outcome {
            function: e.name.into(),
            case: "before C_Initialize, NULL pointers".into(),
            got,
            allowed: vec![CKR_CRYPTOKI_NOT_INITIALIZED],
        });
    }
    assert_eq!(report(&rows), 0);
}

#[test]
fn every_session_function_with_an_invalid_session_handle() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = private_key(s);
    let mut rows = Vec::new();
    for e in FUNCTIONS.iter().filter(|e| e.params.starts_with('S')) {
        for (case, handle) in [
            ("invalid session handle", BAD_SESSION),
            ("session handle 0 (CK_INVALID_HANDLE)", 0),
        ] {
            let a = args(handle, key, None);
            rows.push(Outcome {
                function: e.name.into(),
                case: case.into(),
                got: (e.call)(&a),
                allowed: spec(e, CKR_SESSION_HANDLE_INVALID),
            });
        }
    }
    // A closed session is as invalid as one that never existed.
    let closed = open_session(0);
    unsafe { assert_eq!(C_CloseSession(closed), CKR_OK) };
    for e in FUNCTIONS.iter().filter(|e| e.params.starts_with('S')) {
        let a = args(closed, key, None);
        rows.push(Outcome {
            function: e.name.into(),
            case: "closed session".into(),
            got: (e.call)(&a),
            allowed: spec(e, CKR_SESSION_HANDLE_INVALID),
        });
    }
    assert_eq!(report(&rows), 0);
}

#[test]
fn every_slot_function_with_an_invalid_slot_id() {
    let h = Harness::default();
    let _s = h.init_and_open();
    let mut rows = Vec::new();
    for e in FUNCTIONS.iter().filter(|e| e.params.starts_with('L')) {
        let mut a = args(0, 0, None);
        a.slot = BAD_SLOT;
        rows.push(Outcome {
            function: e.name.into(),
            case: "invalid slot ID".into(),
            got: (e.call)(&a),
            allowed: spec(e, CKR_SLOT_ID_INVALID),
        });
    }
    assert_eq!(report(&rows), 0);
}

#[test]
fn every_object_function_with_an_invalid_object_handle() {
    let h = Harness::default();
    let s = h.init_and_open();
    let mut rows = Vec::new();
    for e in FUNCTIONS.iter().filter(|e| e.params.starts_with("SO")) {
        for (case, object) in [
            ("invalid object handle", BAD_OBJECT),
            ("object handle 0", 0),
        ] {
            let a = args(s, object, None);
            let expect = match e.name {
                // The object is a key here (PKCS#11 §5.15: CKR_KEY_HANDLE_INVALID).
                "C_DigestKey" => CKR_KEY_HANDLE_INVALID,
                _ => CKR_OBJECT_HANDLE_INVALID,
            };
            rows.push(Outcome {
                function: e.name.into(),
                case: case.into(),
                got: (e.call)(&a),
                allowed: spec(e, expect),
            });
        }
    }
    assert_eq!(report(&rows), 0);
}

/// (function, pointer position) where NULL is a valid argument and the call may succeed.
const NULL_ALLOWED: &[(&str, usize)] = &[
    ("C_GetSlotList", 1),      // size query
    ("C_GetMechanismList", 1), // size query
    ("C_OpenSession", 2),      // pApplication
    ("C_WaitForSlotEvent", 2), // pReserved must be NULL
];

#[test]
fn null_for_each_pointer_parameter_of_every_function() {
    let h = Harness::default();
    let s0 = h.init_and_open();
    let key = private_key(s0);
    let mut rows = Vec::new();
    for e in FUNCTIONS.iter().filter(|e| e.name != "C_Finalize") {
        for (position, kind) in e.params.chars().enumerate() {
            if kind != 'P' {
                continue;
            }
            let s = open_session(0);
            let mut a = args(s, key, Some(position));
            a.int = 16; // lengths and counts non-zero, so NULL is never "empty"
            let got = (e.call)(&a);
            let allowed = if NULL_ALLOWED.contains(&(e.name, position)) {
                vec![CKR_OK, CKR_NO_EVENT]
            } else if !e.supported {
                vec![CKR_FUNCTION_NOT_SUPPORTED, CKR_ARGUMENTS_BAD]
            } else {
                // NULL where the function needs memory: CKR_ARGUMENTS_BAD; functions of an
                // operation that was never initialised may say so first.
                vec![CKR_ARGUMENTS_BAD, CKR_OPERATION_NOT_INITIALIZED]
            };
            rows.push(Outcome {
                function: e.name.into(),
                case: format!("NULL parameter {} of {}", position + 1, e.params.len()),
                got,
                allowed,
            });
            unsafe { C_CloseSession(s) };
        }
    }
    assert_eq!(report(&rows), 0);
}

/// What a hand-written row gets: a fresh read-only session on the default card.
struct Ctx {
    s: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    public: CK_OBJECT_HANDLE,
    cert: CK_OBJECT_HANDLE,
}

struct Row {
    function: &'static str,
    case: &'static str,
    expect: &'static [CK_RV],
    body: fn(&Ctx) -> CK_RV,
}

const fn row(
    function: &'static str,
    case: &'static str,
    expect: &'static [CK_RV],
    body: fn(&Ctx) -> CK_RV,
) -> Row {
    Row {
        function,
        case,
        expect,
        body,
    }
}

fn m(t: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    mech(t)
}

unsafe fn sign_init(c: &Ctx) {
    let mut mm = m(CKM_ECDSA_SHA256);
    assert_eq!(unsafe { C_SignInit(c.s, &mut mm, c.key) }, CKR_OK);
}

unsafe fn verify_init(c: &Ctx) {
    let mut mm = m(CKM_ECDSA_SHA256);
    assert_eq!(unsafe { C_VerifyInit(c.s, &mut mm, c.public) }, CKR_OK);
}

unsafe fn digest_init(c: &Ctx) {
    let mut mm = m(CKM_SHA256);
    assert_eq!(unsafe { C_DigestInit(c.s, &mut mm) }, CKR_OK);
}

unsafe fn find_init(c: &Ctx) {
    assert_eq!(
        unsafe { C_FindObjectsInit(c.s, std::ptr::null_mut(), 0) },
        CKR_OK
    );
}

/// A C_Sign that must work: the operation is active.
unsafe fn sign_now(c: &Ctx) -> CK_RV {
    let mut sig = [0u8; 64];
    let mut len: CK_ULONG = 64;
    unsafe { C_Sign(c.s, b"x".as_ptr() as *mut _, 1, sig.as_mut_ptr(), &mut len) }
}

const D: *mut u8 = b"data".as_ptr() as *mut u8;

static ROWS: &[Row] = &[
    // --- state: operations that were never initialised
    row(
        "C_Sign",
        "without C_SignInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe { sign_now(c) },
    ),
    row(
        "C_SignUpdate",
        "without C_SignInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe { C_SignUpdate(c.s, D, 4) },
    ),
    row(
        "C_SignFinal",
        "without C_SignInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            let mut len: CK_ULONG = 0;
            C_SignFinal(c.s, std::ptr::null_mut(), &mut len)
        },
    ),
    row(
        "C_Verify",
        "without C_VerifyInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            let mut sig = [0u8; 64];
            C_Verify(c.s, D, 4, sig.as_mut_ptr(), 64)
        },
    ),
    row(
        "C_VerifyUpdate",
        "without C_VerifyInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe { C_VerifyUpdate(c.s, D, 4) },
    ),
    row(
        "C_VerifyFinal",
        "without C_VerifyInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            let mut sig = [0u8; 64];
            C_VerifyFinal(c.s, sig.as_mut_ptr(), 64)
        },
    ),
    row(
        "C_Digest",
        "without C_DigestInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            let mut len: CK_ULONG = 0;
            C_Digest(c.s, D, 4, std::ptr::null_mut(), &mut len)
        },
    ),
    row(
        "C_DigestUpdate",
        "without C_DigestInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe { C_DigestUpdate(c.s, D, 4) },
    ),
    row(
        "C_DigestFinal",
        "without C_DigestInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            let mut len: CK_ULONG = 0;
            C_DigestFinal(c.s, std::ptr::null_mut(), &mut len)
        },
    ),
    row(
        "C_FindObjects",
        "without C_FindObjectsInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            let mut h: CK_OBJECT_HANDLE = 0;
            let mut n: CK_ULONG = 0;
            C_FindObjects(c.s, &mut h, 1, &mut n)
        },
    ),
    row(
        "C_FindObjectsFinal",
        "without C_FindObjectsInit",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe { C_FindObjectsFinal(c.s) },
    ),
    row(
        "C_Sign",
        "a second C_Sign after the signature",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            assert_eq!(sign_now(c), CKR_OK);
            sign_now(c)
        },
    ),
    // Single- and multi-part calls do not mix (PKCS#11 3.0 §5.12-5.13: "C_Sign cannot be used
    // to terminate a multi-part operation, and must be called after C_SignInit without
    // intervening C_SignUpdate calls"); of the codes these functions list, the one that fits is
    // CKR_OPERATION_NOT_INITIALIZED (as SoftHSM2). tests/operation_state.rs checks the rest.
    row(
        "C_Sign",
        "after C_SignUpdate (multi-part started)",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            assert_eq!(C_SignUpdate(c.s, D, 4), CKR_OK);
            sign_now(c)
        },
    ),
    row(
        "C_SignFinal",
        "after a C_Sign length query (single-part started)",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            let mut len: CK_ULONG = 0;
            assert_eq!(C_Sign(c.s, D, 4, std::ptr::null_mut(), &mut len), CKR_OK);
            let mut sig = [0u8; 64];
            let mut len: CK_ULONG = 64;
            C_SignFinal(c.s, sig.as_mut_ptr(), &mut len)
        },
    ),
    row(
        "C_SignUpdate",
        "after a C_Sign length query (single-part started)",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            let mut len: CK_ULONG = 0;
            assert_eq!(C_Sign(c.s, D, 4, std::ptr::null_mut(), &mut len), CKR_OK);
            C_SignUpdate(c.s, D, 4)
        },
    ),
    row(
        "C_Verify",
        "after C_VerifyUpdate (multi-part started)",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            verify_init(c);
            assert_eq!(C_VerifyUpdate(c.s, D, 4), CKR_OK);
            let mut sig = [0u8; 64];
            C_Verify(c.s, D, 4, sig.as_mut_ptr(), 64)
        },
    ),
    row(
        "C_Digest",
        "after C_DigestUpdate (multi-part started)",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            digest_init(c);
            assert_eq!(C_DigestUpdate(c.s, D, 4), CKR_OK);
            let mut out = [0u8; 32];
            let mut len: CK_ULONG = 32;
            C_Digest(c.s, D, 4, out.as_mut_ptr(), &mut len)
        },
    ),
    row(
        "C_DigestFinal",
        "after a C_Digest length query (single-part started)",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            digest_init(c);
            let mut len: CK_ULONG = 0;
            assert_eq!(C_Digest(c.s, D, 4, std::ptr::null_mut(), &mut len), CKR_OK);
            let mut out = [0u8; 32];
            let mut len: CK_ULONG = 32;
            C_DigestFinal(c.s, out.as_mut_ptr(), &mut len)
        },
    ),
    row(
        "C_DigestUpdate",
        "after a C_Digest length query (single-part started)",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            digest_init(c);
            let mut len: CK_ULONG = 0;
            assert_eq!(C_Digest(c.s, D, 4, std::ptr::null_mut(), &mut len), CKR_OK);
            C_DigestUpdate(c.s, D, 4)
        },
    ),
    // --- state: second initialisation while active
    row(
        "C_SignInit",
        "while a signature is active",
        &[CKR_OPERATION_ACTIVE],
        |c| unsafe {
            sign_init(c);
            let mut mm = m(CKM_ECDSA);
            C_SignInit(c.s, &mut mm, c.key)
        },
    ),
    row(
        "C_VerifyInit",
        "while a verification is active",
        &[CKR_OPERATION_ACTIVE],
        |c| unsafe {
            verify_init(c);
            let mut mm = m(CKM_ECDSA);
            C_VerifyInit(c.s, &mut mm, c.public)
        },
    ),
    row(
        "C_DigestInit",
        "while a digest is active",
        &[CKR_OPERATION_ACTIVE],
        |c| unsafe {
            digest_init(c);
            let mut mm = m(CKM_SHA384);
            C_DigestInit(c.s, &mut mm)
        },
    ),
    row(
        "C_FindObjectsInit",
        "while a search is active",
        &[CKR_OPERATION_ACTIVE],
        |c| unsafe {
            find_init(c);
            C_FindObjectsInit(c.s, std::ptr::null_mut(), 0)
        },
    ),
    row(
        "C_Initialize",
        "second call while initialised",
        &[CKR_CRYPTOKI_ALREADY_INITIALIZED],
        |_| unsafe { C_Initialize(NULL) },
    ),
    row(
        "C_Login",
        "CKU_USER twice",
        &[CKR_USER_ALREADY_LOGGED_IN],
        |c| unsafe {
            assert_eq!(
                C_Login(c.s, CKU_USER, b"1234".as_ptr() as *mut _, 4),
                CKR_OK
            );
            let rv = C_Login(c.s, CKU_USER, b"1234".as_ptr() as *mut _, 4);
            C_Logout(c.s);
            rv
        },
    ),
    row(
        "C_Logout",
        "not logged in",
        &[CKR_USER_NOT_LOGGED_IN],
        |c| unsafe { C_Logout(c.s) },
    ),
    row(
        "C_Login",
        "unknown user type 7",
        &[CKR_USER_TYPE_INVALID],
        |c| unsafe { C_Login(c.s, 7, b"1234".as_ptr() as *mut _, 4) },
    ),
    row(
        "C_Login",
        "CKU_CONTEXT_SPECIFIC without an operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe { C_Login(c.s, CKU_CONTEXT_SPECIFIC, b"1234".as_ptr() as *mut _, 4) },
    ),
    row(
        "C_Login",
        "CKU_SO with a read-only session open",
        &[CKR_SESSION_READ_ONLY_EXISTS],
        |c| unsafe { C_Login(c.s, CKU_SO, b"1234".as_ptr() as *mut _, 4) },
    ),
    row(
        "C_OpenSession",
        "without CKF_SERIAL_SESSION",
        &[CKR_SESSION_PARALLEL_NOT_SUPPORTED],
        |_| unsafe {
            let mut h: CK_SESSION_HANDLE = 0;
            C_OpenSession(0, 0, NULL, None, &mut h)
        },
    ),
    row(
        "C_CloseSession",
        "twice",
        &[CKR_SESSION_HANDLE_INVALID],
        |c| unsafe {
            assert_eq!(C_CloseSession(c.s), CKR_OK);
            C_CloseSession(c.s)
        },
    ),
    row(
        "C_Finalize",
        "pReserved not NULL",
        &[CKR_ARGUMENTS_BAD],
        |_| unsafe {
            let mut x = 0u8;
            C_Finalize(&mut x as *mut u8 as *mut _)
        },
    ),
    row(
        "C_Initialize",
        "only some mutex callbacks",
        &[CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_ARGUMENTS_BAD],
        |_| unsafe {
            unsafe extern "C" fn create(_: *mut *mut std::ffi::c_void) -> CK_RV {
                CKR_OK
            }
            let mut a = CK_C_INITIALIZE_ARGS {
                CreateMutex: Some(create),
                DestroyMutex: None,
                LockMutex: None,
                UnlockMutex: None,
                flags: 0,
                pReserved: NULL,
            };
            C_Initialize(&mut a as *mut _ as *mut _)
        },
    ),
    row(
        "C_WaitForSlotEvent",
        "pReserved not NULL",
        &[CKR_ARGUMENTS_BAD],
        |_| unsafe {
            let mut slot: CK_SLOT_ID = 0;
            let mut x = 0u8;
            C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, &mut x as *mut u8 as *mut _)
        },
    ),
    row(
        "C_WaitForSlotEvent",
        "CKF_DONT_BLOCK, nothing happened",
        &[CKR_NO_EVENT],
        |_| unsafe {
            let mut slot: CK_SLOT_ID = 0;
            C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, NULL)
        },
    ),
    // --- a failed call ends the operation (PKCS#11 §5.12: C_Sign "always terminates the
    // active signing operation unless it returns CKR_BUFFER_TOO_SMALL or is a successful call
    // to determine the length"; same wording for C_SignFinal, C_Verify*, C_Digest*)
    row(
        "C_Sign",
        "NULL pData with a length ends the operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            let mut sig = [0u8; 64];
            let mut len: CK_ULONG = 64;
            assert_eq!(
                C_Sign(c.s, std::ptr::null_mut(), 4, sig.as_mut_ptr(), &mut len),
                CKR_ARGUMENTS_BAD
            );
            sign_now(c)
        },
    ),
    row(
        "C_Sign",
        "NULL pulSignatureLen ends the operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            let mut sig = [0u8; 64];
            assert_eq!(
                C_Sign(c.s, D, 4, sig.as_mut_ptr(), std::ptr::null_mut()),
                CKR_ARGUMENTS_BAD
            );
            sign_now(c)
        },
    ),
    row(
        "C_SignFinal",
        "NULL pulSignatureLen ends the operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            let mut sig = [0u8; 64];
            assert_eq!(
                C_SignFinal(c.s, sig.as_mut_ptr(), std::ptr::null_mut()),
                CKR_ARGUMENTS_BAD
            );
            let mut len: CK_ULONG = 64;
            C_SignFinal(c.s, sig.as_mut_ptr(), &mut len)
        },
    ),
    row(
        "C_Verify",
        "NULL pSignature ends the operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            verify_init(c);
            assert_eq!(
                C_Verify(c.s, D, 4, std::ptr::null_mut(), 64),
                CKR_ARGUMENTS_BAD
            );
            let mut sig = [0u8; 64];
            C_Verify(c.s, D, 4, sig.as_mut_ptr(), 64)
        },
    ),
    row(
        "C_Digest",
        "NULL pulDigestLen ends the operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            digest_init(c);
            let mut out = [0u8; 32];
            assert_eq!(
                C_Digest(c.s, D, 4, out.as_mut_ptr(), std::ptr::null_mut()),
                CKR_ARGUMENTS_BAD
            );
            let mut len: CK_ULONG = 32;
            C_Digest(c.s, D, 4, out.as_mut_ptr(), &mut len)
        },
    ),
    row(
        "C_Verify",
        "wrong signature ends the operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            verify_init(c);
            let mut sig = [1u8; 64];
            assert_eq!(
                C_Verify(c.s, D, 4, sig.as_mut_ptr(), 64),
                CKR_SIGNATURE_INVALID
            );
            C_Verify(c.s, D, 4, sig.as_mut_ptr(), 64)
        },
    ),
    row(
        "C_SignUpdate",
        "NULL pPart with a length ends the operation",
        &[CKR_OPERATION_NOT_INITIALIZED],
        |c| unsafe {
            sign_init(c);
            assert_eq!(
                C_SignUpdate(c.s, std::ptr::null_mut(), 4),
                CKR_ARGUMENTS_BAD
            );
            C_SignUpdate(c.s, D, 4)
        },
    ),
    // --- lengths
    row(
        "C_Sign",
        "buffer of 63 bytes: CKR_BUFFER_TOO_SMALL, length 64, operation stays",
        &[CKR_OK],
        |c| unsafe {
            sign_init(c);
            let mut sig = [0u8; 64];
            let mut len: CK_ULONG = 63;
            assert_eq!(
                C_Sign(c.s, D, 4, sig.as_mut_ptr(), &mut len),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(len, 64);
            sign_now(c)
        },
    ),
    row(
        "C_Sign",
        "size query: length 64, operation stays",
        &[CKR_OK],
        |c| unsafe {
            sign_init(c);
            let mut len: CK_ULONG = 0;
            assert_eq!(C_Sign(c.s, D, 4, std::ptr::null_mut(), &mut len), CKR_OK);
            assert_eq!(len, 64);
            sign_now(c)
        },
    ),
    row(
        "C_Sign",
        "empty data (length 0, NULL pointer) with CKM_ECDSA_SHA256",
        &[CKR_OK],
        |c| unsafe {
            sign_init(c);
            let mut sig = [0u8; 64];
            let mut len: CK_ULONG = 64;
            C_Sign(c.s, std::ptr::null_mut(), 0, sig.as_mut_ptr(), &mut len)
        },
    ),
    row(
        "C_Verify",
        "signature of 63 bytes",
        &[CKR_SIGNATURE_LEN_RANGE],
        |c| unsafe {
            verify_init(c);
            let mut sig = [0u8; 63];
            C_Verify(c.s, D, 4, sig.as_mut_ptr(), 63)
        },
    ),
    row(
        "C_Verify",
        "signature of 65 bytes",
        &[CKR_SIGNATURE_LEN_RANGE],
        |c| unsafe {
            verify_init(c);
            let mut sig = [0u8; 65];
            C_Verify(c.s, D, 4, sig.as_mut_ptr(), 65)
        },
    ),
    row(
        "C_VerifyFinal",
        "signature of length 0",
        &[CKR_SIGNATURE_LEN_RANGE, CKR_ARGUMENTS_BAD],
        |c| unsafe {
            verify_init(c);
            let mut sig = [0u8; 1];
            C_VerifyFinal(c.s, sig.as_mut_ptr(), 0)
        },
    ),
    row(
        "C_DigestFinal",
        "buffer of 31 bytes for SHA-256",
        &[CKR_BUFFER_TOO_SMALL],
        |c| unsafe {
            digest_init(c);
            let mut out = [0u8; 32];
            let mut len: CK_ULONG = 31;
            let rv = C_DigestFinal(c.s, out.as_mut_ptr(), &mut len);
            assert_eq!(len, 32);
            rv
        },
    ),
    row(
        "C_GetSlotList",
        "count 0 with a buffer",
        &[CKR_BUFFER_TOO_SMALL],
        |_| unsafe {
            let mut list = [0 as CK_SLOT_ID; 1];
            let mut n: CK_ULONG = 0;
            let rv = C_GetSlotList(0, list.as_mut_ptr(), &mut n);
            assert_eq!(n, 1);
            rv
        },
    ),
    row(
        "C_GetMechanismList",
        "count 1 with a buffer",
        &[CKR_BUFFER_TOO_SMALL],
        |_| unsafe {
            let mut list = [0 as CK_MECHANISM_TYPE; 1];
            let mut n: CK_ULONG = 1;
            let rv = C_GetMechanismList(0, list.as_mut_ptr(), &mut n);
            assert!(n > 1);
            rv
        },
    ),
    row(
        "C_GetInterfaceList",
        "count 1 with a buffer",
        &[CKR_BUFFER_TOO_SMALL],
        |_| unsafe {
            let mut list: [CK_INTERFACE; 1] = std::mem::zeroed();
            let mut n: CK_ULONG = 1;
            C_GetInterfaceList(list.as_mut_ptr(), &mut n)
        },
    ),
    row(
        "C_GetInterfaceList",
        "NULL count",
        &[CKR_ARGUMENTS_BAD],
        |_| unsafe { C_GetInterfaceList(std::ptr::null_mut(), std::ptr::null_mut()) },
    ),
    row(
        "C_GetInterface",
        "NULL ppInterface",
        &[CKR_ARGUMENTS_BAD],
        |_| unsafe {
            C_GetInterface(
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        },
    ),
    row(
        "C_GetInterface",
        "unknown interface name",
        &[CKR_ARGUMENTS_BAD],
        |_| unsafe {
            let mut p: CK_INTERFACE_PTR = std::ptr::null_mut();
            C_GetInterface(
                c"Vendor X".as_ptr() as *mut _,
                std::ptr::null_mut(),
                &mut p,
                0,
            )
        },
    ),
    row(
        "C_GetFunctionList",
        "NULL",
        &[CKR_ARGUMENTS_BAD],
        |_| unsafe { C_GetFunctionList(std::ptr::null_mut()) },
    ),
    row(
        "C_GetAttributeValue",
        "buffer one byte short: CKR_BUFFER_TOO_SMALL, length unavailable",
        &[CKR_BUFFER_TOO_SMALL],
        |c| unsafe {
            let mut buf = [0u8; 5];
            let mut a = [attr(CKA_LABEL, &mut buf)];
            let rv = C_GetAttributeValue(c.s, c.key, a.as_mut_ptr(), 1);
            assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            rv
        },
    ),
    row(
        "C_GetAttributeValue",
        "unknown attribute type",
        &[CKR_ATTRIBUTE_TYPE_INVALID],
        |c| unsafe {
            let mut a = [CK_ATTRIBUTE {
                type_: 0x7FFF_0001,
                pValue: std::ptr::null_mut(),
                ulValueLen: 0,
            }];
            let rv = C_GetAttributeValue(c.s, c.key, a.as_mut_ptr(), 1);
            assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            rv
        },
    ),
    row(
        "C_GetAttributeValue",
        "CKA_VALUE of the private key",
        &[CKR_ATTRIBUTE_SENSITIVE],
        |c| unsafe {
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: std::ptr::null_mut(),
                ulValueLen: 0,
            }];
            let rv = C_GetAttributeValue(c.s, c.key, a.as_mut_ptr(), 1);
            assert_eq!(a[0].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            rv
        },
    ),
    row(
        "C_GetAttributeValue",
        "one bad attribute among good ones: the others are filled",
        &[CKR_ATTRIBUTE_TYPE_INVALID],
        |c| unsafe {
            let mut class: CK_OBJECT_CLASS = 0;
            let mut a = [
                CK_ATTRIBUTE {
                    type_: 0x7FFF_0001,
                    pValue: std::ptr::null_mut(),
                    ulValueLen: 0,
                },
                class_attr(&mut class),
            ];
            let rv = C_GetAttributeValue(c.s, c.cert, a.as_mut_ptr(), 2);
            assert_eq!(class, CKO_CERTIFICATE);
            rv
        },
    ),
    row(
        "C_FindObjectsInit",
        "attribute with NULL value and a length",
        &[CKR_ARGUMENTS_BAD, CKR_ATTRIBUTE_VALUE_INVALID],
        |c| unsafe {
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: std::ptr::null_mut(),
                ulValueLen: 6,
            }];
            C_FindObjectsInit(c.s, a.as_mut_ptr(), 1)
        },
    ),
    row(
        "C_FindObjects",
        "NULL phObject with a count",
        &[CKR_ARGUMENTS_BAD],
        |c| unsafe {
            find_init(c);
            let mut n: CK_ULONG = 0;
            C_FindObjects(c.s, std::ptr::null_mut(), 4, &mut n)
        },
    ),
    row("C_FindObjects", "max count 0", &[CKR_OK], |c| unsafe {
        find_init(c);
        let mut n: CK_ULONG = 9;
        let rv = C_FindObjects(c.s, std::ptr::null_mut(), 0, &mut n);
        assert_eq!(n, 0);
        rv
    }),
    row("C_GenerateRandom", "length 0", &[CKR_OK], |c| unsafe {
        C_GenerateRandom(c.s, std::ptr::null_mut(), 0)
    }),
    row(
        "C_GenerateRandom",
        "NULL buffer with a length",
        &[CKR_ARGUMENTS_BAD],
        |c| unsafe { C_GenerateRandom(c.s, std::ptr::null_mut(), 8) },
    ),
    row(
        "C_SeedRandom",
        "seed given",
        &[CKR_RANDOM_SEED_NOT_SUPPORTED],
        |c| unsafe { C_SeedRandom(c.s, D, 4) },
    ),
    row(
        "C_Login",
        "NULL PIN with a length",
        &[CKR_ARGUMENTS_BAD],
        |c| unsafe { C_Login(c.s, CKU_USER, std::ptr::null_mut(), 4) },
    ),
    // --- mechanisms and keys
    row(
        "C_SignInit",
        "unknown mechanism",
        &[CKR_MECHANISM_INVALID],
        |c| unsafe {
            let mut mm = m(0x7FFF_0000);
            C_SignInit(c.s, &mut mm, c.key)
        },
    ),
    row(
        "C_SignInit",
        "digest-only mechanism CKM_SHA256",
        &[CKR_MECHANISM_INVALID],
        |c| unsafe {
            let mut mm = m(CKM_SHA256);
            C_SignInit(c.s, &mut mm, c.key)
        },
    ),
    row(
        "C_SignInit",
        "CKM_ECDSA with a parameter",
        &[CKR_MECHANISM_PARAM_INVALID],
        |c| unsafe {
            let mut p = [0u8; 4];
            let mut mm = CK_MECHANISM {
                mechanism: CKM_ECDSA,
                pParameter: p.as_mut_ptr() as *mut _,
                ulParameterLen: 4,
            };
            C_SignInit(c.s, &mut mm, c.key)
        },
    ),
    row(
        "C_SignInit",
        "NULL mechanism",
        &[CKR_ARGUMENTS_BAD],
        |c| unsafe { C_SignInit(c.s, std::ptr::null_mut(), c.key) },
    ),
    row(
        "C_SignInit",
        "invalid key handle",
        &[CKR_KEY_HANDLE_INVALID],
        |c| unsafe {
            let mut mm = m(CKM_ECDSA);
            C_SignInit(c.s, &mut mm, BAD_OBJECT)
        },
    ),
    row(
        "C_SignInit",
        "a public key",
        &[CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_KEY_TYPE_INCONSISTENT],
        |c| unsafe {
            let mut mm = m(CKM_ECDSA);
            C_SignInit(c.s, &mut mm, c.public)
        },
    ),
    row(
        "C_SignInit",
        "a certificate",
        &[
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            CKR_KEY_HANDLE_INVALID,
            CKR_KEY_TYPE_INCONSISTENT,
        ],
        |c| unsafe {
            let mut mm = m(CKM_ECDSA);
            C_SignInit(c.s, &mut mm, c.cert)
        },
    ),
    row(
        "C_VerifyInit",
        "the private key",
        &[CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_KEY_TYPE_INCONSISTENT],
        |c| unsafe {
            let mut mm = m(CKM_ECDSA);
            C_VerifyInit(c.s, &mut mm, c.key)
        },
    ),
    row(
        "C_DigestInit",
        "a signature mechanism",
        &[CKR_MECHANISM_INVALID],
        |c| unsafe {
            let mut mm = m(CKM_ECDSA_SHA256);
            C_DigestInit(c.s, &mut mm)
        },
    ),
    row(
        "C_GetMechanismInfo",
        "unknown mechanism",
        &[CKR_MECHANISM_INVALID],
        |_| unsafe {
            let mut info: CK_MECHANISM_INFO = std::mem::zeroed();
            C_GetMechanismInfo(0, 0x7FFF_0000, &mut info)
        },
    ),
    // --- writes on a write-protected token
    row(
        "C_SetAttributeValue",
        "read-only session",
        &[CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED],
        |c| unsafe {
            let mut label = *b"new";
            let mut a = [attr(CKA_LABEL, &mut label)];
            C_SetAttributeValue(c.s, c.cert, a.as_mut_ptr(), 1)
        },
    ),
    row(
        "C_CreateObject",
        "token object in a read-only session",
        &[CKR_SESSION_READ_ONLY, CKR_TOKEN_WRITE_PROTECTED],
        |c| unsafe {
            let mut t: CK_BBOOL = CK_TRUE;
            let mut a = [CK_ATTRIBUTE {
                type_: CKA_TOKEN,
                pValue: &mut t as *mut _ as *mut _,
                ulValueLen: 1,
            }];
            let mut h: CK_OBJECT_HANDLE = 0;
            C_CreateObject(c.s, a.as_mut_ptr(), 1, &mut h)
        },
    ),
    row(
        "C_CopyObject",
        "a card object",
        &[CKR_ACTION_PROHIBITED, CKR_FUNCTION_NOT_SUPPORTED],
        |c| unsafe {
            let mut h: CK_OBJECT_HANDLE = 0;
            C_CopyObject(c.s, c.cert, std::ptr::null_mut(), 0, &mut h)
        },
    ),
];

fn run_rows() -> Vec<Outcome> {
    let h = Harness::default();
    let s0 = h.init_and_open();
    let (key, public, cert) = (
        private_key(s0),
        object_by_label(s0, CKO_PUBLIC_KEY, "client"),
        object_by_label(s0, CKO_CERTIFICATE, "client"),
    );
    let mut rows = Vec::new();
    for r in ROWS {
        let c = Ctx {
            s: open_session(0),
            key,
            public,
            cert,
        };
        let got = (r.body)(&c);
        unsafe { C_CloseSession(c.s) };
        rows.push(Outcome {
            function: r.function.into(),
            case: r.case.to_string(),
            got,
            allowed: r.expect.to_vec(),
        });
    }
    rows
}

#[test]
fn lengths_states_mechanisms_and_keys() {
    assert_eq!(report(&run_rows()), 0);
}

/// Every `C_*` function of the 3.0 list except the interface functions, called with
/// arguments chosen by `Args` (generated from the C signatures: one entry per function).
const FUNCTIONS: &[Entry] = &[
    Entry {
        name: "C_Finalize",
        supported: true,
        params: "P",
        call: |a| unsafe { C_Finalize(a.ptr(0)) },
    },
    Entry {
        name: "C_GetInfo",
        supported: true,
        params: "P",
        call: |a| unsafe { C_GetInfo(a.ptr(0)) },
    },
    Entry {
        name: "C_GetSlotList",
        supported: true,
        params: "BPP",
        call: |a| unsafe { C_GetSlotList(0, a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_GetSlotInfo",
        supported: true,
        params: "LP",
        call: |a| unsafe { C_GetSlotInfo(a.slot(), a.ptr(1)) },
    },
    Entry {
        name: "C_GetTokenInfo",
        supported: true,
        params: "LP",
        call: |a| unsafe { C_GetTokenInfo(a.slot(), a.ptr(1)) },
    },
    Entry {
        name: "C_GetMechanismList",
        supported: true,
        params: "LPP",
        call: |a| unsafe { C_GetMechanismList(a.slot(), a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_GetMechanismInfo",
        supported: true,
        params: "LIP",
        call: |a| unsafe { C_GetMechanismInfo(a.slot(), a.int(), a.ptr(2)) },
    },
    Entry {
        name: "C_InitToken",
        supported: false,
        params: "LPIP",
        call: |a| unsafe { C_InitToken(a.slot(), a.ptr(1), a.int(), a.ptr(3)) },
    },
    Entry {
        name: "C_InitPIN",
        supported: false,
        params: "SPI",
        call: |a| unsafe { C_InitPIN(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_SetPIN",
        supported: false,
        params: "SPIPI",
        call: |a| unsafe { C_SetPIN(a.session(), a.ptr(1), a.int(), a.ptr(3), a.int()) },
    },
    Entry {
        name: "C_OpenSession",
        supported: true,
        params: "LFPNP",
        call: |a| unsafe { C_OpenSession(a.slot(), CKF_SERIAL_SESSION, a.ptr(2), None, a.ptr(4)) },
    },
    Entry {
        name: "C_CloseSession",
        supported: true,
        params: "S",
        call: |a| unsafe { C_CloseSession(a.session()) },
    },
    Entry {
        name: "C_CloseAllSessions",
        supported: true,
        params: "L",
        call: |a| unsafe { C_CloseAllSessions(a.slot()) },
    },
    Entry {
        name: "C_GetSessionInfo",
        supported: true,
        params: "SP",
        call: |a| unsafe { C_GetSessionInfo(a.session(), a.ptr(1)) },
    },
    Entry {
        name: "C_GetOperationState",
        supported: false,
        params: "SPP",
        call: |a| unsafe { C_GetOperationState(a.session(), a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_SetOperationState",
        supported: false,
        params: "SPIOO",
        call: |a| unsafe {
            C_SetOperationState(a.session(), a.ptr(1), a.int(), a.object(), a.object())
        },
    },
    Entry {
        name: "C_Login",
        supported: true,
        params: "SUPI",
        call: |a| unsafe { C_Login(a.session(), CKU_USER, a.ptr(2), a.int()) },
    },
    Entry {
        name: "C_LoginUser",
        supported: true,
        params: "SUPIPI",
        call: |a| unsafe {
            C_LoginUser(a.session(), CKU_USER, a.ptr(2), a.int(), a.ptr(4), a.int())
        },
    },
    Entry {
        name: "C_Logout",
        supported: true,
        params: "S",
        call: |a| unsafe { C_Logout(a.session()) },
    },
    Entry {
        name: "C_SessionCancel",
        supported: true,
        params: "SI",
        call: |a| unsafe { C_SessionCancel(a.session(), a.int()) },
    },
    Entry {
        name: "C_CreateObject",
        supported: true,
        params: "SPIP",
        call: |a| unsafe { C_CreateObject(a.session(), a.ptr(1), a.int(), a.ptr(3)) },
    },
    Entry {
        name: "C_CopyObject",
        supported: true,
        params: "SOPIP",
        call: |a| unsafe { C_CopyObject(a.session(), a.object(), a.ptr(2), a.int(), a.ptr(4)) },
    },
    Entry {
        name: "C_DestroyObject",
        supported: true,
        params: "SO",
        call: |a| unsafe { C_DestroyObject(a.session(), a.object()) },
    },
    Entry {
        name: "C_GetObjectSize",
        supported: true,
        params: "SOP",
        call: |a| unsafe { C_GetObjectSize(a.session(), a.object(), a.ptr(2)) },
    },
    Entry {
        name: "C_GetAttributeValue",
        supported: true,
        params: "SOPI",
        call: |a| unsafe { C_GetAttributeValue(a.session(), a.object(), a.ptr(2), a.int()) },
    },
    Entry {
        name: "C_SetAttributeValue",
        supported: true,
        params: "SOPI",
        call: |a| unsafe { C_SetAttributeValue(a.session(), a.object(), a.ptr(2), a.int()) },
    },
    Entry {
        name: "C_FindObjectsInit",
        supported: true,
        params: "SPI",
        call: |a| unsafe { C_FindObjectsInit(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_FindObjects",
        supported: true,
        params: "SPIP",
        call: |a| unsafe { C_FindObjects(a.session(), a.ptr(1), a.int(), a.ptr(3)) },
    },
    Entry {
        name: "C_FindObjectsFinal",
        supported: true,
        params: "S",
        call: |a| unsafe { C_FindObjectsFinal(a.session()) },
    },
    Entry {
        name: "C_EncryptInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_EncryptInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_Encrypt",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe { C_Encrypt(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_EncryptUpdate",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe { C_EncryptUpdate(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_EncryptFinal",
        supported: false,
        params: "SPP",
        call: |a| unsafe { C_EncryptFinal(a.session(), a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_DecryptInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_DecryptInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_Decrypt",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe { C_Decrypt(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_DecryptUpdate",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe { C_DecryptUpdate(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_DecryptFinal",
        supported: false,
        params: "SPP",
        call: |a| unsafe { C_DecryptFinal(a.session(), a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_DigestInit",
        supported: true,
        params: "SP",
        call: |a| unsafe { C_DigestInit(a.session(), a.ptr(1)) },
    },
    Entry {
        name: "C_Digest",
        supported: true,
        params: "SPIPP",
        call: |a| unsafe { C_Digest(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_DigestUpdate",
        supported: true,
        params: "SPI",
        call: |a| unsafe { C_DigestUpdate(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_DigestKey",
        supported: false,
        params: "SO",
        call: |a| unsafe { C_DigestKey(a.session(), a.object()) },
    },
    Entry {
        name: "C_DigestFinal",
        supported: true,
        params: "SPP",
        call: |a| unsafe { C_DigestFinal(a.session(), a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_SignInit",
        supported: true,
        params: "SPO",
        call: |a| unsafe { C_SignInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_Sign",
        supported: true,
        params: "SPIPP",
        call: |a| unsafe { C_Sign(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_SignUpdate",
        supported: true,
        params: "SPI",
        call: |a| unsafe { C_SignUpdate(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_SignFinal",
        supported: true,
        params: "SPP",
        call: |a| unsafe { C_SignFinal(a.session(), a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_SignRecoverInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_SignRecoverInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_SignRecover",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe { C_SignRecover(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_VerifyInit",
        supported: true,
        params: "SPO",
        call: |a| unsafe { C_VerifyInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_Verify",
        supported: true,
        params: "SPIPI",
        call: |a| unsafe { C_Verify(a.session(), a.ptr(1), a.int(), a.ptr(3), a.int()) },
    },
    Entry {
        name: "C_VerifyUpdate",
        supported: true,
        params: "SPI",
        call: |a| unsafe { C_VerifyUpdate(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_VerifyFinal",
        supported: true,
        params: "SPI",
        call: |a| unsafe { C_VerifyFinal(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_VerifyRecoverInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_VerifyRecoverInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_VerifyRecover",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe { C_VerifyRecover(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4)) },
    },
    Entry {
        name: "C_DigestEncryptUpdate",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe {
            C_DigestEncryptUpdate(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4))
        },
    },
    Entry {
        name: "C_DecryptDigestUpdate",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe {
            C_DecryptDigestUpdate(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4))
        },
    },
    Entry {
        name: "C_SignEncryptUpdate",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe {
            C_SignEncryptUpdate(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4))
        },
    },
    Entry {
        name: "C_DecryptVerifyUpdate",
        supported: false,
        params: "SPIPP",
        call: |a| unsafe {
            C_DecryptVerifyUpdate(a.session(), a.ptr(1), a.int(), a.ptr(3), a.ptr(4))
        },
    },
    Entry {
        name: "C_GenerateKey",
        supported: false,
        params: "SPPIP",
        call: |a| unsafe { C_GenerateKey(a.session(), a.ptr(1), a.ptr(2), a.int(), a.ptr(4)) },
    },
    Entry {
        name: "C_GenerateKeyPair",
        supported: true,
        params: "SPPIPIPP",
        call: |a| unsafe {
            C_GenerateKeyPair(
                a.session(),
                a.ptr(1),
                a.ptr(2),
                a.int(),
                a.ptr(4),
                a.int(),
                a.ptr(6),
                a.ptr(7),
            )
        },
    },
    Entry {
        name: "C_WrapKey",
        supported: false,
        params: "SPOOPP",
        call: |a| unsafe {
            C_WrapKey(
                a.session(),
                a.ptr(1),
                a.object(),
                a.object(),
                a.ptr(4),
                a.ptr(5),
            )
        },
    },
    Entry {
        name: "C_UnwrapKey",
        supported: false,
        params: "SPOPIPIP",
        call: |a| unsafe {
            C_UnwrapKey(
                a.session(),
                a.ptr(1),
                a.object(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.int(),
                a.ptr(7),
            )
        },
    },
    Entry {
        name: "C_DeriveKey",
        supported: true,
        params: "SPOPIP",
        call: |a| unsafe {
            C_DeriveKey(
                a.session(),
                a.ptr(1),
                a.object(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
            )
        },
    },
    Entry {
        name: "C_SeedRandom",
        supported: true,
        params: "SPI",
        call: |a| unsafe { C_SeedRandom(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_GenerateRandom",
        supported: true,
        params: "SPI",
        call: |a| unsafe { C_GenerateRandom(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_GetFunctionStatus",
        supported: true,
        params: "S",
        call: |a| unsafe { C_GetFunctionStatus(a.session()) },
    },
    Entry {
        name: "C_CancelFunction",
        supported: true,
        params: "S",
        call: |a| unsafe { C_CancelFunction(a.session()) },
    },
    Entry {
        name: "C_WaitForSlotEvent",
        supported: true,
        params: "FPP",
        call: |a| unsafe { C_WaitForSlotEvent(CKF_DONT_BLOCK, a.ptr(1), a.ptr(2)) },
    },
    Entry {
        name: "C_MessageEncryptInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_MessageEncryptInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_EncryptMessage",
        supported: false,
        params: "SPIPIPIPP",
        call: |a| unsafe {
            C_EncryptMessage(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.int(),
                a.ptr(7),
                a.ptr(8),
            )
        },
    },
    Entry {
        name: "C_EncryptMessageBegin",
        supported: false,
        params: "SPIPI",
        call: |a| unsafe {
            C_EncryptMessageBegin(a.session(), a.ptr(1), a.int(), a.ptr(3), a.int())
        },
    },
    Entry {
        name: "C_EncryptMessageNext",
        supported: false,
        params: "SPIPIPPI",
        call: |a| unsafe {
            C_EncryptMessageNext(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.ptr(6),
                a.int(),
            )
        },
    },
    Entry {
        name: "C_MessageEncryptFinal",
        supported: false,
        params: "S",
        call: |a| unsafe { C_MessageEncryptFinal(a.session()) },
    },
    Entry {
        name: "C_MessageDecryptInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_MessageDecryptInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_DecryptMessage",
        supported: false,
        params: "SPIPIPIPP",
        call: |a| unsafe {
            C_DecryptMessage(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.int(),
                a.ptr(7),
                a.ptr(8),
            )
        },
    },
    Entry {
        name: "C_DecryptMessageBegin",
        supported: false,
        params: "SPIPI",
        call: |a| unsafe {
            C_DecryptMessageBegin(a.session(), a.ptr(1), a.int(), a.ptr(3), a.int())
        },
    },
    Entry {
        name: "C_DecryptMessageNext",
        supported: false,
        params: "SPIPIPPI",
        call: |a| unsafe {
            C_DecryptMessageNext(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.ptr(6),
                a.int(),
            )
        },
    },
    Entry {
        name: "C_MessageDecryptFinal",
        supported: false,
        params: "S",
        call: |a| unsafe { C_MessageDecryptFinal(a.session()) },
    },
    Entry {
        name: "C_MessageSignInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_MessageSignInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_SignMessage",
        supported: false,
        params: "SPIPIPP",
        call: |a| unsafe {
            C_SignMessage(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.ptr(6),
            )
        },
    },
    Entry {
        name: "C_SignMessageBegin",
        supported: false,
        params: "SPI",
        call: |a| unsafe { C_SignMessageBegin(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_SignMessageNext",
        supported: false,
        params: "SPIPIPP",
        call: |a| unsafe {
            C_SignMessageNext(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.ptr(6),
            )
        },
    },
    Entry {
        name: "C_MessageSignFinal",
        supported: false,
        params: "S",
        call: |a| unsafe { C_MessageSignFinal(a.session()) },
    },
    Entry {
        name: "C_MessageVerifyInit",
        supported: false,
        params: "SPO",
        call: |a| unsafe { C_MessageVerifyInit(a.session(), a.ptr(1), a.object()) },
    },
    Entry {
        name: "C_VerifyMessage",
        supported: false,
        params: "SPIPIPI",
        call: |a| unsafe {
            C_VerifyMessage(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.int(),
            )
        },
    },
    Entry {
        name: "C_VerifyMessageBegin",
        supported: false,
        params: "SPI",
        call: |a| unsafe { C_VerifyMessageBegin(a.session(), a.ptr(1), a.int()) },
    },
    Entry {
        name: "C_VerifyMessageNext",
        supported: false,
        params: "SPIPIPI",
        call: |a| unsafe {
            C_VerifyMessageNext(
                a.session(),
                a.ptr(1),
                a.int(),
                a.ptr(3),
                a.int(),
                a.ptr(5),
                a.int(),
            )
        },
    },
    Entry {
        name: "C_MessageVerifyFinal",
        supported: false,
        params: "S",
        call: |a| unsafe { C_MessageVerifyFinal(a.session()) },
    },
];
