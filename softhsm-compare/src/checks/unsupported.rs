//! Functions the token does not offer, across the chapters: operation state (5.6), token and
//! PIN set-up (5.5), encryption and decryption (5.8, 5.10), digesting a key (5.12), recovery
//! (5.14, 5.16), dual-function (5.17), key management (5.18), parallel functions (5.20) and the
//! 3.0 additions.

use std::ptr::null_mut;

use cryptoki_sys::*;

use super::general::function_list_3_0;
use super::helpers::{
    data_in_out, function, init_with_key, mech, open_session, present, sign_init, update,
};
use super::objects::Objects;
use super::{BOGUS_HANDLE, Options};
use crate::call;
use crate::module::Module;
use crate::report::Report;

pub(super) fn unsupported(
    m: &Module,
    o: &Options,
    slot: CK_SLOT_ID,
    s: CK_SESSION_HANDLE,
    objs: &Objects,
    r: &mut Report,
) {
    let k = objs.get("privkey.client").unwrap_or(BOGUS_HANDLE);
    let p = objs.get("pubkey.client").unwrap_or(BOGUS_HANDLE);
    let mut buf = [0u8; 256];
    let mut len: CK_ULONG = 256;
    let mut out = [0u8; 256];
    let mut olen: CK_ULONG = 256;

    let rv = call!(m, C_GetOperationState, s, null_mut(), &mut len);
    r.check(
        "unsup.get_operation_state",
        "C_GetOperationState(no operation)",
        rv,
        "",
    );
    if sign_init(m, s, CKM_ECDSA_SHA256, k) == CKR_OK {
        update(function!(m.f(), C_SignUpdate), s, &buf[..8]);
        let mut len: CK_ULONG = 0;
        let rv = call!(m, C_GetOperationState, s, null_mut(), &mut len);
        r.check(
            "unsup.get_operation_state.sign",
            "C_GetOperationState(during ECDSA_SHA256 sign)",
            rv,
            "",
        );
        let mut l: CK_ULONG = 256;
        call!(m, C_SignFinal, s, out.as_mut_ptr(), &mut l);
    }
    let rv = call!(m, C_SetOperationState, s, buf.as_mut_ptr(), 16, 0, 0);
    r.check(
        "unsup.set_operation_state",
        "C_SetOperationState(16 junk bytes)",
        rv,
        "",
    );

    let (_, rw) = open_session(m, slot, CKF_SERIAL_SESSION | CKF_RW_SESSION);
    let mut so = b"87654321".to_vec();
    let mut label = [b' '; 32];
    let rv = call!(
        m,
        C_InitToken,
        slot,
        so.as_mut_ptr(),
        so.len() as CK_ULONG,
        label.as_mut_ptr()
    );
    r.check(
        "unsup.init_token",
        "C_InitToken(wrong SO PIN, sessions open)",
        rv,
        "",
    );
    let mut pin = o.pin.clone().into_bytes();
    let rv = call!(m, C_InitPIN, rw, pin.as_mut_ptr(), pin.len() as CK_ULONG);
    r.check("unsup.init_pin", "C_InitPIN(RW session, not SO)", rv, "");
    let mut old = b"99999999".to_vec();
    let rv = call!(
        m,
        C_SetPIN,
        rw,
        old.as_mut_ptr(),
        old.len() as CK_ULONG,
        pin.as_mut_ptr(),
        pin.len() as CK_ULONG
    );
    r.check(
        "unsup.set_pin",
        "C_SetPIN(RW session, wrong old PIN)",
        rv,
        "",
    );
    call!(m, C_CloseSession, rw);

    let rv = init_with_key(function!(m.f(), C_EncryptInit), s, CKM_ECDSA, p);
    r.check("unsup.encrypt_init", "C_EncryptInit(ECDSA, pubkey)", rv, "");
    let rv = data_in_out(
        function!(m.f(), C_Encrypt),
        s,
        &buf[..16],
        out.as_mut_ptr(),
        &mut olen,
    );
    r.check("unsup.encrypt", "C_Encrypt without init", rv, "");
    let rv = init_with_key(function!(m.f(), C_DecryptInit), s, CKM_ECDSA, k);
    r.check(
        "unsup.decrypt_init",
        "C_DecryptInit(ECDSA, privkey)",
        rv,
        "",
    );
    let rv = data_in_out(
        function!(m.f(), C_Decrypt),
        s,
        &buf[..16],
        out.as_mut_ptr(),
        &mut olen,
    );
    r.check("unsup.decrypt", "C_Decrypt without init", rv, "");
    let rv = call!(m, C_DigestKey, s, k);
    r.check("unsup.digest_key", "C_DigestKey without digest", rv, "");
    let rv = init_with_key(function!(m.f(), C_SignRecoverInit), s, CKM_ECDSA, k);
    r.check(
        "unsup.sign_recover_init",
        "C_SignRecoverInit(ECDSA)",
        rv,
        "",
    );
    let rv = init_with_key(function!(m.f(), C_VerifyRecoverInit), s, CKM_ECDSA, p);
    r.check(
        "unsup.verify_recover_init",
        "C_VerifyRecoverInit(ECDSA)",
        rv,
        "",
    );
    for (id, function) in [
        (
            "unsup.digest_encrypt_update",
            function!(m.f(), C_DigestEncryptUpdate),
        ),
        (
            "unsup.decrypt_digest_update",
            function!(m.f(), C_DecryptDigestUpdate),
        ),
        (
            "unsup.sign_encrypt_update",
            function!(m.f(), C_SignEncryptUpdate),
        ),
        (
            "unsup.decrypt_verify_update",
            function!(m.f(), C_DecryptVerifyUpdate),
        ),
    ] {
        let rv = data_in_out(function, s, &buf[..16], out.as_mut_ptr(), &mut olen);
        r.check(id, function.1, rv, "");
    }

    let mut mm = mech(CKM_AES_KEY_GEN);
    let mut h = 0;
    let rv = call!(m, C_GenerateKey, s, &mut mm, null_mut(), 0, &mut h);
    r.check(
        "unsup.generate_key",
        "C_GenerateKey(AES_KEY_GEN, empty template)",
        rv,
        "",
    );
    if rv == CKR_OK {
        call!(m, C_DestroyObject, s, h);
    }
    let mut mm = mech(CKM_AES_KEY_WRAP);
    let rv = call!(m, C_WrapKey, s, &mut mm, p, k, out.as_mut_ptr(), &mut olen);
    r.check(
        "unsup.wrap_key",
        "C_WrapKey(AES_KEY_WRAP, pubkey, privkey)",
        rv,
        "",
    );
    let mut mm = mech(CKM_AES_KEY_WRAP);
    let rv = call!(
        m,
        C_UnwrapKey,
        s,
        &mut mm,
        k,
        buf.as_mut_ptr(),
        24,
        null_mut(),
        0,
        &mut h
    );
    r.check(
        "unsup.unwrap_key",
        "C_UnwrapKey(AES_KEY_WRAP, privkey, 24 bytes)",
        rv,
        "",
    );
    let mut mm = mech(CKM_ECDH1_DERIVE);
    let rv = call!(m, C_DeriveKey, s, &mut mm, k, null_mut(), 0, &mut h);
    r.check(
        "unsup.derive_key",
        "C_DeriveKey(ECDH1_DERIVE without parameters)",
        rv,
        "",
    );
    let rv = call!(m, C_GetFunctionStatus, s);
    r.check("unsup.get_function_status", "C_GetFunctionStatus", rv, "");
    let rv = call!(m, C_CancelFunction, s);
    r.check("unsup.cancel_function", "C_CancelFunction", rv, "");
    let mut ev = 0;
    let rv = call!(m, C_WaitForSlotEvent, CKF_DONT_BLOCK, &mut ev, null_mut());
    r.check(
        "unsup.wait_for_slot_event",
        "C_WaitForSlotEvent(DONT_BLOCK)",
        rv,
        "",
    );

    // The 3.0 additions, through the 3.0 interface where the module has one.
    if let Some(f3) = function_list_3_0(m) {
        let f3 = unsafe { &*f3 };
        let rv = unsafe { present(function!(f3, C_SessionCancel))(s, CKF_SIGN) };
        r.check(
            "unsup.v3.session_cancel",
            "C_SessionCancel(SIGN, none active)",
            rv,
            "",
        );
        let mut user = b"user".to_vec();
        let rv = unsafe {
            present(function!(f3, C_LoginUser))(
                s,
                CKU_USER,
                pin.as_mut_ptr(),
                pin.len() as CK_ULONG,
                user.as_mut_ptr(),
                user.len() as CK_ULONG,
            )
        };
        r.check(
            "unsup.v3.login_user",
            "C_LoginUser(USER, pin, \"user\")",
            rv,
            "",
        );
        if rv == CKR_OK {
            call!(m, C_Logout, s);
        }
        let mut mm = mech(CKM_ECDSA);
        let rv = unsafe { present(function!(f3, C_MessageSignInit))(s, &mut mm, k) };
        r.check(
            "unsup.v3.message_sign_init",
            "C_MessageSignInit(ECDSA)",
            rv,
            "",
        );
        let mut mm = mech(CKM_AES_GCM);
        let rv = unsafe { present(function!(f3, C_MessageEncryptInit))(s, &mut mm, k) };
        r.check(
            "unsup.v3.message_encrypt_init",
            "C_MessageEncryptInit(AES_GCM)",
            rv,
            "",
        );
    }
}
