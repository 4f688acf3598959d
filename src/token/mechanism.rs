//! The mechanisms this module really performs, and how each one maps to host and card work.

use cryptoki_sys::*;
use sha2::{Digest, Sha256, Sha384, Sha512};

pub struct MechanismEntry {
    pub mechanism: CK_MECHANISM_TYPE,
    pub min_key_bits: CK_ULONG,
    pub max_key_bits: CK_ULONG,
    pub flags: CK_FLAGS,
}

const EC_FLAGS: CK_FLAGS = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
/// Signing, verification and ECDH on the card's P-256 keys.
const EC_SIGN: CK_FLAGS = CKF_HW | CKF_SIGN | CKF_VERIFY | EC_FLAGS;

/// Key sizes in bits for the P-256 mechanisms.
const P256_BITS: (CK_ULONG, CK_ULONG) = (256, 256);
/// Secret-keyed derivations computed by the card (COMPUTE PRF / COMPUTE HKDF): key sizes in
/// bytes (generic secrets), the card's one-byte length limit.
const SECRET_BYTES: (CK_ULONG, CK_ULONG) = (1, 255);
const NO_KEY: (CK_ULONG, CK_ULONG) = (0, 0);

const fn entry(
    mechanism: CK_MECHANISM_TYPE,
    (min_key_bits, max_key_bits): (CK_ULONG, CK_ULONG),
    flags: CK_FLAGS,
) -> MechanismEntry {
    MechanismEntry {
        mechanism,
        min_key_bits,
        max_key_bits,
        flags,
    }
}

/// Signing happens on the card (`CKF_HW`); verification and hashing on the host.
pub const MECHANISMS: [MechanismEntry; 17] = [
    entry(CKM_ECDSA, P256_BITS, EC_SIGN),
    entry(CKM_ECDSA_SHA256, P256_BITS, EC_SIGN),
    entry(CKM_ECDSA_SHA384, P256_BITS, EC_SIGN),
    entry(CKM_ECDSA_SHA512, P256_BITS, EC_SIGN),
    entry(
        CKM_EC_KEY_PAIR_GEN,
        P256_BITS,
        CKF_HW | CKF_GENERATE_KEY_PAIR | EC_FLAGS,
    ),
    entry(CKM_ECDH1_DERIVE, P256_BITS, CKF_HW | CKF_DERIVE | EC_FLAGS),
    entry(
        CKM_TLS12_MASTER_KEY_DERIVE,
        SECRET_BYTES,
        CKF_HW | CKF_DERIVE,
    ),
    entry(
        CKM_TLS12_MASTER_KEY_DERIVE_DH,
        SECRET_BYTES,
        CKF_HW | CKF_DERIVE,
    ),
    entry(
        CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE,
        SECRET_BYTES,
        CKF_HW | CKF_DERIVE,
    ),
    entry(
        CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH,
        SECRET_BYTES,
        CKF_HW | CKF_DERIVE,
    ),
    entry(CKM_TLS12_KDF, SECRET_BYTES, CKF_HW | CKF_DERIVE),
    entry(
        super::object::CKM_IOTSAFE_TLS12_PSK_KDF,
        SECRET_BYTES,
        CKF_HW | CKF_DERIVE,
    ),
    entry(
        super::object::CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF,
        SECRET_BYTES,
        CKF_HW | CKF_DERIVE,
    ),
    entry(CKM_HKDF_DERIVE, SECRET_BYTES, CKF_HW | CKF_DERIVE),
    entry(CKM_SHA256, NO_KEY, CKF_DIGEST),
    entry(CKM_SHA384, NO_KEY, CKF_DIGEST),
    entry(CKM_SHA512, NO_KEY, CKF_DIGEST),
];

pub fn find(mechanism: CK_MECHANISM_TYPE) -> Option<&'static MechanismEntry> {
    MECHANISMS.iter().find(|m| m.mechanism == mechanism)
}

/// A running host-side hash.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(mechanism: CK_MECHANISM_TYPE) -> Option<Hasher> {
        match mechanism {
            CKM_SHA256 | CKM_ECDSA_SHA256 => Some(Hasher::Sha256(Sha256::new())),
            CKM_SHA384 | CKM_ECDSA_SHA384 => Some(Hasher::Sha384(Sha384::new())),
            CKM_SHA512 | CKM_ECDSA_SHA512 => Some(Hasher::Sha512(Sha512::new())),
            _ => None,
        }
    }

    pub fn output_len(&self) -> usize {
        match self {
            Hasher::Sha256(_) => 32,
            Hasher::Sha384(_) => 48,
            Hasher::Sha512(_) => 64,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// Fits any input to the 32 bytes ECDSA on P-256 uses (SEC 1 §4.1.3 step 5: the leftmost
/// 256 bits of a longer input; a shorter input is the same integer, i.e. left-padded).
pub fn fit_to_p256(input: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if input.len() >= 32 {
        out.copy_from_slice(&input[..32]);
    } else {
        out[32 - input.len()..].copy_from_slice(input);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_matches_ecdsa_bits2int() {
        assert_eq!(fit_to_p256(&[1, 2])[30..], [1, 2]);
        assert_eq!(fit_to_p256(&[1, 2])[..30], [0; 30]);
        let long: Vec<u8> = (0..64).collect();
        assert_eq!(fit_to_p256(&long).to_vec(), (0..32).collect::<Vec<u8>>());
    }
}
