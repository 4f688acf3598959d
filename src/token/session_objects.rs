//! Objects the application makes itself: session objects kept in memory (data objects, X.509
//! certificates, P-256 public keys; session secret keys are `kdf`'s), `C_SetAttributeValue` and
//! `C_CopyObject` on them, and the template rules that token writes (`store`) share.

use cryptoki_sys::*;

use crate::error::{Error, Result};

use super::find::may_create;
use super::module::Module;
use super::object::{self, Object, P256_EC_PARAMS};
use super::template::{
    self, Template, class_has, find_attr, modifiable, template_bool, template_ulong,
};

/// An attribute list as it is built: (type, value bytes).
pub(super) type Attributes = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

fn bool_bytes(v: bool) -> Vec<u8> {
    vec![v as u8]
}

fn ulong_bytes(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Sets `t` in `attrs` (booleans normalised to 0/1).
fn put(attrs: &mut Attributes, t: CK_ATTRIBUTE_TYPE, v: &[u8]) {
    let v = if object::is_bool_attribute(t) && v.len() == 1 {
        bool_bytes(v[0] != 0)
    } else {
        v.to_vec()
    };
    match attrs.iter_mut().find(|(a, _)| *a == t) {
        Some(e) => e.1 = v,
        None => attrs.push((t, v)),
    }
}

fn get(attrs: &Attributes, t: CK_ATTRIBUTE_TYPE) -> &[u8] {
    attrs
        .iter()
        .find(|(a, _)| *a == t)
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default()
}

/// Checks every attribute of `template` for an object of `class`: one such objects do not
/// have → `CKR_ATTRIBUTE_TYPE_INVALID`; one only the token sets → `CKR_ATTRIBUTE_READ_ONLY`;
/// a value of the wrong form → `CKR_ATTRIBUTE_VALUE_INVALID`.
pub(super) fn check_template(class: CK_OBJECT_CLASS, template: &Template) -> Result<()> {
    for (i, (t, v)) in template.iter().enumerate() {
        if template[..i].iter().any(|(a, _)| a == t) {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                format!("attribute 0x{t:x} twice in the template"),
            ));
        }
        if !class_has(class, *t) {
            return Err(Error::new(
                CKR_ATTRIBUTE_TYPE_INVALID,
                format!("attribute 0x{t:x} in a class 0x{class:x} template"),
            ));
        }
        if template::TOKEN_SET_ATTRIBUTES.contains(t) {
            return Err(Error::new(
                CKR_ATTRIBUTE_READ_ONLY,
                format!("attribute 0x{t:x} is set by the token"),
            ));
        }
        template::check_value_form(*t, v)?;
    }
    if template_bool(template, CKA_TRUSTED)? == Some(true) {
        // PKCS#11 §4.6: only the security officer may set it, and this token has none.
        return Err(Error::new(
            CKR_ATTRIBUTE_READ_ONLY,
            "CKA_TRUSTED can only be set by the security officer",
        ));
    }
    Ok(())
}

