//! Hash algorithms of IoT SAFE (tag `91`) and finalisation from an intermediate state
//! (COMPUTE SIGNATURE mode `02`, "last block").

use sha2::{Digest, Sha256, Sha384, Sha512, block_api};

/// A hash algorithm selectable by tag `91`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-256 (mask `0001`).
    Sha256,
    /// SHA-384 (mask `0002`).
    Sha384,
    /// SHA-512 (mask `0004`).
    Sha512,
}

impl HashAlg {
    /// All algorithms, in mask order.
    pub const ALL: [HashAlg; 3] = [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];

    /// The single-bit mask value used in tag `91`.
    pub fn mask(self) -> u16 {
        match self {
            HashAlg::Sha256 => 0x0001,
            HashAlg::Sha384 => 0x0002,
            HashAlg::Sha512 => 0x0004,
        }
    }

    /// Parses a single-bit mask value.
    pub fn from_mask(mask: u16) -> Option<HashAlg> {
        match mask {
            0x0001 => Some(HashAlg::Sha256),
            0x0002 => Some(HashAlg::Sha384),
            0x0004 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Digest length in bytes (32/48/64).
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Compression block size in bytes (64/128).
    pub fn block_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 64,
            _ => 128,
        }
    }

    /// Length of the intermediate chaining state in bytes (32 for SHA-256, 64 otherwise).
    pub fn state_len(self) -> usize {
        match self {
            HashAlg::Sha256 => 32,
            _ => 64,
        }
    }

    /// One-shot digest.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(self);
        h.update(data);
        h.finish()
    }
}

/// An incremental hasher for one of the [`HashAlg`]s.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-384.
    Sha384(Sha384),
    /// SHA-512.
    Sha512(Sha512),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(alg: HashAlg) -> Hasher {
        match alg {
            HashAlg::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Feeds data.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// Finishes and returns the digest.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const SHA384_IV: [u64; 8] = [
    0xcbbb9d5dc1059ed8,
    0x629a292a367cd507,
    0x9159015a3070dd17,
    0x152fecd8f70e5939,
    0x67332667ffc00b31,
    0x8eb44a8768581511,
    0xdb0c2e0d64f98fa7,
    0x47b5481dbefa4fa4,
];
const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// The host side of mode `02`: hashes the longest prefix of `data` that is a whole number
/// of blocks but leaves at least one byte (so the last block is never empty unless `data` is),
/// returning `(intermediate state, bytes hashed, remaining tail)`.
pub fn midstate(alg: HashAlg, data: &[u8]) -> (Vec<u8>, usize, &[u8]) {
    let bl = alg.block_len();
    let n = if data.is_empty() {
        0
    } else {
        ((data.len() - 1) / bl) * bl
    };
    (midstate_of_blocks(alg, &data[..n]), n, &data[n..])
}

/// The intermediate state after hashing `blocks` (length must be a multiple of the
/// block size; extra bytes are ignored).
pub fn midstate_of_blocks(alg: HashAlg, blocks: &[u8]) -> Vec<u8> {
    let bl = alg.block_len();
    let whole = &blocks[..(blocks.len() / bl) * bl];
    match alg {
        HashAlg::Sha256 => {
            let mut st = SHA256_IV;
            for b in whole.chunks_exact(64) {
                let mut blk = [0u8; 64];
                blk.copy_from_slice(b);
                block_api::compress256(&mut st, &[blk]);
            }
            st.iter().flat_map(|w| w.to_be_bytes()).collect()
        }
        HashAlg::Sha384 | HashAlg::Sha512 => {
            let mut st = if alg == HashAlg::Sha384 {
                SHA384_IV
            } else {
                SHA512_IV
            };
            for b in whole.chunks_exact(128) {
                let mut blk = [0u8; 128];
                blk.copy_from_slice(b);
                block_api::compress512(&mut st, &[blk]);
            }
            st.iter().flat_map(|w| w.to_be_bytes()).collect()
        }
    }
}

/// Error of [`finish_from_midstate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MidstateError {
    /// The state has the wrong length for the algorithm.
    StateLength,
    /// The count of bytes already hashed is not a multiple of the block size.
    CountNotBlockAligned,
}

