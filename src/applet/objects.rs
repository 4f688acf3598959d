//! The applet's object list (GET DATA P1=01) and information structures, parsed tolerantly:
//! per-object wrappers (`C1 L obj`), per-class wrappers (`C1 L obj obj …`) and no wrappers at
//! all are accepted, as are the length quirks real applets show.

use super::tlv::{self, Tlv};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ObjectClass {
    PrivateKey,
    PublicKey,
    File,
    SecretKey,
}

impl ObjectClass {
    /// Tag of the label and of the ID of this class in references and info structures.
    pub fn label_tag(self) -> u8 {
        match self {
            ObjectClass::File => 0x73,
            ObjectClass::PrivateKey => 0x74,
            ObjectClass::PublicKey => 0x75,
            ObjectClass::SecretKey => 0x76,
        }
    }

    pub fn id_tag(self) -> u8 {
        self.label_tag() + 0x10
    }

    fn from_wrapper(tag: u8) -> Option<Self> {
        match tag {
            0xC1 => Some(ObjectClass::PrivateKey),
            0xC2 => Some(ObjectClass::PublicKey),
            0xC3 => Some(ObjectClass::File),
            0xC4 => Some(ObjectClass::SecretKey),
            _ => None,
        }
    }

    fn from_reference_tag(tag: u8) -> Option<Self> {
        match tag {
            0x73 | 0x83 => Some(ObjectClass::File),
            0x74 | 0x84 => Some(ObjectClass::PrivateKey),
            0x75 | 0x85 => Some(ObjectClass::PublicKey),
            0x76 | 0x86 => Some(ObjectClass::SecretKey),
            _ => None,
        }
    }
}

/// IoT.05 key types (tag `4B`).
pub const KEY_TYPE_P256_PERSISTENT: u8 = 0x13;
pub const KEY_TYPE_P256_VOLATILE: u8 = 0x14;
/// Crypto function bits (tag `61`).
pub const FUNCTION_SIGNATURE: u8 = 0x01;
pub const FUNCTION_KEY_GENERATION: u8 = 0x02;
pub const FUNCTION_KEY_AGREEMENT: u8 = 0x04;
pub const FUNCTION_KEY_DERIVATION: u8 = 0x08;
/// Key-derivation algorithm bits (tag `94`).
pub const KEY_DERIVATION_PRF: u8 = 0x01;
pub const KEY_DERIVATION_HKDF: u8 = 0x02;
/// Signature algorithm bit for ECDSA (tag `92`).
pub const SIGNATURE_ECDSA: u8 = 0x04;
/// Hash algorithm bits (tag `91`).
pub const HASH_SHA256: u16 = 0x0001;
pub const HASH_SHA384: u16 = 0x0002;
pub const HASH_SHA512: u16 = 0x0004;
/// File usage (tag `21`).
pub const FILE_USAGE_CERTIFICATE: u8 = 0x02;

/// One object as the applet describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    pub class: Option<ObjectClass>,
    pub id: Option<Vec<u8>>,
    pub label: Option<Vec<u8>>,
    pub access: Option<u8>,
    pub state: Option<u8>,
    pub key_type: Option<u8>,
    pub key_usage: Option<u8>,
    pub functions: Option<u8>,
    pub signature_algorithms: Option<u8>,
    pub hash_algorithms: Option<u16>,
    pub key_agreement: Option<u8>,
    pub key_derivation: Option<u8>,
    pub file_usage: Option<u8>,
    pub file_size: Option<u16>,
}

impl ObjectInfo {
    pub fn class(&self) -> ObjectClass {
        self.class.unwrap_or(ObjectClass::File)
    }

    /// Activated (filled) objects only; a missing state tag counts as activated.
    pub fn is_active(&self) -> bool {
        self.state != Some(0)
    }

    /// The reference TLV the applet accepts for this object: the ID, else the label.
    pub fn reference(&self) -> Vec<u8> {
        let class = self.class();
        let mut out = Vec::new();
        match (&self.id, &self.label) {
            (Some(id), _) => tlv::push(&mut out, class.id_tag(), id),
            (None, Some(label)) => tlv::push(&mut out, class.label_tag(), label),
            (None, None) => {}
        }
        out
    }