/// The defaults of a new object of `class` (PKCS#11 3.0 §4.4–4.8).
fn defaults(class: CK_OBJECT_CLASS) -> Attributes {
    let mut a = vec![
        (CKA_CLASS, ulong_bytes(class)),
        (CKA_TOKEN, bool_bytes(false)),
        (CKA_PRIVATE, bool_bytes(false)),
        (CKA_MODIFIABLE, bool_bytes(true)),
        (CKA_COPYABLE, bool_bytes(true)),
        (CKA_DESTROYABLE, bool_bytes(true)),
        (CKA_LABEL, Vec::new()),
    ];
    match class {
        CKO_DATA => a.extend([
            (CKA_APPLICATION, Vec::new()),
            (CKA_OBJECT_ID, Vec::new()),
            (CKA_ID, Vec::new()),
            (CKA_VALUE, Vec::new()),
        ]),
        CKO_CERTIFICATE => a.extend([
            (CKA_CERTIFICATE_TYPE, ulong_bytes(CKC_X_509)),
            (CKA_TRUSTED, bool_bytes(false)),
            (CKA_CERTIFICATE_CATEGORY, ulong_bytes(0)),
            (CKA_CHECK_VALUE, Vec::new()),
            (CKA_START_DATE, Vec::new()),
            (CKA_END_DATE, Vec::new()),
            (CKA_PUBLIC_KEY_INFO, Vec::new()),
            (CKA_SUBJECT, Vec::new()),
            (CKA_ID, Vec::new()),
            (CKA_ISSUER, Vec::new()),
            (CKA_SERIAL_NUMBER, Vec::new()),
            (CKA_VALUE, Vec::new()),
            (CKA_URL, Vec::new()),
            (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, Vec::new()),
            (CKA_HASH_OF_ISSUER_PUBLIC_KEY, Vec::new()),
            (CKA_JAVA_MIDP_SECURITY_DOMAIN, ulong_bytes(0)),
            (CKA_NAME_HASH_ALGORITHM, ulong_bytes(CKM_SHA_1)),
        ]),
        CKO_PUBLIC_KEY => a.extend([
            (CKA_KEY_TYPE, ulong_bytes(CKK_EC)),
            (CKA_ID, Vec::new()),
            (CKA_START_DATE, Vec::new()),
            (CKA_END_DATE, Vec::new()),
            (CKA_DERIVE, bool_bytes(false)),
            (CKA_LOCAL, bool_bytes(false)),
            (
                CKA_KEY_GEN_MECHANISM,
                ulong_bytes(CK_UNAVAILABLE_INFORMATION),
            ),
            (CKA_ALLOWED_MECHANISMS, Vec::new()),
            (CKA_SUBJECT, Vec::new()),
            (CKA_ENCRYPT, bool_bytes(false)),
            (CKA_VERIFY, bool_bytes(true)),
            (CKA_VERIFY_RECOVER, bool_bytes(false)),
            (CKA_WRAP, bool_bytes(false)),
            (CKA_TRUSTED, bool_bytes(false)),
            (CKA_PUBLIC_KEY_INFO, Vec::new()),
            (CKA_EC_PARAMS, Vec::new()),
            (CKA_EC_POINT, Vec::new()),
        ]),
        _ => {}
    }
    a
}

/// Where a template's value must equal what the token derives: a value that differs is
/// `CKR_ATTRIBUTE_VALUE_INVALID`; an empty one (the attribute's default) takes the derived one.
fn derive(
    attrs: &mut Attributes,
    template: &Template,
    t: CK_ATTRIBUTE_TYPE,
    derived: &[u8],
    of_what: &str,
) -> Result<()> {
    if let Some(given) = find_attr(template, t)
        && !given.is_empty()
        && given != derived
    {
        return Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            format!("attribute 0x{t:x} does not match the {of_what}"),
        ));
    }
    put(attrs, t, derived);
    Ok(())
}

fn required<'a>(template: &'a Template, t: CK_ATTRIBUTE_TYPE, name: &str) -> Result<&'a [u8]> {
    find_attr(template, t)
        .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, format!("{name} is required")))
}

/// An X.509 certificate's attributes: `CKA_CERTIFICATE_TYPE` and `CKA_VALUE` are required;
/// what the certificate itself says (subject, check value, public key info, hash of the subject
/// public key) is taken from it and must match when given. `CKA_SUBJECT`, required by
/// PKCS#11, is filled in from the certificate when missing; `CKA_ISSUER` and
/// `CKA_SERIAL_NUMBER`, which PKCS#11 lets the application change, default to the
/// certificate's.
fn certificate(attrs: &mut Attributes, template: &Template) -> Result<Option<[u8; 65]>> {
    required(template, CKA_CERTIFICATE_TYPE, "CKA_CERTIFICATE_TYPE")?;
    if template_ulong(template, CKA_CERTIFICATE_TYPE)? != Some(CKC_X_509) {
        return Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "only X.509 certificates",
        ));
    }
    let value = required(template, CKA_VALUE, "CKA_VALUE")?;
    let facts = object::parse_certificate(value).ok_or_else(|| {
        Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_VALUE is not an X.509 certificate",
        )
    })?;
    let name_hash = template_ulong(template, CKA_NAME_HASH_ALGORITHM)?.unwrap_or(CKM_SHA_1);
    let c = "certificate";
    derive(attrs, template, CKA_SUBJECT, &facts.subject, c)?;
    for (t, derived) in [
        (CKA_ISSUER, &facts.issuer),
        (CKA_SERIAL_NUMBER, &facts.serial),
    ] {
        if find_attr(template, t).is_none_or(<[u8]>::is_empty) {
            put(attrs, t, derived);
        }
    }
    derive(
        attrs,
        template,
        CKA_CHECK_VALUE,
        &object::check_value(value),
        c,
    )?;
    derive(attrs, template, CKA_PUBLIC_KEY_INFO, &facts.spki, c)?;
    let key_hash = object::subject_public_key_hash(value, name_hash);
    derive(
        attrs,
        template,
        CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
        &key_hash,
        c,
    )?;
    Ok(facts.point)
}

