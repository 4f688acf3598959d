//! Key life-cycle on the card: on-board key generation (GENERATE KEY PAIR) and ECDH (PUT PUBLIC
//! KEY + COMPUTE DH) with the ANSI X9.63 key derivation on the host.

use cryptoki_sys::*;
use log::{debug, info};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::applet::{ObjectClass, ObjectInfo, objects as card};
use crate::error::{Error, Result};

use super::find::may_create;
use super::object::{CardObject, Object, P256_EC_PARAMS, SecretKeyFlags};
use super::template::{Template, find_attr, template_bool, template_ulong};
use super::{Module, Token};

/// `CK_ECDH1_DERIVE_PARAMS`, copied out of the caller's memory.
#[derive(Debug, Clone)]
pub struct EcdhParams {
    pub kdf: CK_EC_KDF_TYPE,
    pub shared_data: Vec<u8>,
    pub public_data: Vec<u8>,
}

/// `prime256v1` as a PrintableString, which some callers put in `CKA_EC_PARAMS` instead of the OID.
const P256_PRINTABLE: &[u8] = b"\x13\x0aprime256v1";

/// The one value both templates agree on (`CKR_TEMPLATE_INCONSISTENT` when they differ).
fn agreed<'a>(
    public: &'a Template,
    private: &'a Template,
    attr: CK_ATTRIBUTE_TYPE,
) -> Result<Option<&'a [u8]>> {
    match (find_attr(public, attr), find_attr(private, attr)) {
        (Some(a), Some(b)) if a != b => Err(Error::new(
            CKR_TEMPLATE_INCONSISTENT,
            format!("attribute 0x{attr:x} differs between the public and private templates"),
        )),
        (a, b) => Ok(b.or(a)),
    }
}

/// Attributes a key-pair template may carry; anything else is `CKR_ATTRIBUTE_TYPE_INVALID`.
const KEY_PAIR_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_LABEL,
    CKA_ID,
    CKA_EC_PARAMS,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_DERIVE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_DECRYPT,
    CKA_ENCRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN_RECOVER,
    CKA_VERIFY_RECOVER,
    CKA_SUBJECT,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
];

fn check_key_pair_templates(public: &Template, private: &Template) -> Result<()> {
    for (t, class) in [(public, CKO_PUBLIC_KEY), (private, CKO_PRIVATE_KEY)] {
        if let Some((a, _)) = t.iter().find(|(a, _)| !KEY_PAIR_ATTRIBUTES.contains(a)) {
            return Err(Error::new(
                CKR_ATTRIBUTE_TYPE_INVALID,
                format!("attribute 0x{a:x} in a key-pair template"),
            ));
        }
        if template_ulong(t, CKA_CLASS)?.is_some_and(|c| c != class) {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                "CKA_CLASS does not match the template",
            ));
        }
        if template_ulong(t, CKA_KEY_TYPE)?.is_some_and(|k| k != CKK_EC) {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                "CKM_EC_KEY_PAIR_GEN makes CKK_EC keys",
            ));
        }
        // The card keeps every key it makes: no session key pairs.
        if template_bool(t, CKA_TOKEN)? == Some(false) {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                "the card makes token objects only (CKA_TOKEN=false)",
            ));
        }
    }
    match find_attr(public, CKA_EC_PARAMS).or_else(|| find_attr(private, CKA_EC_PARAMS)) {
        None => {
            return Err(Error::new(
                CKR_TEMPLATE_INCOMPLETE,
                "CKA_EC_PARAMS is required",
            ));
        }
        Some(p) if p == P256_EC_PARAMS || p == P256_PRINTABLE => {}
        Some(_) => {
            return Err(Error::new(
                CKR_CURVE_NOT_SUPPORTED,
                "the card makes P-256 keys only",
            ));
        }
    }
    // What the card's keys can never be. CKA_DECRYPT / CKA_ENCRYPT true are let through (the
    // keys still show false): aziot-keyd asks for them on every key pair, EC included, and
    // SoftHSM2 and tpm2-pkcs11 accept them.
    for (attr, forbidden, what) in [
        (CKA_SENSITIVE, false, "a card key is always sensitive"),
        (CKA_EXTRACTABLE, true, "a card key never leaves the card"),
        (CKA_UNWRAP, true, "EC keys do not unwrap"),
        (CKA_SIGN_RECOVER, true, "ECDSA has no recovery"),
    ] {
        if template_bool(private, attr)? == Some(forbidden) {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID, what));
        }
    }
    for (attr, what) in [(CKA_WRAP, "EC keys do not wrap")] {
        if template_bool(public, attr)? == Some(true) {
            return Err(Error::new(CKR_ATTRIBUTE_VALUE_INVALID, what));
        }
    }
    Ok(())
}

