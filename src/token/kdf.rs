//! Key derivation with secrets: the TLS 1.2 PRF (COMPUTE PRF) and HKDF (COMPUTE HKDF), keyed
//! either by a PSK stored on the card (IoT.04 feature set 2; the PSK never leaves it) or by a
//! session secret key the module holds (a pre-master or master secret from an earlier
//! derivation), which then travels in the command. Results are new session secret keys.

use cryptoki_sys::*;
use log::debug;
use zeroize::Zeroizing;

use crate::applet::objects::{
    HASH_SHA256, HASH_SHA384, HASH_SHA512, KEY_DERIVATION_HKDF, KEY_DERIVATION_PRF,
};
use crate::applet::{HkdfKey, HkdfStep, ObjectClass, PrfSecret};
use crate::error::{Error, Result};

use super::Module;
use super::find::may_create;
use super::keys::{NewSecretKey, new_secret_key};
use super::object::{CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF, CKM_IOTSAFE_TLS12_PSK_KDF, Object};
use super::template::{Template, find_attr};

/// The length of a TLS master secret.
const MASTER_SECRET_LEN: usize = 48;
/// COMPUTE PRF and COMPUTE HKDF code the output length in one byte.
const MAX_OUTPUT_LEN: usize = 255;

/// Where an HKDF salt comes from (`CK_HKDF_PARAMS.ulSaltType`).
#[derive(Debug, Clone)]
pub enum HkdfSalt {
    Null,
    Data(Vec<u8>),
    Key(CK_OBJECT_HANDLE),
}

/// The parameters of a secret-keyed derivation, copied out of the caller's memory.
#[derive(Debug, Clone)]
pub enum KdfParams {
    /// `CKM_TLS12_MASTER_KEY_DERIVE(_DH)` ("master secret", client ‖ server random) and
    /// `CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE(_DH)` (RFC 7627: "extended master secret", the
    /// session hash): a 48-byte master secret from the base key as pre-master.
    Tls12Master {
        label: &'static [u8],
        seed: Vec<u8>,
        prf_hash: CK_MECHANISM_TYPE,
        /// The caller wants the pre-master's version (non-DH forms with `pVersion` set).
        wants_version: bool,
    },
    /// `CKM_TLS12_KDF`: label, client ‖ server random [‖ uint16 length ‖ context] (RFC 5705).
    Tls12Kdf {
        prf_hash: CK_MECHANISM_TYPE,
        label: Vec<u8>,
        randoms: Vec<u8>,
        context: Option<Vec<u8>>,
    },
    /// The vendor PSK mechanisms: label, seed and, for ECDHE-PSK, the ECDHE secret.
    Tls12Psk {
        prf_hash: CK_MECHANISM_TYPE,
        label: Vec<u8>,
        seed: Vec<u8>,
        other_secret: Option<Zeroizing<Vec<u8>>>,
    },
    /// `CKM_HKDF_DERIVE`.
    Hkdf {
        extract: bool,
        expand: bool,
        prf_hash: CK_MECHANISM_TYPE,
        salt: HkdfSalt,
        info: Vec<u8>,
    },
}

/// The secret a derivation is keyed with.
enum BaseSecret {
    /// A PSK on the card.
    Stored(crate::applet::ObjectInfo),
    /// A session secret key's value.
    Held(Zeroizing<Vec<u8>>),
}

fn prf_hash_mask(mechanism: CK_MECHANISM_TYPE) -> Result<u16> {
    match mechanism {
        CKM_SHA256 => Ok(HASH_SHA256),
        CKM_SHA384 => Ok(HASH_SHA384),
        other => Err(Error::new(
            CKR_MECHANISM_PARAM_INVALID,
            format!("TLS 1.2 PRF hash 0x{other:x}: SHA-256 or SHA-384 only"),
        )),
    }
}

fn hkdf_hash(mechanism: CK_MECHANISM_TYPE) -> Result<(u16, usize)> {
    match mechanism {
        CKM_SHA256 => Ok((HASH_SHA256, 32)),
        CKM_SHA384 => Ok((HASH_SHA384, 48)),
        CKM_SHA512 => Ok((HASH_SHA512, 64)),
        other => Err(Error::new(
            CKR_MECHANISM_PARAM_INVALID,
            format!("HKDF hash 0x{other:x}: SHA-256, SHA-384 or SHA-512 only"),
        )),
    }
}