/// The point of a `CKA_EC_POINT` value: the DER OCTET STRING PKCS#11 names (or the bare
/// uncompressed point some applications send), on P-256.
fn ec_point(value: &[u8]) -> Option<[u8; 65]> {
    let bare = match value {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        _ => value,
    };
    let point: [u8; 65] = bare.try_into().ok()?;
    p256::PublicKey::from_sec1_bytes(&point).ok()?;
    Some(point)
}

/// A P-256 public key's attributes: `CKA_KEY_TYPE` (`CKK_EC`), `CKA_EC_PARAMS` (P-256) and
/// `CKA_EC_POINT` are required; `CKA_PUBLIC_KEY_INFO` is derived.
fn ec_public_key(attrs: &mut Attributes, template: &Template) -> Result<Option<[u8; 65]>> {
    required(template, CKA_KEY_TYPE, "CKA_KEY_TYPE")?;
    if template_ulong(template, CKA_KEY_TYPE)? != Some(CKK_EC) {
        return Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "only EC public keys",
        ));
    }
    if required(template, CKA_EC_PARAMS, "CKA_EC_PARAMS")? != P256_EC_PARAMS {
        return Err(Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_EC_PARAMS: only the named curve P-256 (prime256v1)",
        ));
    }
    let point = ec_point(required(template, CKA_EC_POINT, "CKA_EC_POINT")?).ok_or_else(|| {
        Error::new(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_EC_POINT is not an uncompressed P-256 point",
        )
    })?;
    put(attrs, CKA_EC_POINT, &object::ec_point_der(&point));
    let spki = object::spki_from_point(&point);
    derive(attrs, template, CKA_PUBLIC_KEY_INFO, &spki, "public key")?;
    Ok(Some(point))
}

/// The whole attribute list of a new object of `class` (defaults, the template, what is
/// derived), and its public point. The template has passed [`check_template`].
pub(super) fn new_object_attributes(
    class: CK_OBJECT_CLASS,
    template: &Template,
) -> Result<(Attributes, Option<[u8; 65]>)> {
    let mut attrs = defaults(class);
    for (t, v) in template {
        put(&mut attrs, *t, v);
    }
    let point = match class {
        CKO_CERTIFICATE => certificate(&mut attrs, template)?,
        CKO_PUBLIC_KEY => ec_public_key(&mut attrs, template)?,
        _ => None,
    };
    Ok((attrs, point))
}

impl Module {
    /// Whether `object` is one of the module's session objects.
    pub(super) fn is_session_object(&self, object: CK_OBJECT_HANDLE) -> bool {
        self.session_objects.read().contains_key(&object)
    }

    /// `C_CreateObject` with `CKA_TOKEN` false: a data object, certificate or P-256 public key
    /// in memory (or a secret key, `kdf`), gone with its session. Read-only sessions may make
    /// them; private ones need the user logged in (§5.7).
    pub(super) fn create_session_object(
        &self,
        handle: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let (slot_id, token) = {
            let s = self.session(handle)?;
            let s = s.lock();
            (s.slot_id, s.token.clone())
        };
        let class = template_ulong(template, CKA_CLASS)?
            .ok_or_else(|| Error::new(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is required"))?;
        may_create(template, &token)?;
        if class == CKO_SECRET_KEY {
            return self.create_session_secret(handle, template);
        }
        if !matches!(class, CKO_DATA | CKO_CERTIFICATE | CKO_PUBLIC_KEY) {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                format!(
                    "class 0x{class:x}: session objects are data objects, certificates, public and secret keys"
                ),
            ));
        }
        check_template(class, template)?;
        let (attrs, point) = new_object_attributes(class, template)?;
        let object = Object::from_attributes(self.handles.object_handle(), class, attrs, point);
        Ok(self.add_session_object(handle, slot_id, object))
    }

