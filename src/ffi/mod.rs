//! The C boundary: the only `unsafe` code of the module. Every `C_*` function has the same
//! shape (see `pkcs11_fn!`): panics caught, pointers checked by the helpers in `util`, a safe
//! body returning `Result<()>`, the error mapped to a `CK_RV` in one place.

pub mod util;

use std::ffi::CStr;

use cryptoki_sys::*;

use crate::error::{Error, Result};
use crate::token::{self, module, object::AttrValue};
use util::{
    entry, in_bytes, output_buffer, padded, read, template, template_values, to_usize, write,
};

pub use tables::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};

pub const LIBRARY_MANUFACTURER: &str = "iotsafe-pkcs11 project";
pub const LIBRARY_DESCRIPTION: &str = "IoT SAFE SIM PKCS#11 module";
pub const TOKEN_MANUFACTURER: &str = "IoT SAFE applet";
pub const TOKEN_MODEL: &str = "IoT.05";

fn library_version() -> CK_VERSION {
    CK_VERSION {
        major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
        minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
    }
}

/// Declares one exported `C_*` function with the common wrapper.
macro_rules! pkcs11_fn {
    (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        #[unsafe(no_mangle)]
        #[allow(unused_unsafe, clippy::missing_safety_doc)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
            entry(stringify!($name), || -> Result<()> { unsafe { $body } })
        }
    };
}

/// A function this module does not offer: `CKR_FUNCTION_NOT_SUPPORTED` once initialised.
macro_rules! not_supported {
    ($name:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        pkcs11_fn!(fn $name($($arg: $ty),*) {
            let _ = ($($arg,)*);
            module()?;
            Err(CKR_FUNCTION_NOT_SUPPORTED.into())
        });
    };
}

mod tables;

pkcs11_fn!(
    fn C_Initialize(p_init_args: CK_VOID_PTR) {
        let mut inline_config = None;
        if !p_init_args.is_null() {
            let args: CK_C_INITIALIZE_ARGS = read(p_init_args as *const CK_C_INITIALIZE_ARGS)?;
            let callbacks = [
                args.CreateMutex.is_some(),
                args.DestroyMutex.is_some(),
                args.LockMutex.is_some(),
                args.UnlockMutex.is_some(),
            ];
            let given = callbacks.iter().filter(|c| **c).count();
            if given != 0 && given != 4 {
                return Err(Error::new(
                    CKR_ARGUMENTS_BAD,
                    "mutex callbacks must be given all or none",
                ));
            }
            // We lock with OS primitives. Callbacks alone (without CKF_OS_LOCKING_OK) demand that
            // we use them instead, which we cannot.
            if given == 4 && args.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(Error::new(CKR_CANT_LOCK, "only OS locking is supported"));
            }
            if !args.pReserved.is_null() {
                // p11-kit's x-init-reserved and similar pass a configuration string here.
                let text = CStr::from_ptr(args.pReserved as *const std::ffi::c_char);
                let text = text.to_str().map_err(|_| {
                    Error::new(CKR_ARGUMENTS_BAD, "pReserved is not a UTF-8 string")
                })?;
                if !text.trim().is_empty() {
                    inline_config = Some(text.to_owned());
                }
            }
        }
        token::initialize(inline_config.as_deref())
    }
);

pkcs11_fn!(
    fn C_Finalize(p_reserved: CK_VOID_PTR) {
        if !p_reserved.is_null() {
            return Err(Error::new(CKR_ARGUMENTS_BAD, "pReserved must be NULL"));
        }
        token::finalize()
    }
);

pkcs11_fn!(
    fn C_GetInfo(p_info: CK_INFO_PTR) {
        module()?;
        write(
            p_info,
            CK_INFO {
                cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
                manufacturerID: padded(LIBRARY_MANUFACTURER),
                flags: 0,
                libraryDescription: padded(LIBRARY_DESCRIPTION),
                libraryVersion: library_version(),
            },
        )
    }
);

pkcs11_fn!(
    fn C_GetSlotList(
        token_present: CK_BBOOL,
        p_slot_list: CK_SLOT_ID_PTR,
        pul_count: CK_ULONG_PTR,
    ) {
        let m = module()?;
        let capacity = read(pul_count as *const CK_ULONG)?;
        // A NULL list is when new readers are picked up (PKCS#11 §5.5).
        let slots = m.slot_list(token_present != 0, p_slot_list.is_null())?;
        write(pul_count, slots.len() as CK_ULONG)?;
        if p_slot_list.is_null() {
            return Ok(());
        }
        if to_usize(capacity)? < slots.len() {
            return Err(CKR_BUFFER_TOO_SMALL.into());
        }
        for (i, id) in slots.iter().enumerate() {
            write(p_slot_list.add(i), *id)?;
        }
        Ok(())
    }
);