    pub fn can_sign(&self) -> bool {
        self.functions.is_none_or(|f| f & FUNCTION_SIGNATURE != 0)
            && self
                .signature_algorithms
                .is_none_or(|s| s & SIGNATURE_ECDSA != 0)
    }

    pub fn can_derive(&self) -> bool {
        self.functions
            .is_some_and(|f| f & FUNCTION_KEY_AGREEMENT != 0)
    }

    /// A secret key (PSK) usable for the key-derivation algorithm `algorithm_bit` (tag `94`).
    pub fn can_derive_with(&self, algorithm_bit: u8) -> bool {
        self.functions
            .is_none_or(|f| f & FUNCTION_KEY_DERIVATION != 0)
            && self.key_derivation.is_some_and(|k| k & algorithm_bit != 0)
    }

    pub fn is_p256(&self) -> bool {
        matches!(
            self.key_type,
            None | Some(KEY_TYPE_P256_PERSISTENT) | Some(KEY_TYPE_P256_VOLATILE)
        )
    }

    fn apply(&mut self, t: &Tlv<'_>) {
        let byte = t.value.first().copied();
        match t.tag {
            0x73..=0x76 => self.label = Some(t.value.to_vec()),
            0x83..=0x86 => self.id = Some(t.value.to_vec()),
            0x60 => self.access = byte,
            0x4A => self.state = byte,
            0x4B => self.key_type = byte,
            0x4E => self.key_usage = byte,
            0x61 => self.functions = byte,
            0x92 => self.signature_algorithms = byte,
            0x91 => {
                self.hash_algorithms = match t.value {
                    [b] => Some(*b as u16),
                    [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
                    [] => None,
                }
            }
            0x6F => self.key_agreement = byte,
            0x94 => self.key_derivation = byte,
            0x21 => self.file_usage = byte,
            0x20 => {
                self.file_size = match t.value {
                    [hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
                    [b] => Some(*b as u16),
                    _ => None,
                }
            }
            _ => {}
        }
    }
}

/// Splits a run of info-structure TLVs into objects. A new object starts at a label or ID tag
/// when the current object already has one (labels come before IDs on every card seen), or when
/// the tag belongs to another class.
fn split_objects(tlvs: &[Tlv<'_>], wrapper_class: Option<ObjectClass>, out: &mut Vec<ObjectInfo>) {
    let mut current: Option<ObjectInfo> = None;
    for t in tlvs {
        if let Some(class) = ObjectClass::from_reference_tag(t.tag) {
            let is_label = t.tag == class.label_tag();
            let starts_new = match &current {
                None => true,
                Some(obj) => {
                    obj.class != Some(class)
                        || obj.id.is_some()
                        || (is_label && obj.label.is_some())
                }
            };
            if starts_new {
                if let Some(done) = current.take() {
                    out.push(done);
                }
                current = Some(ObjectInfo {
                    class: Some(wrapper_class.unwrap_or(class)),
                    ..Default::default()
                });
            }
        }
        match current.as_mut() {
            Some(obj) => obj.apply(t),
            // Attributes before any reference tag: keep them on an object of the wrapper class.
            None => {
                let mut obj = ObjectInfo {
                    class: wrapper_class,
                    ..Default::default()
                };
                obj.apply(t);
                current = Some(obj);
            }
        }
    }
    if let Some(done) = current {
        out.push(done);
    }
}

/// Parses TLVs of an info structure, repairing the known `92 02 04 91 …` applet defect
/// (length 2 with one value byte) before giving up.
fn parse_lenient(data: &[u8]) -> Result<Vec<Tlv<'_>>, tlv::TlvError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() >= 4 && rest[0] == 0x92 && rest[1] == 0x02 && rest[3] == 0x91 {
            out.push(Tlv {
                tag: 0x92,
                value: &rest[2..3],
            });
            rest = &rest[3..];
            continue;
        }
        let (t, used) = tlv::read_one(rest)?;
        out.push(t);
        rest = &rest[used..];
    }
    Ok(out)
}