    /// `C_SetAttributeValue`: session objects change in memory, token objects on the card
    /// (`store`). Errors as PKCS#11 3.0 names them: an attribute the class does not have →
    /// `CKR_ATTRIBUTE_TYPE_INVALID`; one that may not change → `CKR_ATTRIBUTE_READ_ONLY`; an
    /// object whose `CKA_MODIFIABLE` is false → `CKR_ACTION_PROHIBITED` (§5.1).
    pub fn set_attribute_value(
        &self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<()> {
        let found = self.object(handle, object)?;
        if found.class == CKO_SECRET_KEY {
            // PSKs never change through the device (IoT.04 I9); derived keys are not modifiable.
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                "secret keys cannot be modified",
            ));
        }
        if !self.is_session_object(object) {
            return self.set_token_attributes(handle, &found, template);
        }
        check_template(found.class, template)?;
        if !found.bool_attribute(CKA_MODIFIABLE) {
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                "the object is not modifiable (CKA_MODIFIABLE false)",
            ));
        }
        let mut attrs = found.readable_attributes();
        for (t, v) in template {
            check_settable(found.class, *t, v, &found)?;
            put(&mut attrs, *t, v);
        }
        let changed = Object::from_attributes(found.handle, found.class, attrs, found.point);
        if let Some(entry) = self.session_objects.write().get_mut(&object) {
            entry.object = std::sync::Arc::new(changed);
        }
        Ok(())
    }

    /// `C_CopyObject`: a copyable object (session objects; the card's are not) with the
    /// template's changes. The copy may change `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_MODIFIABLE`,
    /// `CKA_DESTROYABLE`, `CKA_COPYABLE` (to false) and what `C_SetAttributeValue` may change;
    /// a token copy is written to the card as `C_CreateObject` would write it.
    pub fn copy_object(
        &self,
        handle: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let found = self.object(handle, object)?;
        if !found.bool_attribute(CKA_COPYABLE) {
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                "the object is not copyable (CKA_COPYABLE false)",
            ));
        }
        check_template(found.class, template)?;
        let mut attrs = found.readable_attributes();
        for (t, v) in template {
            if !matches!(
                *t,
                CKA_TOKEN | CKA_PRIVATE | CKA_MODIFIABLE | CKA_DESTROYABLE
            ) {
                check_settable(found.class, *t, v, &found)?;
            }
            put(&mut attrs, *t, v);
        }
        attrs.retain(|(t, _)| !template::TOKEN_SET_ATTRIBUTES.contains(t));
        if get(&attrs, CKA_TOKEN) == [1] {
            // Written as a new token object: the card decides these three itself.
            let given = |t: CK_ATTRIBUTE_TYPE| template.iter().any(|(a, _)| *a == t);
            attrs.retain(|(t, _)| {
                !matches!(*t, CKA_MODIFIABLE | CKA_COPYABLE | CKA_DESTROYABLE) || given(*t)
            });
            return self.create_object(handle, &attrs);
        }
        self.create_session_object(handle, &attrs)
    }
}

/// Whether `C_SetAttributeValue` (or a copy) may set attribute `t` of `object` to `v`.
fn check_settable(
    class: CK_OBJECT_CLASS,
    t: CK_ATTRIBUTE_TYPE,
    v: &[u8],
    object: &Object,
) -> Result<()> {
    if !modifiable(class, t) {
        return Err(Error::new(
            CKR_ATTRIBUTE_READ_ONLY,
            format!("attribute 0x{t:x} cannot change after the object is made"),
        ));
    }
    if t == CKA_COPYABLE && v.first().is_some_and(|b| *b != 0) && !object.bool_attribute(t) {
        return Err(Error::new(
            CKR_ATTRIBUTE_READ_ONLY,
            "CKA_COPYABLE, once false, stays false",
        ));
    }
    Ok(())
}
