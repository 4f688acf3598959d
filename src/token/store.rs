//! Writes to the card through the STORE DATA provisioning profile (IoT.04 H1/H2): certificates
//! and data objects as files, new key-pair containers, deletion of what the device created.
//! Every write re-reads the object list afterwards, so the cache shows exactly what the card
//! holds.

use std::sync::Arc;

use cryptoki_sys::*;
use log::info;

use crate::applet::{
    self, AppletChannel, ObjectClass, ObjectInfo, certificate_point, objects as card, tlv,
};
use crate::error::{Error, Result};

use super::object::{CertFacts, Object, parse_certificate};
use super::session_objects::{check_template, new_object_attributes};
use super::template::{Template, find_attr, modifiable, template_bool, template_ulong};
use super::{Module, Token};

/// Provisioning sub-commands (STORE DATA tags), see the provisioning profile.
const CREATE_KEY_PAIR: u8 = 0x71;
const CREATE_FILE: u8 = 0x74;
const SELECT_OBJECT: u8 = 0x75;
const DELETE_OBJECT: u8 = 0x76;
const UPDATE_FILE: u8 = 0x77;
/// Key-type tag inside "create ECC key pair", and the persistent P-256 type (key made at once).
const KEY_TYPE_TAG: u8 = 0x48;

/// What a file on the card cannot keep beyond its label, value and ID: a template may name these
/// only with the value the token object will show (`CKA_CERTIFICATE_CATEGORY` is checked on its
/// own).
fn fixed_file_attributes() -> [(CK_ATTRIBUTE_TYPE, Vec<u8>); 11] {
    [
        (CKA_PRIVATE, vec![0]),
        (CKA_MODIFIABLE, vec![1]),
        (CKA_COPYABLE, vec![0]),
        (CKA_DESTROYABLE, vec![1]),
        (CKA_URL, Vec::new()),
        (CKA_START_DATE, Vec::new()),
        (CKA_END_DATE, Vec::new()),
        (
            CKA_JAVA_MIDP_SECURITY_DOMAIN,
            (0 as CK_ULONG).to_ne_bytes().to_vec(),
        ),
        (CKA_HASH_OF_ISSUER_PUBLIC_KEY, Vec::new()),
        (CKA_APPLICATION, Vec::new()),
        (CKA_OBJECT_ID, Vec::new()),
    ]
}

