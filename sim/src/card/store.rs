//! STORE DATA (`80 E2`): the local provisioning profile of
//! `shared/reference/provisioning-profile.md`.
//!
//! One BER-TLV per command sequence, its tag the sub-command, split over blocks (P2 = block
//! number from 0, P1 `80` on the last block, P1 `01` = response data may follow). A
//! sequence is applied on its last block only; another command on the channel, a wrong
//! block number or a power cycle cuts it and nothing changes. `7E` (select and read file)
//! is the exception: every block is a whole `7E` TLV and returns the next piece.

use p256::elliptic_curve::sec1::ToSec1Point;

use super::remote::{changed_objects, object_attrs, object_refs, remove_object};
use super::*;

/// STORE DATA state of a channel between blocks.
#[derive(Debug, Clone)]
pub(super) enum StoreState {
    /// Blocks of one BER-TLV being collected; applied on the last block.
    Collect {
        next_block: u8,
        total: usize,
        buf: Vec<u8>,
    },
    /// `7E` select and read file: pieces being returned.
    Read {
        next_block: u8,
        id: Vec<u8>,
        offset: usize,
        interrupted: bool,
    },
}

/// The object selected on a channel by `75` (or `7E`).
#[derive(Debug, Clone)]
pub(super) struct Selected {
    pub(super) class: ObjectClass,
    pub(super) id: Vec<u8>,
    /// Changed since it was selected (remote session, another channel): next use → `6989`.
    pub(super) interrupted: bool,
}

/// P1 bit 8: last block.
const P1_LAST: u8 = 0x80;
/// P1 bit 1: response data may follow.
const P1_RESPONSE: u8 = 0x01;
/// P1 bits accepted: last block, GlobalPlatform "BER-TLV structure" (b7 b6 = `10`),
/// response data.
const P1_ALLOWED: u8 = P1_LAST | 0x40 | P1_RESPONSE;

/// Parses a BER-TLV header: `(tag, header length, value length)`.
fn header(data: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *data.first()?;
    match *data.get(1)? {
        b if b < 0x80 => Some((tag, 2, b as usize)),
        0x81 => Some((tag, 3, *data.get(2)? as usize)),
        0x82 => Some((
            tag,
            4,
            ((*data.get(2)? as usize) << 8) | *data.get(3)? as usize,
        )),
        _ => None,
    }
}

/// An optional one-byte field.
fn byte(t: &[Tlv<'_>], tag: u8) -> Result<Option<u8>, u16> {
    match get(t, tag) {
        None => Ok(None),
        Some([b]) => Ok(Some(*b)),
        Some(_) => Err(sw::WRONG_DATA),
    }
}

/// An ID or label: 1..127 bytes.
fn reference(v: &[u8]) -> Result<&[u8], u16> {
    if v.is_empty() || v.len() > 127 {
        return Err(sw::WRONG_DATA);
    }
    Ok(v)
}

fn mandatory_ref<'a>(t: &[Tlv<'a>], tag: u8) -> Result<&'a [u8], u16> {
    reference(get(t, tag).ok_or(sw::WRONG_DATA)?)
}

fn optional_ref<'a>(t: &[Tlv<'a>], tag: u8) -> Result<Option<&'a [u8]>, u16> {
    get(t, tag).map(reference).transpose()
}

/// Key types the simulator can create: `13` persistent, `14` volatile NIST P-256.
fn key_type(b: u8) -> Result<u8, u16> {
    match b {
        KEY_TYPE_P256_PERSISTENT | KEY_TYPE_P256_VOLATILE => Ok(b),
        _ => Err(sw::WRONG_DATA),
    }
}

/// Defaults `(crypto functions, signature algos, hash algos, key agreement algos)` of a
/// device-created private key.
fn private_defaults(kt: u8) -> (u8, u8, u16, u8) {
    if is_persistent_key_type(kt) {
        (
            CF_SIGNATURE | CF_KEY_GENERATION | CF_KEY_AGREEMENT,
            SIG_ECDSA,
            0x0007,
            KA_ECKA,
        )
    } else {
        (CF_KEY_GENERATION | CF_KEY_AGREEMENT, 0x00, 0x0000, KA_ECKA)
    }
}

