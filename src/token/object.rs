//! PKCS#11 objects built from the applet's object list, with every attribute encoded once at
//! build time: `C_GetAttributeValue` and `C_FindObjects` are then pure lookups (0 APDUs).

use cryptoki_sys::*;
use der::{Decode, Encode};
use log::warn;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use crate::applet::{ObjectClass, ObjectInfo, ProvenPair, objects as card, pair_keys};

pub use crate::applet::P256_EC_PARAMS;

/// Vendor-defined attributes (declared in include/iotsafe_pkcs11.h).
pub const CKA_IOTSAFE_OBJECT_ID: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4953_0001;
pub const CKA_IOTSAFE_KEY_USAGE: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4953_0002;
pub const CKA_IOTSAFE_OBJECT_STATE: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4953_0003;
pub const CKA_IOTSAFE_ACCESS_CONDITIONS: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4953_0004;
pub const CKA_IOTSAFE_KEY_TYPE: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4953_0005;
pub const CKA_IOTSAFE_KEY_DERIVATION: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4953_0006;

/// `CKA_CHECK_VALUE` of a certificate: the first 3 bytes of the SHA-1 of its value.
pub fn check_value(value: &[u8]) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    Sha1::digest(value)[..3].to_vec()
}

/// `CKA_PUBLIC_KEY_INFO`: the DER SubjectPublicKeyInfo of a P-256 point (empty when the card's
/// point is not on the curve).
pub fn spki_from_point(point: &[u8; 65]) -> Vec<u8> {
    use p256::pkcs8::EncodePublicKey;
    p256::PublicKey::from_sec1_bytes(point)
        .ok()
        .and_then(|key| key.to_public_key_der().ok())
        .map(|der| der.into_vec())
        .unwrap_or_default()
}

/// `CKA_EC_POINT`: the point as a DER OCTET STRING.
pub fn ec_point_der(point: &[u8; 65]) -> Vec<u8> {
    der::asn1::OctetStringRef::new(point)
        .and_then(|octets| octets.to_der())
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    Bytes(Vec<u8>),
    /// Exists but is never revealed (CKR_ATTRIBUTE_SENSITIVE).
    Sensitive,
}

fn bool_attr(v: bool) -> AttrValue {
    AttrValue::Bytes(vec![v as u8])
}

fn ulong_attr(v: CK_ULONG) -> AttrValue {
    AttrValue::Bytes(v.to_ne_bytes().to_vec())
}

fn bytes_attr(v: &[u8]) -> AttrValue {
    AttrValue::Bytes(v.to_vec())
}

fn mechanisms_attr(mechs: &[CK_MECHANISM_TYPE]) -> AttrValue {
    AttrValue::Bytes(mechs.iter().flat_map(|m| m.to_ne_bytes()).collect())
}

pub const SIGN_MECHANISMS: [CK_MECHANISM_TYPE; 4] = [
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
];

/// One object of a token.
#[derive(Debug, Clone)]
pub struct Object {
    pub handle: CK_OBJECT_HANDLE,
    pub class: CK_OBJECT_CLASS,
    attrs: Vec<(CK_ATTRIBUTE_TYPE, AttrValue)>,
    /// The applet object behind it (for card operations).
    pub card: ObjectInfo,
    /// The public point, where known.
    pub point: Option<[u8; 65]>,
    /// The value of a session secret key (derived or created), whatever its attributes allow
    /// the caller to read; the base of later derivations. Wiped when the object goes.
    pub secret: Option<Zeroizing<Vec<u8>>>,
}

impl Drop for Object {
    /// Attribute values may hold secrets (derived keys): wiped when the object goes.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, v) in &mut self.attrs {
            if let AttrValue::Bytes(b) = v {
                b.zeroize();
            }
        }
    }
}