/// Puts the answer of GENERATE KEY PAIR into the card objects: the container is filled, its
/// public key (found, or new) holds the new point. Returns the (private, public) IDs.
fn record_generated_key(
    objects: &mut Vec<CardObject>,
    container: &ObjectInfo,
    private_id: Option<Vec<u8>>,
    public_id: Option<Vec<u8>>,
    point: [u8; 65],
) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let private_id = private_id.or_else(|| container.id.clone());
    let public_id = public_id.or_else(|| private_id.clone());
    if let Some(o) = objects
        .iter_mut()
        .find(|o| o.info.class() == ObjectClass::PrivateKey && o.info == *container)
    {
        o.info.state = Some(1);
        o.info.id = private_id.clone();
    }
    match objects
        .iter_mut()
        .find(|o| o.info.class() == ObjectClass::PublicKey && o.info.id == public_id)
    {
        Some(o) => {
            o.info.state = Some(1);
            o.point = Some(point);
        }
        None => objects.push(CardObject {
            info: ObjectInfo {
                class: Some(ObjectClass::PublicKey),
                id: public_id.clone(),
                label: container.label.clone(),
                state: Some(1),
                access: Some(0x01),
                key_type: container.key_type,
                functions: container.functions,
                signature_algorithms: container.signature_algorithms,
                hash_algorithms: container.hash_algorithms,
                key_agreement: container.key_agreement,
                ..Default::default()
            },
            point: Some(point),
            content: None,
        }),
    }
    (private_id, public_id)
}

/// ANSI X9.63 KDF with the hash of `kdf`: `Hash(Z ‖ counter ‖ shared info)` blocks.
fn x963_kdf(
    kdf: CK_EC_KDF_TYPE,
    z: &[u8],
    shared: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    fn run<D: Digest>(z: &[u8], shared: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
        let mut counter: u32 = 1;
        while out.len() < len {
            let mut h = D::new();
            h.update(z);
            h.update(counter.to_be_bytes());
            h.update(shared);
            out.extend_from_slice(&h.finalize());
            counter += 1;
        }
        out.truncate(len);
        out
    }
    Ok(match kdf {
        CKD_SHA1_KDF => run::<sha1::Sha1>(z, shared, len),
        CKD_SHA224_KDF => run::<sha2::Sha224>(z, shared, len),
        CKD_SHA256_KDF => run::<sha2::Sha256>(z, shared, len),
        CKD_SHA384_KDF => run::<sha2::Sha384>(z, shared, len),
        CKD_SHA512_KDF => run::<sha2::Sha512>(z, shared, len),
        _ => {
            return Err(Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                format!("KDF 0x{kdf:x} is not supported"),
            ));
        }
    })
}

/// The peer's point from `pPublicData`: raw `04 X Y` or a DER OCTET STRING around it.
fn peer_point(data: &[u8]) -> Result<[u8; 65]> {
    let raw = match data {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        _ => data,
    };
    let point: [u8; 65] = raw.try_into().map_err(|_| {
        Error::new(
            CKR_MECHANISM_PARAM_INVALID,
            "the peer key must be an uncompressed P-256 point",
        )
    })?;
    p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID, "the peer key is not on P-256"))?;
    Ok(point)
}

/// Attributes a derived-key template may carry.
const DERIVED_KEY_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_LABEL,
    CKA_ID,
    CKA_VALUE_LEN,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
];

