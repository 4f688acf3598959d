//! Reading a caller's attribute template (already copied out of its memory by the FFI layer).

use cryptoki_sys::*;

use crate::error::{Error, Result};

use super::object::is_bool_attribute;

/// A template as (type, value bytes) pairs.
pub type Template = [(CK_ATTRIBUTE_TYPE, Vec<u8>)];

pub fn find_attr(t: &Template, attr: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    t.iter()
        .find(|(a, _)| *a == attr)
        .map(|(_, v)| v.as_slice())
}

pub fn template_bool(t: &Template, attr: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>> {
    match find_attr(t, attr) {
        None => Ok(None),
        Some([b]) => Ok(Some(*b != 0)),
        Some(_) => Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("attribute 0x{attr:x} is not a CK_BBOOL"),
        )),
    }
}

pub fn template_ulong(t: &Template, attr: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>> {
    match find_attr(t, attr) {
        None => Ok(None),
        Some(v) => v
            .try_into()
            .map(|b| Some(CK_ULONG::from_ne_bytes(b)))
            .map_err(|_| {
                Error::new(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    format!("attribute 0x{attr:x} is not a CK_ULONG"),
                )
            }),
    }
}

/// Attributes every storage object has (PKCS#11 3.0 §4.4); `CKA_UNIQUE_ID` is the token's to set.
const STORAGE_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_LABEL,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_UNIQUE_ID,
];

/// Data objects (§4.5); `CKA_ID` too, because the card's data files carry one.
const DATA_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE, CKA_ID];

/// Certificates (§4.6) and X.509 public-key certificates (§4.6.3).
pub const X509_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CERTIFICATE_TYPE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_CHECK_VALUE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_PUBLIC_KEY_INFO,
    CKA_SUBJECT,
    CKA_ID,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_VALUE,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_NAME_HASH_ALGORITHM,
];

/// Keys (§4.7), public keys (§4.8) and EC public keys (§2.3.3 of the mechanisms).
const EC_PUBLIC_KEY_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_DERIVE,
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALLOWED_MECHANISMS,
    CKA_SUBJECT,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_TRUSTED,
    CKA_PUBLIC_KEY_INFO,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
];

/// Attributes only the token sets: a template naming one gets `CKR_ATTRIBUTE_READ_ONLY`.
pub const TOKEN_SET_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] =
    &[CKA_UNIQUE_ID, CKA_LOCAL, CKA_KEY_GEN_MECHANISM];

/// Whether objects of `class` have attribute `t` (the classes C_CreateObject takes).
pub fn class_has(class: CK_OBJECT_CLASS, t: CK_ATTRIBUTE_TYPE) -> bool {
    let specific: &[CK_ATTRIBUTE_TYPE] = match class {
        CKO_DATA => DATA_ATTRIBUTES,
        CKO_CERTIFICATE => X509_ATTRIBUTES,
        CKO_PUBLIC_KEY => EC_PUBLIC_KEY_ATTRIBUTES,
        _ => &[],
    };
    STORAGE_ATTRIBUTES.contains(&t) || specific.contains(&t)
}

/// Whether PKCS#11 lets `C_SetAttributeValue` change attribute `t` of a `class` object. Storage
/// objects: `CKA_LABEL` (§4.4, and `CKA_COPYABLE`, to false only); data objects: their three
/// attributes (§4.5: "may be modified" since v2.01); X.509 certificates: `CKA_ID`,
/// `CKA_ISSUER`, `CKA_SERIAL_NUMBER` (§4.6.3); keys and public keys: the attributes marked 8 in
/// §4.7–4.8 (`CKA_TRUSTED` only by the SO, which this token has not).
pub fn modifiable(class: CK_OBJECT_CLASS, t: CK_ATTRIBUTE_TYPE) -> bool {
    if matches!(t, CKA_LABEL | CKA_COPYABLE) {
        return true;
    }
    match class {
        CKO_DATA => matches!(t, CKA_APPLICATION | CKA_OBJECT_ID | CKA_VALUE),
        CKO_CERTIFICATE => matches!(t, CKA_ID | CKA_ISSUER | CKA_SERIAL_NUMBER),
        CKO_PUBLIC_KEY => matches!(
            t,
            CKA_ID
                | CKA_START_DATE
                | CKA_END_DATE
                | CKA_DERIVE
                | CKA_SUBJECT
                | CKA_ENCRYPT
                | CKA_VERIFY
                | CKA_VERIFY_RECOVER
                | CKA_WRAP
        ),
        _ => false,
    }
}

/// Checks the form of one attribute value: booleans are one byte, `CK_ULONG`s eight, dates
/// empty or eight digits, enumerations within their range.
pub fn check_value_form(t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("attribute 0x{t:x}: {why}"),
        ))
    };
    let ulong = || -> Option<CK_ULONG> { v.try_into().ok().map(CK_ULONG::from_ne_bytes) };
    if is_bool_attribute(t) {
        return if v.len() == 1 {
            Ok(())
        } else {
            bad("not a CK_BBOOL")
        };
    }
    match t {
        CKA_CLASS | CKA_KEY_TYPE | CKA_CERTIFICATE_TYPE => match ulong() {
            Some(_) => Ok(()),
            None => bad("not a CK_ULONG"),
        },
        CKA_CERTIFICATE_CATEGORY | CKA_JAVA_MIDP_SECURITY_DOMAIN => match ulong() {
            Some(0..=3) => Ok(()),
            _ => bad("not 0..3"),
        },
        CKA_NAME_HASH_ALGORITHM => match ulong() {
            Some(m) if name_hash(m, &[]).is_some() => Ok(()),
            _ => bad("not a digest this module computes (SHA-1, SHA-224/256/384/512)"),
        },
        CKA_START_DATE | CKA_END_DATE => {
            if v.is_empty() || (v.len() == 8 && v.iter().all(u8::is_ascii_digit)) {
                Ok(())
            } else {
                bad("not a CK_DATE")
            }
        }
        CKA_ALLOWED_MECHANISMS => {
            if v.len().is_multiple_of(std::mem::size_of::<CK_ULONG>()) {
                Ok(())
            } else {
                bad("not an array of CK_MECHANISM_TYPE")
            }
        }
        _ => Ok(()),
    }
}

/// The digest `mechanism` of `data` (`CKA_NAME_HASH_ALGORITHM`), if the module computes it.
pub fn name_hash(mechanism: CK_MECHANISM_TYPE, data: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    Some(match mechanism {
        CKM_SHA_1 => sha1::Sha1::digest(data).to_vec(),
        CKM_SHA224 => sha2::Sha224::digest(data).to_vec(),
        CKM_SHA256 => sha2::Sha256::digest(data).to_vec(),
        CKM_SHA384 => sha2::Sha384::digest(data).to_vec(),
        CKM_SHA512 => sha2::Sha512::digest(data).to_vec(),
        _ => return None,
    })
}
