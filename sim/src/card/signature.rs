//! Sign / verify / put-public-key sessions: INIT (`2A`/`2C`/`24`), COMPUTE SIGNATURE UPDATE
//! (`2B`), VERIFY SIGNATURE UPDATE (`2D`) and PUT PUBLIC KEY UPDATE (`D8`).

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

use super::*;
use crate::hash::{self, Hasher};

/// Sign/verify session mode (tag `A1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    FullText,
    LastBlock,
    PadAndSign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum SessionKind {
    Sign,
    Verify,
    PutKey,
}

impl SessionKind {
    /// The class of the object a session of this kind works on.
    pub(super) fn class(self) -> ObjectClass {
        match self {
            SessionKind::Sign => ObjectClass::PrivateKey,
            SessionKind::Verify | SessionKind::PutKey => ObjectClass::PublicKey,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) enum Session {
    /// Sign or verify.
    Crypto {
        key_id: Vec<u8>,
        mode: Mode,
        hash: HashAlg,
        hasher: Box<Hasher>,
    },
    /// PUT PUBLIC KEY.
    PutKey { key_id: Vec<u8>, buf: Vec<u8> },
}

impl Session {
    pub(super) fn key_id(&self) -> &[u8] {
        match self {
            Session::Crypto { key_id, .. } | Session::PutKey { key_id, .. } => key_id,
        }
    }
}

/// Result of the last block of a sign/verify session.
struct Finished {
    key_id: Vec<u8>,
    digest: Vec<u8>,
    signature: Option<Vec<u8>>,
}

impl Card {
    fn open_session_count(&self) -> usize {
        self.channels
            .iter()
            .flatten()
            .map(|c| c.sessions.len())
            .sum()
    }

    pub(super) fn session_init(&mut self, ch: usize, a: &Apdu<'_>, kind: SessionKind) -> CmdResult {
        if a.p2 > 0x0F {
            return Err(sw::WRONG_P1P2);
        }
        match a.p1 {
            0x01 => {
                let c = self.chan(ch);
                c.sessions.remove(&(kind, a.p2));
                c.interrupted.remove(&(kind, a.p2));
                return Ok(Reply::ok());
            }
            0x00 => {}
            _ => return Err(sw::WRONG_P1P2),
        }
        if !self.chan(ch).sessions.is_empty() {
            self.stats.interleaved += 1;
            *self
                .stats
                .interleaved_by_channel
                .entry(ch as u8)
                .or_insert(0) += 1;
        }
        let tlvs = parse_tlvs(a.data)?;
        let session = match kind {
            SessionKind::PutKey => {
                let k = self.find_public(&tlvs)?;
                if k.access & ACCESS_UPDATE == 0 {
                    return Err(sw::CONDITIONS);
                }
                Session::PutKey {
                    key_id: k.id.clone(),
                    buf: Vec::new(),
                }
            }
            SessionKind::Sign | SessionKind::Verify => {
                let mode = match tlv::single(&tlvs, 0xA1).map_err(|_| sw::WRONG_DATA)? {
                    Some([1]) => Mode::FullText,
                    Some([2]) => Mode::LastBlock,
                    Some([3]) => Mode::PadAndSign,
                    _ => return Err(sw::WRONG_DATA),
                };
                let hash = match tlv::single(&tlvs, 0x91).map_err(|_| sw::WRONG_DATA)? {
                    Some([b]) => HashAlg::from_mask(*b as u16),
                    Some([h, l]) => HashAlg::from_mask(u16::from_be_bytes([*h, *l])),
                    _ => None,
                }
                .ok_or(sw::WRONG_DATA)?;
                match tlv::single(&tlvs, 0x92).map_err(|_| sw::WRONG_DATA)? {
                    Some([SIG_ECDSA]) => {}
                    _ => return Err(sw::WRONG_DATA),
                }
                let (id, state, cf, sig, hashes, filled) = if kind == SessionKind::Sign {
                    let k = self.find_private(&tlvs)?;
                    (
                        k.id.clone(),
                        k.state,
                        k.crypto_functions,
                        k.signature_algos,
                        k.hash_algos,
                        k.private.is_some(),
                    )
                } else {
                    let k = self.find_public(&tlvs)?;
                    (
                        k.id.clone(),
                        k.state,
                        k.crypto_functions,
                        k.signature_algos,
                        k.hash_algos,
                        k.point.is_some(),
                    )
                };
                if state != ObjectState::Activated
                    || !filled
                    || cf & CF_SIGNATURE == 0
                    || sig & SIG_ECDSA == 0
                    || hashes & hash.mask() == 0
                {
                    return Err(sw::CONDITIONS);
                }
                Session::Crypto {
                    key_id: id,
                    mode,
                    hash,
                    hasher: Box::new(Hasher::new(hash)),
                }
            }
        };
        let replacing = self.chan(ch).sessions.contains_key(&(kind, a.p2));
        if !replacing && self.open_session_count() >= self.profile.max_sessions as usize {
            return Err(sw::CAPACITY);
        }
        let c = self.chan(ch);
        c.sessions.insert((kind, a.p2), session);
        c.interrupted.remove(&(kind, a.p2));
        Ok(Reply::ok())
    }

    /// Common part of COMPUTE / VERIFY SIGNATURE update: feeds data, returns the final hash
    /// on the last block. `extra` tags (the `33` signature) are allowed on the last block.
    fn crypto_update(
        &mut self,
        ch: usize,
        a: &Apdu<'_>,
        kind: SessionKind,
    ) -> Result<Option<Finished>, u16> {
        let last = match a.p1 {
            0x80 => true,
            0x00 => false,
            _ => return Err(sw::WRONG_P1P2),
        };
        if a.p2 > 0x0F {
            return Err(sw::WRONG_P1P2);
        }
        let key = (kind, a.p2);
        let Some(Session::Crypto {
            key_id,
            mode,
            hash,
            hasher,
        }) = self.chan(ch).sessions.get(&key).cloned()
        else {
            return Err(sw::CONDITIONS);
        };
        self.session_guard(ch, key, &key_id)?;
        let tlvs = tlv::parse(a.data, &[0x33]).map_err(|_| sw::WRONG_DATA)?;
        let signature = if kind == SessionKind::Verify && last {
            Some(
                tlv::single(&tlvs, 0x33)
                    .map_err(|_| sw::WRONG_DATA)?
                    .ok_or(sw::WRONG_DATA)?
                    .to_vec(),
            )
        } else {
            None
        };
        let allowed: &[u8] = match mode {
            Mode::FullText => &[0x9B],
            Mode::LastBlock => &[0x9A, 0x9C, 0x9D],
            Mode::PadAndSign => &[0x9E],
        };
        if tlvs
            .iter()
            .any(|t| !(allowed.contains(&t.tag) || (t.tag == 0x33 && signature.is_some())))
        {
            return Err(sw::WRONG_DATA);
        }
        let digest = match mode {
            Mode::FullText => {
                if !tlvs.iter().any(|t| t.tag == 0x9B) {
                    return Err(sw::WRONG_DATA);
                }
                let mut h = *hasher;
                for t in tlvs.iter().filter(|t| t.tag == 0x9B) {
                    h.update(t.value);
                }
                if !last {
                    if let Some(Session::Crypto { hasher, .. }) =
                        self.chan(ch).sessions.get_mut(&key)
                    {
                        **hasher = h;
                    }
                    return Ok(None);
                }
                h.finish()
            }
            Mode::LastBlock => {
                if !last {
                    return Err(sw::WRONG_P1P2);
                }
                let block = need(&tlvs, 0x9A)?;
                let state = need(&tlvs, 0x9C)?;
                let count = match need(&tlvs, 0x9D)? {
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]) as u64,
                    _ => return Err(sw::WRONG_DATA),
                };
                hash::finish_from_midstate(hash, state, count, block).map_err(|_| sw::WRONG_DATA)?
            }
            Mode::PadAndSign => {
                if !last {
                    return Err(sw::WRONG_P1P2);
                }
                let h = need(&tlvs, 0x9E)?;
                if h.len() != hash.output_len() {
                    return Err(sw::WRONG_DATA);
                }
                h.to_vec()
            }
        };
        if let Some(s) = &signature
            && s.len() != 64
        {
            return Err(sw::WRONG_DATA);
        }
        self.chan(ch).sessions.remove(&key);
        Ok(Some(Finished {
            key_id,
            digest,
            signature,
        }))
    }

