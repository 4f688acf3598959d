//! Which public half (a public key object or a certificate) belongs to each private key. IoT.05
//! lets a card give the two keys of one pair different IDs (field SIMs do), so the card does not
//! always say it. The rule, per active P-256 private key:
//!
//! 1. the public key with the same ID;
//! 2. else the one public key with the same label, when no other private key carries that label
//!    and no private key has that public key's ID (then, without such a public key, the one
//!    certificate with that label);
//! 3. else a proof: the key signs a random challenge once, and the one candidate point (of the
//!    public keys and certificates no other private key has) that verifies it is its half.
//!    Proofs are part of what was read from the card ([`CardContents::proven_pairs`]), so the
//!    content cache keeps them and a later process does not sign again.
//!
//! A private key no rule pairs stays unpaired: a wrong pairing would be worse than none.

use log::{debug, info, warn};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use serde::{Deserialize, Serialize};

use super::card_read::CardObject;
use super::channel::AppletChannel;
use super::error::{AppletError, Result};
use super::formats::certificate_point;
use super::objects::{
    FILE_USAGE_CERTIFICATE, HASH_SHA256, HASH_SHA384, HASH_SHA512, ObjectClass, ObjectInfo,
};

/// A private key whose public half a signature proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenPair {
    /// The private key's reference TLV (its ID, else its label), as the card takes it.
    #[serde(with = "hex::serde")]
    pub private: Vec<u8>,
    /// The uncompressed point the signature verified with.
    #[serde(with = "hex::serde")]
    pub point: Vec<u8>,
}

/// The public point of every private key that has a known half.
#[derive(Debug, Clone, Default)]
pub struct KeyPairs {
    /// (the private key's reference, its public point)
    points: Vec<(Vec<u8>, [u8; 65])>,
}

impl KeyPairs {
    /// The point of `private`'s public half, if it has a known one.
    pub fn point_of(&self, private: &ObjectInfo) -> Option<[u8; 65]> {
        let reference = private.reference();
        self.points
            .iter()
            .find(|(r, _)| *r == reference)
            .map(|(_, p)| *p)
    }
}

fn is_pairable_private(o: &CardObject) -> bool {
    o.info.class() == ObjectClass::PrivateKey && o.info.is_active() && o.info.is_p256()
}

/// A public half on the card: an active public key with its point, or a certificate.
struct Half<'a> {
    info: &'a ObjectInfo,
    point: [u8; 65],
    is_certificate: bool,
}

fn halves(objects: &[CardObject]) -> Vec<Half<'_>> {
    objects
        .iter()
        .filter(|o| o.info.is_active())
        .filter_map(|o| match o.info.class() {
            ObjectClass::PublicKey => o.point.map(|point| Half {
                info: &o.info,
                point,
                is_certificate: false,
            }),
            ObjectClass::File if o.info.file_usage == Some(FILE_USAGE_CERTIFICATE) => o
                .content
                .as_deref()
                .and_then(certificate_point)
                .map(|point| Half {
                    info: &o.info,
                    point,
                    is_certificate: true,
                }),
            _ => None,
        })
        .collect()
}

