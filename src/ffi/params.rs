//! Decoders of the mechanism parameters the caller passes to `C_DeriveKey`: ECDH1, the TLS 1.2
//! master-secret and PRF derivations, HKDF and the vendor PSK KDF. Each copies what it needs
//! out of the caller's memory into owned token-layer values.

use cryptoki_sys::*;

use super::util::{in_bytes, read, to_usize};
use crate::error::{Error, Result};
use crate::token::kdf::{HkdfSalt, KdfParams};
use crate::token::keys::EcdhParams;
use crate::token::object::{CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF, CKM_IOTSAFE_TLS12_PSK_KDF};

/// `CK_IOTSAFE_TLS12_PSK_KDF_PARAMS` (include/iotsafe_pkcs11.h).
#[repr(C)]
#[allow(non_snake_case)]
pub(super) struct IotsafeTls12PskKdfParams {
    pub(super) prfHashMechanism: CK_MECHANISM_TYPE,
    pub(super) pLabel: CK_BYTE_PTR,
    pub(super) ulLabelLen: CK_ULONG,
    pub(super) pSeed: CK_BYTE_PTR,
    pub(super) ulSeedLen: CK_ULONG,
    pub(super) pOtherSecret: CK_BYTE_PTR,
    pub(super) ulOtherSecretLen: CK_ULONG,
}

/// The caller's parameter structure `T` (checked size and pointer).
///
/// # Safety
/// The mechanism's parameter pointer must be valid for its stated length.
unsafe fn mechanism_param<T>(mechanism: &CK_MECHANISM, name: &str) -> Result<T> {
    if mechanism.pParameter.is_null()
        || to_usize(mechanism.ulParameterLen)? != std::mem::size_of::<T>()
    {
        return Err(Error::new(
            CKR_MECHANISM_PARAM_INVALID,
            format!("{name} expected"),
        ));
    }
    // SAFETY: size checked above; the caller guarantees the pointer.
    unsafe { read(mechanism.pParameter as *const T) }
}

/// Copies caller bytes of a mechanism parameter (`CKR_MECHANISM_PARAM_INVALID` when bad).
///
/// # Safety
/// `ptr` must be valid for `len` bytes (or NULL with 0).
unsafe fn param_bytes(ptr: *const u8, len: CK_ULONG, what: &str) -> Result<Vec<u8>> {
    // SAFETY: the caller guarantees the pointer and length.
    unsafe { in_bytes(ptr, len) }
        .map(<[u8]>::to_vec)
        .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID, what.to_string()))
}

/// client random ‖ server random.
///
/// # Safety
/// The pointers must be valid for their stated lengths.
unsafe fn randoms(r: &CK_SSL3_RANDOM_DATA) -> Result<Vec<u8>> {
    // SAFETY: the caller guarantees the pointers and lengths.
    let client = unsafe { param_bytes(r.pClientRandom, r.ulClientRandomLen, "client random")? };
    // SAFETY: as above.
    let server = unsafe { param_bytes(r.pServerRandom, r.ulServerRandomLen, "server random")? };
    Ok([client, server].concat())
}

/// A master-secret derivation; only the non-DH forms report the pre-master's version
/// (PKCS#11 3.0 §2.41), and only when `pVersion` is set.
fn tls12_master(
    mechanism: &CK_MECHANISM,
    label: &'static [u8],
    seed: Vec<u8>,
    prf_hash: CK_MECHANISM_TYPE,
    version_out: *mut CK_VERSION,
) -> Result<(KdfParams, *mut CK_VERSION)> {
    let dh = matches!(
        mechanism.mechanism,
        CKM_TLS12_MASTER_KEY_DERIVE_DH | CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH
    );
    let version_out = if dh {
        std::ptr::null_mut()
    } else {
        version_out
    };
    Ok((
        KdfParams::Tls12Master {
            label,
            seed,
            prf_hash,
            wants_version: !version_out.is_null(),
        },
        version_out,
    ))
}