/// Parses a whole object list in any of the three wrapper styles.
pub fn parse_object_list(data: &[u8]) -> Result<Vec<ObjectInfo>, tlv::TlvError> {
    let top = parse_lenient(data)?;
    let mut out = Vec::new();
    let mut loose: Vec<Tlv<'_>> = Vec::new();
    for t in &top {
        if let Some(class) = ObjectClass::from_wrapper(t.tag) {
            if !loose.is_empty() {
                split_objects(&loose, None, &mut out);
                loose.clear();
            }
            let inner = parse_lenient(t.value)?;
            split_objects(&inner, Some(class), &mut out);
        } else {
            loose.push(*t);
        }
    }
    if !loose.is_empty() {
        split_objects(&loose, None, &mut out);
    }
    Ok(out)
}

/// Parses the answer to GET DATA for one object (wrapped in `Cx` or not).
pub fn parse_single_object(data: &[u8]) -> Result<Option<ObjectInfo>, tlv::TlvError> {
    Ok(parse_object_list(data)?.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(digits).unwrap()
    }

    /// The real-card trace of iot05-apdu.md §9.1: no wrappers, with the `92 02 04` defect.
    #[test]
    fn real_card_list_without_wrappers() {
        let data = hex(
            "74 02 31 31 84 02 00 02 60 01 02 4A 01 01 4B 01 13 4E 01 03 61 01 07 92 02 04 91 02 00 07 6F 01 01
             75 02 31 31 85 02 00 02 60 01 02 4A 01 01 4B 01 13 4E 01 03 61 01 07 92 02 04 91 02 00 07 6F 01 01
             73 02 30 31 83 02 00 01 60 01 01 4A 01 01 21 01 01 20 02 00 40",
        );
        let objs = parse_object_list(&data).unwrap();
        assert_eq!(objs.len(), 3);
        assert_eq!(objs[0].class, Some(ObjectClass::PrivateKey));
        assert_eq!(objs[0].id.as_deref(), Some(&[0, 2][..]));
        assert_eq!(objs[0].label.as_deref(), Some(&b"11"[..]));
        assert_eq!(objs[0].signature_algorithms, Some(4));
        assert_eq!(objs[0].hash_algorithms, Some(7));
        assert_eq!(objs[1].class, Some(ObjectClass::PublicKey));
        assert_eq!(objs[2].class, Some(ObjectClass::File));
        assert_eq!(objs[2].file_size, Some(0x40));
        assert_eq!(objs[2].file_usage, Some(1));
    }

    #[test]
    fn per_object_and_per_class_wrappers() {
        let k1 = hex("74 01 41 84 01 01 4A 01 01 4B 01 13");
        let k2 = hex("84 01 04 4A 01 00 4B 01 14");
        let f = hex("73 01 43 83 01 02 4A 01 01 21 01 02 20 02 01 00");
        let mut per_object = Vec::new();
        for (tag, body) in [(0xC1, &k1), (0xC1, &k2), (0xC3, &f)] {
            tlv::push(&mut per_object, tag, body);
        }
        let mut per_class = Vec::new();
        tlv::push(&mut per_class, 0xC1, &[k1.clone(), k2.clone()].concat());
        tlv::push(&mut per_class, 0xC3, &f);
        for data in [per_object, per_class] {
            let objs = parse_object_list(&data).unwrap();
            assert_eq!(objs.len(), 3, "{objs:?}");
            assert_eq!(objs[0].id.as_deref(), Some(&[1][..]));
            assert_eq!(objs[1].id.as_deref(), Some(&[4][..]));
            assert!(!objs[1].is_active());
            assert_eq!(objs[1].class, Some(ObjectClass::PrivateKey));
            assert_eq!(objs[2].class, Some(ObjectClass::File));
            assert_eq!(objs[2].file_size, Some(256));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_object_list(&[0xC1, 0x05, 0x84]).is_err());
        assert!(parse_object_list(&[0x84, 0xFF]).is_err());
        assert_eq!(parse_object_list(&[]).unwrap().len(), 0);
    }
}