/// A single reference TLV (`73/74/75/83/84/85`) of `75` / `76`. Secret-key references
/// (`76`/`86`) → `6985` (IoT.04 I9).
fn class_ref(value: &[u8]) -> Result<(ObjectClass, ObjRef<'_>), u16> {
    let t = tlv::parse(value, &[]).map_err(|_| sw::WRONG_DATA)?;
    let [x] = t[..] else {
        return Err(sw::WRONG_DATA);
    };
    let v = reference(x.value)?;
    Ok(match x.tag {
        0x84 => (ObjectClass::PrivateKey, ObjRef::Id(v)),
        0x74 => (ObjectClass::PrivateKey, ObjRef::Label(v)),
        0x85 => (ObjectClass::PublicKey, ObjRef::Id(v)),
        0x75 => (ObjectClass::PublicKey, ObjRef::Label(v)),
        0x83 => (ObjectClass::File, ObjRef::Id(v)),
        0x73 => (ObjectClass::File, ObjRef::Label(v)),
        0x86 | 0x76 => return Err(sw::CONDITIONS),
        _ => return Err(sw::WRONG_DATA),
    })
}

impl Card {
    /// STORE DATA entry point.
    pub(super) fn store_data(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        if !self.profile.provisioning {
            return Err(sw::INS_NOT_SUPPORTED);
        }
        // Any error ends the sequence: the state is only put back by a successful block.
        let state = self.chan(ch).store.take();
        if a.p1 & !P1_ALLOWED != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !a.has_lc {
            return Err(sw::WRONG_LENGTH);
        }
        let last = a.p1 & P1_LAST != 0;
        let block = a.p2;
        let read_continues = matches!(&state, Some(StoreState::Read { next_block, .. }) if *next_block == block)
            && a.data == [0x7E, 0x00];
        if read_continues {
            let Some(StoreState::Read {
                id,
                offset,
                interrupted,
                ..
            }) = state
            else {
                return Err(sw::WRONG_P1P2);
            };
            return self.read_piece(ch, id, offset, interrupted, block, last, a);
        }
        if block == 0 {
            let (tag, hdr, len) = header(a.data).ok_or(sw::WRONG_DATA)?;
            match tag {
                0x7E => {
                    if a.data.len() != hdr + len {
                        return Err(sw::WRONG_DATA);
                    }
                    return self.read_start(ch, &a.data[hdr..], last, a);
                }
                0x73 => return Err(sw::CONDITIONS),
                0x71 | 0x72 | 0x74..=0x7A | 0x7F => {}
                _ => return Err(sw::WRONG_DATA),
            }
            let total = hdr + len;
            if a.data.len() > total {
                return Err(sw::WRONG_DATA);
            }
            return self.collect(ch, a, 0, total, a.data.to_vec());
        }
        match state {
            Some(StoreState::Collect {
                next_block,
                total,
                mut buf,
            }) if next_block == block => {
                if buf.len() + a.data.len() > total {
                    return Err(sw::WRONG_DATA);
                }
                buf.extend_from_slice(a.data);
                self.collect(ch, a, block, total, buf)
            }
            Some(StoreState::Read { .. }) => Err(sw::WRONG_DATA),
            _ => Err(sw::WRONG_P1P2),
        }
    }