/// Finishes a hash given the chaining state after `count` bytes (a multiple of the block
/// size) and the remaining `tail` bytes. This is what the card does in mode `02`.
pub fn finish_from_midstate(
    alg: HashAlg,
    state: &[u8],
    count: u64,
    tail: &[u8],
) -> Result<Vec<u8>, MidstateError> {
    if state.len() != alg.state_len() {
        return Err(MidstateError::StateLength);
    }
    let bl = alg.block_len();
    if !count.is_multiple_of(bl as u64) {
        return Err(MidstateError::CountNotBlockAligned);
    }
    let total_bits = (count as u128 + tail.len() as u128) * 8;
    // Message tail + padding.
    let len_field = if alg == HashAlg::Sha256 { 8 } else { 16 };
    let mut buf = tail.to_vec();
    buf.push(0x80);
    while !(buf.len() + len_field).is_multiple_of(bl) {
        buf.push(0);
    }
    if len_field == 8 {
        buf.extend_from_slice(&(total_bits as u64).to_be_bytes());
    } else {
        buf.extend_from_slice(&total_bits.to_be_bytes());
    }
    match alg {
        HashAlg::Sha256 => {
            let mut st = [0u32; 8];
            for (i, w) in state.chunks_exact(4).enumerate() {
                st[i] = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
            }
            for b in buf.chunks_exact(64) {
                let mut blk = [0u8; 64];
                blk.copy_from_slice(b);
                block_api::compress256(&mut st, &[blk]);
            }
            Ok(st.iter().flat_map(|w| w.to_be_bytes()).collect())
        }
        HashAlg::Sha384 | HashAlg::Sha512 => {
            let mut st = [0u64; 8];
            for (i, w) in state.chunks_exact(8).enumerate() {
                let mut a = [0u8; 8];
                a.copy_from_slice(w);
                st[i] = u64::from_be_bytes(a);
            }
            for b in buf.chunks_exact(128) {
                let mut blk = [0u8; 128];
                blk.copy_from_slice(b);
                block_api::compress512(&mut st, &[blk]);
            }
            let mut out: Vec<u8> = st.iter().flat_map(|w| w.to_be_bytes()).collect();
            out.truncate(alg.output_len());
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midstate_finish_matches_plain_hash() {
        for alg in HashAlg::ALL {
            for len in [
                0usize, 1, 55, 56, 63, 64, 65, 111, 112, 127, 128, 129, 200, 256, 1000,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let expected = alg.digest(&data);
                assert_eq!(expected.len(), alg.output_len());
                // Every block-aligned split point.
                let bl = alg.block_len();
                let mut n = 0;
                while n <= len {
                    let st = midstate_of_blocks(alg, &data[..n]);
                    let got = finish_from_midstate(alg, &st, n as u64, &data[n..]).unwrap();
                    assert_eq!(got, expected, "{alg:?} len {len} split {n}");
                    n += bl;
                }
                let (st, n, tail) = midstate(alg, &data);
                assert_eq!(
                    finish_from_midstate(alg, &st, n as u64, tail).unwrap(),
                    expected
                );
            }
        }
    }

    #[test]
    fn midstate_errors() {
        let st = midstate_of_blocks(HashAlg::Sha256, &[]);
        assert_eq!(
            finish_from_midstate(HashAlg::Sha256, &st, 3, &[]),
            Err(MidstateError::CountNotBlockAligned)
        );
        assert_eq!(
            finish_from_midstate(HashAlg::Sha512, &st, 0, &[]),
            Err(MidstateError::StateLength)
        );
    }
}
