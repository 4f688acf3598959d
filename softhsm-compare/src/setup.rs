//! Builds the reference token: the simulator's card profile (`iotsafe-sim init-profile`'s
//! `profile.toml`) recreated as objects on an initialised token of another module (SoftHSM2),
//! through `C_CreateObject` — same CKA_ID bytes, labels, P-256 keys (the same private scalars)
//! and the same certificate files.
//!
//! Mapping (as a careful administrator importing the card's content would do it):
//! - `[[private_key]]` with `private` → `CKO_PRIVATE_KEY`, EC P-256, `CKA_PRIVATE=false` (the
//!   card has no PIN), sensitive, not extractable, `CKA_SIGN` when the key's crypto functions
//!   include signature (bit 0x01), `CKA_DERIVE` when they include key agreement (bit 0x04);
//! - `[[public_key]]` with a `point` → `CKO_PUBLIC_KEY`, `CKA_VERIFY` when its crypto functions
//!   include signature (bit 0x01), `CKA_DERIVE` when they include key agreement (bit 0x04);
//! - `[[secret_key]]` with a `value` (a PSK) → `CKO_SECRET_KEY`, `CKK_GENERIC_SECRET`, the same
//!   value, `CKA_PRIVATE=false`, sensitive, not extractable, `CKA_DERIVE` (a PSK on the card is
//!   only used for key derivation) and no other usage;
//! - `[[file]]` holding an X.509 certificate → `CKO_CERTIFICATE` with the `CKA_ID` of the key
//!   pair whose public key it certifies (category "token user"), else its file ID (category
//!   "authority" for a CA certificate, else unspecified).

use std::ffi::c_void;
use std::path::Path;
use std::ptr::null_mut;

use base64ct::{Base64Unpadded, Encoding};
use cryptoki_sys::*;
use der::{Decode, Encode};
use x509_cert::Certificate;

use crate::call;
use crate::module::Module;
use crate::names::rv_name;

const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

/// The uncompressed point (65 bytes) certified by a DER certificate.
pub fn cert_point(der: &[u8]) -> Option<Vec<u8>> {
    let cert = Certificate::from_der(der).ok()?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    spki.subject_public_key.as_bytes().map(<[u8]>::to_vec)
}

/// The SubjectPublicKeyInfo DER of a DER certificate.
pub fn cert_spki(der: &[u8]) -> Option<Vec<u8>> {
    let cert = Certificate::from_der(der).ok()?;
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()
}

/// Hex digits (whitespace between them allowed) as bytes.
fn unhex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&s).map_err(|e| match e {
        hex::FromHexError::OddLength => format!("odd hex string {s:?}"),
        e => format!("{s:?}: {e}"),
    })
}

/// Standard base64 (line breaks allowed, padding optional) as bytes.
fn base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && *c != '=')
        .collect();
    Base64Unpadded::decode_vec(&compact).map_err(|e| format!("bad base64: {e}"))
}

fn flag(v: &toml::Value, key: &str) -> u64 {
    v.get(key)
        .and_then(|x| x.as_str())
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0)
}

fn text<'a>(v: &'a toml::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

/// One object to create: (description, template as owned values).
struct Obj {
    what: String,
    attrs: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
}