    fn collect(
        &mut self,
        ch: usize,
        a: &Apdu<'_>,
        block: u8,
        total: usize,
        buf: Vec<u8>,
    ) -> CmdResult {
        if a.p1 & P1_LAST == 0 {
            if block == 0xFF {
                return Err(sw::WRONG_P1P2);
            }
            self.chan(ch).store = Some(StoreState::Collect {
                next_block: block + 1,
                total,
                buf,
            });
            return Ok(Reply::ok());
        }
        if buf.len() != total {
            return Err(sw::WRONG_DATA);
        }
        let (tag, hdr, _) = header(&buf).ok_or(sw::WRONG_DATA)?;
        let value = &buf[hdr..];
        let want_response = a.p1 & P1_RESPONSE != 0;
        match tag {
            0x71 => self.sd_create_key_pair(value, want_response),
            0x72 => self.sd_create_key_slot(ObjectClass::PrivateKey, value),
            0x78 => self.sd_create_key_slot(ObjectClass::PublicKey, value),
            0x74 => self.sd_create_file(value),
            0x75 => self.sd_select(ch, value),
            0x76 => self.sd_delete(ch, value),
            0x77 => self.sd_update_file(ch, value),
            0x79 => self.sd_update_public_key(ch, value),
            0x7A => self.sd_read_public_key(ch, value),
            0x7F => self.sd_reset_store(ch, value),
            _ => Err(sw::WRONG_DATA),
        }
    }

    // ------------------------------------------------------------ helpers

    /// Remote check (`6984`) and lookup (`6A82`) of a reference; returns the object's ID.
    fn resolve(&self, class: ObjectClass, r: &ObjRef<'_>) -> Result<Vec<u8>, u16> {
        self.remote_check(class, r)?;
        object_refs(&self.profile, class)
            .into_iter()
            .find(|(id, label)| match r {
                ObjRef::Id(x) => x == id,
                ObjRef::Label(x) => *label == Some(*x),
            })
            .map(|(id, _)| id.to_vec())
            .ok_or(sw::NOT_FOUND)
    }

    /// Checks a new object: remote session (`6984`), ID/label unique in its class
    /// (`6A80`), class capacity from the application information (`6989`).
    fn check_new(&self, class: ObjectClass, id: &[u8], label: Option<&[u8]>) -> Result<(), u16> {
        self.remote_check(class, &ObjRef::Id(id))?;
        if let Some(l) = label {
            self.remote_check(class, &ObjRef::Label(l))?;
        }
        let refs = object_refs(&self.profile, class);
        if refs
            .iter()
            .any(|(i, l)| *i == id || (label.is_some() && *l == label))
        {
            return Err(sw::WRONG_DATA);
        }
        let ai = &self.profile.app_info;
        let max = match class {
            ObjectClass::PrivateKey => ai.max_private_keys,
            ObjectClass::PublicKey => ai.max_public_keys,
            ObjectClass::File => ai.max_files,
            ObjectClass::SecretKey => ai.max_secret_keys,
        };
        if refs.len() >= max as usize {
            return Err(sw::CAPACITY);
        }
        Ok(())
    }

    /// The access rule: the device may replace or delete objects it created, and factory
    /// objects as `factory_objects` says; secret keys never (`6985`).
    fn check_device_may_change(&self, class: ObjectClass, id: &[u8]) -> Result<(), u16> {
        if class == ObjectClass::SecretKey {
            return Err(sw::CONDITIONS);
        }
        if self.profile.is_device_object(class, id) {
            return Ok(());
        }
        let access = object_attrs(&self.profile, class, id)
            .map(|(_, a)| a)
            .ok_or(sw::NOT_FOUND)?;
        let allowed = match self.profile.factory_objects {
            FactoryObjects::Protected => false,
            FactoryObjects::Writable => true,
            FactoryObjects::UpdateAccess => access & ACCESS_UPDATE != 0,
        };
        if allowed { Ok(()) } else { Err(sw::CONDITIONS) }
    }

    /// The object selected on the channel, which must be of `class` (`6985`), not being
    /// updated remotely (`6984`), not changed since its selection (`6989`) and still there
    /// (`6A82`).
    fn selected_object(&mut self, ch: usize, class: ObjectClass) -> Result<Vec<u8>, u16> {
        let sel = self.chan(ch).selected.clone().ok_or(sw::CONDITIONS)?;
        if sel.class != class {
            return Err(sw::CONDITIONS);
        }
        if self.remote_has(class, &sel.id) {
            return Err(sw::REMOTE_UPDATING);
        }
        if sel.interrupted {
            self.chan(ch).selected = None;
            return Err(sw::CAPACITY);
        }
        if object_attrs(&self.profile, class, &sel.id).is_none() {
            return Err(sw::NOT_FOUND);
        }
        Ok(sel.id)
    }