pkcs11_fn!(
    fn C_GetSlotInfo(slot_id: CK_SLOT_ID, p_info: CK_SLOT_INFO_PTR) {
        let m = module()?;
        if p_info.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let info = m.slot_info(slot_id)?;
        let mut flags = CKF_REMOVABLE_DEVICE | CKF_HW_SLOT;
        if info.token_present {
            flags |= CKF_TOKEN_PRESENT;
        }
        write(
            p_info,
            CK_SLOT_INFO {
                slotDescription: padded(&info.description),
                manufacturerID: padded("PC/SC reader"),
                flags,
                hardwareVersion: CK_VERSION { major: 0, minor: 0 },
                firmwareVersion: CK_VERSION { major: 0, minor: 0 },
            },
        )
    }
);

pkcs11_fn!(
    fn C_GetTokenInfo(slot_id: CK_SLOT_ID, p_info: CK_TOKEN_INFO_PTR) {
        let m = module()?;
        if p_info.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let t = m.token_info(slot_id)?;
        write(
            p_info,
            CK_TOKEN_INFO {
                label: padded(&t.label),
                manufacturerID: padded(TOKEN_MANUFACTURER),
                model: padded(TOKEN_MODEL),
                serialNumber: padded(&t.serial),
                flags: CKF_RNG
                    | CKF_TOKEN_INITIALIZED
                    | if t.writable { 0 } else { CKF_WRITE_PROTECTED },
                ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
                ulSessionCount: t.session_count as CK_ULONG,
                ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
                ulRwSessionCount: t.rw_session_count as CK_ULONG,
                ulMaxPinLen: 0,
                ulMinPinLen: 0,
                ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
                ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
                ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
                ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
                hardwareVersion: CK_VERSION {
                    major: t.applet_version >> 4,
                    minor: t.applet_version & 0x0F,
                },
                firmwareVersion: library_version(),
                utcTime: [b' '; 16],
            },
        )
    }
);

pkcs11_fn!(
    fn C_GetMechanismList(
        slot_id: CK_SLOT_ID,
        p_list: CK_MECHANISM_TYPE_PTR,
        pul_count: CK_ULONG_PTR,
    ) {
        let m = module()?;
        let capacity = read(pul_count as *const CK_ULONG)?;
        let mechs = m.mechanisms(slot_id)?;
        write(pul_count, mechs.len() as CK_ULONG)?;
        if p_list.is_null() {
            return Ok(());
        }
        if to_usize(capacity)? < mechs.len() {
            return Err(CKR_BUFFER_TOO_SMALL.into());
        }
        for (i, e) in mechs.iter().enumerate() {
            write(p_list.add(i), e.mechanism)?;
        }
        Ok(())
    }
);

pkcs11_fn!(
    fn C_GetMechanismInfo(
        slot_id: CK_SLOT_ID,
        mech_type: CK_MECHANISM_TYPE,
        p_info: CK_MECHANISM_INFO_PTR,
    ) {
        let m = module()?;
        if p_info.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let e = m
            .mechanisms(slot_id)?
            .into_iter()
            .find(|e| e.mechanism == mech_type)
            .ok_or_else(|| Error::from(CKR_MECHANISM_INVALID))?;
        write(
            p_info,
            CK_MECHANISM_INFO {
                ulMinKeySize: e.min_key_bits,
                ulMaxKeySize: e.max_key_bits,
                flags: e.flags,
            },
        )
    }
);

not_supported!(C_InitToken(slot_id: CK_SLOT_ID, p_pin: CK_UTF8CHAR_PTR, ul_pin_len: CK_ULONG, p_label: CK_UTF8CHAR_PTR));
not_supported!(C_InitPIN(h_session: CK_SESSION_HANDLE, p_pin: CK_UTF8CHAR_PTR, ul_pin_len: CK_ULONG));
not_supported!(C_SetPIN(
    h_session: CK_SESSION_HANDLE,
    p_old_pin: CK_UTF8CHAR_PTR,
    ul_old_len: CK_ULONG,
    p_new_pin: CK_UTF8CHAR_PTR,
    ul_new_len: CK_ULONG,
));