    pub(super) fn sign_update(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        let Some(Finished { key_id, digest, .. }) = self.crypto_update(ch, a, SessionKind::Sign)?
        else {
            return Ok(Reply::ok());
        };
        let k = self.profile.private_key(&key_id).ok_or(sw::CONDITIONS)?;
        if k.state != ObjectState::Activated {
            return Err(sw::CONDITIONS);
        }
        let scalar = k.private.as_deref().ok_or(sw::CONDITIONS)?;
        let sk = SigningKey::from_slice(scalar).map_err(|_| sw::CONDITIONS)?;
        let sig: Signature = sk.sign_prehash(&digest).map_err(|_| sw::UNKNOWN)?;
        if !self.options.latency_per_signature.is_zero() {
            std::thread::sleep(self.options.latency_per_signature);
        }
        let rs = sig.to_bytes();
        let mut out = Vec::with_capacity(67);
        out.push(0x33);
        match self.options.signature_length_style {
            SignatureLengthStyle::OneByte => out.push(0x40),
            SignatureLengthStyle::TwoByte => out.extend_from_slice(&[0x00, 0x40]),
        }
        out.extend_from_slice(&rs);
        Ok(Reply::free(out))
    }

    pub(super) fn verify_update(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        let Some(Finished {
            key_id,
            digest,
            signature,
        }) = self.crypto_update(ch, a, SessionKind::Verify)?
        else {
            return Ok(Reply::ok());
        };
        let signature = signature.ok_or(sw::WRONG_DATA)?;
        let k = self.profile.public_key(&key_id).ok_or(sw::CONDITIONS)?;
        let point = k.point.as_deref().ok_or(sw::CONDITIONS)?;
        let vk = VerifyingKey::from_sec1_bytes(point).map_err(|_| sw::CONDITIONS)?;
        let Ok(sig) = Signature::from_slice(&signature) else {
            return Err(sw::SIGNATURE_MISMATCH);
        };
        match vk.verify_prehash(&digest, &sig) {
            Ok(()) => Ok(Reply::ok()),
            Err(_) => Err(sw::SIGNATURE_MISMATCH),
        }
    }

