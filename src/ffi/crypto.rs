//! Encryption and decryption (not offered), digesting, signing, verifying and the dual-function
//! calls (PKCS#11 §5.8, §5.10, §5.12, §5.13, §5.15–5.17). Sign, verify and digest share one
//! shape each for init, update and the last call, over the token's one operation model.

use cryptoki_sys::*;

use super::util::{in_bytes, mechanism, output_buffer};
use crate::error::Result;
use crate::token::OperationKind::{self, Digest, Sign, Verify};
use crate::token::Parts;
use crate::token::module;

/// The caller's optional single-part input: a pointer and its length.
type Input = Option<(CK_BYTE_PTR, CK_ULONG)>;

/// The last call of a digest or signature, single-part (`data`) or final (`None`): the
/// output-buffer rules — a size query or a short buffer does no card work and keeps the
/// operation, and fixes it as single- or multi-part — then the result copied out; any other
/// error ends the operation (a single-part call on a multi-part operation or the other way
/// round included: nothing is sent to the card).
///
/// # Safety
/// The data and output pointers must be valid for their stated lengths.
unsafe fn last_part(
    kind: OperationKind,
    h_session: CK_SESSION_HANDLE,
    data: Input,
    (out, out_len): (CK_BYTE_PTR, CK_ULONG_PTR),
) -> Result<()> {
    let m = module()?;
    let parts = match data {
        Some(_) => Parts::Single,
        None => Parts::Multi,
    };
    let needed = m.output_len(h_session, kind, parts)?;
    m.ending_on_error(h_session, kind, || {
        // SAFETY: the caller guarantees the pointers and lengths.
        let data = unsafe { data.map(|(p, len)| in_bytes(p, len)).transpose()? };
        // SAFETY: as above.
        if let Some(buf) = unsafe { output_buffer(out, out_len, needed)? } {
            buf.copy_from_slice(&m.finish(h_session, kind, data)?);
        }
        Ok(())
    })
}

/// `C_SignUpdate`, `C_VerifyUpdate`, `C_DigestUpdate`; a failure ends the operation.
///
/// # Safety
/// `part` must be valid for `part_len` bytes (or NULL with 0).
unsafe fn update(
    kind: OperationKind,
    h_session: CK_SESSION_HANDLE,
    part: CK_BYTE_PTR,
    part_len: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    m.ending_on_error(h_session, kind, || {
        // SAFETY: the caller guarantees the pointer and length.
        let part = unsafe { in_bytes(part, part_len)? };
        m.update(h_session, kind, part)
    })
}

/// `C_Verify` (`data`) and `C_VerifyFinal` (`None`): the operation ends whatever the outcome.
///
/// # Safety
/// The data and signature pointers must be valid for their stated lengths.
unsafe fn verify_last_part(
    h_session: CK_SESSION_HANDLE,
    data: Input,
    signature: CK_BYTE_PTR,
    signature_len: CK_ULONG,
) -> Result<()> {
    let m = module()?;
    m.ending_on_error(h_session, OperationKind::Verify, || {
        // SAFETY: the caller guarantees the pointers and lengths.
        let data = unsafe { data.map(|(p, len)| in_bytes(p, len)).transpose()? };
        // SAFETY: as above.
        let signature_bytes = unsafe { in_bytes(signature, signature_len)? };
        if signature.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        m.verify_finish(h_session, data, signature_bytes)
    })
}

not_supported!(C_EncryptInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_Encrypt(
    h_session: CK_SESSION_HANDLE,
    p_data: CK_BYTE_PTR,
    ul_data_len: CK_ULONG,
    p_encrypted: CK_BYTE_PTR,
    pul_encrypted_len: CK_ULONG_PTR,
));
not_supported!(C_EncryptUpdate(
    h_session: CK_SESSION_HANDLE,
    p_part: CK_BYTE_PTR,
    ul_part_len: CK_ULONG,
    p_encrypted: CK_BYTE_PTR,
    pul_encrypted_len: CK_ULONG_PTR,
));
not_supported!(C_EncryptFinal(h_session: CK_SESSION_HANDLE, p_last: CK_BYTE_PTR, pul_last_len: CK_ULONG_PTR));
not_supported!(C_DecryptInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_Decrypt(
    h_session: CK_SESSION_HANDLE,
    p_encrypted: CK_BYTE_PTR,
    ul_encrypted_len: CK_ULONG,
    p_data: CK_BYTE_PTR,
    pul_data_len: CK_ULONG_PTR,
));
not_supported!(C_DecryptUpdate(
    h_session: CK_SESSION_HANDLE,
    p_encrypted: CK_BYTE_PTR,
    ul_encrypted_len: CK_ULONG,
    p_part: CK_BYTE_PTR,
    pul_part_len: CK_ULONG_PTR,
));
not_supported!(C_DecryptFinal(h_session: CK_SESSION_HANDLE, p_last: CK_BYTE_PTR, pul_last_len: CK_ULONG_PTR));

pkcs11_fn!(
    fn C_DigestInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR) {
        let m = module()?;
        let (mech, has_param) = unsafe { mechanism(p_mechanism)? };
        m.digest_init(h_session, mech, has_param)
    }
);

pkcs11_fn!(
    fn C_Digest(
        h_session: CK_SESSION_HANDLE,
        p_data: CK_BYTE_PTR,
        ul_data_len: CK_ULONG,
        p_digest: CK_BYTE_PTR,
        pul_digest_len: CK_ULONG_PTR,
    ) {
        let data = Some((p_data, ul_data_len));
        unsafe { last_part(Digest, h_session, data, (p_digest, pul_digest_len)) }
    }
);

