//! Single-part and multi-part calls of one operation do not mix (PKCS#11 3.0 §5.12–5.13: the
//! single-part call "cannot be used to terminate a multi-part operation, and must be called
//! after C_*Init without intervening C_*Update calls"). The first call after init fixes the
//! operation, a length query included; the other kind of call answers
//! `CKR_OPERATION_NOT_INITIALIZED` (the code these functions list for "no active operation of
//! an appropriate type"; SoftHSM2 answers the same), sends nothing to the card, and ends the
//! operation (an error other than `CKR_BUFFER_TOO_SMALL` ends it).

mod helpers;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::error::rv_name;
use iotsafe_pkcs11::ffi::*;
use sha2::{Digest, Sha256};

fn ptr(data: &[u8]) -> *mut u8 {
    data.as_ptr() as *mut u8
}

fn len(data: &[u8]) -> CK_ULONG {
    data.len() as CK_ULONG
}

fn assert_rv(got: CK_RV, expect: CK_RV, what: &str) {
    assert_eq!(rv_name(got), rv_name(expect), "{what}");
}

fn sign_init(s: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
    let mut m = mech(CKM_ECDSA_SHA256);
    assert_rv(unsafe { C_SignInit(s, &mut m, key) }, CKR_OK, "C_SignInit");
}

fn verify_init(s: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
    let mut m = mech(CKM_ECDSA_SHA256);
    assert_rv(
        unsafe { C_VerifyInit(s, &mut m, key) },
        CKR_OK,
        "C_VerifyInit",
    );
}

fn digest_init(s: CK_SESSION_HANDLE) {
    let mut m = mech(CKM_SHA256);
    assert_rv(unsafe { C_DigestInit(s, &mut m) }, CKR_OK, "C_DigestInit");
}

/// `C_Sign(data)` into a 64-byte buffer.
fn sign_single(s: CK_SESSION_HANDLE, data: &[u8]) -> (CK_RV, Vec<u8>) {
    let mut sig = vec![0u8; 64];
    let mut n: CK_ULONG = 64;
    let rv = unsafe { C_Sign(s, ptr(data), len(data), sig.as_mut_ptr(), &mut n) };
    sig.truncate(n as usize);
    (rv, sig)
}

fn sign_final(s: CK_SESSION_HANDLE) -> (CK_RV, Vec<u8>) {
    let mut sig = vec![0u8; 64];
    let mut n: CK_ULONG = 64;
    let rv = unsafe { C_SignFinal(s, sig.as_mut_ptr(), &mut n) };
    sig.truncate(n as usize);
    (rv, sig)
}

fn sign_update(s: CK_SESSION_HANDLE, part: &[u8]) -> CK_RV {
    unsafe { C_SignUpdate(s, ptr(part), len(part)) }
}

/// A length query: `pSignature` NULL.
fn sign_length_query(s: CK_SESSION_HANDLE, data: Option<&[u8]>) -> (CK_RV, CK_ULONG) {
    let mut n: CK_ULONG = 0;
    let rv = match data {
        Some(d) => unsafe { C_Sign(s, ptr(d), len(d), std::ptr::null_mut(), &mut n) },
        None => unsafe { C_SignFinal(s, std::ptr::null_mut(), &mut n) },
    };
    (rv, n)
}

/// The refused call ended the operation: the last call answers `CKR_OPERATION_NOT_INITIALIZED`
/// and a new init succeeds (not `CKR_OPERATION_ACTIVE`).
fn assert_sign_ended(h: &Harness, s: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
    assert_rv(
        sign_final(s).0,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignFinal after the refusal",
    );
    assert_rv(
        sign_single(s, b"x").0,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Sign after the refusal",
    );
    assert_eq!(h.apdus(), 0, "nothing reached the card");
    sign_init(s, key);
}