    pub(super) fn put_key_update(&mut self, ch: usize, a: &Apdu<'_>) -> CmdResult {
        let last = match a.p1 {
            0x80 => true,
            0x00 => false,
            _ => return Err(sw::WRONG_P1P2),
        };
        if a.p2 > 0x0F {
            return Err(sw::WRONG_P1P2);
        }
        let key = (SessionKind::PutKey, a.p2);
        let key_id = match self.chan(ch).sessions.get(&key) {
            Some(s @ Session::PutKey { .. }) => s.key_id().to_vec(),
            _ => return Err(sw::CONDITIONS),
        };
        self.session_guard(ch, key, &key_id)?;
        let (key_id, data) = match self.chan(ch).sessions.get_mut(&key) {
            Some(Session::PutKey { key_id, buf }) => {
                buf.extend_from_slice(a.data);
                if !last {
                    return Ok(Reply::ok());
                }
                // The last block consumes the buffer, even if its content is invalid.
                (key_id.clone(), std::mem::take(buf))
            }
            _ => return Err(sw::CONDITIONS),
        };
        let point = parse_public_key_format(&data).ok_or(sw::WRONG_DATA)?;
        if point.len() != 65 || p256::PublicKey::from_sec1_bytes(&point).is_err() {
            return Err(sw::WRONG_DATA);
        }
        self.chan(ch).sessions.remove(&key);
        let k = self
            .profile
            .public_keys
            .iter_mut()
            .find(|k| k.id == key_id)
            .ok_or(sw::CONDITIONS)?;
        k.point = Some(point);
        k.state = ObjectState::Activated;
        let persistent = is_persistent_key_type(k.key_type);
        self.content_changed(persistent);
        Ok(Reply::ok())
    }

    /// Checks the object of an open session before an update: being updated by a remote
    /// session → `6984`; changed underneath the session → `6989` (the session is dropped).
    fn session_guard(
        &mut self,
        ch: usize,
        key: (SessionKind, u8),
        key_id: &[u8],
    ) -> Result<(), u16> {
        if self.remote_has(key.0.class(), key_id) {
            return Err(sw::REMOTE_UPDATING);
        }
        let c = self.chan(ch);
        if c.interrupted.remove(&key) {
            c.sessions.remove(&key);
            return Err(sw::CAPACITY);
        }
        Ok(())
    }
}