    /// Bytes taken by files: content, or the slot size if larger.
    fn file_bytes_used(&self, except: Option<&[u8]>) -> usize {
        self.profile
            .files
            .iter()
            .filter(|f| Some(&f.id[..]) != except)
            .map(|f| {
                f.content
                    .len()
                    .max(self.slot_size(&f.id).unwrap_or(0) as usize)
            })
            .sum()
    }

    fn slot_size(&self, id: &[u8]) -> Option<u16> {
        self.profile
            .device_object(ObjectClass::File, id)
            .and_then(|d| d.slot_size)
    }

    fn fits_store(&self, except: Option<&[u8]>, size: usize) -> bool {
        let cap = self.profile.store_size as usize;
        cap == 0 || self.file_bytes_used(except) + size <= cap
    }

    /// File information as listed: an empty device-created slot shows its slot size in
    /// tag `20`.
    pub(super) fn listed_file_info(&self, f: &File) -> Vec<u8> {
        let mut v = file_info(f);
        if f.content.is_empty()
            && let Some(s) = self.slot_size(&f.id)
        {
            let n = v.len();
            v[n - 2..].copy_from_slice(&s.to_be_bytes());
        }
        v
    }

    fn record_device_object(
        &mut self,
        class: ObjectClass,
        id: &[u8],
        slot_size: Option<u16>,
        public_id: Option<Vec<u8>>,
    ) {
        self.profile
            .device_objects
            .retain(|d| !(d.class == class && d.id == id));
        self.profile.device_objects.push(DeviceObject {
            class,
            id: id.to_vec(),
            slot_size,
            public_id,
        });
    }

    // ------------------------------------------------------------ sub-commands

    /// `71`: create an ECC key pair (`74`? `84` `75`? `85` `48`).
    fn sd_create_key_pair(&mut self, value: &[u8], want_response: bool) -> CmdResult {
        let t = fields(value, &[0x74, 0x84, 0x75, 0x85, 0x48])?;
        let priv_id = mandatory_ref(&t, 0x84)?;
        let pub_id = mandatory_ref(&t, 0x85)?;
        let priv_label = optional_ref(&t, 0x74)?;
        let pub_label = optional_ref(&t, 0x75)?;
        let kt = key_type(byte(&t, 0x48)?.ok_or(sw::WRONG_DATA)?)?;
        self.check_new(ObjectClass::PrivateKey, priv_id, priv_label)?;
        self.check_new(ObjectClass::PublicKey, pub_id, pub_label)?;
        let persistent = is_persistent_key_type(kt);
        let (scalar, point) = if persistent {
            let sk = random_secret_key().ok_or(sw::UNKNOWN)?;
            let point = sk.public_key().to_sec1_point(false).as_bytes().to_vec();
            (Some(sk.to_bytes().to_vec()), Some(point))
        } else {
            (None, None)
        };
        let state = if persistent {
            ObjectState::Activated
        } else {
            ObjectState::Deactivated
        };
        let (cf, sig, hash, ka) = private_defaults(kt);
        self.profile.private_keys.push(PrivateKey {
            id: priv_id.to_vec(),
            label: priv_label.map(<[u8]>::to_vec),
            key_type: kt,
            state,
            access: ACCESS_UPDATE,
            usage: 0x01,
            crypto_functions: cf,
            signature_algos: sig,
            hash_algos: hash,
            key_agreement_algos: ka,
            private: scalar,
        });
        self.profile.public_keys.push(PublicKey {
            id: pub_id.to_vec(),
            label: pub_label.map(<[u8]>::to_vec),
            key_type: kt,
            state,
            access: ACCESS_READ,
            usage: 0x01,
            crypto_functions: cf,
            signature_algos: sig,
            hash_algos: hash,
            key_agreement_algos: ka,
            point: point.clone(),
        });
        let paired = (pub_id != priv_id).then(|| pub_id.to_vec());
        self.record_device_object(ObjectClass::PrivateKey, priv_id, None, paired);
        self.record_device_object(ObjectClass::PublicKey, pub_id, None, None);
        self.content_changed(true);
        match point {
            Some(point) if want_response => {
                let mut out = Vec::new();
                tlv::push(&mut out, 0x84, priv_id);
                tlv::push(&mut out, 0x85, pub_id);
                out.extend_from_slice(&public_key_format(&point));
                Ok(Reply::data(out))
            }
            _ => Ok(Reply::ok()),
        }
    }