/// Rules 1 and 2: the half the card names by ID or by a unique label.
fn named_half(
    objects: &[CardObject],
    halves: &[Half<'_>],
    private: &ObjectInfo,
) -> Option<[u8; 65]> {
    if private.id.is_some()
        && let Some(h) = halves
            .iter()
            .find(|h| !h.is_certificate && h.info.id == private.id)
    {
        return Some(h.point);
    }
    let label = private.label.as_ref()?;
    let private_keys = || objects.iter().filter(|o| is_pairable_private(o));
    if private_keys()
        .filter(|o| o.info.label.as_ref() == Some(label))
        .count()
        != 1
    {
        return None;
    }
    let owned_by_id =
        |h: &Half<'_>| h.info.id.is_some() && private_keys().any(|o| o.info.id == h.info.id);
    let unique_with_label = |certificates: bool| {
        let mut found = halves.iter().filter(|h| {
            h.is_certificate == certificates
                && h.info.label.as_ref() == Some(label)
                && (certificates || !owned_by_id(h))
        });
        match (found.next(), found.next()) {
            (Some(h), None) => Some(h.point),
            _ => None,
        }
    };
    unique_with_label(false).or_else(|| {
        // A certificate only where the card holds no public key for the label.
        let no_public_key = !halves
            .iter()
            .any(|h| !h.is_certificate && h.info.label.as_ref() == Some(label));
        no_public_key.then(|| unique_with_label(true)).flatten()
    })
}

/// The public point of every private key, by the rules above, with `proven` as the proofs
/// made so far (a proof counts only while a public key or certificate on the card still holds
/// its point).
pub fn pair_keys(objects: &[CardObject], proven: &[ProvenPair]) -> KeyPairs {
    let halves = halves(objects);
    let mut points = Vec::new();
    for o in objects.iter().filter(|o| is_pairable_private(o)) {
        let reference = o.info.reference();
        let point = named_half(objects, &halves, &o.info).or_else(|| {
            proven
                .iter()
                .find(|p| p.private == reference)
                .and_then(|p| <[u8; 65]>::try_from(p.point.as_slice()).ok())
                .filter(|p| halves.iter().any(|h| h.point == *p))
        });
        if let Some(point) = point {
            points.push((reference, point));
        }
    }
    KeyPairs { points }
}

/// The proofs `objects` need (rule 3): each signing private key that no rule and no proof of
/// `known` pairs signs a random challenge once, verified against the candidate points. `known`
/// proofs that still hold are kept. Errors of the card other than a lost card leave the key
/// unpaired (logged).
pub(super) fn prove_pairs(
    ch: &mut AppletChannel<'_>,
    objects: &[CardObject],
    known: &[ProvenPair],
    reader: &str,
) -> Result<Vec<ProvenPair>> {
    let paired = pair_keys(objects, known);
    let halves = halves(objects);
    let mut proven: Vec<ProvenPair> = known
        .iter()
        .filter(|p| paired.points.iter().any(|(r, _)| *r == p.private))
        .cloned()
        .collect();
    for o in objects.iter().filter(|o| is_pairable_private(o)) {
        let private = &o.info;
        if paired.point_of(private).is_some() || !private.can_sign() {
            continue;
        }
        let mut candidates: Vec<[u8; 65]> = halves
            .iter()
            .map(|h| h.point)
            .filter(|p| !paired.points.iter().any(|(_, q)| q == p))
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        if candidates.is_empty() {
            continue;
        }
        let Some(hash_algorithm) = challenge_algorithm(private) else {
            continue;
        };
        let mut challenge = vec![0u8; challenge_length(hash_algorithm)];
        if let Err(e) =
            rustix::rand::getrandom(&mut challenge, rustix::rand::GetRandomFlags::empty())
        {
            warn!("{reader}: no random challenge for a key-pair proof: {e}");
            return Ok(proven);
        }
        let signature = match ch.sign_hash(private, hash_algorithm, &challenge) {
            Ok(s) => s,
            Err(e) if e.card_gone() || matches!(e, AppletError::Transport(_)) => return Err(e),
            Err(e) => {
                warn!(
                    "{reader}: private key {:02x?}: the pairing proof failed ({e}); the key stays \
                     without its public half",
                    private.id
                );
                continue;
            }
        };
        let verifying: Vec<&[u8; 65]> = candidates
            .iter()
            .filter(|p| verifies(p, &challenge, &signature))
            .collect();
        match verifying.as_slice() {
            [point] => {
                info!(
                    "{reader}: private key {:02x?} paired with its public half by a signature",
                    private.id
                );
                proven.push(ProvenPair {
                    private: private.reference(),
                    point: point.to_vec(),
                });
            }
            _ => debug!(
                "{reader}: private key {:02x?}: no public key or certificate on the card verifies \
                 its signature; left unpaired",
                private.id
            ),
        }
    }
    Ok(proven)
}

/// The hash algorithm the challenge is declared as: SHA-256 where the key takes it.
fn challenge_algorithm(private: &ObjectInfo) -> Option<u16> {
    let allowed = private.hash_algorithms.unwrap_or(HASH_SHA256);
    [HASH_SHA256, HASH_SHA384, HASH_SHA512]
        .into_iter()
        .find(|h| allowed & h != 0)
}

fn challenge_length(hash_algorithm: u16) -> usize {
    match hash_algorithm {
        HASH_SHA384 => 48,
        HASH_SHA512 => 64,
        _ => 32,
    }
}

fn verifies(point: &[u8; 65], challenge: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(point) else {
        return false;
    };
    let Ok(signature) = p256::ecdsa::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_prehash(challenge, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(class: ObjectClass, id: u8, label: &str, point: Option<[u8; 65]>) -> CardObject {
        CardObject {
            info: ObjectInfo {
                class: Some(class),
                id: Some(vec![id]),
                label: Some(label.as_bytes().to_vec()),
                ..ObjectInfo::default()
            },
            point,
            content: None,
        }
    }

    fn point(seed: u8) -> [u8; 65] {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let secret = p256::SecretKey::from_slice(&[seed; 32]).expect("scalar");
        secret
            .public_key()
            .to_sec1_point(false)
            .as_bytes()
            .try_into()
            .expect("65 bytes")
    }

    #[test]
    fn same_id_then_unique_label_then_nothing() {
        let objects = vec![
            key(ObjectClass::PrivateKey, 1, "a", None),
            key(ObjectClass::PublicKey, 1, "x", Some(point(1))),
            key(ObjectClass::PrivateKey, 6, "tls", None),
            key(ObjectClass::PublicKey, 7, "tls", Some(point(2))),
            key(ObjectClass::PrivateKey, 8, "b", None),
            key(ObjectClass::PublicKey, 9, "c", Some(point(3))),
        ];
        let pairs = pair_keys(&objects, &[]);
        assert_eq!(pairs.point_of(&objects[0].info), Some(point(1)));
        assert_eq!(pairs.point_of(&objects[2].info), Some(point(2)));
        assert_eq!(pairs.point_of(&objects[4].info), None);
        // A proof pairs it while the card still holds the point.
        let proof = ProvenPair {
            private: objects[4].info.reference(),
            point: point(3).to_vec(),
        };
        let pairs = pair_keys(&objects, std::slice::from_ref(&proof));
        assert_eq!(pairs.point_of(&objects[4].info), Some(point(3)));
        let gone = ProvenPair {
            point: point(4).to_vec(),
            ..proof
        };
        assert_eq!(
            pair_keys(&objects, &[gone]).point_of(&objects[4].info),
            None
        );
    }

    #[test]
    fn a_label_shared_by_two_private_keys_or_two_public_keys_pairs_nothing() {
        let two_private = vec![
            key(ObjectClass::PrivateKey, 1, "tls", None),
            key(ObjectClass::PrivateKey, 2, "tls", None),
            key(ObjectClass::PublicKey, 3, "tls", Some(point(1))),
        ];
        let pairs = pair_keys(&two_private, &[]);
        assert_eq!(pairs.point_of(&two_private[0].info), None);
        assert_eq!(pairs.point_of(&two_private[1].info), None);
        let two_public = vec![
            key(ObjectClass::PrivateKey, 1, "tls", None),
            key(ObjectClass::PublicKey, 3, "tls", Some(point(1))),
            key(ObjectClass::PublicKey, 4, "tls", Some(point(2))),
        ];
        assert_eq!(
            pair_keys(&two_public, &[]).point_of(&two_public[0].info),
            None
        );
        // A public key another private key has by ID is not taken by label.
        let owned = vec![
            key(ObjectClass::PrivateKey, 1, "tls", None),
            key(ObjectClass::PrivateKey, 3, "other", None),
            key(ObjectClass::PublicKey, 3, "tls", Some(point(1))),
        ];
        assert_eq!(pair_keys(&owned, &[]).point_of(&owned[0].info), None);
    }
}