pkcs11_fn!(
    fn C_OpenSession(
        slot_id: CK_SLOT_ID,
        flags: CK_FLAGS,
        p_application: CK_VOID_PTR,
        notify: CK_NOTIFY,
        ph_session: CK_SESSION_HANDLE_PTR,
    ) {
        let _ = (p_application, notify); // accepted and never called
        let m = module()?;
        if ph_session.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let handle = m.open_session(slot_id, flags)?;
        write(ph_session, handle)
    }
);

pkcs11_fn!(
    fn C_CloseSession(h_session: CK_SESSION_HANDLE) {
        module()?.close_session(h_session)
    }
);

pkcs11_fn!(
    fn C_CloseAllSessions(slot_id: CK_SLOT_ID) {
        module()?.close_all_sessions(slot_id)
    }
);

pkcs11_fn!(
    fn C_GetSessionInfo(h_session: CK_SESSION_HANDLE, p_info: CK_SESSION_INFO_PTR) {
        let m = module()?;
        if p_info.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let (slot_id, state, flags) = m.session_info(h_session)?;
        write(
            p_info,
            CK_SESSION_INFO {
                slotID: slot_id,
                state,
                flags,
                ulDeviceError: 0,
            },
        )
    }
);

not_supported!(C_GetOperationState(h_session: CK_SESSION_HANDLE, p_state: CK_BYTE_PTR, pul_len: CK_ULONG_PTR));
not_supported!(C_SetOperationState(
    h_session: CK_SESSION_HANDLE,
    p_state: CK_BYTE_PTR,
    ul_len: CK_ULONG,
    h_enc_key: CK_OBJECT_HANDLE,
    h_auth_key: CK_OBJECT_HANDLE,
));

pkcs11_fn!(
    fn C_Login(
        h_session: CK_SESSION_HANDLE,
        user_type: CK_USER_TYPE,
        p_pin: CK_UTF8CHAR_PTR,
        ul_pin_len: CK_ULONG,
    ) {
        let m = module()?;
        in_bytes(p_pin, ul_pin_len)?;
        m.login(h_session, user_type)
    }
);

pkcs11_fn!(
    fn C_LoginUser(
        h_session: CK_SESSION_HANDLE,
        user_type: CK_USER_TYPE,
        p_pin: CK_UTF8CHAR_PTR,
        ul_pin_len: CK_ULONG,
        p_username: CK_UTF8CHAR_PTR,
        ul_username_len: CK_ULONG,
    ) {
        let m = module()?;
        in_bytes(p_pin, ul_pin_len)?;
        in_bytes(p_username, ul_username_len)?;
        m.login(h_session, user_type)
    }
);

pkcs11_fn!(
    fn C_Logout(h_session: CK_SESSION_HANDLE) {
        module()?.logout(h_session)
    }
);

pkcs11_fn!(
    fn C_SessionCancel(h_session: CK_SESSION_HANDLE, flags: CK_FLAGS) {
        module()?.end_operations(h_session, flags)
    }
);

pkcs11_fn!(
    fn C_CreateObject(
        h_session: CK_SESSION_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
        ph_object: CK_OBJECT_HANDLE_PTR,
    ) {
        let m = module()?;
        // The copy may hold a secret (a session secret key's CKA_VALUE): wiped after use.
        let attrs = zeroize::Zeroizing::new(template_values(template(p_template, ul_count)?)?);
        if ph_object.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let object = m.create_object(h_session, &attrs)?;
        write(ph_object, object)
    }
);

pkcs11_fn!(
    fn C_CopyObject(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
        ph_new_object: CK_OBJECT_HANDLE_PTR,
    ) {
        let m = module()?;
        template(p_template, ul_count)?;
        if ph_new_object.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        m.object(h_session, h_object)?;
        Err(Error::new(
            CKR_ACTION_PROHIBITED,
            "card objects are not copyable",
        ))
    }
);

pkcs11_fn!(
    fn C_DestroyObject(h_session: CK_SESSION_HANDLE, h_object: CK_OBJECT_HANDLE) {
        module()?.destroy_object(h_session, h_object)
    }
);

pkcs11_fn!(
    fn C_GetObjectSize(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        pul_size: CK_ULONG_PTR,
    ) {
        let m = module()?;
        if pul_size.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let obj = m.object(h_session, h_object)?;
        let value_len = match obj.attribute(CKA_VALUE) {
            Some(AttrValue::Bytes(v)) => v.len(),
            _ => 0,
        };
        write(pul_size, value_len as CK_ULONG)
    }
);

