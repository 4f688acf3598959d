//! IoT.04 G4 remote management sessions: the administration side (standing in for the OTA
//! security service) changes objects while the device keeps working.
//!
//! During a session the objects it updates are *targets*: device commands referencing them
//! answer `6984`, everything else works and sees the old content (changes are staged and
//! applied by [`Card::remote_end`]). After the end, every channel that was open answers its
//! next successful applet command with `63CF` instead of `9000`, and multi-APDU operations
//! on a target that were started before answer `6989`.

use p256::elliptic_curve::sec1::ToSec1Point;

use super::*;

/// A running remote management session.
#[derive(Debug, Clone)]
pub(super) struct RemoteSession {
    /// Objects being updated: the one named by `remote_begin`, plus every object an
    /// operation of the session touched.
    targets: Vec<(ObjectClass, Vec<u8>)>,
    /// The content as it will be after the session (only targets differ from the card).
    staged: Profile,
}

/// `(label, access)` of an object.
pub(super) fn object_attrs<'a>(
    p: &'a Profile,
    class: ObjectClass,
    id: &[u8],
) -> Option<(Option<&'a [u8]>, u8)> {
    match class {
        ObjectClass::PrivateKey => p.private_key(id).map(|o| (o.label.as_deref(), o.access)),
        ObjectClass::PublicKey => p.public_key(id).map(|o| (o.label.as_deref(), o.access)),
        ObjectClass::File => p.file(id).map(|o| (o.label.as_deref(), o.access)),
        ObjectClass::SecretKey => p.secret_key(id).map(|o| (o.label.as_deref(), o.access)),
    }
}

/// IDs and labels of all objects of a class.
pub(super) fn object_refs(p: &Profile, class: ObjectClass) -> Vec<(&[u8], Option<&[u8]>)> {
    match class {
        ObjectClass::PrivateKey => p
            .private_keys
            .iter()
            .map(|o| (&o.id[..], o.label.as_deref()))
            .collect(),
        ObjectClass::PublicKey => p
            .public_keys
            .iter()
            .map(|o| (&o.id[..], o.label.as_deref()))
            .collect(),
        ObjectClass::File => p
            .files
            .iter()
            .map(|o| (&o.id[..], o.label.as_deref()))
            .collect(),
        ObjectClass::SecretKey => p
            .secret_keys
            .iter()
            .map(|o| (&o.id[..], o.label.as_deref()))
            .collect(),
    }
}

/// Removes an object; `false` if there was none.
pub(super) fn remove_object(p: &mut Profile, class: ObjectClass, id: &[u8]) -> bool {
    fn rm<T>(v: &mut Vec<T>, id: &[u8], get: fn(&T) -> &[u8]) -> bool {
        let n = v.len();
        v.retain(|o| get(o) != id);
        v.len() != n
    }
    let removed = match class {
        ObjectClass::PrivateKey => rm(&mut p.private_keys, id, |o| &o.id),
        ObjectClass::PublicKey => rm(&mut p.public_keys, id, |o| &o.id),
        ObjectClass::File => rm(&mut p.files, id, |o| &o.id),
        ObjectClass::SecretKey => rm(&mut p.secret_keys, id, |o| &o.id),
    };
    p.device_objects
        .retain(|d| !(d.class == class && d.id == id));
    removed
}

/// Copies the object `(class, id)` (and its device-object entry) from `from` into `to`:
/// replaced in place, appended, or removed when `from` has none.
fn copy_object(from: &Profile, to: &mut Profile, class: ObjectClass, id: &[u8]) {
    fn put<T: Clone>(to: &mut Vec<T>, from: &[T], id: &[u8], get: fn(&T) -> &[u8]) {
        match (
            from.iter().find(|o| get(o) == id),
            to.iter().position(|o| get(o) == id),
        ) {
            (Some(o), Some(i)) => to[i] = o.clone(),
            (Some(o), None) => to.push(o.clone()),
            (None, Some(i)) => {
                to.remove(i);
            }
            (None, None) => {}
        }
    }
    match class {
        ObjectClass::PrivateKey => put(&mut to.private_keys, &from.private_keys, id, |o| &o.id),
        ObjectClass::PublicKey => put(&mut to.public_keys, &from.public_keys, id, |o| &o.id),
        ObjectClass::File => put(&mut to.files, &from.files, id, |o| &o.id),
        ObjectClass::SecretKey => put(&mut to.secret_keys, &from.secret_keys, id, |o| &o.id),
    }
    to.device_objects
        .retain(|d| !(d.class == class && d.id == id));
    if let Some(d) = from.device_object(class, id) {
        to.device_objects.push(d.clone());
    }
}

