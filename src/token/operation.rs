//! The session's one cryptographic operation (sign, verify or digest) and the PKCS#11 rules
//! around it, in one place: one operation at a time per session (the token does not set
//! `CKF_DUAL_CRYPTO_OPERATIONS`), parts added by `C_*Update`, a length query that keeps the
//! operation, a last call that ends it, and a failed call that ends it too (except
//! `CKR_BUFFER_TOO_SMALL`). The first call after init makes the operation single- or
//! multi-part for good ([`Parts`]).

use std::sync::Arc;

use cryptoki_sys::*;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};

use crate::applet::objects::{HASH_SHA256, HASH_SHA384, HASH_SHA512};
use crate::error::{Error, Result};

use super::mechanism::{self, Hasher, fit_to_p256};
use super::module::Module;
use super::object::Object;
use super::session::Session;
use super::slot::Token;

pub const SIGNATURE_LEN: usize = 64;

/// Which operation a call is about (`C_Sign*`, `C_Verify*` or `C_Digest*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    Sign,
    Verify,
    Digest,
}

impl OperationKind {
    /// The flag that names the operation in `C_SessionCancel`.
    pub fn flag(self) -> CK_FLAGS {
        match self {
            OperationKind::Sign => CKF_SIGN,
            OperationKind::Verify => CKF_VERIFY,
            OperationKind::Digest => CKF_DIGEST,
        }
    }
}

/// What a signature or verification is computed over: a host-side hash for
/// `CKM_ECDSA_SHA*`, or the raw input of `CKM_ECDSA` collected as it comes.
pub enum MessageInput {
    Hashed(Hasher),
    Raw(Vec<u8>),
}

impl MessageInput {
    pub fn new(mechanism: CK_MECHANISM_TYPE) -> Self {
        match Hasher::new(mechanism) {
            Some(h) => MessageInput::Hashed(h),
            None => MessageInput::Raw(Vec::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            MessageInput::Hashed(h) => h.update(data),
            MessageInput::Raw(buffer) => buffer.extend_from_slice(data),
        }
    }

    /// The digest (or raw input) after a last part `data`.
    pub fn finish(mut self, data: Option<&[u8]>) -> Vec<u8> {
        if let Some(d) = data {
            self.update(d);
        }
        match self {
            MessageInput::Hashed(h) => h.finish(),
            MessageInput::Raw(buffer) => buffer,
        }
    }
}

/// How an operation takes its data. PKCS#11 3.0 §5.12–5.13 (C_Digest, C_Sign, C_Verify): the
/// single-part call "cannot be used to terminate a multi-part operation, and must be called after
/// C_*Init without intervening C_*Update calls"; so the first call after init fixes it, a length
/// query included (`C_Sign(NULL)` makes the operation single-part, `C_SignFinal(NULL)`
/// multi-part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parts {
    /// `C_Sign`, `C_Verify`, `C_Digest`.
    Single,
    /// `C_*Update` and `C_*Final`.
    Multi,
}

impl Parts {
    fn of_last_call(data: Option<&[u8]>) -> Parts {
        match data {
            Some(_) => Parts::Single,
            None => Parts::Multi,
        }
    }
}

/// What an operation computes.
enum Computation {
    /// Signed on the card with `key` when it ends.
    Sign {
        key: Arc<Object>,
        input: MessageInput,
    },
    /// Verified on the host against the key's cached public point (0 APDUs).
    Verify {
        point: [u8; 65],
        input: MessageInput,
    },
    Digest(Hasher),
}

/// The operation a session has under way, and whether it became single- or multi-part.
pub struct Operation {
    computation: Computation,
    parts: Option<Parts>,
}

impl Operation {
    fn new(computation: Computation) -> Self {
        Operation {
            computation,
            parts: None,
        }
    }

    pub fn kind(&self) -> OperationKind {
        match self.computation {
            Computation::Sign { .. } => OperationKind::Sign,
            Computation::Verify { .. } => OperationKind::Verify,
            Computation::Digest(_) => OperationKind::Digest,
        }
    }

    fn update(&mut self, data: &[u8]) {
        match &mut self.computation {
            Computation::Sign { input, .. } | Computation::Verify { input, .. } => {
                input.update(data)
            }
            Computation::Digest(hasher) => hasher.update(data),
        }
    }