pkcs11_fn!(
    fn C_GetAttributeValue(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
    ) {
        let m = module()?;
        let attrs = template(p_template, ul_count)?;
        let obj = m.object(h_session, h_object)?;
        // PKCS#11 §5.7.5: every attribute is processed; the call reports one of the errors met.
        let mut result = CKR_OK;
        for a in attrs.iter_mut() {
            match token::attribute_value(&obj, a.type_) {
                None => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = CKR_ATTRIBUTE_TYPE_INVALID;
                }
                Some(AttrValue::Sensitive) => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = CKR_ATTRIBUTE_SENSITIVE;
                }
                Some(AttrValue::Bytes(v)) => {
                    if a.pValue.is_null() {
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else if to_usize(a.ulValueLen)? >= v.len() {
                        std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len());
                        a.ulValueLen = v.len() as CK_ULONG;
                    } else {
                        a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                        result = CKR_BUFFER_TOO_SMALL;
                    }
                }
            }
        }
        if result == CKR_OK {
            Ok(())
        } else {
            Err(result.into())
        }
    }
);

pkcs11_fn!(
    fn C_SetAttributeValue(
        h_session: CK_SESSION_HANDLE,
        h_object: CK_OBJECT_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
    ) {
        let m = module()?;
        template(p_template, ul_count)?;
        let object = m.object(h_session, h_object)?;
        if object.class == CKO_SECRET_KEY {
            // PSKs never change through the device (IoT.04 I9); derived keys are not modifiable.
            return Err(Error::new(
                CKR_ACTION_PROHIBITED,
                "secret keys cannot be modified",
            ));
        }
        Err(m.refuse_write(h_session))
    }
);

pkcs11_fn!(
    fn C_FindObjectsInit(
        h_session: CK_SESSION_HANDLE,
        p_template: CK_ATTRIBUTE_PTR,
        ul_count: CK_ULONG,
    ) {
        let m = module()?;
        let wanted = template_values(template(p_template, ul_count)?)?;
        m.find_init(h_session, &wanted)
    }
);

pkcs11_fn!(
    fn C_FindObjects(
        h_session: CK_SESSION_HANDLE,
        ph_object: CK_OBJECT_HANDLE_PTR,
        ul_max_object_count: CK_ULONG,
        pul_object_count: CK_ULONG_PTR,
    ) {
        let m = module()?;
        if pul_object_count.is_null() || (ph_object.is_null() && ul_max_object_count > 0) {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let found = m.find(h_session, to_usize(ul_max_object_count)?)?;
        for (i, h) in found.iter().enumerate() {
            write(ph_object.add(i), *h)?;
        }
        write(pul_object_count, found.len() as CK_ULONG)
    }
);

pkcs11_fn!(
    fn C_FindObjectsFinal(h_session: CK_SESSION_HANDLE) {
        module()?.find_final(h_session)
    }
);

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

/// The last call of a digest or signing operation, single-part (`data`) or final (`None`): the
/// PKCS#11 output-buffer rules — a size query or a short buffer does no card work and keeps the
/// operation — then the result copied out; any other error ends the operation.
///
/// # Safety
/// The data and output pointers must be valid for their stated lengths.
unsafe fn finish_into<R: AsRef<[u8]>>(
    m: &token::Module,
    (h_session, operation): (CK_SESSION_HANDLE, CK_FLAGS),
    data: Option<(CK_BYTE_PTR, CK_ULONG)>,
    (out, out_len, needed): (CK_BYTE_PTR, CK_ULONG_PTR, usize),
    finish: impl FnOnce(Option<&[u8]>) -> Result<R>,
) -> Result<()> {
    let result = (|| {
        // SAFETY: the caller guarantees the pointers and lengths.
        let data = unsafe { data.map(|(p, len)| in_bytes(p, len)).transpose()? };
        // SAFETY: as above.
        if let Some(buf) = unsafe { output_buffer(out, out_len, needed)? } {
            buf.copy_from_slice(finish(data)?.as_ref());
        }
        Ok(())
    })();
    m.end_on_error(h_session, operation, &result);
    result
}

/// C_Verify (`data`) and C_VerifyFinal (`None`): the operation ends whatever the outcome.
///
/// # Safety
/// The data and signature pointers must be valid for their stated lengths.
unsafe fn verify_into(
    m: &token::Module,
    h_session: CK_SESSION_HANDLE,
    data: Option<(CK_BYTE_PTR, CK_ULONG)>,
    (signature, signature_len): (CK_BYTE_PTR, CK_ULONG),
) -> Result<()> {
    let result = (|| {
        // SAFETY: the caller guarantees the pointers and lengths.
        let data = unsafe { data.map(|(p, len)| in_bytes(p, len)).transpose()? };
        // SAFETY: as above.
        let signature_bytes = unsafe { in_bytes(signature, signature_len)? };
        if signature.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        m.verify_finish(h_session, data, signature_bytes)
    })();
    m.end_on_error(h_session, CKF_VERIFY, &result);
    result
}

pkcs11_fn!(
    fn C_DigestInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR) {
        let m = module()?;
        let (mech, has_param) = util::mechanism(p_mechanism)?;
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
        let m = module()?;
        let needed = m.digest_len(h_session)?;
        finish_into(
            &m,
            (h_session, CKF_DIGEST),
            Some((p_data, ul_data_len)),
            (p_digest, pul_digest_len, needed),
            |data| m.digest_finish(h_session, data),
        )
    }
);

