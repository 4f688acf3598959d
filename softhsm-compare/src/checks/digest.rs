//! 5.12 Message digesting: single- and multi-part, length rules, operation state.

use std::ptr::null_mut;

use cryptoki_sys::*;

use super::helpers::{data_in_out, function, mech, update};
use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::Report;

pub(super) fn digests(m: &Module, s: CK_SESSION_HANDLE, r: &mut Report) {
    for (mechanism, name) in [
        (CKM_SHA256, "SHA256"),
        (CKM_SHA384, "SHA384"),
        (CKM_SHA512, "SHA512"),
    ] {
        let rv = digest_init(m, s, mechanism);
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
        let rv0 = data_in_out(function!(m.f(), C_Digest), s, b"abc", null_mut(), &mut len);
        let mut out = vec![0u8; 64];
        let mut short: CK_ULONG = 4;
        let rv1 = data_in_out(
            function!(m.f(), C_Digest),
            s,
            b"abc",
            out.as_mut_ptr(),
            &mut short,
        );
        let mut full: CK_ULONG = 64;
        let rv2 = data_in_out(
            function!(m.f(), C_Digest),
            s,
            b"abc",
            out.as_mut_ptr(),
            &mut full,
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
                hex::encode(&out[..out.len().min(8)])
            ),
        );
        digest_init(m, s, mechanism);
        let rv1 = update(function!(m.f(), C_DigestUpdate), s, b"a");
        let rv2 = update(function!(m.f(), C_DigestUpdate), s, b"bc");
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
                hex::encode(&out[..out.len().min(8)])
            ),
        );
    }
    let mut out = [0u8; 64];
    let mut full: CK_ULONG = 64;
    let rv = data_in_out(
        function!(m.f(), C_Digest),
        s,
        b"abc",
        out.as_mut_ptr(),
        &mut full,
    );
    r.check("digest.without_init", "C_Digest without init", rv, "");
    digest_init(m, s, CKM_SHA256);
    let rv = digest_init(m, s, CKM_SHA256);
    r.check("digest.init_twice", "C_DigestInit while active", rv, "");
    data_in_out(
        function!(m.f(), C_Digest),
        s,
        b"abc",
        out.as_mut_ptr(),
        &mut full,
    );
    let rv = digest_init(m, s, CKM_ECDSA);
    r.check("digest.mech.ecdsa", "C_DigestInit(ECDSA)", rv, "");
    let rv = digest_init(m, s, CKM_SHA_1);
    if rv == CKR_OK {
        let mut full: CK_ULONG = 64;
        data_in_out(
            function!(m.f(), C_Digest),
            s,
            b"abc",
            out.as_mut_ptr(),
            &mut full,
        );
    }
    r.check("digest.mech.sha1", "C_DigestInit(SHA_1)", rv, "");
}

fn digest_init(m: &Module, s: CK_SESSION_HANDLE, mechanism: CK_MECHANISM_TYPE) -> CK_RV {
    let mut mm = mech(mechanism);
    call!(m, C_DigestInit, s, &mut mm)
}
