//! 5.7 Object management writes and 5.18 key-pair generation, last because they change the
//! token: only writes that leave nothing behind on the shared card (session objects, token writes
//! in read-only sessions, which must fail).

use cryptoki_sys::*;

use super::BOGUS_HANDLE;
use super::helpers::{attr, attr_bytes, get, mech, open, open_session};
use super::object_classes::render;
use super::objects::Objects;
use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::Report;

pub(super) fn writes(m: &Module, slot: CK_SLOT_ID, objs: &Objects, r: &mut Report) {
    let ro = open(m, slot, CKF_SERIAL_SESSION);
    let (rv, rw) = open_session(m, slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    if rv != CKR_OK {
        r.check("write.open_rw", "C_OpenSession(SERIAL|RW)", rv, "");
        return;
    }
    let k = objs.get("privkey.client").unwrap_or(BOGUS_HANDLE);
    let label = b"client";
    for (id, s) in [("write.set_label.ro", ro), ("write.set_label.rw", rw)] {
        let rv = set_label(m, s, k, label);
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
            let rv = set_label(m, s, psk, b"device-psk");
            r.check(
                id,
                &format!(
                    "C_SetAttributeValue(secret device-psk, LABEL=device-psk) in {kind} session"
                ),
                rv,
                "",
            );
        }
        let rv = copy_to_session_object(m, ro, psk);
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

    let rv = copy_to_session_object(m, ro, k);
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

fn set_label(m: &Module, s: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE, label: &[u8]) -> CK_RV {
    let mut t = [attr_bytes(CKA_LABEL, label)];
    call!(m, C_SetAttributeValue, s, object, t.as_mut_ptr(), 1)
}

/// `C_CopyObject(object, TOKEN=false)`; a copy that was made is destroyed again.
fn copy_to_session_object(m: &Module, s: CK_SESSION_HANDLE, object: CK_OBJECT_HANDLE) -> CK_RV {
    let f = CK_FALSE;
    let mut tpl = [attr(CKA_TOKEN, &f)];
    let mut h = 0;
    let rv = call!(m, C_CopyObject, s, object, tpl.as_mut_ptr(), 1, &mut h);
    if rv == CKR_OK {
        call!(m, C_DestroyObject, s, h);
    }
    rv
}