fn output_len(len: usize) -> Result<u8> {
    u8::try_from(len).ok().filter(|l| *l > 0).ok_or_else(|| {
        Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("CKA_VALUE_LEN {len}: the card derives 1..{MAX_OUTPUT_LEN} bytes"),
        )
    })
}

/// The mechanisms of this file.
pub fn is_kdf_mechanism(mechanism: CK_MECHANISM_TYPE) -> bool {
    matches!(
        mechanism,
        CKM_TLS12_MASTER_KEY_DERIVE
            | CKM_TLS12_MASTER_KEY_DERIVE_DH
            | CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE
            | CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH
            | CKM_TLS12_KDF
            | CKM_IOTSAFE_TLS12_PSK_KDF
            | CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF
            | CKM_HKDF_DERIVE
    )
}

/// The tag `94` algorithm a mechanism needs from the card.
pub fn card_algorithm(mechanism: CK_MECHANISM_TYPE) -> u8 {
    if mechanism == CKM_HKDF_DERIVE {
        KEY_DERIVATION_HKDF
    } else {
        KEY_DERIVATION_PRF
    }
}

/// What a derivation returns besides the key: the pre-master's protocol version when asked.
pub struct Derived {
    pub key: CK_OBJECT_HANDLE,
    pub version: Option<CK_VERSION>,
}

impl Module {
    /// The base key's secret: a card PSK (its reference) or a session key's value. Checks
    /// `CKA_DERIVE`, `CKA_ALLOWED_MECHANISMS` and what each kind of base can do.
    fn base_secret(
        &self,
        handle: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        base: CK_OBJECT_HANDLE,
    ) -> Result<BaseSecret> {
        let key = self.derivation_base(handle, base, CKO_SECRET_KEY)?;
        let stored = key.card.class == Some(ObjectClass::SecretKey);
        let psk_only = matches!(
            mechanism,
            CKM_IOTSAFE_TLS12_PSK_KDF | CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF
        );
        if stored {
            // A card PSK: only what the card computes from it (its allowed mechanisms).
            if !allowed(&key, mechanism) {
                return Err(Error::new(
                    CKR_KEY_FUNCTION_NOT_PERMITTED,
                    format!(
                        "mechanism 0x{mechanism:x} is not allowed with a PSK on the card; \
                         use the IoT SAFE PSK mechanisms or CKM_HKDF_DERIVE"
                    ),
                ));
            }
            return Ok(BaseSecret::Stored(key.card.clone()));
        }
        if psk_only {
            return Err(Error::new(
                CKR_KEY_TYPE_INCONSISTENT,
                "the IoT SAFE PSK mechanisms take a PSK stored on the card",
            ));
        }
        if !allowed(&key, mechanism) {
            return Err(Error::new(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                format!("mechanism 0x{mechanism:x} is not in the key's allowed mechanisms"),
            ));
        }
        let secret = key
            .secret
            .clone()
            .ok_or_else(|| Error::new(CKR_KEY_TYPE_INCONSISTENT, "the base key holds no value"))?;
        if secret.is_empty() || secret.len() > MAX_OUTPUT_LEN {
            return Err(Error::new(
                CKR_KEY_SIZE_RANGE,
                format!("a {}-byte base key: the card takes 1..255", secret.len()),
            ));
        }
        Ok(BaseSecret::Held(secret))
    }