fn ul(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn b(v: bool) -> Vec<u8> {
    vec![u8::from(v)]
}

fn objects_from_profile(profile: &Path) -> Result<Vec<Obj>, String> {
    let text_all = std::fs::read_to_string(profile)
        .map_err(|e| format!("cannot read {}: {e}", profile.display()))?;
    let doc: toml::Table = text_all
        .parse()
        .map_err(|e| format!("{}: {e}", profile.display()))?;
    let list = |k: &str| -> Vec<toml::Value> {
        doc.get(k)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut key_points: Vec<(Vec<u8>, Vec<u8>)> = Vec::new(); // (point, id)
    // The subject of the certificate of each key (keys take it as CKA_SUBJECT).
    let mut subjects: Vec<(Vec<u8>, Vec<u8>)> = Vec::new(); // (point, subject DER)
    for f in list("file") {
        let Some(content) = text(&f, "content_base64") else {
            continue;
        };
        let der_bytes = base64(content)?;
        if let (Ok(cert), Some(point)) = (Certificate::from_der(&der_bytes), cert_point(&der_bytes))
        {
            let subject = cert
                .tbs_certificate()
                .subject()
                .to_der()
                .map_err(|e| e.to_string())?;
            subjects.push((point, subject));
        }
    }
    let subject_of = |point: &[u8]| -> Vec<u8> {
        subjects
            .iter()
            .find(|(p, _)| p == point)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };

    for k in list("private_key") {
        let (Some(id), Some(scalar)) = (text(&k, "id"), text(&k, "private")) else {
            continue;
        };
        let id = unhex(id)?;
        let label = text(&k, "label").unwrap_or("").as_bytes().to_vec();
        let functions = flag(&k, "crypto_functions");
        let sign = functions & 0x01 != 0;
        let derive = functions & 0x04 != 0;
        let scalar = unhex(scalar)?;
        let point = p256::SecretKey::from_slice(&scalar)
            .map_err(|e| format!("private key {id:02x?}: {e}"))?
            .public_key()
            .to_sec1_bytes()
            .to_vec();
        out.push(Obj {
            what: format!("private key {:?}", String::from_utf8_lossy(&label)),
            attrs: vec![
                (CKA_CLASS, ul(CKO_PRIVATE_KEY)),
                (CKA_KEY_TYPE, ul(CKK_EC)),
                (CKA_TOKEN, b(true)),
                (CKA_PRIVATE, b(false)),
                (CKA_SENSITIVE, b(true)),
                (CKA_EXTRACTABLE, b(false)),
                (CKA_SIGN, b(sign)),
                (CKA_DERIVE, b(derive)),
                (CKA_DECRYPT, b(false)),
                (CKA_UNWRAP, b(false)),
                (CKA_SIGN_RECOVER, b(false)),
                (CKA_ID, id),
                (CKA_LABEL, label),
                (CKA_EC_PARAMS, P256_PARAMS.to_vec()),
                (CKA_SUBJECT, subject_of(&point)),
                (CKA_VALUE, scalar),
            ],
        });
    }
    for k in list("public_key") {
        let (Some(id), Some(point)) = (text(&k, "id"), text(&k, "point")) else {
            continue;
        };
        let id = unhex(id)?;
        let point = unhex(point)?;
        key_points.push((point.clone(), id.clone()));
        let mut wrapped = vec![0x04, point.len() as u8];
        wrapped.extend_from_slice(&point);
        let label = text(&k, "label").unwrap_or("").as_bytes().to_vec();
        let functions = flag(&k, "crypto_functions");
        let verify = functions & 0x01 != 0;
        let derive = functions & 0x04 != 0;
        out.push(Obj {
            what: format!("public key {:?}", String::from_utf8_lossy(&label)),
            attrs: vec![
                (CKA_CLASS, ul(CKO_PUBLIC_KEY)),
                (CKA_KEY_TYPE, ul(CKK_EC)),
                (CKA_TOKEN, b(true)),
                (CKA_PRIVATE, b(false)),
                (CKA_VERIFY, b(verify)),
                (CKA_ENCRYPT, b(false)),
                (CKA_WRAP, b(false)),
                (CKA_VERIFY_RECOVER, b(false)),
                (CKA_DERIVE, b(derive)),
                (CKA_ID, id),
                (CKA_LABEL, label),
                (CKA_EC_PARAMS, P256_PARAMS.to_vec()),
                (CKA_SUBJECT, subject_of(&point)),
                (CKA_EC_POINT, wrapped),
            ],
        });
    }
    for k in list("secret_key") {
        let (Some(id), Some(value)) = (text(&k, "id"), text(&k, "value")) else {
            continue;
        };
        let id = unhex(id)?;
        let value = unhex(value)?;
        let label = text(&k, "label").unwrap_or("").as_bytes().to_vec();
        out.push(Obj {
            what: format!("secret key {:?}", String::from_utf8_lossy(&label)),
            attrs: vec![
                (CKA_CLASS, ul(CKO_SECRET_KEY)),
                (CKA_KEY_TYPE, ul(CKK_GENERIC_SECRET)),
                (CKA_TOKEN, b(true)),
                (CKA_PRIVATE, b(false)),
                (CKA_SENSITIVE, b(true)),
                (CKA_EXTRACTABLE, b(false)),
                (CKA_DERIVE, b(true)),
                (CKA_SIGN, b(false)),
                (CKA_VERIFY, b(false)),
                (CKA_ENCRYPT, b(false)),
                (CKA_DECRYPT, b(false)),
                (CKA_WRAP, b(false)),
                (CKA_UNWRAP, b(false)),
                (CKA_ID, id),
                (CKA_LABEL, label),
                (CKA_VALUE, value),
            ],
        });
    }
    for f in list("file") {
        let Some(content) = text(&f, "content_base64") else {
            continue;
        };
        let der_bytes = base64(content)?;
        let Ok(cert) = Certificate::from_der(&der_bytes) else {
            continue;
        };
        let tbs = cert.tbs_certificate();
        let point = cert_point(&der_bytes);
        let paired = key_points
            .iter()
            .find(|(p, _)| Some(p) == point.as_ref())
            .map(|(_, id)| id.clone());
        let is_ca = tbs
            .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
            .ok()
            .flatten()
            .map(|(_, bc)| bc.ca)
            .unwrap_or(false);
        let category = if paired.is_some() {
            1
        } else if is_ca {
            2
        } else {
            0
        };
        let id = match paired {
            Some(id) => id,
            None => unhex(text(&f, "id").unwrap_or(""))?,
        };
        let label = text(&f, "label").unwrap_or("").as_bytes().to_vec();
        let enc = |r: der::Result<Vec<u8>>| r.map_err(|e| e.to_string());
        out.push(Obj {
            what: format!("certificate {:?}", String::from_utf8_lossy(&label)),
            attrs: vec![
                (CKA_CLASS, ul(CKO_CERTIFICATE)),
                (CKA_CERTIFICATE_TYPE, ul(CKC_X_509)),
                (CKA_TOKEN, b(true)),
                (CKA_PRIVATE, b(false)),
                (CKA_CERTIFICATE_CATEGORY, ul(category)),
                (CKA_ID, id),
                (CKA_LABEL, label),
                (CKA_SUBJECT, enc(tbs.subject().to_der())?),
                (CKA_ISSUER, enc(tbs.issuer().to_der())?),
                (CKA_SERIAL_NUMBER, enc(tbs.serial_number().to_der())?),
                (CKA_VALUE, der_bytes.clone()),
            ],
        });
    }
    Ok(out)
}

/// Logs in as the user on the token labelled `label` and creates the profile's objects.
pub fn setup(m: &Module, label: &str, pin: &str, profile: &Path) -> Result<usize, String> {
    let objs = objects_from_profile(profile)?;
    let check = |what: &str, rv: CK_RV| {
        if rv == CKR_OK {
            Ok(())
        } else {
            Err(format!("{what}: {}", rv_name(rv)))
        }
    };
    check("C_Initialize", call!(m, C_Initialize, null_mut()))?;
    let mut n = 0;
    call!(m, C_GetSlotList, CK_TRUE, null_mut(), &mut n);
    let mut slots = vec![0; n as usize];
    call!(m, C_GetSlotList, CK_TRUE, slots.as_mut_ptr(), &mut n);
    let slot = slots
        .iter()
        .copied()
        .find(|&s| {
            let mut t: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
            call!(m, C_GetTokenInfo, s, &mut t) == CKR_OK
                && String::from_utf8_lossy(&t.label).trim_end() == label
        })
        .ok_or_else(|| format!("no token labelled {label:?}"))?;
    let mut s = 0;
    check(
        "C_OpenSession(RW)",
        call!(
            m,
            C_OpenSession,
            slot,
            CKF_SERIAL_SESSION | CKF_RW_SESSION,
            null_mut(),
            None,
            &mut s
        ),
    )?;
    let mut pin = pin.as_bytes().to_vec();
    check(
        "C_Login(USER)",
        call!(
            m,
            C_Login,
            s,
            CKU_USER,
            pin.as_mut_ptr(),
            pin.len() as CK_ULONG
        ),
    )?;
    for o in &objs {
        let mut tpl: Vec<CK_ATTRIBUTE> = o
            .attrs
            .iter()
            .map(|(t, v)| CK_ATTRIBUTE {
                type_: *t,
                pValue: v.as_ptr() as *mut c_void,
                ulValueLen: v.len() as CK_ULONG,
            })
            .collect();
        let mut h = 0;
        check(
            &format!("C_CreateObject({})", o.what),
            call!(
                m,
                C_CreateObject,
                s,
                tpl.as_mut_ptr(),
                tpl.len() as CK_ULONG,
                &mut h
            ),
        )?;
    }
    call!(m, C_Logout, s);
    call!(m, C_CloseSession, s);
    call!(m, C_Finalize, null_mut());
    Ok(objs.len())
}
