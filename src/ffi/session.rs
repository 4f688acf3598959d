//! Session management and login (PKCS#11 §5.6).

use cryptoki_sys::*;

use super::util::{in_bytes, write};
use crate::token::module;

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
        unsafe { write(ph_session, handle) }
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
        let info = CK_SESSION_INFO {
            slotID: slot_id,
            state,
            flags,
            ulDeviceError: 0,
        };
        unsafe { write(p_info, info) }
    }
);

pkcs11_fn!(
    fn C_SessionCancel(h_session: CK_SESSION_HANDLE, flags: CK_FLAGS) {
        module()?.end_operations(h_session, flags)
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
        unsafe { in_bytes(p_pin, ul_pin_len)? };
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
        unsafe {
            in_bytes(p_pin, ul_pin_len)?;
            in_bytes(p_username, ul_username_len)?;
        }
        m.login(h_session, user_type)
    }
);

pkcs11_fn!(
    fn C_Logout(h_session: CK_SESSION_HANDLE) {
        module()?.logout(h_session)
    }
);