    /// `C_DeriveKey` with a TLS 1.2 PRF or HKDF mechanism: the card computes, the result is a
    /// session secret key made from `template`.
    pub fn derive_with_secret(
        &self,
        handle: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        params: KdfParams,
        base: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<Derived> {
        let session = self.session(handle)?;
        let (token, slot_id) = {
            let s = session.lock();
            (s.token.clone(), s.slot_id)
        };
        may_create(template, &token)?;
        if !token.app_info.offers_derivation(card_algorithm(mechanism)) {
            return Err(Error::new(
                CKR_MECHANISM_INVALID,
                format!("the card does not offer mechanism 0x{mechanism:x}"),
            ));
        }
        let base = self.base_secret(handle, mechanism, base)?;
        let mut version = None;

        let value = match params {
            KdfParams::Tls12Master {
                label,
                seed,
                prf_hash,
                wants_version,
            } => {
                let new = master_secret_template(template)?;
                let BaseSecret::Held(pre_master) = &base else {
                    return Err(CKR_KEY_TYPE_INCONSISTENT.into());
                };
                if wants_version {
                    version = Some(pre_master_version(pre_master)?);
                }
                let label_and_seed = [label, &seed].concat();
                let hash = prf_hash_mask(prf_hash)?;
                let out = self.on_card(handle, &token, |ch| {
                    ch.compute_prf(PrfSecret::Explicit(pre_master), &label_and_seed, hash, 48)
                })?;
                (new, out)
            }
            KdfParams::Tls12Kdf {
                prf_hash,
                label,
                randoms,
                context,
            } => {
                let new = new_secret_key(template, None)?;
                let len = output_len(new.len)?;
                let BaseSecret::Held(secret) = &base else {
                    return Err(CKR_KEY_TYPE_INCONSISTENT.into());
                };
                let mut seed = [label, randoms].concat();
                if let Some(context) = context {
                    let n = u16::try_from(context.len())
                        .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID, "context too long"))?;
                    seed.extend_from_slice(&n.to_be_bytes());
                    seed.extend_from_slice(&context);
                }
                let hash = prf_hash_mask(prf_hash)?;
                let out = self.on_card(handle, &token, |ch| {
                    ch.compute_prf(PrfSecret::Explicit(secret), &seed, hash, len)
                })?;
                (new, out)
            }
            KdfParams::Tls12Psk {
                prf_hash,
                label,
                seed,
                other_secret,
            } => {
                let new = new_secret_key(template, Some(MASTER_SECRET_LEN))?;
                let len = output_len(new.len)?;
                let BaseSecret::Stored(psk) = &base else {
                    return Err(CKR_KEY_TYPE_INCONSISTENT.into());
                };
                if label.is_empty() {
                    return Err(Error::new(CKR_MECHANISM_PARAM_INVALID, "empty PRF label"));
                }
                let ecdhe = mechanism == CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF;
                let other = match (&other_secret, ecdhe) {
                    (Some(o), true) if !o.is_empty() => Some(o.as_slice()),
                    (None, false) => None,
                    (_, true) => {
                        return Err(Error::new(
                            CKR_MECHANISM_PARAM_INVALID,
                            "ECDHE-PSK needs the ECDHE secret (pOtherSecret)",
                        ));
                    }
                    (Some(_), false) => {
                        return Err(Error::new(
                            CKR_MECHANISM_PARAM_INVALID,
                            "plain PSK takes no other secret",
                        ));
                    }
                };
                let label_and_seed = [&label[..], &seed].concat();
                let hash = prf_hash_mask(prf_hash)?;
                let out = self.on_card(handle, &token, |ch| {
                    let secret = match other {
                        Some(o) => PrfSecret::EcdhePsk(psk, o),
                        None => PrfSecret::Psk(psk),
                    };
                    ch.compute_prf(secret, &label_and_seed, hash, len)
                })?;
                (new, out)
            }
            KdfParams::Hkdf {
                extract,
                expand,
                prf_hash,
                salt,
                info,
            } => {
                let (hash, hash_len) = hkdf_hash(prf_hash)?;
                let step = match (extract, expand) {
                    (true, false) => HkdfStep::Extract,
                    (false, true) => HkdfStep::Expand,
                    (true, true) => HkdfStep::ExtractAndExpand,
                    (false, false) => {
                        return Err(Error::new(
                            CKR_MECHANISM_PARAM_INVALID,
                            "HKDF with neither extract nor expand",
                        ));
                    }
                };
                let new = if step == HkdfStep::Extract {
                    let new = new_secret_key(template, Some(hash_len))?;
                    if new.len != hash_len {
                        return Err(Error::new(
                            CKR_TEMPLATE_INCONSISTENT,
                            format!("HKDF extract gives {hash_len} bytes"),
                        ));
                    }
                    new
                } else {
                    new_secret_key(template, None)?
                };
                let len = output_len(new.len)?;
                let salt = match (step, salt) {
                    (HkdfStep::Expand, _) | (_, HkdfSalt::Null) => Zeroizing::new(Vec::new()),
                    (_, HkdfSalt::Data(d)) => Zeroizing::new(d),
                    (_, HkdfSalt::Key(h)) => self.salt_key(handle, h)?,
                };
                if step == HkdfStep::Extract && !info.is_empty() {
                    return Err(Error::new(
                        CKR_MECHANISM_PARAM_INVALID,
                        "HKDF extract takes no info",
                    ));
                }
                let out = self.on_card(handle, &token, |ch| {
                    let key = match &base {
                        BaseSecret::Stored(o) => HkdfKey::Stored(o),
                        BaseSecret::Held(v) => HkdfKey::Explicit(v),
                    };
                    ch.compute_hkdf(step, key, &salt, &info, len, hash)
                })?;
                (new, out)
            }
        };
        let (
            NewSecretKey {
                key_type,
                len,
                flags,
            },
            out,
        ) = value;
        let out = Zeroizing::new(out[..len.min(out.len())].to_vec());
        let object = Object::secret_key(
            self.handles.object_handle(),
            &out,
            key_type,
            &flags,
            find_attr(template, CKA_LABEL).unwrap_or_default(),
            find_attr(template, CKA_ID).unwrap_or_default(),
        );
        debug!("derived a {len}-byte secret key with mechanism 0x{mechanism:x} on the card");
        let key = self.add_session_object(handle, slot_id, object);
        Ok(Derived { key, version })
    }

    /// `C_CreateObject` of a session secret key (`CKO_SECRET_KEY`, `CKA_TOKEN` false): a secret
    /// the caller holds (say a pre-master from its own ECDHE) that keys the card's PRF or HKDF.
    /// Secret keys on the card itself are provisioned by the security service only (IoT.04 I9).
    pub fn create_session_secret(
        &self,
        handle: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let slot_id = self.session(handle)?.lock().slot_id;
        let value = find_attr(template, CKA_VALUE)
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE is required"))?;
        if value.is_empty() || value.len() > MAX_OUTPUT_LEN {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!("CKA_VALUE: 1..{MAX_OUTPUT_LEN} bytes (the card's limit)"),
            ));
        }
        let rest: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = template
            .iter()
            .filter(|(a, _)| *a != CKA_VALUE)
            .cloned()
            .collect();
        let new = new_secret_key(&rest, Some(value.len()))?;
        if new.len != value.len() {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                "CKA_VALUE_LEN differs from the length of CKA_VALUE",
            ));
        }
        let object = Object::secret_key(
            self.handles.object_handle(),
            value,
            new.key_type,
            &new.flags,
            find_attr(template, CKA_LABEL).unwrap_or_default(),
            find_attr(template, CKA_ID).unwrap_or_default(),
        );
        Ok(self.add_session_object(handle, slot_id, object))
    }

    /// The value of a session secret key used as HKDF salt (`CKF_HKDF_SALT_KEY`).
    fn salt_key(
        &self,
        handle: CK_SESSION_HANDLE,
        salt: CK_OBJECT_HANDLE,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let key = self
            .object(handle, salt)
            .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID, "hSaltKey is not a key"))?;
        if key.class != CKO_SECRET_KEY {
            return Err(Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                "hSaltKey is not a secret key",
            ));
        }
        key.secret.clone().ok_or_else(|| {
            Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                "a key stored on the card cannot be an HKDF salt",
            )
        })
    }
}