impl Module {
    /// `C_GenerateKeyPair` with `CKM_EC_KEY_PAIR_GEN`: GENERATE KEY PAIR into the private-key
    /// container named by `CKA_ID` and/or `CKA_LABEL`. Returns (public, private) handles.
    pub fn generate_key_pair(
        &self,
        handle: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        has_param: bool,
        public: &Template,
        private: &Template,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let session = self.session(handle)?;
        let (token, rw) = {
            let s = session.lock();
            (s.token.clone(), s.is_rw())
        };
        if mechanism != CKM_EC_KEY_PAIR_GEN || !token.app_info.offers(card::FUNCTION_KEY_GENERATION)
        {
            return Err(CKR_MECHANISM_INVALID.into());
        }
        if has_param {
            return Err(CKR_MECHANISM_PARAM_INVALID.into());
        }
        check_key_pair_templates(public, private)?;
        if !rw {
            return Err(Error::new(
                CKR_SESSION_READ_ONLY,
                "key generation makes token objects",
            ));
        }
        let id = agreed(public, private, CKA_ID)?;
        let label = find_attr(private, CKA_LABEL).or_else(|| find_attr(public, CKA_LABEL));
        if id.is_none() && label.is_none() {
            return Err(Error::new(
                CKR_TEMPLATE_INCOMPLETE,
                "name the key container with CKA_ID and/or CKA_LABEL",
            ));
        }
        let container = token.card_objects().into_iter().map(|o| o.info).find(|i| {
            i.class() == ObjectClass::PrivateKey
                && id.is_none_or(|id| i.id.as_deref() == Some(id))
                && label.is_none_or(|l| i.label.as_deref() == Some(l))
        });
        let Some(container) = container else {
            // A new container through the provisioning profile, when the card takes writes.
            return self.create_key_pair(handle, &token, id, label);
        };
        if !matches!(
            container.key_type,
            None | Some(card::KEY_TYPE_P256_PERSISTENT) | Some(card::KEY_TYPE_P256_VOLATILE)
        ) {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                "the container does not hold P-256 keys",
            ));
        }
        if template_bool(private, CKA_SIGN)? == Some(true) && !container.can_sign() {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "this container's keys cannot sign",
            ));
        }
        if template_bool(private, CKA_DERIVE)? == Some(true) && !container.can_derive() {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "this container's keys cannot derive",
            ));
        }
        let generated = self.on_card(handle, &token, |ch| {
            let g = ch.generate_key_pair(&container)?;
            let point = match g.point {
                Some(p) => p,
                None => {
                    // Some applets answer without the key: read it.
                    let public_id = g
                        .public_id
                        .clone()
                        .or_else(|| g.private_id.clone())
                        .or_else(|| container.id.clone());
                    ch.read_public_key(&ObjectInfo {
                        class: Some(ObjectClass::PublicKey),
                        id: public_id,
                        ..Default::default()
                    })?
                }
            };
            Ok((g, point))
        })?;
        let (g, point) = generated;
        let mut objects = token.card_objects();
        let (private_id, public_id) =
            record_generated_key(&mut objects, &container, g.private_id, g.public_id, point);
        let private = ObjectInfo {
            id: private_id.clone(),
            ..container.clone()
        };
        // The card said which public key took the new point: that is the pair now.
        token.set_card_objects_with_pair(objects, &private, point);
        info!("generated a P-256 key pair in container {private_id:02x?}");
        let find = |class: CK_OBJECT_CLASS, id: &Option<Vec<u8>>| -> Result<CK_OBJECT_HANDLE> {
            token
                .objects()
                .iter()
                .find(|o| o.class == class && o.card.id == *id)
                .map(|o| o.handle)
                .ok_or_else(|| {
                    Error::new(
                        CKR_GENERAL_ERROR,
                        "the generated key is missing from the cache",
                    )
                })
        };
        Ok((
            find(CKO_PUBLIC_KEY, &public_id)?,
            find(CKO_PRIVATE_KEY, &private_id)?,
        ))
    }

    /// The base key of a derivation: an object of `class` (`CKR_KEY_TYPE_INCONSISTENT`
    /// otherwise) that allows derivation (`CKR_KEY_FUNCTION_NOT_PERMITTED`).
    pub(super) fn derivation_base(
        &self,
        handle: CK_SESSION_HANDLE,
        base: CK_OBJECT_HANDLE,
        class: CK_OBJECT_CLASS,
    ) -> Result<std::sync::Arc<Object>> {
        let key = self
            .object(handle, base)
            .map_err(|_| Error::from(CKR_KEY_HANDLE_INVALID))?;
        if key.class != class {
            return Err(Error::new(
                CKR_KEY_TYPE_INCONSISTENT,
                format!("this derivation takes a base key of class 0x{class:x}"),
            ));
        }
        if !key.bool_attribute(CKA_DERIVE) {
            return Err(Error::new(
                CKR_KEY_FUNCTION_NOT_PERMITTED,
                "the base key does not allow derivation",
            ));
        }
        Ok(key)
    }

    /// `C_DeriveKey` with `CKM_ECDH1_DERIVE`: the peer point goes into a writable public-key
    /// container (PUT PUBLIC KEY), the card computes the shared secret (COMPUTE DH), the host
    /// applies the KDF; the result is a session secret key.
    pub fn derive_key(
        &self,
        handle: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        params: Option<EcdhParams>,
        base: CK_OBJECT_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let session = self.session(handle)?;
        let (token, slot_id) = {
            let s = session.lock();
            (s.token.clone(), s.slot_id)
        };
        may_create(template, &token)?;
        if mechanism != CKM_ECDH1_DERIVE || !token.app_info.offers(card::FUNCTION_KEY_AGREEMENT) {
            return Err(CKR_MECHANISM_INVALID.into());
        }
        let params = params.ok_or_else(|| Error::from(CKR_MECHANISM_PARAM_INVALID))?;
        if !matches!(
            params.kdf,
            CKD_NULL
                | CKD_SHA1_KDF
                | CKD_SHA224_KDF
                | CKD_SHA256_KDF
                | CKD_SHA384_KDF
                | CKD_SHA512_KDF
        ) {
            return Err(Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                format!("KDF 0x{:x} is not supported", params.kdf),
            ));
        }
        if params.kdf == CKD_NULL && !params.shared_data.is_empty() {
            return Err(Error::new(
                CKR_MECHANISM_PARAM_INVALID,
                "CKD_NULL takes no shared data",
            ));
        }
        let peer = peer_point(&params.public_data)?;
        let key = self.derivation_base(handle, base, CKO_PRIVATE_KEY)?;
        let NewSecretKey {
            key_type,
            len,
            flags,
        } = new_secret_key(template, (params.kdf == CKD_NULL).then_some(32))?;
        if params.kdf == CKD_NULL && len > 32 {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                "CKD_NULL gives at most the 32-byte shared secret",
            ));
        }
        let container = peer_key_container(&token, &key.card)?;
        let private = key.card.clone();
        let z = self.on_card(handle, &token, |ch| {
            ch.put_public_key(&container, &peer)?;
            ch.compute_dh(&private, &container)
        })?;
        let value = if params.kdf == CKD_NULL {
            // The leftmost bytes of the shared secret when a shorter key is asked for.
            Zeroizing::new(z[..len].to_vec())
        } else {
            x963_kdf(params.kdf, &z, &params.shared_data, len)?
        };
        let object = Object::secret_key(
            self.handles.object_handle(),
            &value,
            key_type,
            &flags,
            find_attr(template, CKA_LABEL).unwrap_or_default(),
            find_attr(template, CKA_ID).unwrap_or_default(),
        );
        debug!(
            "derived a {len}-byte secret key with ECDH (KDF 0x{:x})",
            params.kdf
        );
        Ok(self.add_session_object(handle, slot_id, object))
    }
}

