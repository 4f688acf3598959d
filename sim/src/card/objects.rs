//! GET DATA (`CB`): application info, the object list (paged) and one object's information
//! structure; object lookup by ID or label; the information and public-key encodings.

use super::*;

impl Card {
    pub(super) fn get_data(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        match a.p1 {
            0x00 => {
                if a.p2 != 0 {
                    return Err(sw::WRONG_P1P2);
                }
                if a.has_lc {
                    return Err(sw::WRONG_LENGTH);
                }
                Ok(Reply::data(self.app_info()))
            }
            0x01 => {
                if a.has_lc {
                    return Err(sw::WRONG_LENGTH);
                }
                let page = self.options.object_list_page_size.max(1);
                let c_list = match a.p2 {
                    0x00 => ListCursor {
                        data: self.object_list(),
                        offset: 0,
                    },
                    0x01 => match self.chan(ch).list_cursor.take() {
                        Some(c) => c,
                        None => return Err(sw::CONDITIONS),
                    },
                    _ => return Err(sw::WRONG_P1P2),
                };
                let end = (c_list.offset + page).min(c_list.data.len());
                let chunk = c_list.data[c_list.offset..end].to_vec();
                let more = end < c_list.data.len();
                let c = self.chan(ch);
                if more {
                    c.list_cursor = Some(ListCursor {
                        data: c_list.data,
                        offset: end,
                    });
                } else {
                    c.list_cursor = None;
                }
                Ok(Reply {
                    data: chunk,
                    sw: if more { sw::MORE_DATA } else { sw::OK },
                    le_rule: LeRule::Exact,
                })
            }
            0xC1..=0xC4 => {
                if a.p2 != 0 {
                    return Err(sw::WRONG_P1P2);
                }
                let tlvs = parse_tlvs(a.data)?;
                let info = match a.p1 {
                    0xC1 => {
                        let k = self.find_private(&tlvs)?;
                        private_key_info(k)
                    }
                    0xC2 => {
                        let k = self.find_public(&tlvs)?;
                        public_key_info(k)
                    }
                    0xC3 => {
                        let f = self.find_file(&tlvs)?;
                        self.listed_file_info(f)
                    }
                    _ => {
                        let k = self.find_secret(&tlvs)?;
                        secret_key_info(k)
                    }
                };
                Ok(Reply::data(info))
            }
            _ => Err(sw::WRONG_P1P2),
        }
    }

    fn app_info(&self) -> Vec<u8> {
        let ai = &self.profile.app_info;
        let (cf_tag, ka_tag) = match self.options.app_info_tags {
            AppInfoTags::Orange => (0x90, 0x93),
            AppInfoTags::QtApplet => (0x61, 0x6F),
        };
        let mut v = Vec::with_capacity(68);
        tlv::push(&mut v, 0x10, &[ai.version]);
        tlv::push(&mut v, 0x11, &self.profile.applet_id);
        tlv::push(&mut v, 0xB1, &[ai.max_files]);
        tlv::push(&mut v, 0xB2, &[ai.max_private_keys]);
        tlv::push(&mut v, 0xB3, &[ai.max_public_keys]);
        tlv::push(&mut v, 0xB4, &[ai.max_secret_keys]);
        tlv::push(&mut v, cf_tag, &[ai.crypto_functions]);
        tlv::push(&mut v, 0x91, &ai.hash_algos.to_be_bytes());
        tlv::push(&mut v, 0x92, &[ai.signature_algos]);
        tlv::push(&mut v, ka_tag, &[ai.key_agreement_algos]);
        tlv::push(&mut v, 0x94, &[ai.key_derivation_algos]);
        tlv::push(&mut v, 0xB7, &[self.profile.max_sessions]);
        v
    }