pkcs11_fn!(
    fn C_DigestUpdate(h_session: CK_SESSION_HANDLE, p_part: CK_BYTE_PTR, ul_part_len: CK_ULONG) {
        let m = module()?;
        let result = in_bytes(p_part, ul_part_len).and_then(|d| m.digest_update(h_session, d));
        m.end_on_error(h_session, CKF_DIGEST, &result);
        result
    }
);

not_supported!(C_DigestKey(h_session: CK_SESSION_HANDLE, h_key: CK_OBJECT_HANDLE));

pkcs11_fn!(
    fn C_DigestFinal(
        h_session: CK_SESSION_HANDLE,
        p_digest: CK_BYTE_PTR,
        pul_digest_len: CK_ULONG_PTR,
    ) {
        let m = module()?;
        let needed = m.digest_len(h_session)?;
        finish_into(
            &m,
            (h_session, CKF_DIGEST),
            None,
            (p_digest, pul_digest_len, needed),
            |data| m.digest_finish(h_session, data),
        )
    }
);

pkcs11_fn!(
    fn C_SignInit(
        h_session: CK_SESSION_HANDLE,
        p_mechanism: CK_MECHANISM_PTR,
        h_key: CK_OBJECT_HANDLE,
    ) {
        let m = module()?;
        let (mech, has_param) = util::mechanism(p_mechanism)?;
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
        let m = module()?;
        let needed = m.sign_len(h_session)?;
        finish_into(
            &m,
            (h_session, CKF_SIGN),
            Some((p_data, ul_data_len)),
            (p_signature, pul_signature_len, needed),
            |data| m.sign_finish(h_session, data),
        )
    }
);

pkcs11_fn!(
    fn C_SignUpdate(h_session: CK_SESSION_HANDLE, p_part: CK_BYTE_PTR, ul_part_len: CK_ULONG) {
        let m = module()?;
        let result = in_bytes(p_part, ul_part_len).and_then(|d| m.sign_update(h_session, d));
        m.end_on_error(h_session, CKF_SIGN, &result);
        result
    }
);

pkcs11_fn!(
    fn C_SignFinal(
        h_session: CK_SESSION_HANDLE,
        p_signature: CK_BYTE_PTR,
        pul_signature_len: CK_ULONG_PTR,
    ) {
        let m = module()?;
        let needed = m.sign_len(h_session)?;
        finish_into(
            &m,
            (h_session, CKF_SIGN),
            None,
            (p_signature, pul_signature_len, needed),
            |data| m.sign_finish(h_session, data),
        )
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
        let (mech, has_param) = util::mechanism(p_mechanism)?;
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
        let m = module()?;
        verify_into(
            &m,
            h_session,
            Some((p_data, ul_data_len)),
            (p_signature, ul_signature_len),
        )
    }
);

pkcs11_fn!(
    fn C_VerifyUpdate(h_session: CK_SESSION_HANDLE, p_part: CK_BYTE_PTR, ul_part_len: CK_ULONG) {
        let m = module()?;
        let result = in_bytes(p_part, ul_part_len).and_then(|d| m.verify_update(h_session, d));
        m.end_on_error(h_session, CKF_VERIFY, &result);
        result
    }
);