impl Object {
    /// A session secret key `handle` holding `value` (a derived key), with the attributes
    /// `template` asked for. The value is readable only when the key is neither sensitive nor
    /// unextractable.
    pub fn secret_key(
        handle: CK_OBJECT_HANDLE,
        value: &[u8],
        key_type: CK_KEY_TYPE,
        flags: &SecretKeyFlags,
        label: &[u8],
        id: &[u8],
    ) -> Object {
        let readable = !flags.sensitive && flags.extractable;
        let attrs = vec![
            (CKA_CLASS, ulong_attr(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, ulong_attr(key_type)),
            (CKA_TOKEN, bool_attr(false)),
            (CKA_PRIVATE, bool_attr(flags.private)),
            (CKA_MODIFIABLE, bool_attr(false)),
            (CKA_COPYABLE, bool_attr(false)),
            (CKA_DESTROYABLE, bool_attr(true)),
            (CKA_LABEL, bytes_attr(label)),
            (CKA_ID, bytes_attr(id)),
            (CKA_START_DATE, bytes_attr(&[])),
            (CKA_END_DATE, bytes_attr(&[])),
            (CKA_LOCAL, bool_attr(false)),
            (
                CKA_KEY_GEN_MECHANISM,
                ulong_attr(CK_UNAVAILABLE_INFORMATION),
            ),
            (CKA_ALLOWED_MECHANISMS, mechanisms_attr(&[])),
            (CKA_SENSITIVE, bool_attr(flags.sensitive)),
            (CKA_EXTRACTABLE, bool_attr(flags.extractable)),
            (CKA_ALWAYS_SENSITIVE, bool_attr(flags.sensitive)),
            (CKA_NEVER_EXTRACTABLE, bool_attr(!flags.extractable)),
            (CKA_ENCRYPT, bool_attr(flags.encrypt)),
            (CKA_DECRYPT, bool_attr(flags.decrypt)),
            (CKA_SIGN, bool_attr(flags.sign)),
            (CKA_VERIFY, bool_attr(flags.verify)),
            (CKA_WRAP, bool_attr(flags.wrap)),
            (CKA_UNWRAP, bool_attr(flags.unwrap)),
            (CKA_DERIVE, bool_attr(flags.derive)),
            (CKA_WRAP_WITH_TRUSTED, bool_attr(false)),
            (CKA_TRUSTED, bool_attr(false)),
            (CKA_VALUE_LEN, ulong_attr(value.len() as CK_ULONG)),
            (
                CKA_VALUE,
                if readable {
                    bytes_attr(value)
                } else {
                    AttrValue::Sensitive
                },
            ),
        ];
        Object {
            handle,
            class: CKO_SECRET_KEY,
            attrs,
            card: ObjectInfo::default(),
            point: None,
            secret: Some(Zeroizing::new(value.to_vec())),
        }
    }

    /// An object made by the application (a session object), from its whole attribute list.
    pub fn from_attributes(
        handle: CK_OBJECT_HANDLE,
        class: CK_OBJECT_CLASS,
        attrs: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
        point: Option<[u8; 65]>,
    ) -> Object {
        Object {
            handle,
            class,
            attrs: attrs
                .into_iter()
                .map(|(t, v)| (t, AttrValue::Bytes(v)))
                .collect(),
            card: ObjectInfo::default(),
            point,
            secret: None,
        }
    }

    /// The readable attributes, in order (sensitive ones left out).
    pub fn readable_attributes(&self) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
        self.attrs
            .iter()
            .filter_map(|(t, v)| match v {
                AttrValue::Bytes(b) => Some((*t, b.clone())),
                AttrValue::Sensitive => None,
            })
            .collect()
    }

    /// The attribute's bytes, unless it is missing or sensitive.
    pub fn bytes(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        match self.attribute(t) {
            Some(AttrValue::Bytes(v)) => Some(v),
            _ => None,
        }
    }

