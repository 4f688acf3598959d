//! Writes to the card through the STORE DATA provisioning profile (IoT.04 H1/H2): certificates
//! and data objects as files, new key-pair containers, deletion of what the device created.
//! Every write re-reads the object list afterwards, so the cache shows exactly what the card
//! holds.

use std::sync::Arc;

use cryptoki_sys::*;
use der::{Decode, Encode};
use log::info;
use x509_cert::Certificate;

use crate::applet::{self, AppletChannel, ObjectClass, ObjectInfo, objects as card, tlv};
use crate::error::{Error, Result};

use super::object::{Object, P256_EC_PARAMS};
use super::template::{Template, find_attr, template_ulong};
use super::{Module, Token};

/// Provisioning sub-commands (STORE DATA tags), see the provisioning profile.
const CREATE_KEY_PAIR: u8 = 0x71;
const CREATE_FILE: u8 = 0x74;
const SELECT_OBJECT: u8 = 0x75;
const DELETE_OBJECT: u8 = 0x76;
const UPDATE_FILE: u8 = 0x77;
/// Key-type tag inside "create ECC key pair", and the persistent P-256 type (key made at once).
const KEY_TYPE_TAG: u8 = 0x48;

/// Attributes a certificate or data-object template may carry.
const FILE_OBJECT_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_LABEL,
    CKA_ID,
    CKA_VALUE,
    CKA_CERTIFICATE_TYPE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_CHECK_VALUE,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_SUBJECT,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_PUBLIC_KEY_INFO,
    CKA_APPLICATION,
    CKA_OBJECT_ID,
];

/// A card answered "conditions not satisfied" to a write: the object is not the device's to
/// change (a factory object), which PKCS#11 calls a prohibited action.
fn prohibited_if_refused(e: Error) -> Error {
    if e.rv() == CKR_FUNCTION_FAILED {
        Error::new(
            CKR_ACTION_PROHIBITED,
            format!(
                "{} — the card does not let the device change this object",
                e.detail()
            ),
        )
    } else {
        e
    }
}

fn reference(tag: u8, id: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    tlv::push(&mut r, tag, id);
    r
}

/// The lowest one-byte ID that no object on the card uses (in any class, so `CKA_ID`s stay
/// unambiguous).
fn unused_id(token: &Token) -> Result<Vec<u8>> {
    let used: Vec<Option<Vec<u8>>> = token
        .card_objects()
        .into_iter()
        .map(|o| o.info.id)
        .collect();
    (1u8..=0xFE)
        .map(|b| vec![b])
        .find(|id| !used.iter().any(|u| u.as_deref() == Some(id)))
        .ok_or_else(|| Error::new(CKR_DEVICE_MEMORY, "no free object ID"))
}