    /// `72` / `78`: create an empty private-/public-key object from a key information
    /// structure (`74|75`? `84|85` `60`? `4A`? `4B` `4E`? `61`? `92`? `91`? `6F`?).
    fn sd_create_key_slot(&mut self, class: ObjectClass, value: &[u8]) -> CmdResult {
        let private = class == ObjectClass::PrivateKey;
        let (label_tag, id_tag) = if private { (0x74, 0x84) } else { (0x75, 0x85) };
        let t = fields(
            value,
            &[
                label_tag, id_tag, 0x60, 0x4A, 0x4B, 0x4E, 0x61, 0x92, 0x91, 0x6F,
            ],
        )?;
        let id = mandatory_ref(&t, id_tag)?;
        let label = optional_ref(&t, label_tag)?;
        let kt = key_type(byte(&t, 0x4B)?.ok_or(sw::WRONG_DATA)?)?;
        if !matches!(byte(&t, 0x4A)?, None | Some(0x00 | 0x01)) {
            return Err(sw::WRONG_DATA);
        }
        let (dcf, dsig, dhash, dka) = if private {
            private_defaults(kt)
        } else {
            (CF_SIGNATURE | CF_KEY_AGREEMENT, SIG_ECDSA, 0x0007, KA_ECKA)
        };
        let access = byte(&t, 0x60)?.unwrap_or(if private {
            ACCESS_UPDATE
        } else {
            ACCESS_READ | ACCESS_UPDATE
        });
        let usage = byte(&t, 0x4E)?.unwrap_or(0x01);
        let cf = byte(&t, 0x61)?.unwrap_or(dcf);
        let sig = byte(&t, 0x92)?.unwrap_or(dsig);
        let ka = byte(&t, 0x6F)?.unwrap_or(dka);
        let hash = match get(&t, 0x91) {
            None => dhash,
            Some([b]) => *b as u16,
            Some([h, l]) => u16::from_be_bytes([*h, *l]),
            Some(_) => return Err(sw::WRONG_DATA),
        };
        self.check_new(class, id, label)?;
        let label = label.map(<[u8]>::to_vec);
        if private {
            self.profile.private_keys.push(PrivateKey {
                id: id.to_vec(),
                label,
                key_type: kt,
                state: ObjectState::Deactivated,
                access,
                usage,
                crypto_functions: cf,
                signature_algos: sig,
                hash_algos: hash,
                key_agreement_algos: ka,
                private: None,
            });
        } else {
            self.profile.public_keys.push(PublicKey {
                id: id.to_vec(),
                label,
                key_type: kt,
                state: ObjectState::Deactivated,
                access,
                usage,
                crypto_functions: cf,
                signature_algos: sig,
                hash_algos: hash,
                key_agreement_algos: ka,
                point: None,
            });
        }
        self.record_device_object(class, id, None, None);
        self.content_changed(true);
        Ok(Reply::ok())
    }

