//! The applet's cryptographic commands: COMPUTE SIGNATURE, GENERATE KEY PAIR, PUT PUBLIC KEY,
//! COMPUTE DH, COMPUTE PRF and COMPUTE HKDF. Secrets in commands and answers are traced redacted
//! and held in zeroised buffers.

use log::debug;
use zeroize::Zeroizing;

use super::apdu::{Ins, Response, Trace};
use super::channel::AppletChannel;
use super::error::{AppletError, Result};
use super::formats::{parse_public_key, parse_signature};
use super::objects::{self, ObjectInfo};
use super::status::StatusWord;
use super::tlv;

/// The session number this module uses for COMPUTE SIGNATURE (its channel is leased for the
/// whole sequence, so one number per channel is enough).
const SIGN_SESSION: u8 = 0x01;
/// Session number of PUT PUBLIC KEY.
const PUT_KEY_SESSION: u8 = 0x01;

/// What GENERATE KEY PAIR answered.
#[derive(Debug, Clone, Default)]
pub struct GeneratedKeyPair {
    pub private_id: Option<Vec<u8>>,
    pub public_id: Option<Vec<u8>>,
    pub point: Option<[u8; 65]>,
}

/// Where COMPUTE PRF takes its secret from (P1 = mode).
pub enum PrfSecret<'a> {
    /// Mode `00`: the secret travels in the command (`D1`).
    Explicit(&'a [u8]),
    /// Mode `01`: a stored PSK; the card builds the RFC 4279 plain-PSK pre-master.
    Psk(&'a ObjectInfo),
    /// Mode `02`: a stored PSK and the ECDHE secret (`D4`); RFC 5489 pre-master.
    EcdhePsk(&'a ObjectInfo, &'a [u8]),
}

/// COMPUTE HKDF steps (P1): `00` extract, `01` expand, `02` both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HkdfStep {
    Extract,
    Expand,
    ExtractAndExpand,
}