/// What a derivation template asks of the new session secret key.
pub(super) struct NewSecretKey {
    pub key_type: CK_KEY_TYPE,
    pub len: usize,
    pub flags: SecretKeyFlags,
}

/// Checks a derived-key template: secret-key class, session object, a generic secret (or HKDF)
/// key of `CKA_VALUE_LEN` bytes (`default_len` when the template has none) or an AES key.
pub(super) fn new_secret_key(
    template: &Template,
    default_len: Option<usize>,
) -> Result<NewSecretKey> {
    if let Some((a, _)) = template
        .iter()
        .find(|(a, _)| !DERIVED_KEY_ATTRIBUTES.contains(a))
    {
        return Err(Error::new(
            CKR_ATTRIBUTE_TYPE_INVALID,
            format!("attribute 0x{a:x} in a derived-key template"),
        ));
    }
    if template_ulong(template, CKA_CLASS)?.is_some_and(|c| c != CKO_SECRET_KEY) {
        return Err(Error::new(
            CKR_TEMPLATE_INCONSISTENT,
            "derivation makes secret keys",
        ));
    }
    if template_bool(template, CKA_TOKEN)? == Some(true) {
        return Err(Error::new(
            CKR_TEMPLATE_INCONSISTENT,
            "derived keys are session objects",
        ));
    }
    let key_type = template_ulong(template, CKA_KEY_TYPE)?.unwrap_or(CKK_GENERIC_SECRET);
    let len = template_ulong(template, CKA_VALUE_LEN)?.map(|l| l as usize);
    let len = match (key_type, len) {
        (CKK_GENERIC_SECRET | CKK_HKDF, Some(l)) if l > 0 => l,
        (CKK_GENERIC_SECRET | CKK_HKDF, None) if default_len.is_some() => {
            default_len.unwrap_or_default()
        }
        (CKK_AES, Some(l)) if [16, 24, 32].contains(&l) => l,
        (CKK_GENERIC_SECRET | CKK_HKDF | CKK_AES, None) => {
            return Err(Error::new(
                CKR_TEMPLATE_INCOMPLETE,
                "CKA_VALUE_LEN is required",
            ));
        }
        (CKK_GENERIC_SECRET | CKK_HKDF | CKK_AES, Some(_)) => {
            return Err(Error::new(
                CKR_ATTRIBUTE_VALUE_INVALID,
                "CKA_VALUE_LEN does not fit the key type",
            ));
        }
        _ => {
            return Err(Error::new(
                CKR_TEMPLATE_INCONSISTENT,
                "key type not supported for derivation",
            ));
        }
    };
    let flag = |attr, default| template_bool(template, attr).map(|v| v.unwrap_or(default));
    let flags = SecretKeyFlags {
        private: flag(CKA_PRIVATE, false)?,
        sensitive: flag(CKA_SENSITIVE, false)?,
        extractable: flag(CKA_EXTRACTABLE, true)?,
        encrypt: flag(CKA_ENCRYPT, false)?,
        decrypt: flag(CKA_DECRYPT, false)?,
        sign: flag(CKA_SIGN, false)?,
        verify: flag(CKA_VERIFY, false)?,
        wrap: flag(CKA_WRAP, false)?,
        unwrap: flag(CKA_UNWRAP, false)?,
        derive: flag(CKA_DERIVE, false)?,
    };
    Ok(NewSecretKey {
        key_type,
        len,
        flags,
    })
}