pkcs11_fn!(
    fn C_VerifyFinal(
        h_session: CK_SESSION_HANDLE,
        p_signature: CK_BYTE_PTR,
        ul_signature_len: CK_ULONG,
    ) {
        let m = module()?;
        verify_into(&m, h_session, None, (p_signature, ul_signature_len))
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
        let (mech, has_param) = util::mechanism(p_mechanism)?;
        let public = template_values(template(p_public_template, ul_public_count)?)?;
        let private = template_values(template(p_private_template, ul_private_count)?)?;
        if ph_public_key.is_null() || ph_private_key.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let (public_key, private_key) =
            m.generate_key_pair(h_session, mech, has_param, &public, &private)?;
        write(ph_public_key, public_key)?;
        write(ph_private_key, private_key)
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
        let mechanism = read(p_mechanism as *const CK_MECHANISM)?;
        if token::kdf::is_kdf_mechanism(mechanism.mechanism) {
            let (params, version_out) = kdf_params(&mechanism)?;
            let wanted = template_values(template(p_template, ul_count)?)?;
            if ph_key.is_null() {
                return Err(CKR_ARGUMENTS_BAD.into());
            }
            let derived =
                m.derive_with_secret(h_session, mechanism.mechanism, params, h_base_key, &wanted)?;
            if let Some(version) = derived.version {
                write(version_out, version)?;
            }
            return write(ph_key, derived.key);
        }
        let params = ecdh_params(&mechanism)?;
        let wanted = template_values(template(p_template, ul_count)?)?;
        if ph_key.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let key = m.derive_key(h_session, mechanism.mechanism, params, h_base_key, &wanted)?;
        write(ph_key, key)
    }
);

/// `CK_IOTSAFE_TLS12_PSK_KDF_PARAMS` (include/iotsafe_pkcs11.h).
#[repr(C)]
#[allow(non_snake_case)]
struct IotsafeTls12PskKdfParams {
    prfHashMechanism: CK_MECHANISM_TYPE,
    pLabel: CK_BYTE_PTR,
    ulLabelLen: CK_ULONG,
    pSeed: CK_BYTE_PTR,
    ulSeedLen: CK_ULONG,
    pOtherSecret: CK_BYTE_PTR,
    ulOtherSecretLen: CK_ULONG,
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
    unsafe {
        let client = param_bytes(r.pClientRandom, r.ulClientRandomLen, "client random")?;
        let server = param_bytes(r.pServerRandom, r.ulServerRandomLen, "server random")?;
        Ok([client, server].concat())
    }
}