/// The input key of COMPUTE HKDF: IKM (extract) or PRK (expand only).
pub enum HkdfKey<'a> {
    Explicit(&'a [u8]),
    Stored(&'a ObjectInfo),
}

impl AppletChannel<'_> {
    /// COMPUTE SIGNATURE in pad-and-sign mode: INIT (open) + UPDATE (last block) — 2 APDUs.
    /// Returns raw `r‖s`.
    pub fn sign_hash(
        &mut self,
        key: &ObjectInfo,
        hash_algorithm: u16,
        hash: &[u8],
    ) -> Result<[u8; 64]> {
        let mut init = key.reference();
        tlv::push(&mut init, 0xA1, &[0x03]);
        tlv::push(&mut init, 0x91, &hash_algorithm.to_be_bytes());
        tlv::push(&mut init, 0x92, &[objects::SIGNATURE_ECDSA]);
        let resp = self.exchange(
            Ins::ComputeSignatureInit,
            0x00,
            SIGN_SESSION,
            &init,
            None,
            Trace::Full,
        )?;
        if !resp.is_ok() {
            // A session left open by an earlier, interrupted operation: close it and retry once.
            debug!(
                "COMPUTE SIGNATURE INIT answered {}; closing the session and retrying",
                resp.sw
            );
            let _ = self.exchange(
                Ins::ComputeSignatureInit,
                0x01,
                SIGN_SESSION,
                &[],
                None,
                Trace::Full,
            )?;
            self.exchange_ok(
                Ins::ComputeSignatureInit,
                0x00,
                SIGN_SESSION,
                &init,
                None,
                "COMPUTE SIGNATURE INIT",
            )?;
        }
        let mut update = Vec::with_capacity(2 + hash.len());
        tlv::push(&mut update, 0x9E, hash);
        let data = self.exchange_ok(
            Ins::ComputeSignatureUpdate,
            0x80,
            SIGN_SESSION,
            &update,
            Some(0x00),
            "COMPUTE SIGNATURE UPDATE",
        )?;
        parse_signature(&data)
            .ok_or_else(|| AppletError::Malformed("COMPUTE SIGNATURE: malformed signature".into()))
    }

    /// GENERATE KEY PAIR into a private-key container. Returns the private and public key IDs
    /// as the card reports them (the card may change them) and the new point, when the card
    /// sends it (otherwise the caller reads it with READ PUBLIC KEY).
    pub fn generate_key_pair(&mut self, key: &ObjectInfo) -> Result<GeneratedKeyPair> {
        let data = self.exchange_ok(
            Ins::GenerateKeyPair,
            0x00,
            0x00,
            &key.reference(),
            Some(0x00),
            "GENERATE KEY PAIR",
        )?;
        let mut out = GeneratedKeyPair::default();
        let mut rest = &data[..];
        while let Ok((t, used)) = tlv::read_one(rest) {
            match t.tag {
                0x84 => out.private_id = Some(t.value.to_vec()),
                0x85 => out.public_id = Some(t.value.to_vec()),
                0x34 => out.point = parse_public_key(&rest[..used]),
                _ => {}
            }
            rest = &rest[used..];
        }
        Ok(out)
    }

    /// PUT PUBLIC KEY (init + last-block update): stores a peer point in a public-key
    /// container.
    pub fn put_public_key(&mut self, container: &ObjectInfo, point: &[u8; 65]) -> Result<()> {
        // A persistent container is content every process sees; a volatile one (an ECDH
        // peer's key) is scratch space that changes with every derivation.
        if container.key_type != Some(objects::KEY_TYPE_P256_VOLATILE) {
            self.mark_content_changed();
        }
        self.exchange_ok(
            Ins::PutPublicKeyInit,
            0x00,
            PUT_KEY_SESSION,
            &container.reference(),
            None,
            "PUT PUBLIC KEY INIT",
        )?;
        let mut inner = Vec::with_capacity(69);
        tlv::push(&mut inner, 0x86, point);
        let mut template = Vec::with_capacity(71);
        tlv::push(&mut template, 0x49, &inner);
        let mut update = Vec::with_capacity(73);
        tlv::push(&mut update, 0x34, &template);
        self.exchange_ok(
            Ins::PutPublicKeyUpdate,
            0x80,
            PUT_KEY_SESSION,
            &update,
            None,
            "PUT PUBLIC KEY UPDATE",
        )?;
        Ok(())
    }

    /// COMPUTE DH: the raw shared secret (the x-coordinate). Traced redacted.
    pub fn compute_dh(
        &mut self,
        private: &ObjectInfo,
        public: &ObjectInfo,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut data = private.reference();
        data.extend_from_slice(&public.reference());
        let resp = self.exchange(
            Ins::ComputeDh,
            0x00,
            0x00,
            &data,
            Some(0x00),
            Trace::Redacted,
        )?;
        let secret = secret_data(resp, "COMPUTE DH")?;
        if secret.len() != 32 {
            return Err(AppletError::Malformed(
                "COMPUTE DH: not a 32-byte P-256 secret".into(),
            ));
        }
        Ok(secret)
    }

    /// COMPUTE PRF: TLS 1.2 PRF (P_SHA256, or P_SHA384 with `hash` = [`objects::HASH_SHA384`])
    /// of `label_and_seed`, `len` bytes. Command and answer are traced redacted.
    pub fn compute_prf(
        &mut self,
        secret: PrfSecret<'_>,
        label_and_seed: &[u8],
        hash: u16,
        len: u8,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut data = Zeroizing::new(Vec::new());
        let mode = match secret {
            PrfSecret::Explicit(s) => {
                tlv::push(&mut data, 0xD1, s);
                0x00
            }
            PrfSecret::Psk(key) => {
                data.extend_from_slice(&key.reference());
                0x01
            }
            PrfSecret::EcdhePsk(key, other) => {
                data.extend_from_slice(&key.reference());
                tlv::push(&mut data, 0xD4, other);
                0x02
            }
        };
        tlv::push(&mut data, 0xD2, label_and_seed);
        tlv::push(&mut data, 0xD3, &[len]);
        if hash != objects::HASH_SHA256 {
            tlv::push(&mut data, 0x91, &hash.to_be_bytes());
        }
        self.checked_length(&data, "COMPUTE PRF")?;
        let resp = self.exchange(
            Ins::ComputePrf,
            mode,
            0x00,
            &data,
            Some(0x00),
            Trace::Redacted,
        )?;
        let out = secret_data(resp, "COMPUTE PRF")?;
        if out.len() != len as usize {
            return Err(AppletError::Malformed(format!(
                "COMPUTE PRF: {} bytes instead of {len}",
                out.len()
            )));
        }
        Ok(out)
    }

    /// COMPUTE HKDF (RFC 5869) with hash `hash` (tag `91` mask). Extract answers the PRK (hash
    /// length), expand `len` bytes. Command and answer are traced redacted.
    pub fn compute_hkdf(
        &mut self,
        step: HkdfStep,
        key: HkdfKey<'_>,
        salt: &[u8],
        info: &[u8],
        len: u8,
        hash: u16,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut data = Zeroizing::new(Vec::new());
        match key {
            HkdfKey::Explicit(k) => tlv::push(&mut data, 0xD1, k),
            HkdfKey::Stored(o) => data.extend_from_slice(&o.reference()),
        }
        if step != HkdfStep::Expand && !salt.is_empty() {
            tlv::push(&mut data, 0xD5, salt);
        }
        if step != HkdfStep::Extract {
            tlv::push(&mut data, 0xD2, info);
            tlv::push(&mut data, 0xD3, &[len]);
        }
        tlv::push(&mut data, 0x91, &hash.to_be_bytes());
        self.checked_length(&data, "COMPUTE HKDF")?;
        let p1 = match step {
            HkdfStep::Extract => 0x00,
            HkdfStep::Expand => 0x01,
            HkdfStep::ExtractAndExpand => 0x02,
        };
        let resp = self.exchange(
            Ins::ComputeHkdf,
            p1,
            0x00,
            &data,
            Some(0x00),
            Trace::Redacted,
        )?;
        let out = secret_data(resp, "COMPUTE HKDF")?;
        let want = match (step, hash) {
            (HkdfStep::Extract, objects::HASH_SHA384) => 48,
            (HkdfStep::Extract, objects::HASH_SHA512) => 64,
            (HkdfStep::Extract, _) => 32,
            _ => len as usize,
        };
        if out.len() != want {
            return Err(AppletError::Malformed(format!(
                "COMPUTE HKDF: {} bytes instead of {want}",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// The answer's data, held in a zeroised buffer from the start, when the card said success.
fn secret_data(resp: Response, command: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    let Response { data, sw } = resp;
    let data = Zeroizing::new(data);
    if sw != StatusWord::OK {
        return Err(AppletError::Status { command, sw });
    }
    Ok(data)
}