    /// How many bytes the last call returns (a verification returns none).
    fn output_len(&self) -> usize {
        match &self.computation {
            Computation::Sign { .. } => SIGNATURE_LEN,
            Computation::Verify { .. } => 0,
            Computation::Digest(hasher) => hasher.output_len(),
        }
    }

    /// Fixes the operation as `parts`; refused (the caller ends the operation) when it already
    /// is the other kind, or when the mechanism has no multi-part form.
    fn admit(&mut self, kind: OperationKind, parts: Parts) -> Result<()> {
        if parts == Parts::Multi && self.is_single_part_only() {
            return Err(Error::new(
                CKR_OPERATION_NOT_INITIALIZED,
                "the mechanism is single-part only (C_Sign/C_Verify); the operation is ended",
            ));
        }
        if *self.parts.get_or_insert(parts) != parts {
            return Err(mixed_parts(kind, other(parts)));
        }
        Ok(())
    }

    /// A signature or verification over raw input (`CKM_ECDSA`: the caller's hash) is
    /// single-part only (PKCS#11 3.0 mechanism table, footnote 2).
    fn is_single_part_only(&self) -> bool {
        matches!(
            &self.computation,
            Computation::Sign {
                input: MessageInput::Raw(_),
                ..
            } | Computation::Verify {
                input: MessageInput::Raw(_),
                ..
            }
        )
    }
}

/// The error for a single-part call on a multi-part operation or the other way round. The
/// specification names no code of its own for it: the return values it lists for C_Sign,
/// C_SignUpdate, C_SignFinal (and the Verify and Digest calls) include
/// CKR_OPERATION_NOT_INITIALIZED ("no active operation of an appropriate type") and not
/// CKR_OPERATION_ACTIVE, which belongs to the C_*Init calls; SoftHSM2 answers the same. Like any
/// error of these calls other than CKR_BUFFER_TOO_SMALL, it ends the operation.
fn other(parts: Parts) -> Parts {
    match parts {
        Parts::Single => Parts::Multi,
        Parts::Multi => Parts::Single,
    }
}

fn mixed_parts(kind: OperationKind, operation_is: Parts) -> Error {
    let (single, update) = match kind {
        OperationKind::Sign => ("C_Sign", "C_SignUpdate/C_SignFinal"),
        OperationKind::Verify => ("C_Verify", "C_VerifyUpdate/C_VerifyFinal"),
        OperationKind::Digest => ("C_Digest", "C_DigestUpdate/C_DigestFinal"),
    };
    let detail = match operation_is {
        Parts::Multi => format!("{single} on a multi-part operation; the operation is ended"),
        Parts::Single => {
            format!("{update} on a single-part operation (after {single}); the operation is ended")
        }
    };
    Error::new(CKR_OPERATION_NOT_INITIALIZED, detail)
}