/// Completes the session's (initialised) sign operation with `C_Sign(message)` and checks the
/// signature against the card's public key.
fn assert_signs(h: &Harness, s: CK_SESSION_HANDLE, message: &[u8]) {
    let _ = h.apdus();
    let (rv, sig) = sign_single(s, message);
    assert_rv(rv, CKR_OK, "C_Sign");
    assert!(p256_verify(
        &profile_client_point(h.card()),
        &Sha256::digest(message),
        &sig
    ));
    assert!(h.apdus() > 0, "the signature was made on the card");
}

fn setup() -> (Harness, CK_SESSION_HANDLE, CK_OBJECT_HANDLE) {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    let _ = h.apdus();
    (h, s, key)
}

#[test]
fn sign_after_sign_update_is_refused_without_card_work_and_ends_the_operation() {
    let (h, s, key) = setup();
    sign_init(s, key);
    assert_rv(sign_update(s, b"first part "), CKR_OK, "C_SignUpdate");
    let _ = h.apdus();
    // Before the fix: a signature over "first part " ‖ "second part".
    let (rv, _) = sign_single(s, b"second part");
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Sign after C_SignUpdate",
    );
    assert_eq!(h.apdus(), 0, "C_Sign sent nothing to the card");
    assert_sign_ended(&h, s, key);
    assert_signs(&h, s, b"after the refusal");
}

#[test]
fn sign_final_after_a_sign_length_query_is_refused() {
    let (h, s, key) = setup();
    sign_init(s, key);
    assert_eq!(sign_length_query(s, Some(b"message")), (CKR_OK, 64));
    let _ = h.apdus();
    // Before the fix: the card signed the empty message.
    let (rv, _) = sign_final(s);
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignFinal after a C_Sign length query",
    );
    assert_eq!(h.apdus(), 0, "C_SignFinal sent nothing to the card");
    assert_sign_ended(&h, s, key);
    assert_signs(&h, s, b"after the refusal");
}

#[test]
fn sign_update_after_a_sign_length_query_is_refused() {
    let (h, s, key) = setup();
    sign_init(s, key);
    assert_eq!(sign_length_query(s, Some(b"message")), (CKR_OK, 64));
    assert_rv(
        sign_update(s, b"more"),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignUpdate after a C_Sign length query",
    );
    assert_sign_ended(&h, s, key);
    assert_signs(&h, s, b"after the refusal");
}

#[test]
fn sign_after_a_sign_final_length_query_is_refused() {
    let (h, s, key) = setup();
    sign_init(s, key);
    assert_eq!(sign_length_query(s, None), (CKR_OK, 64));
    let _ = h.apdus();
    let (rv, _) = sign_single(s, b"message");
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Sign after a C_SignFinal length query",
    );
    assert_sign_ended(&h, s, key);
}

#[test]
fn a_short_buffer_keeps_the_single_part_operation() {
    let (h, s, key) = setup();
    sign_init(s, key);
    let message = b"short buffer first";
    let mut sig = [0u8; 10];
    let mut n: CK_ULONG = 10;
    let rv = unsafe { C_Sign(s, ptr(message), len(message), sig.as_mut_ptr(), &mut n) };
    assert_rv(rv, CKR_BUFFER_TOO_SMALL, "C_Sign into 10 bytes");
    assert_eq!(n, 64);
    assert_eq!(h.apdus(), 0, "a short buffer costs no card work");
    // Still single-part: C_Sign completes it ...
    assert_signs(&h, s, message);
    // ... and C_SignFinal would not.
    sign_init(s, key);
    let mut n: CK_ULONG = 10;
    let rv = unsafe { C_Sign(s, ptr(message), len(message), sig.as_mut_ptr(), &mut n) };
    assert_rv(rv, CKR_BUFFER_TOO_SMALL, "C_Sign into 10 bytes");
    assert_rv(
        sign_final(s).0,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignFinal",
    );
    assert_eq!(h.apdus(), 0);
}