    /// The full object list in the configured style (before paging).
    fn object_list(&self) -> Vec<u8> {
        let p = &self.profile;
        let privs: Vec<Vec<u8>> = p.private_keys.iter().map(private_key_info).collect();
        let pubs: Vec<Vec<u8>> = p.public_keys.iter().map(public_key_info).collect();
        let files: Vec<Vec<u8>> = p.files.iter().map(|f| self.listed_file_info(f)).collect();
        let secrets: Vec<Vec<u8>> = p.secret_keys.iter().map(secret_key_info).collect();
        let mut out = Vec::new();
        match self.options.object_list_style {
            ObjectListStyle::PerObject => {
                for (tag, items) in [
                    (0xC1, &privs),
                    (0xC2, &pubs),
                    (0xC4, &secrets),
                    (0xC3, &files),
                ] {
                    for i in items {
                        tlv::push(&mut out, tag, i);
                    }
                }
            }
            ObjectListStyle::PerClass => {
                for (tag, items) in [
                    (0xC1, &privs),
                    (0xC2, &pubs),
                    (0xC3, &files),
                    (0xC4, &secrets),
                ] {
                    if !items.is_empty() {
                        tlv::push(&mut out, tag, &items.concat());
                    }
                }
            }
            ObjectListStyle::NoWrapper => {
                for items in [&privs, &pubs, &files, &secrets] {
                    for i in items {
                        out.extend_from_slice(i);
                    }
                }
            }
        }
        out
    }

    // ---------------------------------------------------------------- object lookup

    pub(super) fn find_private(&self, tlvs: &[Tlv<'_>]) -> Result<&PrivateKey, u16> {
        let keys = &self.profile.private_keys;
        self.find_stored(tlvs, ObjectClass::PrivateKey, (0x84, 0x74), keys, |k| {
            (&k.id, &k.label)
        })
    }

    pub(super) fn find_public(&self, tlvs: &[Tlv<'_>]) -> Result<&PublicKey, u16> {
        let keys = &self.profile.public_keys;
        self.find_stored(tlvs, ObjectClass::PublicKey, (0x85, 0x75), keys, |k| {
            (&k.id, &k.label)
        })
    }

    pub(super) fn find_file(&self, tlvs: &[Tlv<'_>]) -> Result<&File, u16> {
        let files = &self.profile.files;
        self.find_stored(tlvs, ObjectClass::File, (0x83, 0x73), files, |f| {
            (&f.id, &f.label)
        })
    }

    pub(super) fn find_secret(&self, tlvs: &[Tlv<'_>]) -> Result<&SecretKey, u16> {
        let keys = &self.profile.secret_keys;
        self.find_stored(tlvs, ObjectClass::SecretKey, (0x86, 0x76), keys, |k| {
            (&k.id, &k.label)
        })
    }

    /// The object of `items` the command names by ID or label (tags `id_tag`/`label_tag`),
    /// unless a remote-management session holds it.
    fn find_stored<'p, T>(
        &'p self,
        tlvs: &[Tlv<'_>],
        class: ObjectClass,
        (id_tag, label_tag): (u8, u8),
        items: &'p [T],
        names: impl Fn(&T) -> (&Vec<u8>, &Option<Vec<u8>>),
    ) -> Result<&'p T, u16> {
        let r = obj_ref(tlvs, id_tag, label_tag)?;
        self.remote_check(class, &r)?;
        items
            .iter()
            .find(|item| {
                let (id, label) = names(item);
                r.matches(id, label)
            })
            .ok_or(sw::NOT_FOUND)
    }
}

pub(super) enum ObjRef<'a> {
    Id(&'a [u8]),
    Label(&'a [u8]),
}

impl ObjRef<'_> {
    pub(super) fn matches(&self, id: &[u8], label: &Option<Vec<u8>>) -> bool {
        match self {
            ObjRef::Id(x) => *x == id,
            ObjRef::Label(x) => label.as_deref() == Some(*x),
        }
    }
}

/// Exactly one of the ID tag or the label tag.
pub(super) fn obj_ref<'a>(tlvs: &[Tlv<'a>], id_tag: u8, label_tag: u8) -> Result<ObjRef<'a>, u16> {
    let id = tlv::single(tlvs, id_tag).map_err(|_| sw::WRONG_DATA)?;
    let label = tlv::single(tlvs, label_tag).map_err(|_| sw::WRONG_DATA)?;
    match (id, label) {
        (Some(i), None) if !i.is_empty() => Ok(ObjRef::Id(i)),
        (None, Some(l)) if !l.is_empty() => Ok(ObjRef::Label(l)),
        _ => Err(sw::WRONG_DATA),
    }
}

