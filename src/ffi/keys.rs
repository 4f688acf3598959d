//! Key management (PKCS#11 §5.18): key-pair generation on the card, derivations (ECDH and the
//! card's PRF/HKDF), no wrapping.

use cryptoki_sys::*;

use super::params::{ecdh_params, kdf_params};
use super::util::{mechanism, read, template, template_values, write};
use crate::token::{self, module};

not_supported!(C_GenerateKey(
    h_session: CK_SESSION_HANDLE,
    p_mechanism: CK_MECHANISM_PTR,
    p_template: CK_ATTRIBUTE_PTR,
    ul_count: CK_ULONG,
    ph_key: CK_OBJECT_HANDLE_PTR,
));

pkcs11_fn!(
    fn C_GenerateKeyPair(
        h_session: CK_SESSION_HANDLE,
        p_mechanism: CK_MECHANISM_PTR,
        p_public_template: CK_ATTRIBUTE_PTR,
        ul_public_count: CK_ULONG,
        p_private_template: CK_ATTRIBUTE_PTR,
        ul_private_count: CK_ULONG,
        ph_public_key: CK_OBJECT_HANDLE_PTR,
        ph_private_key: CK_OBJECT_HANDLE_PTR,
    ) {
        let m = module()?;
        let (mech, has_param) = unsafe { mechanism(p_mechanism)? };
        let public = unsafe { template_values(template(p_public_template, ul_public_count)?)? };
        let private = unsafe { template_values(template(p_private_template, ul_private_count)?)? };
        if ph_public_key.is_null() || ph_private_key.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let (public_key, private_key) =
            m.generate_key_pair(h_session, mech, has_param, &public, &private)?;
        unsafe {
            write(ph_public_key, public_key)?;
            write(ph_private_key, private_key)
        }
    }
);

not_supported!(C_WrapKey(
    h_session: CK_SESSION_HANDLE,
    p_mechanism: CK_MECHANISM_PTR,
    h_wrapping_key: CK_OBJECT_HANDLE,
    h_key: CK_OBJECT_HANDLE,
    p_wrapped: CK_BYTE_PTR,
    pul_wrapped_len: CK_ULONG_PTR,
));
not_supported!(C_UnwrapKey(
    h_session: CK_SESSION_HANDLE,
    p_mechanism: CK_MECHANISM_PTR,
    h_unwrapping_key: CK_OBJECT_HANDLE,
    p_wrapped: CK_BYTE_PTR,
    ul_wrapped_len: CK_ULONG,
    p_template: CK_ATTRIBUTE_PTR,
    ul_count: CK_ULONG,
    ph_key: CK_OBJECT_HANDLE_PTR,
));

pkcs11_fn!(
    fn C_DeriveKey(
        h_session: CK_SESSION_HANDLE,
        p_mechanism: CK_MECHANISM_PTR,
        h_base_key: CK_OBJECT_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
        ph_key: CK_OBJECT_HANDLE_PTR,
    ) {
        let m = module()?;
        let mechanism = unsafe { read(p_mechanism as *const CK_MECHANISM)? };
        if token::kdf::is_kdf_mechanism(mechanism.mechanism) {
            let (params, version_out) = unsafe { kdf_params(&mechanism)? };
            let wanted = unsafe { template_values(template(p_template, ul_count)?)? };
            if ph_key.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let derived =
                m.derive_with_secret(h_session, mechanism.mechanism, params, h_base_key, &wanted)?;
            if let Some(version) = derived.version {
                unsafe { write(version_out, version)? };
            }
            return unsafe { write(ph_key, derived.key) };
        }
        let params = unsafe { ecdh_params(&mechanism)? };
        let wanted = unsafe { template_values(template(p_template, ul_count)?)? };
        if ph_key.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let key = m.derive_key(h_session, mechanism.mechanism, params, h_base_key, &wanted)?;
        unsafe { write(ph_key, key) }
    }
);
