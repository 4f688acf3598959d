//! 5.7 Object management, search: the card's objects by name and `C_FindObjects*` with
//! templates and operation-state rules.

use std::ptr::null_mut;

use cryptoki_sys::*;

use super::helpers::{as_ulong, attr, attr_bytes, find, get_bytes};
use super::object_classes::class_name;
use super::{BOGUS_ATTRIBUTE, BOGUS_HANDLE};
use crate::call;
use crate::module::Module;
use crate::names::rv_name;
use crate::report::Report;

/// The objects of the mirrored card, by name ("privkey.client", "cert.ca", ...).
pub(super) struct Objects(pub Vec<(String, CK_OBJECT_HANDLE)>);

impl Objects {
    pub fn get(&self, name: &str) -> Option<CK_OBJECT_HANDLE> {
        self.0.iter().find(|(n, _)| n == name).map(|&(_, h)| h)
    }
}

fn object_name(m: &Module, s: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> String {
    let class = as_ulong(&get_bytes(m, s, o, CKA_CLASS)).unwrap_or(u64::MAX);
    let label = String::from_utf8_lossy(&get_bytes(m, s, o, CKA_LABEL)).into_owned();
    format!("{}.{}", class_name(class), label)
}

pub(super) fn objects(m: &Module, s: CK_SESSION_HANDLE, r: &mut Report) -> Objects {
    let (rv, all) = find(m, s, &mut []);
    let mut names: Vec<String> = all
        .iter()
        .map(|&o| {
            let id = hex::encode(get_bytes(m, s, o, CKA_ID));
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