/// The objects that differ between two profiles (changed, added or removed).
pub(super) fn changed_objects(a: &Profile, b: &Profile) -> Vec<(ObjectClass, Vec<u8>)> {
    fn diff<T: PartialEq>(
        class: ObjectClass,
        a: &[T],
        b: &[T],
        get: fn(&T) -> &[u8],
        out: &mut Vec<(ObjectClass, Vec<u8>)>,
    ) {
        for x in a {
            match b.iter().find(|y| get(y) == get(x)) {
                Some(y) if y == x => {}
                _ => out.push((class, get(x).to_vec())),
            }
        }
        for y in b {
            if !a.iter().any(|x| get(x) == get(y)) {
                out.push((class, get(y).to_vec()));
            }
        }
    }
    let mut out = Vec::new();
    diff(
        ObjectClass::PrivateKey,
        &a.private_keys,
        &b.private_keys,
        |o| &o.id,
        &mut out,
    );
    diff(
        ObjectClass::PublicKey,
        &a.public_keys,
        &b.public_keys,
        |o| &o.id,
        &mut out,
    );
    diff(ObjectClass::File, &a.files, &b.files, |o| &o.id, &mut out);
    diff(
        ObjectClass::SecretKey,
        &a.secret_keys,
        &b.secret_keys,
        |o| &o.id,
        &mut out,
    );
    out
}

fn check_ref(what: &str, v: &[u8]) -> Result<(), String> {
    if v.is_empty() || v.len() > 127 {
        return Err(format!("{what} must be 1..127 bytes"));
    }
    Ok(())
}

fn check_secret(value: &[u8]) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_SECRET_LEN {
        return Err(format!("secret value must be 1..{MAX_SECRET_LEN} bytes"));
    }
    Ok(())
}

impl RemoteSession {
    fn add_target(&mut self, class: ObjectClass, id: &[u8]) {
        if !self.targets.iter().any(|(c, i)| *c == class && i == id) {
            self.targets.push((class, id.to_vec()));
        }
    }
}

impl Card {
    /// Whether `(class, id)` is being updated by a running remote session.
    pub(super) fn remote_has(&self, class: ObjectClass, id: &[u8]) -> bool {
        self.remote
            .as_ref()
            .is_some_and(|rs| rs.targets.iter().any(|(c, i)| *c == class && i == id))
    }

    /// `6984` if a device reference (by ID or label) names an object being updated by a
    /// running remote session (its label before or after the update).
    pub(super) fn remote_check(&self, class: ObjectClass, r: &ObjRef<'_>) -> Result<(), u16> {
        let Some(rs) = &self.remote else {
            return Ok(());
        };
        for (c, id) in &rs.targets {
            if *c != class {
                continue;
            }
            let hit = match r {
                ObjRef::Id(x) => *x == &id[..],
                ObjRef::Label(l) => [&self.profile, &rs.staged].iter().any(|p| {
                    object_attrs(p, class, id).is_some_and(|(label, _)| label == Some(*l))
                }),
            };
            if hit {
                return Err(sw::REMOTE_UPDATING);
            }
        }
        Ok(())
    }

    /// Marks multi-APDU operations on the given objects as interrupted (their next step
    /// answers `6989`): open sign/verify/put-key sessions and STORE DATA `7E` reads on every
    /// channel, and STORE DATA selections on every channel but `acting`.
    pub(super) fn mark_interrupted(
        &mut self,
        objects: &[(ObjectClass, Vec<u8>)],
        acting: Option<usize>,
    ) {
        let hit =
            |class: ObjectClass, id: &[u8]| objects.iter().any(|(c, i)| *c == class && i == id);
        for (n, c) in self.channels.iter_mut().enumerate() {
            let Some(c) = c else { continue };
            let keys: Vec<(SessionKind, u8)> = c
                .sessions
                .iter()
                .filter(|(k, s)| hit(k.0.class(), s.key_id()))
                .map(|(k, _)| *k)
                .collect();
            c.interrupted.extend(keys);
            if let Some(StoreState::Read {
                id, interrupted, ..
            }) = &mut c.store
                && hit(ObjectClass::File, id)
            {
                *interrupted = true;
            }
            if Some(n) != acting
                && let Some(sel) = &mut c.selected
                && hit(sel.class, &sel.id)
            {
                sel.interrupted = true;
            }
        }
    }