/// Refuses a token-object template naming a value the card cannot keep (it would read back
/// otherwise): `CKR_ATTRIBUTE_VALUE_INVALID`.
fn check_card_keeps(
    template: &Template,
    certificate: Option<&CertFacts>,
    category: CK_ULONG,
) -> Result<()> {
    let cannot_keep = |t: CK_ATTRIBUTE_TYPE| {
        Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("attribute 0x{t:x}: the card cannot keep this value"),
        ))
    };
    for (t, fixed) in fixed_file_attributes() {
        let Some(given) = find_attr(template, t) else {
            continue;
        };
        let same = if fixed.len() == 1 && given.len() == 1 {
            (fixed[0] != 0) == (given[0] != 0)
        } else {
            given == fixed.as_slice()
        };
        if !same {
            return cannot_keep(t);
        }
    }
    // Derived from the certificate on the card: what the template says must be what it holds.
    if let Some(facts) = certificate {
        for (t, held) in [
            (CKA_ISSUER, &facts.issuer),
            (CKA_SERIAL_NUMBER, &facts.serial),
        ] {
            if find_attr(template, t).is_some_and(|given| !given.is_empty() && given != held) {
                return cannot_keep(t);
            }
        }
    }
    if let Some(c) = template_ulong(template, CKA_CERTIFICATE_CATEGORY)?
        && c != 0
        && c != category
    {
        return cannot_keep(CKA_CERTIFICATE_CATEGORY);
    }
    Ok(())
}

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

    /// `C_CreateObject`: a token object is a certificate or data object stored as a file on the
    /// card; anything else is a session object.
    pub fn create_object(
        &self,
        handle: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        self.check_session(handle)?;
        if template_bool(template, CKA_TOKEN)? != Some(true) {
            return self.create_session_object(handle, template);
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
        check_template(class, template)?;
        new_object_attributes(class, template)?;
        let value = find_attr(template, CKA_VALUE)
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE is required"))?;
        if value.is_empty() || value.len() > 0xFFFF {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "CKA_VALUE must be 1..65535 bytes",
            ));
        }
        let facts = if class == CKO_CERTIFICATE {
            parse_certificate(value)
        } else {
            None
        };
        let category = match &facts {
            Some(f) if f.point.is_some_and(|p| pairs_with_key(&token, &p)) => 1,
            Some(f) if f.is_ca => 2,
            _ => 0,
        };
        check_card_keeps(template, facts.as_ref(), category)?;
        let usage = if class == CKO_CERTIFICATE {
            card::FILE_USAGE_CERTIFICATE
        } else {
            0x01
        };
        let asked_label = find_attr(template, CKA_LABEL)
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec);
        // A certificate for a key pair that already has one replaces it (IoT.04 H2): in its
        // file when the label stays, else in a new file with the label asked for.
        let replaced = if class == CKO_CERTIFICATE {
            existing_certificate_file(&token, value)
        } else {
            None
        };
        // The new certificate is a new object with a handle of its own, and the old one's handle
        // goes with it: applications (libp11) cache objects by handle, and would keep showing
        // the old certificate under a handle they already know.
        let file_id = match &replaced {
            Some(old) if asked_label.is_none() || asked_label == old.label => {
                let id = old.id.clone().unwrap_or_default();
                self.write_and_reload(handle, &token, |ch| {
                    update_file(ch, &id, value)?;
                    token.forget_handle(&(class, old.id.clone(), old.label.clone()));
                    Ok(())
                })?;
                id
            }
            Some(old) => self.replace_file(
                handle,
                &token,
                class,
                old,
                asked_label,
                value,
                HandleAfterMove::New,
            )?,
            None => {
                let id = match find_attr(template, CKA_ID) {
                    // A data object may name its file; a certificate takes its key's CKA_ID anyway.
                    Some(id) if class == CKO_DATA && !id.is_empty() => id.to_vec(),
                    _ => unused_id(&token)?,
                };
                check_label_free(&token, asked_label.as_deref(), None)?;
                let new = NewFile {
                    id: &id,
                    label: asked_label.as_deref(),
                    usage,
                };
                self.write_and_reload(handle, &token, |ch| new.write(ch, value))?;
                id
            }
        };
        info!(
            "{} file {file_id:02x?} ({} bytes)",
            if replaced.is_some() {
                "replaced"
            } else {
                "created"
            },
            value.len()
        );
        token
            .objects()
            .iter()
            .find(|o| {
                o.class == class
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

    /// `C_SetAttributeValue` on a token object: a file's label and a data object's value are
    /// written to the card (a new label needs a new file: the card names files by ID and label
    /// and cannot rename one); nothing else of a card object can change.
    pub(super) fn set_token_attributes(
        &self,
        handle: CK_SESSION_HANDLE,
        object: &Object,
        template: &Template,
    ) -> Result<()> {
        let token = self.writable_token(handle)?;
        check_template(object.class, template)?;
        if !object.bool_attribute(CKA_MODIFIABLE) {
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                "the object is not modifiable (CKA_MODIFIABLE false)",
            ));
        }
        let info = &object.card;
        let mut label = info.label.clone();
        let mut value: Option<&[u8]> = None;
        for (t, v) in template {
            if !modifiable(object.class, *t) {
                return Err(Error::new(
                    CKR_ATTRIBUTE_READ_ONLY,
                    format!("attribute 0x{t:x} cannot change after the object is made"),
                ));
            }
            match *t {
                CKA_LABEL => {
                    if v.len() > 127 {
                        return Err(Error::new(
                            CKR_ATTRIBUTE_VALUE_INVALID,
                            "the card keeps labels of up to 127 bytes",
                        ));
                    }
                    label = (!v.is_empty()).then(|| v.clone());
                }
                CKA_VALUE if object.class == CKO_DATA => {
                    if v.is_empty() || v.len() > 0xFFFF {
                        return Err(Error::new(
                            CKR_ATTRIBUTE_VALUE_INVALID,
                            "CKA_VALUE must be 1..65535 bytes",
                        ));
                    }
                    value = Some(v);
                }
                // Rewriting what the object already holds changes nothing.
                _ if object.bytes(*t) == Some(v.as_slice()) => {}
                _ => {
                    return Err(Error::new(
                        CKR_ATTRIBUTE_READ_ONLY,
                        format!("attribute 0x{t:x}: the card cannot keep another value"),
                    ));
                }
            }
        }
        let current = object.bytes(CKA_VALUE).unwrap_or_default();
        let value = value.filter(|v| *v != current);
        if label == info.label && value.is_none() {
            return Ok(());
        }
        if label == info.label {
            let id = info.id.clone().unwrap_or_default();
            let new_value = value.unwrap_or(current);
            self.write_and_reload(handle, &token, |ch| update_file(ch, &id, new_value))?;
            info!("file {id:02x?}: new value ({} bytes)", new_value.len());
            return Ok(());
        }
        let new_value = value.unwrap_or(current).to_vec();
        let id = self.replace_file(
            handle,
            &token,
            object.class,
            info,
            label,
            &new_value,
            HandleAfterMove::Kept,
        )?;
        info!("file {:02x?} relabelled as file {id:02x?}", info.id);
        Ok(())
    }

    /// Moves file `old` to a new file labelled `label` holding `value`, in one card
    /// transaction: the new file is created and filled first, then the old one deleted (if the
    /// card refuses that, the new one goes again), so a failure at any step leaves the old
    /// file as it was. Returns the new file's ID.
    #[allow(clippy::too_many_arguments)]
    fn replace_file(
        &self,
        handle: CK_SESSION_HANDLE,
        token: &Token,
        class: CK_OBJECT_CLASS,
        old: &ObjectInfo,
        label: Option<Vec<u8>>,
        value: &[u8],
        handle_after: HandleAfterMove,
    ) -> Result<Vec<u8>> {
        let old_id = old
            .id
            .clone()
            .ok_or_else(|| Error::new(CKR_ACTION_PROHIBITED, "file without an ID"))?;
        check_label_free(token, label.as_deref(), Some(&old_id))?;
        let new_id = unused_id(token)?;
        let new = NewFile {
            id: &new_id,
            label: label.as_deref(),
            usage: old.file_usage.unwrap_or(0x01),
        };
        self.write_and_reload(handle, token, |ch| {
            new.write(ch, value)?;
            if let Err(e) = ch.store_data(DELETE_OBJECT, &reference(0x83, &old_id), false) {
                let _ = ch.store_data(DELETE_OBJECT, &reference(0x83, &new_id), false);
                return Err(e);
            }
            let old_key = (class, Some(old_id.clone()), old.label.clone());
            match handle_after {
                HandleAfterMove::Kept => {
                    token.carry_handle(old_key, (class, Some(new_id.clone()), label.clone()))
                }
                HandleAfterMove::New => token.forget_handle(&old_key),
            }
            Ok(())
        })?;
        Ok(new_id)
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
/// What a file moved to a new one (`replace_file`) means for its handle.
#[derive(Clone, Copy)]
enum HandleAfterMove {
    /// The same object changed (`C_SetAttributeValue`): the application's handle stays valid.
    Kept,
    /// Another object took its place (`C_CreateObject`): a new handle, the old one invalid.
    New,
}

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

/// A file to create on the card: its slot, then its content.
struct NewFile<'a> {
    id: &'a [u8],
    label: Option<&'a [u8]>,
    usage: u8,
}