    /// `74`: create an empty file slot (`73`? `83` `60`? `4A`? `21` `20`).
    fn sd_create_file(&mut self, value: &[u8]) -> CmdResult {
        let t = fields(value, &[0x73, 0x83, 0x60, 0x4A, 0x21, 0x20])?;
        let id = mandatory_ref(&t, 0x83)?;
        let label = optional_ref(&t, 0x73)?;
        let usage = byte(&t, 0x21)?.ok_or(sw::WRONG_DATA)?;
        if !matches!(usage, FILE_USAGE_GENERAL | FILE_USAGE_CERTIFICATE) {
            return Err(sw::WRONG_DATA);
        }
        let size = match get(&t, 0x20) {
            Some([s]) => *s as u16,
            Some([h, l]) => u16::from_be_bytes([*h, *l]),
            _ => return Err(sw::WRONG_DATA),
        };
        if !matches!(byte(&t, 0x4A)?, None | Some(0x00 | 0x01)) {
            return Err(sw::WRONG_DATA);
        }
        let access = byte(&t, 0x60)?.unwrap_or(ACCESS_READ);
        self.check_new(ObjectClass::File, id, label)?;
        if !self.fits_store(None, size as usize) {
            return Err(sw::NO_MEMORY);
        }
        self.profile.files.push(File {
            id: id.to_vec(),
            label: label.map(<[u8]>::to_vec),
            usage,
            state: ObjectState::Deactivated,
            access,
            content: Vec::new(),
        });
        self.record_device_object(ObjectClass::File, id, Some(size), None);
        self.content_changed(true);
        Ok(Reply::ok())
    }

    /// `75`: select an object for `77` / `79` / `7A`.
    fn sd_select(&mut self, ch: usize, value: &[u8]) -> CmdResult {
        let (class, r) = class_ref(value)?;
        let id = self.resolve(class, &r)?;
        self.chan(ch).selected = Some(Selected {
            class,
            id,
            interrupted: false,
        });
        Ok(Reply::ok())
    }

    /// `76`: delete an object.
    fn sd_delete(&mut self, ch: usize, value: &[u8]) -> CmdResult {
        let (class, r) = class_ref(value)?;
        let id = self.resolve(class, &r)?;
        self.check_device_may_change(class, &id)?;
        remove_object(&mut self.profile, class, &id);
        self.mark_interrupted(&[(class, id)], Some(ch));
        self.content_changed(true);
        Ok(Reply::ok())
    }

    /// `77`: replace the selected file's content (activated; deactivated if empty).
    fn sd_update_file(&mut self, ch: usize, value: &[u8]) -> CmdResult {
        let id = self.selected_object(ch, ObjectClass::File)?;
        self.check_device_may_change(ObjectClass::File, &id)?;
        if value.len() > 0xFFFF
            || self
                .slot_size(&id)
                .is_some_and(|s| value.len() > s as usize)
        {
            return Err(sw::NO_MEMORY);
        }
        let reserved = value.len().max(self.slot_size(&id).unwrap_or(0) as usize);
        if !self.fits_store(Some(&id), reserved) {
            return Err(sw::NO_MEMORY);
        }
        let f = self
            .profile
            .files
            .iter_mut()
            .find(|f| f.id == id)
            .ok_or(sw::NOT_FOUND)?;
        f.content = value.to_vec();
        f.state = if value.is_empty() {
            ObjectState::Deactivated
        } else {
            ObjectState::Activated
        };
        self.mark_interrupted(&[(ObjectClass::File, id)], Some(ch));
        self.content_changed(true);
        Ok(Reply::ok())
    }

    /// `79`: write the selected public key (`34 L 49 L 86 L 04‖X‖Y`, also `34 L 86 L …`).
    fn sd_update_public_key(&mut self, ch: usize, value: &[u8]) -> CmdResult {
        let point = parse_public_key_format(value).ok_or(sw::WRONG_DATA)?;
        if point.len() != 65 || p256::PublicKey::from_sec1_bytes(&point).is_err() {
            return Err(sw::WRONG_DATA);
        }
        let id = self.selected_object(ch, ObjectClass::PublicKey)?;
        self.check_device_may_change(ObjectClass::PublicKey, &id)?;
        let k = self
            .profile
            .public_keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or(sw::NOT_FOUND)?;
        k.point = Some(point);
        k.state = ObjectState::Activated;
        self.mark_interrupted(&[(ObjectClass::PublicKey, id)], Some(ch));
        self.content_changed(true);
        Ok(Reply::ok())
    }