#[test]
fn a_multi_part_signature_covers_every_part() {
    let (h, s, key) = setup();
    sign_init(s, key);
    assert_eq!(sign_length_query(s, None), (CKR_OK, 64));
    for part in [&b"one "[..], b"two ", b"three"] {
        assert_rv(sign_update(s, part), CKR_OK, "C_SignUpdate");
    }
    assert_eq!(sign_length_query(s, None), (CKR_OK, 64));
    let _ = h.apdus();
    let (rv, sig) = sign_final(s);
    assert_rv(rv, CKR_OK, "C_SignFinal");
    assert_eq!(h.apdus(), 2, "COMPUTE SIGNATURE init + update");
    assert!(p256_verify(
        &profile_client_point(h.card()),
        &Sha256::digest(b"one two three"),
        &sig
    ));
}

#[test]
fn verify_after_verify_update_is_refused_and_ends_the_operation() {
    let (h, s, key) = setup();
    let public = object_by_label(s, CKO_PUBLIC_KEY, "client");
    let message = b"verified message";
    sign_init(s, key);
    let (rv, sig) = sign_single(s, message);
    assert_rv(rv, CKR_OK, "C_Sign");
    let _ = h.apdus();

    verify_init(s, public);
    assert_rv(
        unsafe { C_VerifyUpdate(s, ptr(b"verified "), 9) },
        CKR_OK,
        "C_VerifyUpdate",
    );
    // Before the fix: verified over "verified " ‖ "message" = the signed message: CKR_OK.
    let rv = unsafe { C_Verify(s, ptr(b"message"), 7, ptr(&sig), len(&sig)) };
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Verify after C_VerifyUpdate",
    );
    let rv = unsafe { C_VerifyFinal(s, ptr(&sig), len(&sig)) };
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_VerifyFinal after the refusal",
    );
    assert_eq!(h.apdus(), 0);

    // A clean multi-part verification after it.
    verify_init(s, public);
    for part in [&b"verified "[..], b"message"] {
        let rv = unsafe { C_VerifyUpdate(s, ptr(part), len(part)) };
        assert_rv(rv, CKR_OK, "C_VerifyUpdate");
    }
    let rv = unsafe { C_VerifyFinal(s, ptr(&sig), len(&sig)) };
    assert_rv(rv, CKR_OK, "C_VerifyFinal");
}

fn digest_single(s: CK_SESSION_HANDLE, data: &[u8]) -> (CK_RV, Vec<u8>) {
    let mut out = vec![0u8; 32];
    let mut n: CK_ULONG = 32;
    let rv = unsafe { C_Digest(s, ptr(data), len(data), out.as_mut_ptr(), &mut n) };
    out.truncate(n as usize);
    (rv, out)
}

fn digest_final(s: CK_SESSION_HANDLE) -> (CK_RV, Vec<u8>) {
    let mut out = vec![0u8; 32];
    let mut n: CK_ULONG = 32;
    let rv = unsafe { C_DigestFinal(s, out.as_mut_ptr(), &mut n) };
    out.truncate(n as usize);
    (rv, out)
}

fn digest_length_query(s: CK_SESSION_HANDLE, data: &[u8]) -> CK_RV {
    let mut n: CK_ULONG = 0;
    let rv = unsafe { C_Digest(s, ptr(data), len(data), std::ptr::null_mut(), &mut n) };
    assert_eq!(n, 32);
    rv
}

/// The refused digest call ended the operation; a new one digests correctly.
fn assert_digest_ended(s: CK_SESSION_HANDLE) {
    assert_rv(
        digest_final(s).0,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_DigestFinal",
    );
    digest_init(s);
    let (rv, out) = digest_single(s, b"abc");
    assert_rv(rv, CKR_OK, "C_Digest");
    assert_eq!(out, Sha256::digest(b"abc").to_vec());
}

#[test]
fn digest_after_digest_update_is_refused() {
    let (_h, s, _) = setup();
    digest_init(s);
    assert_rv(
        unsafe { C_DigestUpdate(s, ptr(b"a"), 1) },
        CKR_OK,
        "C_DigestUpdate",
    );
    // Before the fix: CKR_OK with SHA-256("a" ‖ "bc").
    let (rv, _) = digest_single(s, b"bc");
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_Digest after C_DigestUpdate",
    );
    assert_digest_ended(s);
}

