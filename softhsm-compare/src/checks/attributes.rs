//! 5.7 Object management, `C_GetAttributeValue`: every attribute of every object, mixed
//! valid/invalid/sensitive templates, short buffers, bad handles, and consistency between the
//! public key, the private key and the certificate.

use std::ptr::null_mut;

use cryptoki_sys::*;

use super::helpers::{as_ulong, attr_out, get, get_bytes};
use super::object_classes::{CERT, COMMON, KEY, KEY_PAIR, PRIVATE, PUBLIC, SECRET, render};
use super::objects::Objects;
use super::{BOGUS_ATTRIBUTE, BOGUS_HANDLE};
use crate::call;
use crate::module::Module;
use crate::report::{Report, ulong};

pub(super) fn attributes(m: &Module, s: CK_SESSION_HANDLE, objs: &Objects, r: &mut Report) {
    for (name, o) in &objs.0 {
        let class = as_ulong(&get_bytes(m, s, *o, CKA_CLASS)).unwrap_or(u64::MAX);
        let mut list: Vec<(CK_ATTRIBUTE_TYPE, &str)> = COMMON.to_vec();
        match class {
            CKO_PRIVATE_KEY => {
                list.extend_from_slice(KEY);
                list.extend_from_slice(KEY_PAIR);
                list.extend_from_slice(PRIVATE);
            }
            CKO_PUBLIC_KEY => {
                list.extend_from_slice(KEY);
                list.extend_from_slice(KEY_PAIR);
                list.extend_from_slice(PUBLIC);
            }
            CKO_SECRET_KEY => {
                list.extend_from_slice(KEY);
                list.extend_from_slice(SECRET);
            }
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
        attr_out(CKA_LABEL, &mut label),
        attr_out(BOGUS_ATTRIBUTE, &mut junk),
        attr_out(CKA_ID, &mut id),
    ];
    let rv = get_template(m, s, k, &mut t);
    r.check(
        "attr.mixed_invalid",
        "C_GetAttributeValue(LABEL, 0x7FFFFFF0, ID)",
        rv,
        format!(
            "{}; label {:?}",
            lens(&t),
            String::from_utf8_lossy(&label[..(t[0].ulValueLen.min(64)) as usize])
        ),
    );
    let (rv, out) = sensitive_value_and_label(m, s, k);
    r.check(
        "attr.sensitive_mixed",
        "C_GetAttributeValue(VALUE of private key, LABEL)",
        rv,
        out,
    );
    let mut t = [
        attr_out(CKA_LABEL, &mut label[..1]),
        attr_out(CKA_ID, &mut id),
    ];
    let rv = get_template(m, s, k, &mut t);
    r.check(
        "attr.short_buffer",
        "C_GetAttributeValue(LABEL in 1 byte, ID)",
        rv,
        lens(&t),
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
        let (rv, out) = sensitive_value_and_label(m, s, psk);
        r.check(
            "attr.secret.sensitive_mixed",
            "C_GetAttributeValue(VALUE of secret key device-psk, LABEL)",
            rv,
            out,
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

/// `C_GetAttributeValue` with a whole template.
fn get_template(
    m: &Module,
    s: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    t: &mut [CK_ATTRIBUTE],
) -> CK_RV {
    call!(
        m,
        C_GetAttributeValue,
        s,
        o,
        t.as_mut_ptr(),
        t.len() as CK_ULONG
    )
}

/// "lens a b ...": the value lengths the module wrote into a template.
fn lens(t: &[CK_ATTRIBUTE]) -> String {
    let lens: Vec<String> = t.iter().map(|a| ulong(a.ulValueLen)).collect();
    format!("lens {}", lens.join(" "))
}

/// The sensitive VALUE and the LABEL of a key in one call: rv and their lengths.
fn sensitive_value_and_label(
    m: &Module,
    s: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
) -> (CK_RV, String) {
    let mut value = [0u8; 64];
    let mut label = [0u8; 64];
    let mut t = [
        attr_out(CKA_VALUE, &mut value),
        attr_out(CKA_LABEL, &mut label),
    ];
    let rv = get_template(m, s, key, &mut t);
    (rv, lens(&t))
}