impl Module {
    /// Starts the session's operation built by `start`; `CKR_OPERATION_ACTIVE` while another
    /// sign, verify or digest operation is under way.
    fn start_operation(
        &self,
        handle: CK_SESSION_HANDLE,
        start: impl FnOnce(&Session) -> Result<Operation>,
    ) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if s.operation.is_some() {
            return Err(CKR_OPERATION_ACTIVE.into());
        }
        let operation = start(&s)?;
        s.operation = Some(operation);
        Ok(())
    }

    pub fn sign_init(
        &self,
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        has_param: bool,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.start_operation(handle, |s| {
            let (mechanism, key) =
                operation_key(&s.token, None, OperationKind::Sign, mech, has_param, key)?;
            Ok(Operation::new(Computation::Sign {
                key,
                input: MessageInput::new(mechanism),
            }))
        })
    }

    pub fn verify_init(
        &self,
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        has_param: bool,
        key: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        self.start_operation(handle, |s| {
            // A public key the application brought (a session object) verifies too.
            let session_key = self.session_object(s.slot_id, &s.token, key);
            let (mechanism, key) = operation_key(
                &s.token,
                session_key,
                OperationKind::Verify,
                mech,
                has_param,
                key,
            )?;
            let point = key
                .point
                .ok_or_else(|| Error::from(CKR_KEY_HANDLE_INVALID))?;
            Ok(Operation::new(Computation::Verify {
                point,
                input: MessageInput::new(mechanism),
            }))
        })
    }

    pub fn digest_init(
        &self,
        handle: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        has_param: bool,
    ) -> Result<()> {
        self.start_operation(handle, |_| {
            let hasher = mechanism::find(mech)
                .filter(|m| m.flags & CKF_DIGEST != 0)
                .and_then(|m| Hasher::new(m.mechanism))
                .ok_or_else(|| Error::from(CKR_MECHANISM_INVALID))?;
            if has_param {
                return Err(CKR_MECHANISM_PARAM_INVALID.into());
            }
            Ok(Operation::new(Computation::Digest(hasher)))
        })
    }

    /// Runs `f` on the session's active operation of `kind`, which becomes (or must already be)
    /// `parts`; `CKR_OPERATION_NOT_INITIALIZED` when there is none (another kind under way is
    /// left as it is), or when it is the other kind of parts (then it ends: [`mixed_parts`]).
    fn with_operation<R>(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: OperationKind,
        parts: Parts,
        f: impl FnOnce(&mut Operation) -> R,
    ) -> Result<R> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        let Some(operation) = s.operation.as_mut().filter(|op| op.kind() == kind) else {
            return Err(CKR_OPERATION_NOT_INITIALIZED.into());
        };
        if let Err(e) = operation.admit(kind, parts) {
            s.operation = None;
            return Err(e);
        }
        Ok(f(operation))
    }

    /// The length of what the last call (`parts`: `C_Sign` or `C_SignFinal`, …) will return (0
    /// APDUs; the operation stays active).
    pub fn output_len(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: OperationKind,
        parts: Parts,
    ) -> Result<usize> {
        self.with_operation(handle, kind, parts, |op| op.output_len())
    }

    /// `C_SignUpdate`, `C_VerifyUpdate`, `C_DigestUpdate`: one more part.
    pub fn update(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: OperationKind,
        data: &[u8],
    ) -> Result<()> {
        self.with_operation(handle, kind, Parts::Multi, |op| op.update(data))
    }

    /// Takes the active operation of `kind` out of its session: it ends here whatever the
    /// outcome of the last call, which is single-part (`C_Sign`, `C_Verify`, `C_Digest`) or
    /// multi-part (`C_*Final`) as `parts` says.
    fn take_operation(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: OperationKind,
        parts: Parts,
    ) -> Result<(Computation, Arc<Token>)> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if s.operation.as_ref().map(Operation::kind) != Some(kind) {
            return Err(CKR_OPERATION_NOT_INITIALIZED.into());
        }
        let mut operation = s
            .operation
            .take()
            .ok_or_else(|| Error::from(CKR_OPERATION_NOT_INITIALIZED))?;
        operation.admit(kind, parts)?;
        Ok((operation.computation, s.token.clone()))
    }

    /// The last call of a signature (on the card) or digest: single-part with `data`, or
    /// multi-part without. A verification ends with `verify_finish` instead.
    pub fn finish(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: OperationKind,
        data: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        match self.take_operation(handle, kind, Parts::of_last_call(data))? {
            (Computation::Sign { key, input }, token) => {
                let digest = input.finish(data);
                let (algorithm, to_sign) = card_hash_for(&key, &digest)?;
                let signature = self.on_card(handle, &token, |ch| {
                    ch.sign_hash(&key.card, algorithm, &to_sign)
                })?;
                Ok(signature.to_vec())
            }
            (Computation::Digest(mut hasher), _) => {
                if let Some(d) = data {
                    hasher.update(d);
                }
                Ok(hasher.finish())
            }
            (Computation::Verify { .. }, _) => Err(Error::new(
                CKR_FUNCTION_FAILED,
                "a verification ends with the signature to check",
            )),
        }
    }

    /// Verifies on the host with the cached public key (0 APDUs). Ends the operation.
    pub fn verify_finish(
        &self,
        handle: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        let (Computation::Verify { point, input }, _) =
            self.take_operation(handle, OperationKind::Verify, Parts::of_last_call(data))?
        else {
            return Err(CKR_OPERATION_NOT_INITIALIZED.into());
        };
        let digest = input.finish(data);
        if signature.len() != SIGNATURE_LEN {
            return Err(CKR_SIGNATURE_LEN_RANGE.into());
        }
        let vk = VerifyingKey::from_sec1_bytes(&point)
            .map_err(|_| Error::new(CKR_KEY_HANDLE_INVALID, "public key is not on P-256"))?;
        let sig =
            Signature::from_slice(signature).map_err(|_| Error::from(CKR_SIGNATURE_INVALID))?;
        vk.verify_prehash(&fit_to_p256(&digest), &sig)
            .map_err(|_| Error::from(CKR_SIGNATURE_INVALID))
    }

    /// Ends the session's operations named by `flags` (`CKF_SIGN`, `CKF_VERIFY`, `CKF_DIGEST`,
    /// `CKF_FIND_OBJECTS`), as `C_SessionCancel` does.
    pub fn end_operations(&self, handle: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<()> {
        let s = self.session(handle)?;
        let mut s = s.lock();
        if s.operation
            .as_ref()
            .is_some_and(|op| flags & op.kind().flag() != 0)
        {
            s.operation = None;
        }
        if flags & CKF_FIND_OBJECTS != 0 {
            s.find = None;
        }
        Ok(())
    }

    /// Runs one call of `C_Sign*`, `C_Verify*` or `C_Digest*` (after its length query) with the
    /// rule they share: a call that fails ends the operation of `kind`, except a
    /// `CKR_BUFFER_TOO_SMALL` answer.
    pub fn ending_on_error<R>(
        &self,
        handle: CK_SESSION_HANDLE,
        kind: OperationKind,
        call: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        let result = call();
        if let Err(e) = &result
            && e.rv() != CKR_BUFFER_TOO_SMALL
        {
            let _ = self.end_operations(handle, kind.flag());
        }
        result
    }
}