    fn remote_mut(&mut self) -> Result<&mut RemoteSession, String> {
        self.remote
            .as_mut()
            .ok_or_else(|| "no remote session (remote-begin first)".to_string())
    }

    /// Begins a remote management session that updates `(class, id)` (which need not exist
    /// yet, e.g. for [`Card::remote_add_file`]). From now on device commands referencing it
    /// answer `6984`. One session at a time.
    pub fn remote_begin(&mut self, class: ObjectClass, id: &[u8]) -> Result<(), String> {
        if self.remote.is_some() {
            return Err("a remote session is already running".into());
        }
        check_ref("id", id)?;
        self.remote = Some(RemoteSession {
            targets: vec![(class, id.to_vec())],
            staged: self.profile.clone(),
        });
        Ok(())
    }

    /// The targets of the running remote session, if one runs.
    pub fn remote_session(&self) -> Option<Vec<(ObjectClass, Vec<u8>)>> {
        self.remote.as_ref().map(|rs| rs.targets.clone())
    }

    /// Replaces the content of file `id` (activated; deactivated if empty).
    pub fn remote_replace_file(&mut self, id: &[u8], content: Vec<u8>) -> Result<(), String> {
        if content.len() > 0xFFFF {
            return Err("file larger than 65535 bytes".into());
        }
        let rs = self.remote_mut()?;
        let len = content.len();
        let f = rs
            .staged
            .files
            .iter_mut()
            .find(|f| f.id == id)
            .ok_or_else(|| format!("no file {}", hex::encode_upper(id)))?;
        f.state = if content.is_empty() {
            ObjectState::Deactivated
        } else {
            ObjectState::Activated
        };
        f.content = content;
        if let Some(d) = rs
            .staged
            .device_objects
            .iter_mut()
            .find(|d| d.class == ObjectClass::File && d.id == id)
            && let Some(s) = d.slot_size
        {
            d.slot_size = Some(s.max(len as u16));
        }
        rs.add_target(ObjectClass::File, id);
        Ok(())
    }

