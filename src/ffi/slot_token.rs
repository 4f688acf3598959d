//! Slot and token management (PKCS#11 §5.5).

use cryptoki_sys::*;

use super::general::{TOKEN_MANUFACTURER, TOKEN_MODEL, library_version};
use super::util::{list_output, padded, write};
use crate::error::Error;
use crate::token::module;

pkcs11_fn!(
    fn C_GetSlotList(
        token_present: CK_BBOOL,
        p_slot_list: CK_SLOT_ID_PTR,
        pul_count: CK_ULONG_PTR,
    ) {
        let m = module()?;
        // A NULL list is when new readers are picked up (PKCS#11 §5.5).
        let refresh = p_slot_list.is_null();
        unsafe {
            list_output(p_slot_list, pul_count, || {
                m.slot_list(token_present != 0, refresh)
            })
        }
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
        let slot_info = CK_SLOT_INFO {
            slotDescription: padded(&info.description),
            manufacturerID: padded(&info.manufacturer),
            flags,
            hardwareVersion: CK_VERSION { major: 0, minor: 0 },
            firmwareVersion: CK_VERSION { major: 0, minor: 0 },
        };
        unsafe { write(p_info, slot_info) }
    }
);

pkcs11_fn!(
    fn C_GetTokenInfo(slot_id: CK_SLOT_ID, p_info: CK_TOKEN_INFO_PTR) {
        let m = module()?;
        if p_info.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        let t = m.token_info(slot_id)?;
        let token_info = CK_TOKEN_INFO {
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
        };
        unsafe { write(p_info, token_info) }
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
        unsafe { write(p_slot, slot) }
    }
);

pkcs11_fn!(
    fn C_GetMechanismList(
        slot_id: CK_SLOT_ID,
        p_list: CK_MECHANISM_TYPE_PTR,
        pul_count: CK_ULONG_PTR,
    ) {
        let m = module()?;
        unsafe {
            list_output(p_list, pul_count, || {
                Ok(m.mechanisms(slot_id)?.iter().map(|e| e.mechanism).collect())
            })
        }
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
        let info = CK_MECHANISM_INFO {
            ulMinKeySize: e.min_key_bits,
            ulMaxKeySize: e.max_key_bits,
            flags: e.flags,
        };
        unsafe { write(p_info, info) }
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
