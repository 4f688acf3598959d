//! Random number generation (PKCS#11 §5.19): from the card.

use cryptoki_sys::*;

use super::util::{in_bytes, to_usize};
use crate::token::module;

pkcs11_fn!(
    fn C_SeedRandom(h_session: CK_SESSION_HANDLE, p_seed: CK_BYTE_PTR, ul_seed_len: CK_ULONG) {
        let m = module()?;
        unsafe { in_bytes(p_seed, ul_seed_len)? };
        m.check_session(h_session)?;
        Err(CKR_RANDOM_SEED_NOT_SUPPORTED.into())
    }
);

pkcs11_fn!(
    fn C_GenerateRandom(
        h_session: CK_SESSION_HANDLE,
        p_random: CK_BYTE_PTR,
        ul_random_len: CK_ULONG,
    ) {
        let m = module()?;
        let len = to_usize(ul_random_len)?;
        if p_random.is_null() && len > 0 {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let out: &mut [u8] = if len == 0 {
            &mut []
        } else {
            unsafe { std::slice::from_raw_parts_mut(p_random, len) }
        };
        m.generate_random(h_session, out)
    }
);
