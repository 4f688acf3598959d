//! 4 Objects: the attributes of each object class (common, key, private, public and secret
//! key, certificate) and how their values are shown.

use cryptoki_sys::*;

use super::helpers::as_ulong;
use crate::report::{bytes, mech_name};

pub(super) fn class_name(c: CK_OBJECT_CLASS) -> String {
    match c {
        CKO_DATA => "data".into(),
        CKO_CERTIFICATE => "cert".into(),
        CKO_PUBLIC_KEY => "pubkey".into(),
        CKO_PRIVATE_KEY => "privkey".into(),
        CKO_SECRET_KEY => "secret".into(),
        c => format!("class{c:#x}"),
    }
}

/// Common object and storage attributes, every class.
pub(super) const COMMON: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
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
/// Common key attributes (4.7), every key class.
pub(super) const KEY: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_KEY_TYPE, "KEY_TYPE"),
    (CKA_START_DATE, "START_DATE"),
    (CKA_END_DATE, "END_DATE"),
    (CKA_DERIVE, "DERIVE"),
    (CKA_LOCAL, "LOCAL"),
    (CKA_KEY_GEN_MECHANISM, "KEY_GEN_MECHANISM"),
    (CKA_ALLOWED_MECHANISMS, "ALLOWED_MECHANISMS"),
];
/// Common to the public and the private EC key.
pub(super) const KEY_PAIR: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_SUBJECT, "SUBJECT"),
    (CKA_EC_PARAMS, "EC_PARAMS"),
    (CKA_EC_POINT, "EC_POINT"),
    (CKA_PUBLIC_KEY_INFO, "PUBLIC_KEY_INFO"),
];
/// Private key attributes, after KEY and KEY_PAIR.
pub(super) const PRIVATE: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
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
/// Public key attributes, after KEY and KEY_PAIR.
pub(super) const PUBLIC: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
    (CKA_ENCRYPT, "ENCRYPT"),
    (CKA_VERIFY, "VERIFY"),
    (CKA_VERIFY_RECOVER, "VERIFY_RECOVER"),
    (CKA_WRAP, "WRAP"),
    (CKA_TRUSTED, "TRUSTED"),
    (CKA_VALUE, "VALUE"),
];
/// Secret key attributes, after KEY.
pub(super) const SECRET: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
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
/// Certificate attributes (X.509).
pub(super) const CERT: &[(CK_ATTRIBUTE_TYPE, &str)] = &[
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

pub(super) fn render(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> String {
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
