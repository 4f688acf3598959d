//! Key derivation of IoT SAFE feature set 2: HMAC, the TLS 1.2 PRF (RFC 5246 §5, COMPUTE
//! PRF `48`), the RFC 4279 / RFC 5489 PSK pre-master secrets, and HKDF (RFC 5869, COMPUTE
//! HKDF `4A`). Public so that host-side tests can compute the expected values.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Sha256, Sha384, Sha512};

use crate::hash::HashAlg;

fn mac<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length; the error branch cannot be taken.
    let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// HMAC of the concatenation of `parts` with `key`.
pub fn hmac(alg: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        HashAlg::Sha256 => mac::<Hmac<Sha256>>(key, parts),
        HashAlg::Sha384 => mac::<Hmac<Sha384>>(key, parts),
        HashAlg::Sha512 => mac::<Hmac<Sha512>>(key, parts),
    }
}

/// TLS 1.2 `P_hash(secret, label‖seed)` truncated to `n` bytes (RFC 5246 §5). The PRF of
/// TLS 1.2 is this with `label_seed` = label ‖ seed.
pub fn tls12_prf(alg: HashAlg, secret: &[u8], label_seed: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + alg.output_len());
    // A(1) = HMAC(secret, seed); A(i) = HMAC(secret, A(i-1)).
    let mut a = hmac(alg, secret, &[label_seed]);
    while out.len() < n {
        out.extend_from_slice(&hmac(alg, secret, &[&a, label_seed]));
        a = hmac(alg, secret, &[&a]);
    }
    out.truncate(n);
    out
}

/// RFC 4279 §2 plain-PSK pre-master secret: `uint16(N) ‖ N zero bytes ‖ uint16(N) ‖ psk`.
pub fn psk_premaster_plain(psk: &[u8]) -> Vec<u8> {
    psk_premaster_other(&vec![0u8; psk.len()], psk)
}

/// RFC 5489 §2 (ECDHE-PSK) pre-master secret:
/// `uint16(len(other)) ‖ other ‖ uint16(len(psk)) ‖ psk`.
pub fn psk_premaster_other(other: &[u8], psk: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + other.len() + psk.len());
    v.extend_from_slice(&(other.len() as u16).to_be_bytes());
    v.extend_from_slice(other);
    v.extend_from_slice(&(psk.len() as u16).to_be_bytes());
    v.extend_from_slice(psk);
    v
}

/// HKDF-Extract (RFC 5869 §2.2): `PRK = HMAC(salt, IKM)`; an empty salt means hash-length
/// zeros.
pub fn hkdf_extract(alg: HashAlg, salt: &[u8], ikm: &[u8]) -> Vec<u8> {
    let zeros = vec![0u8; alg.output_len()];
    let salt = if salt.is_empty() { &zeros[..] } else { salt };
    hmac(alg, salt, &[ikm])
}

/// HKDF-Expand (RFC 5869 §2.3): `n` bytes of OKM; `None` if `n > 255 · hash length`.
pub fn hkdf_expand(alg: HashAlg, prk: &[u8], info: &[u8], n: usize) -> Option<Vec<u8>> {
    if n > 255 * alg.output_len() {
        return None;
    }
    let mut out = Vec::with_capacity(n + alg.output_len());
    let mut t: Vec<u8> = Vec::new();
    let mut i: u8 = 1;
    while out.len() < n {
        t = hmac(alg, prk, &[&t, info, &[i]]);
        out.extend_from_slice(&t);
        i = i.wrapping_add(1);
    }
    out.truncate(n);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::decode_hex as h;

    #[test]
    fn hmac_rfc4231_case2() {
        let key = b"Jefe";
        let data = b"what do ya want for nothing?";
        assert_eq!(
            hmac(HashAlg::Sha256, key, &[data]),
            h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843").unwrap()
        );
        assert_eq!(
            hmac(HashAlg::Sha384, key, &[&data[..4], &data[4..]]),
            h(
                "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
               8e2240ca5e69e2c78b3239ecfab21649"
            )
            .unwrap()
        );
    }

    #[test]
    fn hkdf_rfc5869_case1() {
        let ikm = vec![0x0b; 22];
        let salt = h("000102030405060708090a0b0c").unwrap();
        let info = h("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let prk = hkdf_extract(HashAlg::Sha256, &salt, &ikm);
        assert_eq!(
            prk,
            h("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5").unwrap()
        );
        assert_eq!(
            hkdf_expand(HashAlg::Sha256, &prk, &info, 42).unwrap(),
            h(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf\
               34007208d5b887185865"
            )
            .unwrap()
        );
        assert!(hkdf_expand(HashAlg::Sha256, &prk, &info, 255 * 32 + 1).is_none());
    }

    #[test]
    fn premaster_layouts() {
        assert_eq!(psk_premaster_plain(&[7, 8]), vec![0, 2, 0, 0, 0, 2, 7, 8]);
        assert_eq!(psk_premaster_other(&[1], &[9]), vec![0, 1, 1, 0, 1, 9]);
    }
}