/// `34 45 49 43 86 41 <point>`.
pub fn public_key_format(point: &[u8]) -> Vec<u8> {
    let mut p86 = Vec::new();
    tlv::push(&mut p86, 0x86, point);
    let mut p49 = Vec::new();
    tlv::push(&mut p49, 0x49, &p86);
    let mut out = Vec::new();
    tlv::push(&mut out, 0x34, &p49);
    out
}

/// Extracts the point from `34 L 49 L 86 L point` (also accepts `34 L 86 L point`).
pub(super) fn parse_public_key_format(data: &[u8]) -> Option<Vec<u8>> {
    let outer = tlv::parse(data, &[]).ok()?;
    if outer.len() != 1 || outer[0].tag != 0x34 {
        return None;
    }
    let mut inner = tlv::parse(outer[0].value, &[]).ok()?;
    if inner.len() == 1 && inner[0].tag == 0x49 {
        inner = tlv::parse(inner[0].value, &[]).ok()?;
    }
    let p = tlv::single(&inner, 0x86).ok()??;
    Some(p.to_vec())
}

struct KeyAttrs<'a> {
    id: &'a [u8],
    label: &'a Option<Vec<u8>>,
    access: u8,
    state: ObjectState,
    key_type: u8,
    usage: u8,
    cf: u8,
    sig: u8,
    hash: u16,
    ka: u8,
}

fn key_info(label_tag: u8, id_tag: u8, k: KeyAttrs<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(l) = k.label {
        tlv::push(&mut v, label_tag, l);
    }
    tlv::push(&mut v, id_tag, k.id);
    tlv::push(&mut v, 0x60, &[k.access]);
    tlv::push(&mut v, 0x4A, &[k.state.byte()]);
    tlv::push(&mut v, 0x4B, &[k.key_type]);
    tlv::push(&mut v, 0x4E, &[k.usage]);
    tlv::push(&mut v, 0x61, &[k.cf]);
    tlv::push(&mut v, 0x92, &[k.sig]);
    tlv::push(&mut v, 0x91, &k.hash.to_be_bytes());
    tlv::push(&mut v, 0x6F, &[k.ka]);
    v
}

/// Private-key information structure (tags `74 84 60 4A 4B 4E 61 92 91 6F`).
pub fn private_key_info(k: &PrivateKey) -> Vec<u8> {
    key_info(
        0x74,
        0x84,
        KeyAttrs {
            id: &k.id,
            label: &k.label,
            access: k.access,
            state: k.state,
            key_type: k.key_type,
            usage: k.usage,
            cf: k.crypto_functions,
            sig: k.signature_algos,
            hash: k.hash_algos,
            ka: k.key_agreement_algos,
        },
    )
}

/// Public-key information structure (tags `75 85 60 4A 4B 4E 61 92 91 6F`).
pub fn public_key_info(k: &PublicKey) -> Vec<u8> {
    key_info(
        0x75,
        0x85,
        KeyAttrs {
            id: &k.id,
            label: &k.label,
            access: k.access,
            state: k.state,
            key_type: k.key_type,
            usage: k.usage,
            cf: k.crypto_functions,
            sig: k.signature_algos,
            hash: k.hash_algos,
            ka: k.key_agreement_algos,
        },
    )
}

/// File information structure (tags `73 83 60 4A 21 20`).
pub fn file_info(f: &File) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(l) = &f.label {
        tlv::push(&mut v, 0x73, l);
    }
    tlv::push(&mut v, 0x83, &f.id);
    tlv::push(&mut v, 0x60, &[f.access]);
    tlv::push(&mut v, 0x4A, &[f.state.byte()]);
    tlv::push(&mut v, 0x21, &[f.usage]);
    tlv::push(
        &mut v,
        0x20,
        &(f.content.len().min(0xFFFF) as u16).to_be_bytes(),
    );
    v
}

/// Secret-key information structure (tags `76 86 60 4A 4B 61 94`).
pub fn secret_key_info(k: &SecretKey) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(l) = &k.label {
        tlv::push(&mut v, 0x76, l);
    }
    tlv::push(&mut v, 0x86, &k.id);
    tlv::push(&mut v, 0x60, &[k.access]);
    tlv::push(&mut v, 0x4A, &[k.state.byte()]);
    tlv::push(&mut v, 0x4B, &[k.key_type]);
    tlv::push(&mut v, 0x61, &[k.crypto_functions]);
    tlv::push(&mut v, 0x94, &[k.key_derivation_algos]);
    v
}
