//! GENERATE KEY PAIR (`B9`) and COMPUTE DH (`46`).

use p256::elliptic_curve::sec1::ToSec1Point;

use super::*;

impl Card {
    pub(super) fn generate_key_pair(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let tlvs = parse_tlvs(a.data)?;
        let k = self.find_private(&tlvs)?;
        if k.crypto_functions & CF_KEY_GENERATION == 0
            || !matches!(
                k.key_type,
                KEY_TYPE_P256_PERSISTENT | KEY_TYPE_P256_VOLATILE
            )
        {
            return Err(sw::CONDITIONS);
        }
        let id = k.id.clone();
        let persistent = is_persistent_key_type(k.key_type);
        let pub_id = paired_public_id(&self.profile, &id);
        if self.remote_has(ObjectClass::PublicKey, &pub_id) {
            return Err(sw::REMOTE_UPDATING);
        }
        let sk = random_secret_key().ok_or(sw::UNKNOWN)?;
        let point = sk.public_key().to_sec1_point(false).as_bytes().to_vec();
        if let Some(k) = self.profile.private_keys.iter_mut().find(|k| k.id == id) {
            k.private = Some(sk.to_bytes().to_vec());
            k.state = ObjectState::Activated;
        }
        if let Some(p) = self.profile.public_keys.iter_mut().find(|k| k.id == pub_id) {
            p.point = Some(point.clone());
            p.state = ObjectState::Activated;
        }
        self.content_changed(persistent);
        let mut out = Vec::new();
        tlv::push(&mut out, 0x84, &id);
        tlv::push(&mut out, 0x85, &pub_id);
        out.extend_from_slice(&public_key_format(&point));
        Ok(Reply::data(out))
    }

    pub(super) fn compute_dh(&mut self, a: &Apdu<'_>) -> CmdResult {
        if a.p1 != 0 || a.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let tlvs = parse_tlvs(a.data)?;
        let k = self.find_private(&tlvs)?;
        let p = self.find_public(&tlvs)?;
        if k.state != ObjectState::Activated
            || k.crypto_functions & CF_KEY_AGREEMENT == 0
            || k.key_agreement_algos & KA_ECKA == 0
            || p.state != ObjectState::Activated
        {
            return Err(sw::CONDITIONS);
        }
        let scalar = k.private.as_deref().ok_or(sw::CONDITIONS)?;
        let point = p.point.as_deref().ok_or(sw::CONDITIONS)?;
        let sk = p256::SecretKey::from_slice(scalar).map_err(|_| sw::CONDITIONS)?;
        let pk = p256::PublicKey::from_sec1_bytes(point).map_err(|_| sw::CONDITIONS)?;
        let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
        Ok(Reply::data(shared.raw_secret_bytes().to_vec()))
    }
}

/// Key types `13` / `23`: persistent (their changes are saved to the profile file).
pub(super) fn is_persistent_key_type(t: u8) -> bool {
    matches!(t, 0x13 | 0x23)
}

/// The public key GENERATE KEY PAIR fills for a private key: the one with the same ID,
/// or the one named when the device created the pair with another ID.
pub(super) fn paired_public_id(p: &Profile, id: &[u8]) -> Vec<u8> {
    p.device_object(ObjectClass::PrivateKey, id)
        .and_then(|d| d.public_id.clone())
        .filter(|pid| p.public_key(pid).is_some())
        .unwrap_or_else(|| id.to_vec())
}

pub(super) fn random_secret_key() -> Option<p256::SecretKey> {
    for _ in 0..16 {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).ok()?;
        if let Ok(k) = p256::SecretKey::from_slice(&b) {
            return Some(k);
        }
    }
    None
}
