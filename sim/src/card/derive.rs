//! IoT SAFE feature set 2: COMPUTE PRF (`48`, TLS 1.2 PRF) and COMPUTE HKDF (`4A`,
//! RFC 5869) with an explicit secret (`D1`) or a stored secret key (`86` ID / `76` label;
//! the label is the PSK identity). Secret values and outputs never leave the card other
//! than as the command's result.
//!
//! Check order: P1/P2 (`6A86`) → TLVs (`6A80`: syntax, unknown/duplicate/missing tags,
//! lengths, values, tags of another mode) → remote session (`6984`) → lookup (`6A88`) →
//! state, functions, algorithms (`6985`).

use super::*;
use crate::kdf;

/// Key-derivation algorithm bit (tag `94`): TLS 1.2 PRF.
pub const KD_TLS12_PRF: u8 = 0x01;
/// Key-derivation algorithm bit (tag `94`): HKDF.
pub const KD_HKDF: u8 = 0x02;

/// An optional value of `min..=255` bytes.
fn sized<'a>(t: &[Tlv<'a>], tag: u8, min: usize) -> Result<Option<&'a [u8]>, u16> {
    match get(t, tag) {
        Some(v) if v.len() < min || v.len() > 255 => Err(sw::WRONG_DATA),
        v => Ok(v),
    }
}

/// A mandatory value of `min..=255` bytes.
fn required<'a>(t: &[Tlv<'a>], tag: u8, min: usize) -> Result<&'a [u8], u16> {
    sized(t, tag, min)?.ok_or(sw::WRONG_DATA)
}

/// `D3 01 <n>`, n in 1..=255.
fn out_len(t: &[Tlv<'_>]) -> Result<usize, u16> {
    match get(t, 0xD3) {
        Some([n]) if *n != 0 => Ok(*n as usize),
        _ => Err(sw::WRONG_DATA),
    }
}

/// `91 02 <mask>` among `allowed` (absent: SHA-256).
fn hash_alg(t: &[Tlv<'_>], allowed: &[HashAlg]) -> Result<HashAlg, u16> {
    match get(t, 0x91) {
        None => Ok(HashAlg::Sha256),
        Some([hi, lo]) => HashAlg::from_mask(u16::from_be_bytes([*hi, *lo]))
            .filter(|a| allowed.contains(a))
            .ok_or(sw::WRONG_DATA),
        Some(_) => Err(sw::WRONG_DATA),
    }
}

/// The stored-secret reference if `86` or `76` is present (not both; 1..127 bytes).
fn secret_ref<'a>(t: &[Tlv<'a>]) -> Result<Option<ObjRef<'a>>, u16> {
    match (get(t, 0x86), get(t, 0x76)) {
        (None, None) => Ok(None),
        (Some(i), None) if (1..=127).contains(&i.len()) => Ok(Some(ObjRef::Id(i))),
        (None, Some(l)) if (1..=127).contains(&l.len()) => Ok(Some(ObjRef::Label(l))),
        _ => Err(sw::WRONG_DATA),
    }
}

impl Card {
    /// The value of a stored secret key usable for key-derivation algorithm `kd`:
    /// remote session `6984`, unknown `6A88`, deactivated / empty / without function `08` or
    /// without `kd` in `94` → `6985`.
    fn usable_secret(&self, r: &ObjRef<'_>, kd: u8) -> Result<Vec<u8>, u16> {
        self.remote_check(ObjectClass::SecretKey, r)?;
        let k = self
            .profile
            .secret_keys
            .iter()
            .find(|k| r.matches(&k.id, &k.label))
            .ok_or(sw::REF_NOT_FOUND)?;
        if k.state != ObjectState::Activated
            || k.crypto_functions & CF_KEY_DERIVATION == 0
            || k.key_derivation_algos & kd == 0
        {
            return Err(sw::CONDITIONS);
        }
        match &k.value {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(sw::CONDITIONS),
        }
    }

    /// COMPUTE PRF `48`: P1 `00` explicit secret, `01` RFC 4279 plain PSK, `02` RFC 5489
    /// ECDHE-PSK. Response: exactly `D3` bytes.
    pub(super) fn compute_prf(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 > 0x02 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let allowed: &[u8] = match a.p1 {
            0x00 => &[0xD1, 0xD2, 0xD3, 0x91],
            0x01 => &[0x86, 0x76, 0xD2, 0xD3, 0x91],
            _ => &[0x86, 0x76, 0xD4, 0xD2, 0xD3, 0x91],
        };
        let t = fields(a.data, allowed)?;
        let label_seed = required(&t, 0xD2, 1)?;
        let n = out_len(&t)?;
        let alg = hash_alg(&t, &[HashAlg::Sha256, HashAlg::Sha384])?;
        let secret = match a.p1 {
            0x00 => required(&t, 0xD1, 1)?.to_vec(),
            _ => {
                let other = if a.p1 == 0x02 {
                    Some(required(&t, 0xD4, 1)?)
                } else {
                    None
                };
                let r = secret_ref(&t)?.ok_or(sw::WRONG_DATA)?;
                let psk = self.usable_secret(&r, KD_TLS12_PRF)?;
                match other {
                    None => kdf::psk_premaster_plain(&psk),
                    Some(o) => kdf::psk_premaster_other(o, &psk),
                }
            }
        };
        Ok(Reply::data(kdf::tls12_prf(alg, &secret, label_seed, n)))
    }

    /// COMPUTE HKDF `4A`: P1 `00` extract (→ PRK), `01` expand (→ OKM), `02` extract then
    /// expand (→ OKM). Key material from `D1` or a stored secret (`86`/`76`).
    pub(super) fn compute_hkdf(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 > 0x02 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let allowed: &[u8] = match a.p1 {
            0x00 => &[0xD1, 0x86, 0x76, 0xD5, 0x91],
            0x01 => &[0xD1, 0x86, 0x76, 0xD2, 0xD3, 0x91],
            _ => &[0xD1, 0x86, 0x76, 0xD5, 0xD2, 0xD3, 0x91],
        };
        let t = fields(a.data, allowed)?;
        let alg = hash_alg(&t, &HashAlg::ALL)?;
        let expand = a.p1 != 0x00;
        let extract = a.p1 != 0x01;
        // IKM (extract) may be empty; a PRK (expand only) may not.
        let explicit = sized(&t, 0xD1, if extract { 0 } else { 1 })?;
        let stored = secret_ref(&t)?;
        let salt = sized(&t, 0xD5, 0)?.unwrap_or(&[]);
        let (info, n) = if expand {
            (sized(&t, 0xD2, 0)?.unwrap_or(&[]), out_len(&t)?)
        } else {
            (&[][..], 0)
        };
        let key = match (explicit, stored) {
            (Some(v), None) => v.to_vec(),
            (None, Some(r)) => self.usable_secret(&r, KD_HKDF)?,
            _ => return Err(sw::WRONG_DATA),
        };
        let prk = if extract {
            kdf::hkdf_extract(alg, salt, &key)
        } else {
            key
        };
        if !expand {
            return Ok(Reply::data(prk));
        }
        let okm = kdf::hkdf_expand(alg, &prk, info, n).ok_or(sw::WRONG_DATA)?;
        Ok(Reply::data(okm))
    }
}
