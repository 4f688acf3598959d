//! 5.13 Signing and 5.15 verifying: length rules, input lengths of raw ECDSA, hash-and-sign
//! single- and multi-part, operation state, wrong keys and mechanisms.

use std::ffi::c_void;
use std::ptr::null_mut;

use cryptoki_sys::*;

use super::helpers::{
    digest_of, function, get_bytes, host_verify, init_with_key, mech, sign, sign_init, sign_once,
    update, verify_once,
};
use super::objects::Objects;
use super::{BOGUS_HANDLE, BOGUS_MECHANISM};
use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::Report;

const MESSAGE: &[u8] = b"IoT SAFE differential check: the same message for every module";

/// One `C_Sign`, then `C_Verify` of its signature and the host's verdict over `prehash`: the
/// check's rv and output.
fn sign_and_verify(
    m: &Module,
    s: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    (k, p): (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE),
    point: &[u8],
    data: &[u8],
    prehash: &[u8],
) -> (CK_RV, String) {
    let (rv, sig) = sign_once(m, s, mechanism, k, data);
    let out = if rv == CKR_OK {
        let v = verify_once(m, s, mechanism, p, data, &sig);
        format!(
            "len={} verify {} {}",
            sig.len(),
            rv_name(v),
            host_verify(point, prehash, &sig)
        )
    } else {
        String::new()
    };
    (rv, out)
}

pub(super) fn signing(m: &Module, s: CK_SESSION_HANDLE, objs: &Objects, r: &mut Report) {
    let (Some(k), Some(p)) = (objs.get("privkey.client"), objs.get("pubkey.client")) else {
        r.fact("sign", "client key pair", "NOT FOUND");
        return;
    };
    let point = get_bytes(m, s, p, CKA_EC_POINT);
    let hash = digest_of(CKM_ECDSA_SHA256, MESSAGE);

    // Length rules of C_Sign (raw ECDSA over a SHA-256 hash).
    let rv = sign_init(m, s, CKM_ECDSA, k);
    r.check("sign.ecdsa.init", "C_SignInit(ECDSA, privkey)", rv, "");
    let mut len: CK_ULONG = 0;
    let rv = sign(m, s, &hash, null_mut(), &mut len);
    r.check(
        "sign.ecdsa.size_query",
        "C_Sign(32 bytes, NULL)",
        rv,
        format!("len={len}"),
    );
    let mut sig = vec![0u8; 128];
    let mut len: CK_ULONG = 10;
    let rv = sign(m, s, &hash, sig.as_mut_ptr(), &mut len);
    r.check(
        "sign.ecdsa.short",
        "C_Sign(32 bytes, 10-byte buffer)",
        rv,
        format!("len={len}"),
    );
    let mut len: CK_ULONG = 128;
    let rv = sign(m, s, &hash, sig.as_mut_ptr(), &mut len);
    sig.truncate(len as usize);
    r.check(
        "sign.ecdsa.retry",
        "C_Sign(32 bytes, 128-byte buffer) after BUFFER_TOO_SMALL",
        rv,
        format!("len={len} {}", host_verify(&point, &hash, &sig)),
    );
    let mut len: CK_ULONG = 128;
    let mut junk = [0u8; 128];
    let rv = sign(m, s, &hash, junk.as_mut_ptr(), &mut len);
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
        let (rv, out) = sign_and_verify(m, s, CKM_ECDSA, (k, p), &point, &data, &data);
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
        let prehash = digest_of(mechanism, MESSAGE);
        let (rv, out) = sign_and_verify(m, s, mechanism, (k, p), &point, MESSAGE, &prehash);
        r.check(
            &format!("sign.{name}.single"),
            &format!("C_Sign({name}, message)"),
            rv,
            out,
        );

        let rv = sign_init(m, s, mechanism, k);
        if rv == CKR_OK {
            let (a, b) = MESSAGE.split_at(20);
            let rv1 = update(function!(m.f(), C_SignUpdate), s, a);
            let rv2 = update(function!(m.f(), C_SignUpdate), s, b);
            let mut len: CK_ULONG = 0;
            let rv3 = call!(m, C_SignFinal, s, null_mut(), &mut len);
            let mut sig = vec![0u8; 128];
            let mut len2: CK_ULONG = 128;
            let rv4 = call!(m, C_SignFinal, s, sig.as_mut_ptr(), &mut len2);
            sig.truncate(len2 as usize);
            // Multi-part verification too.
            let mut v = init_with_key(function!(m.f(), C_VerifyInit), s, mechanism, p);
            if v == CKR_OK {
                update(function!(m.f(), C_VerifyUpdate), s, a);
                update(function!(m.f(), C_VerifyUpdate), s, b);
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
                    host_verify(&point, &prehash, &sig)
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
    sign_init(m, s, CKM_ECDSA, k);
    let rv = update(function!(m.f(), C_SignUpdate), s, &hash);
    r.check("sign.ecdsa.update", "C_SignUpdate(ECDSA)", rv, "");
    let mut len: CK_ULONG = 128;
    let mut buf = [0u8; 128];
    if rv == CKR_OK {
        call!(m, C_SignFinal, s, buf.as_mut_ptr(), &mut len);
    }
    let rv = sign_init(m, s, CKM_ECDSA, k);
    r.check(
        "sign.after_failed_update",
        "C_SignInit after the failed C_SignUpdate",
        rv,
        "",
    );
    let rv = sign_init(m, s, CKM_ECDSA, k);
    r.check("sign.init_twice", "C_SignInit while active", rv, "");
    let rv = sign(m, s, &hash, null_mut(), null_mut());
    r.check("sign.null_len", "C_Sign(NULL, NULL length)", rv, "");
    let mut len: CK_ULONG = 128;
    let rv = sign(m, s, &hash, buf.as_mut_ptr(), &mut len);
    r.check("sign.after_null_len", "C_Sign after ARGUMENTS_BAD", rv, "");
    let mut len: CK_ULONG = 128;
    let rv = sign(m, s, &hash, buf.as_mut_ptr(), &mut len);
    r.check("sign.without_init", "C_Sign without C_SignInit", rv, "");

    // Wrong keys and mechanisms; an operation that starts anyway is ended with one C_Sign.
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
        let rv = sign_init(m, s, mechanism, key);
        if rv == CKR_OK {
            let mut len: CK_ULONG = 128;
            sign(m, s, &hash, buf.as_mut_ptr(), &mut len);
        }
        r.check(id, what, rv, "");
    }
    let rv = call!(m, C_SignInit, s, null_mut(), k);
    r.check("sign.mech.null", "C_SignInit(NULL mechanism)", rv, "");
    let rv = sign_init(m, BOGUS_HANDLE, CKM_ECDSA, k);
    r.check("sign.bogus_session", "C_SignInit(bogus session)", rv, "");
    let mut mm = mech(CKM_ECDSA);
    mm.pParameter = buf.as_mut_ptr() as *mut c_void;
    mm.ulParameterLen = 4;
    let rv = call!(m, C_SignInit, s, &mut mm, k);
    if rv == CKR_OK {
        let mut len: CK_ULONG = 128;
        sign(m, s, &hash, buf.as_mut_ptr(), &mut len);
    }
    r.check(
        "sign.mech.with_parameter",
        "C_SignInit(ECDSA with a 4-byte parameter)",
        rv,
        "",
    );
}