/// What C_SignInit and C_VerifyInit both check: a mechanism the token offers for the operation
/// (ECDSA takes no parameter) and a key of the class it needs (a private key to sign, a public
/// one to verify) whose CKA_SIGN or CKA_VERIFY is set. Objects of another class (a public key to
/// sign with, a certificate) are refused as SoftHSM and OpenSC do: the object does not permit
/// the function.
fn operation_key(
    token: &Token,
    session_key: Option<Arc<Object>>,
    operation: OperationKind,
    mech: CK_MECHANISM_TYPE,
    has_param: bool,
    key: CK_OBJECT_HANDLE,
) -> Result<(CK_MECHANISM_TYPE, Arc<Object>)> {
    let (class, permission) = match operation {
        OperationKind::Sign => (CKO_PRIVATE_KEY, CKA_SIGN),
        OperationKind::Verify | OperationKind::Digest => (CKO_PUBLIC_KEY, CKA_VERIFY),
    };
    let entry = mechanism::find(mech)
        .filter(|m| m.flags & operation.flag() != 0)
        .ok_or_else(|| Error::from(CKR_MECHANISM_INVALID))?;
    if has_param {
        return Err(Error::new(
            CKR_MECHANISM_PARAM_INVALID,
            "ECDSA takes no parameter",
        ));
    }
    let key = token
        .object(key)
        .or(session_key)
        .ok_or_else(|| Error::from(CKR_KEY_HANDLE_INVALID))?;
    let kind = if class == CKO_PRIVATE_KEY {
        "private"
    } else {
        "public"
    };
    if key.class != class {
        return Err(Error::new(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            format!("this operation needs a {kind} key"),
        ));
    }
    if !key.bool_attribute(permission) {
        return Err(Error::new(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            "the key does not allow this operation",
        ));
    }
    Ok((entry.mechanism, key))
}

/// Chooses what the card signs in pad-and-sign mode: the input fitted to 32 bytes declared as
/// SHA-256 (every IoT SAFE key supports it; the ECDSA result is identical because P-256 ECDSA
/// only uses the leftmost 256 bits), or, for a key that refuses SHA-256, the full SHA-384/512
/// digest under its own algorithm.
fn card_hash_for(key: &Object, digest: &[u8]) -> Result<(u16, Vec<u8>)> {
    let allowed = key.card.hash_algorithms.unwrap_or(HASH_SHA256);
    if allowed & HASH_SHA256 != 0 {
        return Ok((HASH_SHA256, fit_to_p256(digest).to_vec()));
    }
    match digest.len() {
        48 if allowed & HASH_SHA384 != 0 => Ok((HASH_SHA384, digest.to_vec())),
        64 if allowed & HASH_SHA512 != 0 => Ok((HASH_SHA512, digest.to_vec())),
        _ => Err(Error::new(
            CKR_KEY_FUNCTION_NOT_PERMITTED,
            format!("the key allows hash mask {allowed:04X} only"),
        )),
    }
}