impl Module {
    /// The token of a session that may write: read-write session on a token that takes writes.
    fn writable_token(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Token>> {
        let session = self.session(handle)?;
        let (token, rw) = {
            let s = session.lock();
            (s.token.clone(), s.is_rw())
        };
        if !token.writable {
            return Err(self.refuse_write(handle));
        }
        if !rw {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "writing a token object needs a read-write session",
            ));
        }
        Ok(token)
    }

    /// Runs STORE DATA sequences and re-reads the objects, in one card transaction.
    fn write_and_reload(
        &self,
        handle: CK_SESSION_HANDLE,
        token: &Token,
        mut write: impl FnMut(&mut AppletChannel<'_>) -> applet::Result<()>,
    ) -> Result<()> {
        self.on_card(handle, token, |ch| {
            let written = write(ch);
            // Re-read even after a failure: what the card holds is the truth.
            let reloaded = token.reload(ch);
            written.and(reloaded)
        })
        .map_err(prohibited_if_refused)
    }

    /// `C_CreateObject`: a certificate or data object stored as a file on the card.
    pub fn create_object(
        &self,
        handle: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.check_session(handle)?;
        let token_object =
            find_attr(template, CKA_TOKEN).is_some_and(|v| v.first().is_some_and(|b| *b != 0));
        if !token_object && template_ulong(template, CKA_CLASS)? == Some(CKO_SECRET_KEY) {
            return self.create_session_secret(handle, template);
        }
        if !token_object {
            return Err(Error::new(
                CKR_FUNCTION_NOT_SUPPORTED,
                "session objects cannot be created on this token",
            ));
        }
        // Write protection (or a read-only session) comes before the template's details.
        let token = self.writable_token(handle)?;
        let class = template_ulong(template, CKA_CLASS)?
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is required"))?;
        if !matches!(class, CKO_CERTIFICATE | CKO_DATA) {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "the card stores certificates and data objects only; keys are made on the card",
            ));
        }
        if let Some((a, _)) = template
            .iter()
            .find(|(a, _)| !FILE_OBJECT_ATTRIBUTES.contains(a))
        {
            return Err(Error::new(
                CKR_ATTRIBUTE_TYPE_INVALID,
                format!("attribute 0x{a:x} in a {class:#x} template"),
            ));
        }
        let value = find_attr(template, CKA_VALUE)
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE is required"))?;
        if value.is_empty() || value.len() > 0xFFFF {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "CKA_VALUE must be 1..65535 bytes",
            ));
        }
        let usage = if class == CKO_CERTIFICATE {
            if template_ulong(template, CKA_CERTIFICATE_TYPE)?.is_some_and(|t| t != CKC_X_509) {
                return Err(Error::new(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    "only X.509 certificates",
                ));
            }
            Certificate::from_der(value).map_err(|e| {
                Error::new(
                    CKR_ATTRIBUTE_VALUE_INVALID,
                    format!("CKA_VALUE is not an X.509 certificate: {e}"),
                )
            })?;
            card::FILE_USAGE_CERTIFICATE
        } else {
            0x01
        };
        let label = find_attr(template, CKA_LABEL)
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec);
        // A certificate for a key pair that already has one replaces it (IoT.04 H2); its file
        // keeps its ID and label.
        let replaced = if class == CKO_CERTIFICATE {
            existing_certificate_file(&token, value)
        } else {
            None
        };
        let (file_id, label) = match &replaced {
            Some(f) => (f.id.clone().unwrap_or_default(), f.label.clone()),
            None => {
                let id = match find_attr(template, CKA_ID) {
                    // A data object may name its file; a certificate takes its key's CKA_ID anyway.
                    Some(id) if class == CKO_DATA && !id.is_empty() => id.to_vec(),
                    _ => unused_id(&token)?,
                };
                (id, label)
            }
        };
        let size =
            u16::try_from(value.len()).map_err(|_| Error::from(CKR_ATTRIBUTE_VALUE_INVALID))?;
        self.write_and_reload(handle, &token, |ch| {
            if replaced.is_none() {
                let mut info = Vec::new();
                if let Some(l) = &label {
                    tlv::push(&mut info, 0x73, l);
                }
                tlv::push(&mut info, 0x83, &file_id);
                tlv::push(&mut info, 0x21, &[usage]);
                tlv::push(&mut info, 0x20, &size.to_be_bytes());
                ch.store_data(CREATE_FILE, &info, false)?;
            }
            ch.store_data(SELECT_OBJECT, &reference(0x83, &file_id), false)?;
            ch.store_data(UPDATE_FILE, value, false)?;
            Ok(())
        })?;
        info!(
            "{} file {file_id:02x?} ({} bytes)",
            if replaced.is_some() {
                "replaced"
            } else {
                "created"
            },
            value.len()
        );
        let class_wanted = class;
        token
            .objects()
            .iter()
            .find(|o| {
                o.class == class_wanted
                    && o.card.class() == ObjectClass::File
                    && o.card.id.as_deref() == Some(&file_id)
            })
            .map(|o| o.handle)
            .ok_or_else(|| {
                Error::new(
                    CKR_DEVICE_ERROR,
                    "the card does not list the object just written",
                )
            })
    }

    /// `C_DestroyObject` for a token object: its file, or the key pair (private and public
    /// key), deleted on the card when the card allows it.
    pub(super) fn destroy_token_object(
        &self,
        handle: CK_SESSION_HANDLE,
        object: &Object,
    ) -> Result<()> {
        if object.class == CKO_SECRET_KEY {
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                "secret keys on the card can never be deleted by the device",
            ));
        }
        let token = self.writable_token(handle)?;
        let info = object.card.clone();
        let id = info
            .id
            .clone()
            .ok_or_else(|| Error::new(CKR_ACTION_PROHIBITED, "object without an ID"))?;
        let mut deletions: Vec<Vec<u8>> = Vec::new();
        match info.class() {
            ObjectClass::File => deletions.push(reference(0x83, &id)),
            ObjectClass::PrivateKey | ObjectClass::PublicKey => {
                // A key pair goes as a whole. The public key first: when the card refuses
                // it (a factory pair), the private key has not been touched.
                let objects = token.card_objects();
                let has = |class: ObjectClass| {
                    objects
                        .iter()
                        .any(|o| o.info.class() == class && o.info.id.as_deref() == Some(&id))
                };
                if has(ObjectClass::PublicKey) {
                    deletions.push(reference(0x85, &id));
                }
                if has(ObjectClass::PrivateKey) {
                    deletions.push(reference(0x84, &id));
                }
            }
            ObjectClass::SecretKey => return Err(CKR_ACTION_PROHIBITED.into()),
        }
        self.write_and_reload(handle, &token, |ch| {
            for d in &deletions {
                ch.store_data(DELETE_OBJECT, d, false)?;
            }
            Ok(())
        })?;
        info!("deleted object {id:02x?}");
        Ok(())
    }

    /// `C_GenerateKeyPair` into a container that does not exist yet: "create ECC key pair"
    /// with the persistent P-256 type, which makes the key on the card at once.
    pub(super) fn create_key_pair(
        &self,
        handle: CK_SESSION_HANDLE,
        token: &Arc<Token>,
        id: Option<&[u8]>,
        label: Option<&[u8]>,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        if !token.writable {
            return Err(Error::new(
                CKR_TOKEN_WRITE_PROTECTED,
                "no such key container, and this card does not allow creating one",
            ));
        }
        let token = self.writable_token(handle)?;
        let id = match id {
            Some(id) if !id.is_empty() => id.to_vec(),
            _ => unused_id(&token)?,
        };
        let mut command = Vec::new();
        if let Some(l) = label {
            tlv::push(&mut command, 0x74, l);
        }
        tlv::push(&mut command, 0x84, &id);
        if let Some(l) = label {
            tlv::push(&mut command, 0x75, l);
        }
        tlv::push(&mut command, 0x85, &id);
        tlv::push(
            &mut command,
            KEY_TYPE_TAG,
            &[card::KEY_TYPE_P256_PERSISTENT],
        );
        self.write_and_reload(handle, &token, |ch| {
            ch.store_data(CREATE_KEY_PAIR, &command, false)?;
            Ok(())
        })?;
        info!("created key pair container {id:02x?} with a new P-256 key");
        let find = |class: CK_OBJECT_CLASS| {
            token
                .objects()
                .iter()
                .find(|o| o.class == class && o.card.id.as_deref() == Some(&id))
                .map(|o| o.handle)
                .ok_or_else(|| {
                    Error::new(CKR_DEVICE_ERROR, "the card does not list the new key pair")
                })
        };
        Ok((find(CKO_PUBLIC_KEY)?, find(CKO_PRIVATE_KEY)?))
    }
}

/// The certificate file already held for the key that `new_certificate` certifies, if any.
fn existing_certificate_file(token: &Token, new_certificate: &[u8]) -> Option<ObjectInfo> {
    let point = certificate_point(new_certificate)?;
    token
        .card_objects()
        .into_iter()
        .filter(|o| {
            o.info.class() == ObjectClass::File
                && o.info.file_usage == Some(card::FILE_USAGE_CERTIFICATE)
        })
        .find(|o| o.content.as_deref().and_then(certificate_point) == Some(point))
        .map(|o| o.info)
}

/// The P-256 point a certificate certifies.
fn certificate_point(der_bytes: &[u8]) -> Option<[u8; 65]> {
    let cert = Certificate::from_der(der_bytes).ok()?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let params = spki.algorithm.parameters.as_ref()?.to_der().ok()?;
    if params != P256_EC_PARAMS {
        return None;
    }
    spki.subject_public_key.as_bytes()?.try_into().ok()
}
