//! 5.7 Object management writes and 5.18 key-pair generation, last because they change the
//! token: only writes that leave nothing behind on the shared card (session objects, token writes
//! in read-only sessions, which must fail).

use cryptoki_sys::*;

use super::BOGUS_HANDLE;
use super::helpers::{
    attr, attr_bytes, digest_of, find, get, get_bytes, host_verify, mech, open, open_session,
    sign_once,
};
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

/// A self-signed P-256 certificate of a key no card has (`fixtures/unrelated-cert.der`).
const UNRELATED_CERTIFICATE: &[u8] = include_bytes!("../../fixtures/unrelated-cert.der");
/// Its subject, DER: SEQUENCE { SET { SEQUENCE { OID commonName, UTF8String } } }.
const UNRELATED_SUBJECT: &[u8] = &[
    0x30, 0x2C, 0x31, 0x2A, 0x30, 0x28, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0C, 0x21, b'p', b'1', b'1',
    b'-', b'c', b'o', b'm', b'p', b'a', b'r', b'e', b' ', b'u', b'n', b'r', b'e', b'l', b'a', b't',
    b'e', b'd', b' ', b'c', b'e', b'r', b't', b'i', b'f', b'i', b'c', b'a', b't', b'e',
];

/// Token writes in a R/W session, compared for real: run only with `--token-writes`, on a token
/// of this run's own (a fresh SoftHSM2 token, a simulated card nobody else uses), because they
/// change it. A data object and a certificate are created, found, read, relabelled and
/// destroyed; a data object with CKA_APPLICATION is created (and destroyed again); a token key pair is generated, signs (verified on the host) and is destroyed; last,
/// the card's `ca` certificate is relabelled and destroyed.
pub(super) fn token_writes(m: &Module, slot: CK_SLOT_ID, objs: &Objects, r: &mut Report) {
    let (rv, rw) = open_session(m, slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    if rv != CKR_OK {
        r.check("write.token.open_rw", "C_OpenSession(SERIAL|RW)", rv, "");
        return;
    }
    let t = CK_TRUE;
    let f = CK_FALSE;

    let data = CKO_DATA;
    // Without CKA_APPLICATION, which a file on the card cannot keep: that one has its own check
    // below, so this round trip compares the write itself.
    let mut tpl = [
        attr(CKA_CLASS, &data),
        attr(CKA_TOKEN, &t),
        attr(CKA_PRIVATE, &f),
        attr_bytes(CKA_LABEL, b"p11c-data"),
        attr_bytes(CKA_VALUE, b"written by p11-compare"),
    ];
    let mut h = 0;
    let rv = call!(
        m,
        C_CreateObject,
        rw,
        tpl.as_mut_ptr(),
        tpl.len() as CK_ULONG,
        &mut h
    );
    r.check(
        "write.token.data.create",
        "C_CreateObject(DATA, TOKEN=true, label p11c-data, 22-byte VALUE)",
        rv,
        "",
    );
    if rv == CKR_OK {
        object_round_trip(m, rw, h, "data", b"p11c-data", r);
    }

    let mut tpl = [
        attr(CKA_CLASS, &data),
        attr(CKA_TOKEN, &t),
        attr(CKA_PRIVATE, &f),
        attr_bytes(CKA_LABEL, b"p11c-app-data"),
        attr_bytes(CKA_APPLICATION, b"p11-compare"),
        attr_bytes(CKA_VALUE, b"written by p11-compare"),
    ];
    let mut h = 0;
    let rv = call!(
        m,
        C_CreateObject,
        rw,
        tpl.as_mut_ptr(),
        tpl.len() as CK_ULONG,
        &mut h
    );
    let mut out = String::new();
    if rv == CKR_OK {
        let application = get_bytes(m, rw, h, CKA_APPLICATION);
        let destroyed = call!(m, C_DestroyObject, rw, h);
        out = format!(
            "APPLICATION {:?}; C_DestroyObject {}",
            String::from_utf8_lossy(&application),
            rv_name(destroyed)
        );
    }
    r.check(
        "write.token.data.create_application",
        "C_CreateObject(DATA, TOKEN=true, label p11c-app-data, APPLICATION p11-compare, 22-byte VALUE)",
        rv,
        out,
    );

    // A certificate of a key nothing on the token has (one for a card key would replace that
    // key's certificate file on the card); made once with `openssl req -x509 -newkey ec`.
    {
        let value = UNRELATED_CERTIFICATE;
        let subject = UNRELATED_SUBJECT;
        let cert = CKO_CERTIFICATE;
        let x509 = CKC_X_509;
        let mut tpl = [
            attr(CKA_CLASS, &cert),
            attr(CKA_CERTIFICATE_TYPE, &x509),
            attr(CKA_TOKEN, &t),
            attr(CKA_PRIVATE, &f),
            attr_bytes(CKA_ID, &[0x7E]),
            attr_bytes(CKA_LABEL, b"p11c-cert"),
            attr_bytes(CKA_SUBJECT, subject),
            attr_bytes(CKA_VALUE, value),
        ];
        let mut h = 0;
        let rv = call!(
            m,
            C_CreateObject,
            rw,
            tpl.as_mut_ptr(),
            tpl.len() as CK_ULONG,
            &mut h
        );
        r.check(
            "write.token.cert.create",
            "C_CreateObject(CERTIFICATE X_509, TOKEN=true, ID 7e, label p11c-cert, unrelated VALUE)",
            rv,
            "",
        );
        if rv == CKR_OK {
            object_round_trip(m, rw, h, "cert", b"p11c-cert", r);
        }
    }

    let params: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    let id = [0x7Fu8];
    let mut pubt = [
        attr_bytes(CKA_EC_PARAMS, &params),
        attr(CKA_TOKEN, &t),
        attr(CKA_PRIVATE, &f),
        attr(CKA_VERIFY, &t),
        attr_bytes(CKA_ID, &id),
        attr_bytes(CKA_LABEL, b"p11c-key"),
    ];
    let mut privt = [
        attr(CKA_TOKEN, &t),
        attr(CKA_PRIVATE, &f),
        attr(CKA_SIGN, &t),
        attr(CKA_SENSITIVE, &t),
        attr_bytes(CKA_ID, &id),
        attr_bytes(CKA_LABEL, b"p11c-key"),
    ];
    let mut mm = mech(CKM_EC_KEY_PAIR_GEN);
    let (mut hp, mut hk) = (0, 0);
    let rv = call!(
        m,
        C_GenerateKeyPair,
        rw,
        &mut mm,
        pubt.as_mut_ptr(),
        pubt.len() as CK_ULONG,
        privt.as_mut_ptr(),
        privt.len() as CK_ULONG,
        &mut hp,
        &mut hk
    );
    let mut out = String::new();
    if rv == CKR_OK {
        let (found_rv, found) = find(m, rw, &mut [attr_bytes(CKA_LABEL, b"p11c-key")]);
        let point = get(m, rw, hp, CKA_EC_POINT).2.unwrap_or_default();
        let message = b"signed by a key p11-compare generated";
        // CKM_ECDSA over a SHA-256 hash: SoftHSM2 2.6.1 has no CKM_ECDSA_SHA256.
        let hash = digest_of(CKM_ECDSA_SHA256, message);
        let (srv, sig) = sign_once(m, rw, CKM_ECDSA, hk, &hash);
        let verdict = if srv == CKR_OK {
            host_verify(&point, &hash, &sig)
        } else {
            "no signature"
        };
        let dk = call!(m, C_DestroyObject, rw, hk);
        let dp = call!(m, C_DestroyObject, rw, hp);
        let (_, left) = find(m, rw, &mut [attr_bytes(CKA_LABEL, b"p11c-key")]);
        out = format!(
            "find by label {} {} objects; sign {} {verdict}; destroy private {} public {}; \
             {} left",
            rv_name(found_rv),
            found.len(),
            rv_name(srv),
            rv_name(dk),
            rv_name(dp),
            left.len()
        );
    }
    r.check(
        "write.token.generate_key_pair",
        "C_GenerateKeyPair(EC P-256, TOKEN=true, ID 7f, label p11c-key)",
        rv,
        out,
    );

    if let Some(ca) = objs.get("cert.ca") {
        let rv = set_label(m, rw, ca, b"ca-renamed");
        let label = String::from_utf8_lossy(&get_bytes(m, rw, ca, CKA_LABEL)).into_owned();
        r.check(
            "write.token.ca.set_label",
            "C_SetAttributeValue(cert ca, LABEL=ca-renamed) in RW session",
            rv,
            format!("label now {label:?}"),
        );
        let rv = call!(m, C_DestroyObject, rw, ca);
        r.check(
            "write.token.ca.destroy",
            "C_DestroyObject(cert ca) in RW session",
            rv,
            "",
        );
    }
    call!(m, C_CloseSession, rw);
}

/// An object this run created: found by its label, its label changed and read back, destroyed,
/// and not found again.
fn object_round_trip(
    m: &Module,
    s: CK_SESSION_HANDLE,
    h: CK_OBJECT_HANDLE,
    what: &str,
    label: &[u8],
    r: &mut Report,
) {
    let (rv, found) = find(m, s, &mut [attr_bytes(CKA_LABEL, label)]);
    let value = get(m, s, h, CKA_VALUE).2.unwrap_or_default();
    r.check(
        &format!("write.token.{what}.find"),
        "C_FindObjects(LABEL) after C_CreateObject",
        rv,
        format!(
            "{} objects, the created one {}; VALUE {} bytes",
            found.len(),
            if found.contains(&h) {
                "among them"
            } else {
                "MISSING"
            },
            value.len()
        ),
    );
    let rv = set_label(m, s, h, b"p11c-renamed");
    let now = String::from_utf8_lossy(&get_bytes(m, s, h, CKA_LABEL)).into_owned();
    r.check(
        &format!("write.token.{what}.set_label"),
        "C_SetAttributeValue(LABEL=p11c-renamed)",
        rv,
        format!("label now {now:?}"),
    );
    let rv = call!(m, C_DestroyObject, s, h);
    let (_, a) = find(m, s, &mut [attr_bytes(CKA_LABEL, label)]);
    let (_, b) = find(m, s, &mut [attr_bytes(CKA_LABEL, b"p11c-renamed")]);
    r.check(
        &format!("write.token.{what}.destroy"),
        "C_DestroyObject(created object)",
        rv,
        format!("{} left", a.len() + b.len()),
    );
}