/// The public-key container that receives the peer's point: P-256, writable (access condition
/// "update"), not the base key's own public key; empty containers first.
fn peer_key_container(token: &Token, base: &ObjectInfo) -> Result<ObjectInfo> {
    let mut candidates: Vec<ObjectInfo> = token
        .card_objects()
        .into_iter()
        .map(|o| o.info)
        .filter(|i| {
            i.class() == ObjectClass::PublicKey
                && i.is_p256()
                && i.access.is_some_and(|a| a & 0x02 != 0)
                && i.id != base.id
        })
        .collect();
    candidates.sort_by_key(|i| i.is_active());
    candidates.into_iter().next().ok_or_else(|| {
        Error::new(
            CKR_FUNCTION_FAILED,
            "the card has no writable public-key container for the peer key",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x963_kdf_matches_openssl_for_every_hash() {
        // Produced once by OpenSSL 3.0 (an implementation of its own), for each DIGEST:
        //   openssl kdf -keylen 70 -kdfopt digest:DIGEST -kdfopt hexsecret:<0x11 × 32>
        //     -kdfopt hexinfo:696e666f X963KDF
        // 70 bytes take 2 (SHA-512) to 4 (SHA-1) blocks of the counter.
        let z = [0x11u8; 32];
        let info = b"info";
        for (kdf, want) in [
            (
                CKD_SHA1_KDF,
                "BC25F1FEE60DA4FC20D9D738E51FC07C6BB13EFD599E82E23E9F420563C265C4A36FC3FB8BCE7830\
                 1256107A5C3626F6573D73F0754443EE668E1E2594D625DE107B977F7D77",
            ),
            (
                CKD_SHA224_KDF,
                "406CFF498415C639C7402772C7F2E6B05E76BCDE5D2B620CD9018CCAEE35D93BD7B645A0084C52FF\
                 25EB39953FA2F8C3B5FF6337E74C50927963F1C14EE98E29BF7E305BDE3B",
            ),
            (
                CKD_SHA256_KDF,
                "DF6D5E1EA2CF5B7FCF9C2C7BFABCED3180FFD2A469189F8DFF4FD86AED3E44FB10E8005918D51364\
                 291BAC344B551DF5A68AE1CD01EB5E5E525212EA3382F30252590BB3E321",
            ),
            (
                CKD_SHA384_KDF,
                "69271E242A7CC4219BB2BC4FE7CB10DCDD3AD8CBC55158C115D409BD944954965DA575950F154500\
                 54A71F891B2C57CC096ED190294C071CF06D05380D1BAA1C26E45762060E",
            ),
            (
                CKD_SHA512_KDF,
                "EE55DBBEF0A8E0A059FDBE8CF21869E3CCEDA8F57FFA66721963A9BD202AABFFE05401A6C78BCC55\
                 05091198B4DB1B0077266DE85AC8183F3CA1B6655DACA221EA3B659B8394",
            ),
        ] {
            let out = x963_kdf(kdf, &z, info, 70).unwrap();
            assert_eq!(hex::encode_upper(&out[..]), want, "KDF 0x{kdf:x}");
        }
        assert!(x963_kdf(0x99, &z, info, 8).is_err());
    }

    #[test]
    fn peer_points_raw_or_der() {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let raw: [u8; 65] = secret.public_key().to_sec1_bytes()[..].try_into().unwrap();
        assert_eq!(peer_point(&raw).unwrap(), raw);
        let der = [&[0x04, 0x41][..], &raw].concat();
        assert_eq!(peer_point(&der).unwrap(), raw);
        assert!(peer_point(&raw[..64]).is_err());
        let mut off_curve = raw;
        off_curve[64] ^= 1;
        assert!(peer_point(&off_curve).is_err());
    }
}