    /// Gives private key `id` a new random P-256 key (activated) and its public key (same
    /// ID, or the paired one) the new point. Returns the point `04‖X‖Y`.
    pub fn remote_replace_key(&mut self, id: &[u8]) -> Result<Vec<u8>, String> {
        let sk = random_secret_key().ok_or("random number generator failed")?;
        let point = sk.public_key().to_sec1_point(false).as_bytes().to_vec();
        let rs = self.remote_mut()?;
        let pub_id = paired_public_id(&rs.staged, id);
        let k = rs
            .staged
            .private_keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| format!("no private key {}", hex::encode_upper(id)))?;
        k.private = Some(sk.to_bytes().to_vec());
        k.state = ObjectState::Activated;
        rs.add_target(ObjectClass::PrivateKey, id);
        if let Some(p) = rs.staged.public_keys.iter_mut().find(|k| k.id == pub_id) {
            p.point = Some(point.clone());
            p.state = ObjectState::Activated;
            rs.add_target(ObjectClass::PublicKey, &pub_id);
        }
        Ok(point)
    }

    /// Deletes an object of any class (the security service may delete secret keys too).
    pub fn remote_delete(&mut self, class: ObjectClass, id: &[u8]) -> Result<(), String> {
        let rs = self.remote_mut()?;
        if !remove_object(&mut rs.staged, class, id) {
            return Err(format!("no {class} object {}", hex::encode_upper(id)));
        }
        rs.add_target(class, id);
        Ok(())
    }

    /// Adds a file (access read, activated unless empty). `usage`: `1` general, `2`
    /// certificate.
    pub fn remote_add_file(
        &mut self,
        id: &[u8],
        label: Option<Vec<u8>>,
        usage: u8,
        content: Vec<u8>,
    ) -> Result<(), String> {
        check_ref("id", id)?;
        if let Some(l) = &label {
            check_ref("label", l)?;
        }
        if !matches!(usage, FILE_USAGE_GENERAL | FILE_USAGE_CERTIFICATE) {
            return Err("usage must be 1 (general) or 2 (certificate)".into());
        }
        if content.len() > 0xFFFF {
            return Err("file larger than 65535 bytes".into());
        }
        let live = self.profile.clone();
        let rs = self.remote_mut()?;
        for p in [&live, &rs.staged] {
            for (oid, olabel) in object_refs(p, ObjectClass::File) {
                if oid == id {
                    return Err(format!("file {} exists", hex::encode_upper(id)));
                }
                if label.is_some() && olabel == label.as_deref() {
                    return Err("a file with that label exists".into());
                }
            }
        }
        rs.staged.files.push(File {
            id: id.to_vec(),
            label,
            usage,
            state: if content.is_empty() {
                ObjectState::Deactivated
            } else {
                ObjectState::Activated
            },
            access: ACCESS_READ,
            content,
        });
        rs.add_target(ObjectClass::File, id);
        Ok(())
    }

    /// Adds a secret key (IoT.04 K1–K3): key type `A0`, activated, access `03`, crypto
    /// function key derivation (`08`), key-derivation algorithms `kd` (`01` TLS 1.2 PRF, `02`
    /// HKDF, `03` both); `label` is the PSK identity. `value`: 1..64 bytes.
    pub fn remote_add_secret(
        &mut self,
        id: &[u8],
        label: Option<Vec<u8>>,
        kd: u8,
        value: Vec<u8>,
    ) -> Result<(), String> {
        check_ref("id", id)?;
        if let Some(l) = &label {
            check_ref("label", l)?;
        }
        check_secret(&value)?;
        if kd == 0 || kd & !0x03 != 0 {
            return Err("key derivation algorithms must be 1, 2 or 3".into());
        }
        let live = self.profile.clone();
        let rs = self.remote_mut()?;
        for p in [&live, &rs.staged] {
            for (oid, olabel) in object_refs(p, ObjectClass::SecretKey) {
                if oid == id {
                    return Err(format!("secret key {} exists", hex::encode_upper(id)));
                }
                if label.is_some() && olabel == label.as_deref() {
                    return Err("a secret key with that label exists".into());
                }
            }
        }
        rs.staged.secret_keys.push(SecretKey {
            id: id.to_vec(),
            label,
            key_type: KEY_TYPE_SECRET_HMAC,
            state: ObjectState::Activated,
            access: ACCESS_READ | ACCESS_UPDATE,
            crypto_functions: CF_KEY_DERIVATION,
            key_derivation_algos: kd,
            value: Some(value),
        });
        rs.add_target(ObjectClass::SecretKey, id);
        Ok(())
    }

    /// Gives secret key `id` a new value (1..64 bytes; activated). Other attributes stay.
    pub fn remote_replace_secret(&mut self, id: &[u8], value: Vec<u8>) -> Result<(), String> {
        check_secret(&value)?;
        let rs = self.remote_mut()?;
        let k = rs
            .staged
            .secret_keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or_else(|| format!("no secret key {}", hex::encode_upper(id)))?;
        k.value = Some(value);
        k.state = ObjectState::Activated;
        rs.add_target(ObjectClass::SecretKey, id);
        Ok(())
    }

    /// Ends the session: applies the staged changes, marks interrupted operations (`6989`)
    /// and flags every open channel for `63CF`. Saves the profile (see
    /// [`Card::set_persist_path`]). Returns the targets.
    pub fn remote_end(&mut self) -> Result<Vec<(ObjectClass, Vec<u8>)>, String> {
        let rs = self
            .remote
            .take()
            .ok_or_else(|| "no remote session".to_string())?;
        for (class, id) in &rs.targets {
            copy_object(&rs.staged, &mut self.profile, *class, id);
        }
        self.mark_interrupted(&rs.targets, None);
        for c in self.channels.iter_mut().flatten() {
            c.remote_completed = true;
        }
        self.content_changed(true);
        Ok(rs.targets)
    }
}