    /// A file on a card that takes writes: its label and value can be changed, and it can be
    /// deleted, when the card lets the device do so (the card decides per object).
    pub fn mark_writable_file(&mut self) {
        if self.card.class() != ObjectClass::File || self.secret.is_some() {
            return;
        }
        for (t, v) in &mut self.attrs {
            if matches!(*t, CKA_MODIFIABLE | CKA_DESTROYABLE) {
                *v = bool_attr(true);
            }
        }
    }

    pub fn attribute(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&AttrValue> {
        self.attrs.iter().find(|(k, _)| *k == t).map(|(_, v)| v)
    }

    pub fn bool_attribute(&self, t: CK_ATTRIBUTE_TYPE) -> bool {
        matches!(self.attribute(t), Some(AttrValue::Bytes(v)) if v.first() == Some(&1))
    }

    /// True if every (type, value) of the template equals this object's attribute.
    pub fn matches(&self, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
        template.iter().all(|(t, want)| match self.attribute(*t) {
            Some(AttrValue::Bytes(have)) => attr_equal(*t, have, want),
            _ => false,
        })
    }
}

/// Booleans may come from callers as any non-zero byte; everything else compares as bytes.
fn attr_equal(t: CK_ATTRIBUTE_TYPE, have: &[u8], want: &[u8]) -> bool {
    if is_bool_attribute(t) && want.len() == 1 && have.len() == 1 {
        return (have[0] != 0) == (want[0] != 0);
    }
    have == want
}

/// The `CK_BBOOL` attributes.
pub(super) fn is_bool_attribute(t: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(
        t,
        CKA_TOKEN
            | CKA_PRIVATE
            | CKA_MODIFIABLE
            | CKA_COPYABLE
            | CKA_DESTROYABLE
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
            | CKA_DERIVE
            | CKA_LOCAL
    )
}

/// The boolean attributes of a derived secret key, from its template.
#[derive(Debug, Clone, Default)]
pub struct SecretKeyFlags {
    pub private: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub encrypt: bool,
    pub decrypt: bool,
    pub sign: bool,
    pub verify: bool,
    pub wrap: bool,
    pub unwrap: bool,
    pub derive: bool,
}

/// `CKA_HASH_OF_SUBJECT_PUBLIC_KEY` under `CKA_NAME_HASH_ALGORITHM` `mechanism`: the digest of
/// the subjectPublicKey BIT STRING's contents (empty when the certificate does not parse).
pub fn subject_public_key_hash(certificate: &[u8], mechanism: CK_MECHANISM_TYPE) -> Vec<u8> {
    Certificate::from_der(certificate)
        .ok()
        .and_then(|c| {
            let key = c.tbs_certificate().subject_public_key_info();
            super::template::name_hash(mechanism, key.subject_public_key.raw_bytes())
        })
        .unwrap_or_default()
}

/// What a certificate file tells about itself.
pub(super) struct CertFacts {
    pub(super) subject: Vec<u8>,
    pub(super) issuer: Vec<u8>,
    pub(super) serial: Vec<u8>,
    pub(super) spki: Vec<u8>,
    pub(super) point: Option<[u8; 65]>,
    pub(super) is_ca: bool,
}

pub(super) fn parse_certificate(der_bytes: &[u8]) -> Option<CertFacts> {
    let cert = Certificate::from_der(der_bytes).ok()?;
    let tbs = cert.tbs_certificate();
    let spki = tbs.subject_public_key_info();
    // Only a P-256 key pairs with the applet's keys (a 65-byte point of another curve must not).
    let point = crate::applet::certificate_point(der_bytes);
    let is_ca = tbs
        .get_extension::<x509_cert::ext::pkix::BasicConstraints>()
        .ok()
        .flatten()
        .map(|(_, bc)| bc.ca)
        .unwrap_or(false);
    Some(CertFacts {
        subject: tbs.subject().to_der().ok()?,
        issuer: tbs.issuer().to_der().ok()?,
        serial: tbs.serial_number().to_der().ok()?,
        spki: spki.to_der().ok()?,
        point,
        is_ca,
    })
}

pub use crate::applet::CardObject;

fn label_of(info: &ObjectInfo) -> Vec<u8> {
    match (&info.label, &info.id) {
        (Some(l), _) => l.clone(),
        (None, Some(id)) => hex::encode(id).into_bytes(),
        (None, None) => Vec::new(),
    }
}

fn common_attrs(class: CK_OBJECT_CLASS, info: &ObjectInfo) -> Vec<(CK_ATTRIBUTE_TYPE, AttrValue)> {
    let mut a = vec![
        (CKA_CLASS, ulong_attr(class)),
        (CKA_TOKEN, bool_attr(true)),
        (CKA_PRIVATE, bool_attr(false)),
        (CKA_MODIFIABLE, bool_attr(false)),
        (CKA_COPYABLE, bool_attr(false)),
        (CKA_DESTROYABLE, bool_attr(false)),
        (CKA_LABEL, bytes_attr(&label_of(info))),
        (
            CKA_IOTSAFE_OBJECT_ID,
            bytes_attr(info.id.as_deref().unwrap_or_default()),
        ),
    ];
    if let Some(s) = info.state {
        a.push((CKA_IOTSAFE_OBJECT_STATE, bytes_attr(&[s])));
    }
    if let Some(ac) = info.access {
        a.push((CKA_IOTSAFE_ACCESS_CONDITIONS, bytes_attr(&[ac])));
    }
    a
}

fn key_attrs(a: &mut Vec<(CK_ATTRIBUTE_TYPE, AttrValue)>, info: &ObjectInfo, id: &[u8]) {
    a.extend([
        (CKA_KEY_TYPE, ulong_attr(CKK_EC)),
        (CKA_ID, bytes_attr(id)),
        (CKA_START_DATE, bytes_attr(&[])),
        (CKA_END_DATE, bytes_attr(&[])),
        (CKA_LOCAL, bool_attr(false)),
        (
            CKA_KEY_GEN_MECHANISM,
            ulong_attr(CK_UNAVAILABLE_INFORMATION),
        ),
        (CKA_EC_PARAMS, bytes_attr(&P256_EC_PARAMS)),
    ]);
    if let Some(u) = info.key_usage {
        a.push((CKA_IOTSAFE_KEY_USAGE, bytes_attr(&[u])));
    }
    if let Some(t) = info.key_type {
        a.push((CKA_IOTSAFE_KEY_TYPE, bytes_attr(&[t])));
    }
}

/// Vendor mechanisms (include/iotsafe_pkcs11.h): TLS 1.2 PRF keyed by the pre-master the card
/// builds from a stored PSK — RFC 4279 plain PSK (COMPUTE PRF mode 01) and RFC 5489 ECDHE-PSK
/// (mode 02).
pub const CKM_IOTSAFE_TLS12_PSK_KDF: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4953_0001;
pub const CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4953_0002;

/// A PSK on the card (IoT.04 I2/I9): usable for derivation only, never readable, changeable or
/// deletable. `CKA_LABEL` is the card's label, which holds the PSK identity.
fn psk_object(info: &ObjectInfo, handle: CK_OBJECT_HANDLE) -> Object {
    let prf = info.can_derive_with(card::KEY_DERIVATION_PRF);
    let hkdf = info.can_derive_with(card::KEY_DERIVATION_HKDF);
    let mut allowed = Vec::new();
    if prf {
        allowed.extend([CKM_IOTSAFE_TLS12_PSK_KDF, CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF]);
    }
    if hkdf {
        allowed.push(CKM_HKDF_DERIVE);
    }
    let mut a = common_attrs(CKO_SECRET_KEY, info);
    a.extend([
        (CKA_KEY_TYPE, ulong_attr(CKK_GENERIC_SECRET)),
        (CKA_ID, bytes_attr(info.id.as_deref().unwrap_or_default())),
        (CKA_START_DATE, bytes_attr(&[])),
        (CKA_END_DATE, bytes_attr(&[])),
        (CKA_LOCAL, bool_attr(false)),
        (
            CKA_KEY_GEN_MECHANISM,
            ulong_attr(CK_UNAVAILABLE_INFORMATION),
        ),
        (CKA_ALLOWED_MECHANISMS, mechanisms_attr(&allowed)),
        (CKA_SENSITIVE, bool_attr(true)),
        (CKA_EXTRACTABLE, bool_attr(false)),
        (CKA_ALWAYS_SENSITIVE, bool_attr(true)),
        (CKA_NEVER_EXTRACTABLE, bool_attr(true)),
        (CKA_ENCRYPT, bool_attr(false)),
        (CKA_DECRYPT, bool_attr(false)),
        (CKA_SIGN, bool_attr(false)),
        (CKA_VERIFY, bool_attr(false)),
        (CKA_WRAP, bool_attr(false)),
        (CKA_UNWRAP, bool_attr(false)),
        (CKA_DERIVE, bool_attr(prf || hkdf)),
        (CKA_WRAP_WITH_TRUSTED, bool_attr(false)),
        (CKA_TRUSTED, bool_attr(false)),
        (CKA_VALUE, AttrValue::Sensitive),
        // IoT.05 does not tell a secret key's length, and 0 would be a false value: the
        // length of a sensitive, unextractable key cannot be revealed (CKR_ATTRIBUTE_SENSITIVE,
        // CK_UNAVAILABLE_INFORMATION), as C_GetAttributeValue's rules say.
        (CKA_VALUE_LEN, AttrValue::Sensitive),
    ]);
    if let Some(t) = info.key_type {
        a.push((CKA_IOTSAFE_KEY_TYPE, bytes_attr(&[t])));
    }
    if let Some(k) = info.key_derivation {
        a.push((CKA_IOTSAFE_KEY_DERIVATION, bytes_attr(&[k])));
    }
    Object {
        handle,
        class: CKO_SECRET_KEY,
        attrs: a,
        card: info.clone(),
        point: None,
        secret: None,
    }
}

/// Builds the PKCS#11 view of a card's objects. `next_handle` hands out object handles.
///
/// Pairing (`applet::pair_keys`: same ID, else a unique label, else a signature proof in
/// `proven`): a private key shows its public half's point, and the public key and the
/// certificate with that point take the private key's `CKA_ID`, so the three share one.
pub fn build_objects(
    card_objects: &[CardObject],
    proven: &[ProvenPair],
    mut next_handle: impl FnMut(CK_OBJECT_CLASS, &ObjectInfo) -> CK_OBJECT_HANDLE,
) -> Vec<Object> {
    let active: Vec<&CardObject> = card_objects.iter().filter(|o| o.info.is_active()).collect();
    let pairs = pair_keys(card_objects, proven);
    // The CKA_ID of the key pair whose public half has `point`: its private key's ID.
    let pair_id = |point: &[u8; 65]| -> Option<Vec<u8>> {
        active
            .iter()
            .filter(|k| k.info.class() == ObjectClass::PrivateKey)
            .find(|k| pairs.point_of(&k.info).as_ref() == Some(point))
            .map(|k| k.info.id.clone().unwrap_or_default())
    };
    let certs: Vec<(&CardObject, Option<CertFacts>)> = active
        .iter()
        .filter(|o| o.info.class() == ObjectClass::File)
        .map(|o| {
            let facts = if o.info.file_usage == Some(card::FILE_USAGE_CERTIFICATE) {
                let parsed = o.content.as_deref().and_then(parse_certificate);
                if parsed.is_none() {
                    warn!(
                        "certificate file {:?} does not parse as X.509; exposing it as data",
                        o.info.id
                    );
                }
                parsed
            } else {
                None
            };
            (*o, facts)
        })
        .collect();

    let mut out = Vec::new();
    for o in &active {
        let info = &o.info;
        match info.class() {
            ObjectClass::PrivateKey if info.is_p256() => {
                let id = info.id.clone().unwrap_or_default();
                let point = pairs.point_of(info);
                let subject = point.and_then(|p| {
                    certs
                        .iter()
                        .filter_map(|(_, f)| f.as_ref())
                        .find(|f| f.point == Some(p))
                        .map(|f| f.subject.clone())
                });
                let mut a = common_attrs(CKO_PRIVATE_KEY, info);
                key_attrs(&mut a, info, &id);
                let sign = info.can_sign();
                let derive = info.can_derive();
                let mut allowed: Vec<CK_MECHANISM_TYPE> = Vec::new();
                if sign {
                    allowed.extend_from_slice(&SIGN_MECHANISMS);
                }
                if derive {
                    allowed.push(CKM_ECDH1_DERIVE);
                }
                a.extend([
                    (CKA_SUBJECT, bytes_attr(&subject.unwrap_or_default())),
                    (CKA_SENSITIVE, bool_attr(true)),
                    (CKA_DECRYPT, bool_attr(false)),
                    (CKA_SIGN, bool_attr(sign)),
                    (CKA_SIGN_RECOVER, bool_attr(false)),
                    (CKA_UNWRAP, bool_attr(false)),
                    (CKA_DERIVE, bool_attr(derive)),
                    (CKA_EXTRACTABLE, bool_attr(false)),
                    (CKA_ALWAYS_SENSITIVE, bool_attr(true)),
                    (CKA_NEVER_EXTRACTABLE, bool_attr(true)),
                    (CKA_WRAP_WITH_TRUSTED, bool_attr(false)),
                    (CKA_ALWAYS_AUTHENTICATE, bool_attr(false)),
                    (CKA_VALUE, AttrValue::Sensitive),
                    (CKA_ALLOWED_MECHANISMS, mechanisms_attr(&allowed)),
                ]);
                // CKA_PUBLIC_KEY_INFO defaults to empty when the public key is not known.
                a.push((
                    CKA_PUBLIC_KEY_INFO,
                    bytes_attr(&point.map(|p| spki_from_point(&p)).unwrap_or_default()),
                ));
                if let Some(p) = point {
                    a.push((CKA_EC_POINT, bytes_attr(&ec_point_der(&p))));
                }
                out.push(Object {
                    handle: next_handle(CKO_PRIVATE_KEY, info),
                    class: CKO_PRIVATE_KEY,
                    attrs: a,
                    card: info.clone(),
                    point,
                    secret: None,
                });
            }
            ObjectClass::PublicKey if info.is_p256() => {
                let Some(point) = o.point else { continue };
                let id = pair_id(&point).unwrap_or_else(|| info.id.clone().unwrap_or_default());
                let subject = certs
                    .iter()
                    .filter_map(|(_, f)| f.as_ref())
                    .find(|f| f.point == Some(point))
                    .map(|f| f.subject.clone());
                let mut a = common_attrs(CKO_PUBLIC_KEY, info);
                key_attrs(&mut a, info, &id);
                a.extend([
                    (CKA_SUBJECT, bytes_attr(&subject.unwrap_or_default())),
                    (CKA_ENCRYPT, bool_attr(false)),
                    // A key-agreement-only pair (the ECDH container) does not verify.
                    (CKA_VERIFY, bool_attr(info.can_sign())),
                    (CKA_VERIFY_RECOVER, bool_attr(false)),
                    (CKA_WRAP, bool_attr(false)),
                    // The public half of a key-agreement pair says so too (as the card's info
                    // for it does); PKCS#11 consumers expect the flag on both halves.
                    (CKA_DERIVE, bool_attr(info.can_derive())),
                    (CKA_TRUSTED, bool_attr(false)),
                    (CKA_EC_POINT, bytes_attr(&ec_point_der(&point))),
                    (CKA_PUBLIC_KEY_INFO, bytes_attr(&spki_from_point(&point))),
                    (
                        CKA_ALLOWED_MECHANISMS,
                        mechanisms_attr(if info.can_sign() {
                            &SIGN_MECHANISMS
                        } else {
                            &[]
                        }),
                    ),
                ]);
                out.push(Object {
                    handle: next_handle(CKO_PUBLIC_KEY, info),
                    class: CKO_PUBLIC_KEY,
                    attrs: a,
                    card: info.clone(),
                    point: Some(point),
                    secret: None,
                });
            }
            ObjectClass::SecretKey => out.push(psk_object(info, next_handle(CKO_SECRET_KEY, info))),
            _ => {}
        }
    }

    for (o, facts) in &certs {
        let info = &o.info;
        let content = o.content.clone().unwrap_or_default();
        match facts {
            Some(f) => {
                // The key pair this certificate belongs to, if any (else a public key alone).
                let paired_id = f.point.and_then(|p| {
                    pair_id(&p).or_else(|| {
                        active
                            .iter()
                            .filter(|k| {
                                k.info.class() == ObjectClass::PublicKey && k.point == Some(p)
                            })
                            .find_map(|k| k.info.id.clone())
                    })
                });
                let category = if paired_id.is_some() {
                    1 // token user
                } else if f.is_ca {
                    2 // authority
                } else {
                    0
                };
                let id = paired_id.unwrap_or_else(|| info.id.clone().unwrap_or_default());
                let mut a = common_attrs(CKO_CERTIFICATE, info);
                a.extend([
                    (CKA_CERTIFICATE_TYPE, ulong_attr(CKC_X_509)),
                    (CKA_TRUSTED, bool_attr(false)),
                    (CKA_CERTIFICATE_CATEGORY, ulong_attr(category)),
                    (CKA_START_DATE, bytes_attr(&[])),
                    (CKA_END_DATE, bytes_attr(&[])),
                    (CKA_SUBJECT, bytes_attr(&f.subject)),
                    (CKA_ID, bytes_attr(&id)),
                    (CKA_ISSUER, bytes_attr(&f.issuer)),
                    (CKA_SERIAL_NUMBER, bytes_attr(&f.serial)),
                    (CKA_VALUE, bytes_attr(&content)),
                    (CKA_CHECK_VALUE, bytes_attr(&check_value(&content))),
                    (CKA_URL, bytes_attr(&[])),
                    (CKA_NAME_HASH_ALGORITHM, ulong_attr(CKM_SHA_1)),
                    (
                        CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
                        bytes_attr(&subject_public_key_hash(&content, CKM_SHA_1)),
                    ),
                    (CKA_HASH_OF_ISSUER_PUBLIC_KEY, bytes_attr(&[])),
                    (CKA_JAVA_MIDP_SECURITY_DOMAIN, ulong_attr(0)),
                    (CKA_PUBLIC_KEY_INFO, bytes_attr(&f.spki)),
                ]);
                out.push(Object {
                    handle: next_handle(CKO_CERTIFICATE, info),
                    class: CKO_CERTIFICATE,
                    attrs: a,
                    card: info.clone(),
                    point: f.point,
                    secret: None,
                });
            }
            None => {
                let mut a = common_attrs(CKO_DATA, info);
                a.extend([
                    (CKA_APPLICATION, bytes_attr(&[])),
                    (CKA_OBJECT_ID, bytes_attr(&[])),
                    (CKA_ID, bytes_attr(info.id.as_deref().unwrap_or_default())),
                    (CKA_VALUE, bytes_attr(&content)),
                ]);
                out.push(Object {
                    handle: next_handle(CKO_DATA, info),
                    class: CKO_DATA,
                    attrs: a,
                    card: info.clone(),
                    point: None,
                    secret: None,
                });
            }
        }
    }
    out
}