/// A master secret is a 48-byte generic secret.
fn master_secret_template(template: &Template) -> Result<NewSecretKey> {
    let new = new_secret_key(template, Some(MASTER_SECRET_LEN))?;
    if new.len != MASTER_SECRET_LEN || new.key_type != CKK_GENERIC_SECRET {
        return Err(Error::new(
            CKR_TEMPLATE_INCONSISTENT,
            "a TLS master secret is a 48-byte generic secret",
        ));
    }
    Ok(new)
}

/// `pVersion` of the RSA-style pre-master: its first two bytes (PKCS#11 `CK_VERSION`).
fn pre_master_version(pre_master: &[u8]) -> Result<CK_VERSION> {
    if pre_master.len() != MASTER_SECRET_LEN {
        return Err(Error::new(
            CKR_KEY_SIZE_RANGE,
            "a pre-master with a version is 48 bytes (use the _DH form otherwise)",
        ));
    }
    Ok(CK_VERSION {
        major: pre_master[0],
        minor: pre_master[1],
    })
}

/// Whether `CKA_ALLOWED_MECHANISMS` (empty = any) lets the key be used with `mechanism`.
fn allowed(key: &Object, mechanism: CK_MECHANISM_TYPE) -> bool {
    match key.attribute(CKA_ALLOWED_MECHANISMS) {
        Some(super::object::AttrValue::Bytes(list)) if !list.is_empty() => list
            .chunks_exact(std::mem::size_of::<CK_MECHANISM_TYPE>())
            .filter_map(|c| c.try_into().ok())
            .any(|b| CK_MECHANISM_TYPE::from_ne_bytes(b) == mechanism),
        _ => true,
    }
}