pkcs11_fn!(
    fn C_DigestUpdate(h_session: CK_SESSION_HANDLE, p_part: CK_BYTE_PTR, ul_part_len: CK_ULONG) {
        unsafe { update(Digest, h_session, p_part, ul_part_len) }
    }
);

not_supported!(C_DigestKey(h_session: CK_SESSION_HANDLE, h_key: CK_OBJECT_HANDLE));

pkcs11_fn!(
    fn C_DigestFinal(
        h_session: CK_SESSION_HANDLE,
        p_digest: CK_BYTE_PTR,
        pul_digest_len: CK_ULONG_PTR,
    ) {
        unsafe { last_part(Digest, h_session, None, (p_digest, pul_digest_len)) }
    }
);

pkcs11_fn!(
    fn C_SignInit(
        h_session: CK_SESSION_HANDLE,
        p_mechanism: CK_MECHANISM_PTR,
        h_key: CK_OBJECT_HANDLE,
    ) {
        let m = module()?;
        let (mech, has_param) = unsafe { mechanism(p_mechanism)? };
        m.sign_init(h_session, mech, has_param, h_key)
    }
);

pkcs11_fn!(
    fn C_Sign(
        h_session: CK_SESSION_HANDLE,
        p_data: CK_BYTE_PTR,
        ul_data_len: CK_ULONG,
        p_signature: CK_BYTE_PTR,
        pul_signature_len: CK_ULONG_PTR,
    ) {
        let data = Some((p_data, ul_data_len));
        unsafe { last_part(Sign, h_session, data, (p_signature, pul_signature_len)) }
    }
);

pkcs11_fn!(
    fn C_SignUpdate(h_session: CK_SESSION_HANDLE, p_part: CK_BYTE_PTR, ul_part_len: CK_ULONG) {
        unsafe { update(Sign, h_session, p_part, ul_part_len) }
    }
);

pkcs11_fn!(
    fn C_SignFinal(
        h_session: CK_SESSION_HANDLE,
        p_signature: CK_BYTE_PTR,
        pul_signature_len: CK_ULONG_PTR,
    ) {
        unsafe { last_part(Sign, h_session, None, (p_signature, pul_signature_len)) }
    }
);

not_supported!(C_SignRecoverInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_SignRecover(
    h_session: CK_SESSION_HANDLE,
    p_data: CK_BYTE_PTR,
    ul_data_len: CK_ULONG,
    p_signature: CK_BYTE_PTR,
    pul_signature_len: CK_ULONG_PTR,
));

pkcs11_fn!(
    fn C_VerifyInit(
        h_session: CK_SESSION_HANDLE,
        p_mechanism: CK_MECHANISM_PTR,
        h_key: CK_OBJECT_HANDLE,
    ) {
        let m = module()?;
        let (mech, has_param) = unsafe { mechanism(p_mechanism)? };
        m.verify_init(h_session, mech, has_param, h_key)
    }
);

pkcs11_fn!(
    fn C_Verify(
        h_session: CK_SESSION_HANDLE,
        p_data: CK_BYTE_PTR,
        ul_data_len: CK_ULONG,
        p_signature: CK_BYTE_PTR,
        ul_signature_len: CK_ULONG,
    ) {
        let data = Some((p_data, ul_data_len));
        unsafe { verify_last_part(h_session, data, p_signature, ul_signature_len) }
    }
);

pkcs11_fn!(
    fn C_VerifyUpdate(h_session: CK_SESSION_HANDLE, p_part: CK_BYTE_PTR, ul_part_len: CK_ULONG) {
        unsafe { update(Verify, h_session, p_part, ul_part_len) }
    }
);

pkcs11_fn!(
    fn C_VerifyFinal(
        h_session: CK_SESSION_HANDLE,
        p_signature: CK_BYTE_PTR,
        ul_signature_len: CK_ULONG,
    ) {
        unsafe { verify_last_part(h_session, None, p_signature, ul_signature_len) }
    }
);

not_supported!(C_VerifyRecoverInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_VerifyRecover(
    h_session: CK_SESSION_HANDLE,
    p_signature: CK_BYTE_PTR,
    ul_signature_len: CK_ULONG,
    p_data: CK_BYTE_PTR,
    pul_data_len: CK_ULONG_PTR,
));
not_supported!(C_DigestEncryptUpdate(
    h_session: CK_SESSION_HANDLE,
    p_part: CK_BYTE_PTR,
    ul_part_len: CK_ULONG,
    p_encrypted: CK_BYTE_PTR,
    pul_encrypted_len: CK_ULONG_PTR,
));
not_supported!(C_DecryptDigestUpdate(
    h_session: CK_SESSION_HANDLE,
    p_encrypted: CK_BYTE_PTR,
    ul_encrypted_len: CK_ULONG,
    p_part: CK_BYTE_PTR,
    pul_part_len: CK_ULONG_PTR,
));
not_supported!(C_SignEncryptUpdate(
    h_session: CK_SESSION_HANDLE,
    p_part: CK_BYTE_PTR,
    ul_part_len: CK_ULONG,
    p_encrypted: CK_BYTE_PTR,
    pul_encrypted_len: CK_ULONG_PTR,
));
not_supported!(C_DecryptVerifyUpdate(
    h_session: CK_SESSION_HANDLE,
    p_encrypted: CK_BYTE_PTR,
    ul_encrypted_len: CK_ULONG,
    p_part: CK_BYTE_PTR,
    pul_part_len: CK_ULONG_PTR,
));