/// A master-secret derivation; only the non-DH forms report the pre-master's version
/// (PKCS#11 3.0 §2.41), and only when `pVersion` is set.
fn tls12_master(
    mechanism: &CK_MECHANISM,
    label: &'static [u8],
    seed: Vec<u8>,
    prf_hash: CK_MECHANISM_TYPE,
    version_out: *mut CK_VERSION,
) -> Result<(token::kdf::KdfParams, *mut CK_VERSION)> {
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
        token::kdf::KdfParams::Tls12Master {
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
unsafe fn kdf_params(mechanism: &CK_MECHANISM) -> Result<(token::kdf::KdfParams, *mut CK_VERSION)> {
    use token::kdf::{HkdfSalt, KdfParams};
    // SAFETY (whole body): the caller guarantees every pointer with its length.
    unsafe {
        match mechanism.mechanism {
            CKM_TLS12_MASTER_KEY_DERIVE | CKM_TLS12_MASTER_KEY_DERIVE_DH => {
                let p: CK_TLS12_MASTER_KEY_DERIVE_PARAMS =
                    mechanism_param(mechanism, "CK_TLS12_MASTER_KEY_DERIVE_PARAMS")?;
                let seed = randoms(&p.RandomInfo)?;
                tls12_master(
                    mechanism,
                    b"master secret",
                    seed,
                    p.prfHashMechanism,
                    p.pVersion,
                )
            }
            CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE | CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH => {
                let p: CK_TLS12_EXTENDED_MASTER_KEY_DERIVE_PARAMS =
                    mechanism_param(mechanism, "CK_TLS12_EXTENDED_MASTER_KEY_DERIVE_PARAMS")?;
                let seed = param_bytes(p.pSessionHash, p.ulSessionHashLen, "session hash")?;
                let label = b"extended master secret";
                tls12_master(mechanism, label, seed, p.prfHashMechanism, p.pVersion)
            }
            CKM_TLS12_KDF => {
                let p: CK_TLS_KDF_PARAMS = mechanism_param(mechanism, "CK_TLS_KDF_PARAMS")?;
                let context = if p.pContextData.is_null() {
                    None
                } else {
                    Some(param_bytes(
                        p.pContextData,
                        p.ulContextDataLength,
                        "context data",
                    )?)
                };
                let label = param_bytes(p.pLabel, p.ulLabelLength, "label")?;
                if label.is_empty() {
                    return Err(Error::new(CKR_MECHANISM_PARAM_INVALID, "empty PRF label"));
                }
                Ok((
                    KdfParams::Tls12Kdf {
                        prf_hash: p.prfMechanism,
                        label,
                        randoms: randoms(&p.RandomInfo)?,
                        context,
                    },
                    std::ptr::null_mut(),
                ))
            }
            token::object::CKM_IOTSAFE_TLS12_PSK_KDF
            | token::object::CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF => {
                let p: IotsafeTls12PskKdfParams =
                    mechanism_param(mechanism, "CK_IOTSAFE_TLS12_PSK_KDF_PARAMS")?;
                let other = param_bytes(p.pOtherSecret, p.ulOtherSecretLen, "other secret")?;
                Ok((
                    KdfParams::Tls12Psk {
                        prf_hash: p.prfHashMechanism,
                        label: param_bytes(p.pLabel, p.ulLabelLen, "label")?,
                        seed: param_bytes(p.pSeed, p.ulSeedLen, "seed")?,
                        other_secret: (!other.is_empty()).then(|| zeroize::Zeroizing::new(other)),
                    },
                    std::ptr::null_mut(),
                ))
            }
            CKM_HKDF_DERIVE => {
                let p: CK_HKDF_PARAMS = mechanism_param(mechanism, "CK_HKDF_PARAMS")?;
                let salt = match p.ulSaltType {
                    CKF_HKDF_SALT_NULL => HkdfSalt::Null,
                    CKF_HKDF_SALT_DATA => {
                        HkdfSalt::Data(param_bytes(p.pSalt, p.ulSaltLen, "salt")?)
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
                        info: param_bytes(p.pInfo, p.ulInfoLen, "info")?,
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
}

/// Copies `CK_ECDH1_DERIVE_PARAMS` out of the caller's mechanism (checked size and pointers).
///
/// # Safety
/// The mechanism's parameter pointer must be valid for its stated length.
unsafe fn ecdh_params(mechanism: &CK_MECHANISM) -> Result<Option<token::keys::EcdhParams>> {
    if mechanism.mechanism != CKM_ECDH1_DERIVE {
        return Ok(None);
    }
    if mechanism.pParameter.is_null()
        || to_usize(mechanism.ulParameterLen)? != std::mem::size_of::<CK_ECDH1_DERIVE_PARAMS>()
    {
        return Err(Error::new(
            CKR_MECHANISM_PARAM_INVALID,
            "CK_ECDH1_DERIVE_PARAMS expected",
        ));
    }
    // SAFETY: size checked above; the caller guarantees the pointer.
    let p = unsafe { read(mechanism.pParameter as *const CK_ECDH1_DERIVE_PARAMS)? };
    // SAFETY: the caller guarantees the data pointers and lengths.
    let shared = unsafe { in_bytes(p.pSharedData, p.ulSharedDataLen) }
        .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID, "shared data"))?;
    let public = unsafe { in_bytes(p.pPublicData, p.ulPublicDataLen) }
        .map_err(|_| Error::new(CKR_MECHANISM_PARAM_INVALID, "public data"))?;
    Ok(Some(token::keys::EcdhParams {
        kdf: p.kdf,
        shared_data: shared.to_vec(),
        public_data: public.to_vec(),
    }))
}

pkcs11_fn!(
    fn C_SeedRandom(h_session: CK_SESSION_HANDLE, p_seed: CK_BYTE_PTR, ul_seed_len: CK_ULONG) {
        let m = module()?;
        in_bytes(p_seed, ul_seed_len)?;
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
            std::slice::from_raw_parts_mut(p_random, len)
        };
        m.generate_random(h_session, out)
    }
);

pkcs11_fn!(
    fn C_GetFunctionStatus(h_session: CK_SESSION_HANDLE) {
        module()?.check_session(h_session)?;
        Err(CKR_FUNCTION_NOT_PARALLEL.into())
    }
);

pkcs11_fn!(
    fn C_CancelFunction(h_session: CK_SESSION_HANDLE) {
        module()?.check_session(h_session)?;
        Err(CKR_FUNCTION_NOT_PARALLEL.into())
    }
);

pkcs11_fn!(
    fn C_WaitForSlotEvent(flags: CK_FLAGS, p_slot: CK_SLOT_ID_PTR, p_reserved: CK_VOID_PTR) {
        let m = module()?;
        if p_slot.is_null() || !p_reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        // No global lock is held while waiting; C_Finalize wakes the waiter.
        let slot = m.wait_for_slot_event(flags & CKF_DONT_BLOCK != 0)?;
        write(p_slot, slot)
    }
);

// PKCS#11 3.0 message-based functions: not offered.
not_supported!(C_MessageEncryptInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_EncryptMessage(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_associated_data: CK_BYTE_PTR,
    ul_associated_data_len: CK_ULONG,
    p_plaintext: CK_BYTE_PTR,
    ul_plaintext_len: CK_ULONG,
    p_ciphertext: CK_BYTE_PTR,
    pul_ciphertext_len: CK_ULONG_PTR,
));
not_supported!(C_EncryptMessageBegin(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_associated_data: CK_BYTE_PTR,
    ul_associated_data_len: CK_ULONG,
));
not_supported!(C_EncryptMessageNext(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_plaintext_part: CK_BYTE_PTR,
    ul_plaintext_part_len: CK_ULONG,
    p_ciphertext_part: CK_BYTE_PTR,
    pul_ciphertext_part_len: CK_ULONG_PTR,
    flags: CK_FLAGS,
));
not_supported!(C_MessageEncryptFinal(h_session: CK_SESSION_HANDLE));
not_supported!(C_MessageDecryptInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_DecryptMessage(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_associated_data: CK_BYTE_PTR,
    ul_associated_data_len: CK_ULONG,
    p_ciphertext: CK_BYTE_PTR,
    ul_ciphertext_len: CK_ULONG,
    p_plaintext: CK_BYTE_PTR,
    pul_plaintext_len: CK_ULONG_PTR,
));
not_supported!(C_DecryptMessageBegin(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_associated_data: CK_BYTE_PTR,
    ul_associated_data_len: CK_ULONG,
));
not_supported!(C_DecryptMessageNext(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_ciphertext_part: CK_BYTE_PTR,
    ul_ciphertext_part_len: CK_ULONG,
    p_plaintext_part: CK_BYTE_PTR,
    pul_plaintext_part_len: CK_ULONG_PTR,
    flags: CK_FLAGS,
));
not_supported!(C_MessageDecryptFinal(h_session: CK_SESSION_HANDLE));
not_supported!(C_MessageSignInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_SignMessage(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_data: CK_BYTE_PTR,
    ul_data_len: CK_ULONG,
    p_signature: CK_BYTE_PTR,
    pul_signature_len: CK_ULONG_PTR,
));
not_supported!(C_SignMessageBegin(h_session: CK_SESSION_HANDLE, p_parameter: CK_VOID_PTR, ul_parameter_len: CK_ULONG));
not_supported!(C_SignMessageNext(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_data: CK_BYTE_PTR,
    ul_data_len: CK_ULONG,
    p_signature: CK_BYTE_PTR,
    pul_signature_len: CK_ULONG_PTR,
));
not_supported!(C_MessageSignFinal(h_session: CK_SESSION_HANDLE));
not_supported!(C_MessageVerifyInit(h_session: CK_SESSION_HANDLE, p_mechanism: CK_MECHANISM_PTR, h_key: CK_OBJECT_HANDLE));
not_supported!(C_VerifyMessage(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_data: CK_BYTE_PTR,
    ul_data_len: CK_ULONG,
    p_signature: CK_BYTE_PTR,
    ul_signature_len: CK_ULONG,
));
not_supported!(C_VerifyMessageBegin(h_session: CK_SESSION_HANDLE, p_parameter: CK_VOID_PTR, ul_parameter_len: CK_ULONG));
not_supported!(C_VerifyMessageNext(
    h_session: CK_SESSION_HANDLE,
    p_parameter: CK_VOID_PTR,
    ul_parameter_len: CK_ULONG,
    p_data: CK_BYTE_PTR,
    ul_data_len: CK_ULONG,
    p_signature: CK_BYTE_PTR,
    ul_signature_len: CK_ULONG,
));
not_supported!(C_MessageVerifyFinal(h_session: CK_SESSION_HANDLE));