    /// `7A`: the selected public key's point `04‖X‖Y`.
    fn sd_read_public_key(&mut self, ch: usize, value: &[u8]) -> CmdResult {
        if !value.is_empty() {
            return Err(sw::WRONG_DATA);
        }
        let id = self.selected_object(ch, ObjectClass::PublicKey)?;
        let k = self.profile.public_key(&id).ok_or(sw::NOT_FOUND)?;
        if k.state != ObjectState::Activated || k.access & ACCESS_READ == 0 {
            return Err(sw::CONDITIONS);
        }
        let point = k.point.clone().ok_or(sw::CONDITIONS)?;
        Ok(Reply::data(point))
    }

    /// `7F`: back to the installed state (`clearall`); secret keys are left alone.
    fn sd_reset_store(&mut self, ch: usize, value: &[u8]) -> CmdResult {
        if value != b"clearall" {
            return Err(sw::WRONG_DATA);
        }
        if self.remote.is_some() {
            return Err(sw::REMOTE_UPDATING);
        }
        let before = self.profile.clone();
        let inst = &self.installed;
        self.profile.private_keys = inst.private_keys.clone();
        self.profile.public_keys = inst.public_keys.clone();
        self.profile.files = inst.files.clone();
        // Secret keys are not the device's to change (IoT.04 I9): they stay as they are.
        self.profile.device_objects.clear();
        let changed = changed_objects(&before, &self.profile);
        self.mark_interrupted(&changed, Some(ch));
        self.chan(ch).selected = None;
        self.content_changed(true);
        Ok(Reply::ok())
    }

    // ------------------------------------------------------------ 7E select and read file

    fn read_start(&mut self, ch: usize, value: &[u8], last: bool, a: &Apdu<'_>) -> CmdResult {
        let t = tlv::parse(value, &[]).map_err(|_| sw::WRONG_DATA)?;
        let [x] = t[..] else {
            return Err(sw::WRONG_DATA);
        };
        let v = reference(x.value)?;
        let r = match x.tag {
            0x83 => ObjRef::Id(v),
            0x73 => ObjRef::Label(v),
            _ => return Err(sw::WRONG_DATA),
        };
        let id = self.resolve(ObjectClass::File, &r)?;
        self.chan(ch).selected = Some(Selected {
            class: ObjectClass::File,
            id: id.clone(),
            interrupted: false,
        });
        self.read_piece(ch, id, 0, false, 0, last, a)
    }

    /// Returns the next piece (up to 256 bytes, or Le); an empty piece or P1 `80` ends
    /// the read.
    #[allow(clippy::too_many_arguments)]
    fn read_piece(
        &mut self,
        ch: usize,
        id: Vec<u8>,
        offset: usize,
        interrupted: bool,
        block: u8,
        last: bool,
        a: &Apdu<'_>,
    ) -> CmdResult {
        if self.remote_has(ObjectClass::File, &id) {
            return Err(sw::REMOTE_UPDATING);
        }
        if interrupted {
            return Err(sw::CAPACITY);
        }
        let f = self.profile.file(&id).ok_or(sw::NOT_FOUND)?;
        if f.state != ObjectState::Activated || f.access & ACCESS_READ == 0 {
            return Err(sw::CONDITIONS);
        }
        let offset = offset.min(f.content.len());
        let n = (f.content.len() - offset)
            .min(256)
            .min(a.le_len().unwrap_or(256));
        let piece = f.content[offset..offset + n].to_vec();
        if n > 0 && !last {
            self.chan(ch).store = Some(StoreState::Read {
                next_block: block.wrapping_add(1),
                id,
                offset: offset + n,
                interrupted: false,
            });
        }
        Ok(Reply::free(piece))
    }
}