impl NewFile<'_> {
    fn write(&self, ch: &mut AppletChannel<'_>, value: &[u8]) -> applet::Result<()> {
        let size = u16::try_from(value.len()).map_err(|_| applet::AppletError::ObjectTooLarge)?;
        let mut info = Vec::new();
        if let Some(l) = self.label {
            tlv::push(&mut info, 0x73, l);
        }
        tlv::push(&mut info, 0x83, self.id);
        tlv::push(&mut info, 0x21, &[self.usage]);
        tlv::push(&mut info, 0x20, &size.to_be_bytes());
        ch.store_data(CREATE_FILE, &info, false)?;
        update_file(ch, self.id, value)
    }
}

/// Replaces the content of file `id` (the card applies it on the last block only).
fn update_file(ch: &mut AppletChannel<'_>, id: &[u8], value: &[u8]) -> applet::Result<()> {
    ch.store_data(SELECT_OBJECT, &reference(0x83, id), false)?;
    ch.store_data(UPDATE_FILE, value, false)?;
    Ok(())
}

/// The card names files by label too, so a label another file has is refused before any
/// write (`CKR_ATTRIBUTE_VALUE_INVALID`); `except` is the file being relabelled.
fn check_label_free(token: &Token, label: Option<&[u8]>, except: Option<&[u8]>) -> Result<()> {
    let Some(label) = label else { return Ok(()) };
    let taken = token.card_objects().into_iter().any(|o| {
        o.info.class() == ObjectClass::File
            && o.info.label.as_deref() == Some(label)
            && o.info.id.as_deref() != except
    });
    if taken {
        return Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "another file on the card has this label, and the card needs labels to be unique",
        ));
    }
    Ok(())
}

/// Whether a key pair on the token has public point `point`.
fn pairs_with_key(token: &Token, point: &[u8; 65]) -> bool {
    token.objects().iter().any(|o| {
        matches!(o.class, CKO_PRIVATE_KEY | CKO_PUBLIC_KEY) && o.point.as_ref() == Some(point)
    })
}