#[test]
fn digest_final_after_a_digest_length_query_is_refused() {
    let (_h, s, _) = setup();
    digest_init(s);
    assert_rv(
        digest_length_query(s, b"abc"),
        CKR_OK,
        "C_Digest length query",
    );
    // Before the fix: CKR_OK with SHA-256 of nothing.
    let (rv, _) = digest_final(s);
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_DigestFinal after a C_Digest length query",
    );
    assert_digest_ended(s);
}

#[test]
fn digest_update_after_a_digest_length_query_is_refused() {
    let (_h, s, _) = setup();
    digest_init(s);
    assert_rv(
        digest_length_query(s, b"abc"),
        CKR_OK,
        "C_Digest length query",
    );
    let rv = unsafe { C_DigestUpdate(s, ptr(b"d"), 1) };
    assert_rv(
        rv,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_DigestUpdate after a C_Digest length query",
    );
    assert_digest_ended(s);
}

#[test]
fn a_digest_length_query_then_the_digest() {
    let (_h, s, _) = setup();
    digest_init(s);
    assert_rv(
        digest_length_query(s, b"abc"),
        CKR_OK,
        "C_Digest length query",
    );
    let (rv, out) = digest_single(s, b"abc");
    assert_rv(rv, CKR_OK, "C_Digest");
    assert_eq!(out, Sha256::digest(b"abc").to_vec());
    digest_init(s);
    for part in [&b"a"[..], b"b", b"c"] {
        assert_rv(
            unsafe { C_DigestUpdate(s, ptr(part), 1) },
            CKR_OK,
            "C_DigestUpdate",
        );
    }
    let (rv, out) = digest_final(s);
    assert_rv(rv, CKR_OK, "C_DigestFinal");
    assert_eq!(out, Sha256::digest(b"abc").to_vec());
}

/// `CKM_ECDSA` signs the caller's hash: single-part only (PKCS#11 3.0 mechanism table,
/// footnote 2). `C_SignUpdate` and `C_SignFinal` end the operation without card work, and so do
/// `C_VerifyUpdate` / `C_VerifyFinal`; `C_Sign` of a hash still signs.
#[test]
fn raw_ecdsa_is_single_part_only() {
    let (h, s, key) = setup();
    let raw = |s| {
        let mut m = mech(CKM_ECDSA);
        assert_rv(
            unsafe { C_SignInit(s, &mut m, key) },
            CKR_OK,
            "C_SignInit(CKM_ECDSA)",
        );
    };
    raw(s);
    assert_rv(
        sign_update(s, &[7u8; 32]),
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignUpdate(CKM_ECDSA)",
    );
    assert_rv(sign_final(s).0, CKR_OPERATION_NOT_INITIALIZED, "ended");
    raw(s);
    assert_rv(
        sign_final(s).0,
        CKR_OPERATION_NOT_INITIALIZED,
        "C_SignFinal(CKM_ECDSA)",
    );
    assert_eq!(h.apdus(), 0, "nothing reached the card");
    raw(s);
    let digest = Sha256::digest(b"hashed by the caller");
    let (rv, sig) = sign_single(s, &digest);
    assert_rv(rv, CKR_OK, "C_Sign(CKM_ECDSA)");
    assert!(p256_verify(&profile_client_point(h.card()), &digest, &sig));
    let public = object_by_label(s, CKO_PUBLIC_KEY, "client");
    let mut m = mech(CKM_ECDSA);
    assert_rv(
        unsafe { C_VerifyInit(s, &mut m, public) },
        CKR_OK,
        "C_VerifyInit(CKM_ECDSA)",
    );
    assert_rv(
        unsafe { C_VerifyUpdate(s, ptr(&digest), len(&digest)) },
        CKR_OPERATION_NOT_INITIALIZED,
        "C_VerifyUpdate(CKM_ECDSA)",
    );
}