/// Copies the parameters of a PRF / HKDF mechanism out of the caller's memory; also returns
/// where the pre-master's version goes (`pVersion`, NULL when not asked for).
///
/// # Safety
/// The mechanism's parameter and the pointers inside must be valid for their stated lengths.
pub(super) unsafe fn kdf_params(mechanism: &CK_MECHANISM) -> Result<(KdfParams, *mut CK_VERSION)> {
    // SAFETY (every block below): the caller guarantees the mechanism's parameter and every
    // pointer inside it with its length.
    match mechanism.mechanism {
        CKM_TLS12_MASTER_KEY_DERIVE | CKM_TLS12_MASTER_KEY_DERIVE_DH => {
            let p: CK_TLS12_MASTER_KEY_DERIVE_PARAMS =
                unsafe { mechanism_param(mechanism, "CK_TLS12_MASTER_KEY_DERIVE_PARAMS")? };
            let seed = unsafe { randoms(&p.RandomInfo)? };
            tls12_master(
                mechanism,
                b"master secret",
                seed,
                p.prfHashMechanism,
                p.pVersion,
            )
        }
        CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE | CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH => {
            let p: CK_TLS12_EXTENDED_MASTER_KEY_DERIVE_PARAMS = unsafe {
                mechanism_param(mechanism, "CK_TLS12_EXTENDED_MASTER_KEY_DERIVE_PARAMS")?
            };
            let seed = unsafe { param_bytes(p.pSessionHash, p.ulSessionHashLen, "session hash")? };
            let label = b"extended master secret";
            tls12_master(mechanism, label, seed, p.prfHashMechanism, p.pVersion)
        }
        CKM_TLS12_KDF => {
            let p: CK_TLS_KDF_PARAMS = unsafe { mechanism_param(mechanism, "CK_TLS_KDF_PARAMS")? };
            let context = if p.pContextData.is_null() {
                None
            } else {
                Some(unsafe { param_bytes(p.pContextData, p.ulContextDataLength, "context data")? })
            };
            let label = unsafe { param_bytes(p.pLabel, p.ulLabelLength, "label")? };
            if label.is_empty() {
                return Err(Error::new(CKR_MECHANISM_PARAM_INVALID, "empty PRF label"));
            }
            Ok((
                KdfParams::Tls12Kdf {
                    prf_hash: p.prfMechanism,
                    label,
                    randoms: unsafe { randoms(&p.RandomInfo)? },
                    context,
                },
                std::ptr::null_mut(),
            ))
        }
        CKM_IOTSAFE_TLS12_PSK_KDF | CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF => {
            let p: IotsafeTls12PskKdfParams =
                unsafe { mechanism_param(mechanism, "CK_IOTSAFE_TLS12_PSK_KDF_PARAMS")? };
            let other = unsafe { param_bytes(p.pOtherSecret, p.ulOtherSecretLen, "other secret")? };
            Ok((
                KdfParams::Tls12Psk {
                    prf_hash: p.prfHashMechanism,
                    label: unsafe { param_bytes(p.pLabel, p.ulLabelLen, "label")? },
                    seed: unsafe { param_bytes(p.pSeed, p.ulSeedLen, "seed")? },
                    other_secret: (!other.is_empty()).then(|| zeroize::Zeroizing::new(other)),
                },
                std::ptr::null_mut(),
            ))
        }
        CKM_HKDF_DERIVE => {
            let p: CK_HKDF_PARAMS = unsafe { mechanism_param(mechanism, "CK_HKDF_PARAMS")? };
            let salt = match p.ulSaltType {
                CKF_HKDF_SALT_NULL => HkdfSalt::Null,
                CKF_HKDF_SALT_DATA => {
                    HkdfSalt::Data(unsafe { param_bytes(p.pSalt, p.ulSaltLen, "salt")? })
                }
                CKF_HKDF_SALT_KEY => HkdfSalt::Key(p.hSaltKey),
                other => {
                    return Err(Error::new(
                        CKR_MECHANISM_PARAM_INVALID,
                        format!("HKDF salt type 0x{other:x}"),
                    ));
                }
            };
            Ok((
                KdfParams::Hkdf {
                    extract: p.bExtract != 0,
                    expand: p.bExpand != 0,
                    prf_hash: p.prfHashMechanism,
                    salt,
                    info: unsafe { param_bytes(p.pInfo, p.ulInfoLen, "info")? },
                },
                std::ptr::null_mut(),
            ))
        }
        other => Err(Error::new(
            CKR_MECHANISM_INVALID,
            format!("mechanism 0x{other:x}"),
        )),
    }
}

/// Copies `CK_ECDH1_DERIVE_PARAMS` out of the caller's mechanism (checked size and pointers).
///
/// # Safety
/// The mechanism's parameter pointer must be valid for its stated length.
pub(super) unsafe fn ecdh_params(mechanism: &CK_MECHANISM) -> Result<Option<EcdhParams>> {
    if mechanism.mechanism != CKM_ECDH1_DERIVE {
        return Ok(None);
    }
    // SAFETY: the caller guarantees the parameter pointer with its length.
    let p: CK_ECDH1_DERIVE_PARAMS =
        unsafe { mechanism_param(mechanism, "CK_ECDH1_DERIVE_PARAMS")? };
    // SAFETY: the caller guarantees the data pointers and lengths.
    let shared_data = unsafe { param_bytes(p.pSharedData, p.ulSharedDataLen, "shared data")? };
    // SAFETY: as above.
    let public_data = unsafe { param_bytes(p.pPublicData, p.ulPublicDataLen, "public data")? };
    Ok(Some(EcdhParams {
        kdf: p.kdf,
        shared_data,
        public_data,
    }))
}
