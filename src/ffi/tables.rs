//! The function tables and the PKCS#11 3.0 interface discovery.

use cryptoki_sys::*;

use super::util::{entry, list_output, read, write};
use super::*;
use crate::error::{Error, Result};

macro_rules! function_list {
    ($ty:ident, $major:expr, $minor:expr, $get_info:expr $(, $extra:ident)*) => {
        $ty {
            version: CK_VERSION { major: $major, minor: $minor },
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetInfo: Some($get_info),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some(C_EncryptInit),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some(C_DecryptInit),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some(C_DigestInit),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some(C_SignInit),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some(C_VerifyInit),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $($extra: Some($extra),)*
        }
    };
}

static FUNCTION_LIST_2_40: CK_FUNCTION_LIST =
    function_list!(CK_FUNCTION_LIST, 2, 40, general::get_info_2_40);

static FUNCTION_LIST_3_0: CK_FUNCTION_LIST_3_0 = function_list!(
    CK_FUNCTION_LIST_3_0,
    3,
    0,
    C_GetInfo,
    C_GetInterfaceList,
    C_GetInterface,
    C_LoginUser,
    C_SessionCancel,
    C_MessageEncryptInit,
    C_EncryptMessage,
    C_EncryptMessageBegin,
    C_EncryptMessageNext,
    C_MessageEncryptFinal,
    C_MessageDecryptInit,
    C_DecryptMessage,
    C_DecryptMessageBegin,
    C_DecryptMessageNext,
    C_MessageDecryptFinal,
    C_MessageSignInit,
    C_SignMessage,
    C_SignMessageBegin,
    C_SignMessageNext,
    C_MessageSignFinal,
    C_MessageVerifyInit,
    C_VerifyMessage,
    C_VerifyMessageBegin,
    C_VerifyMessageNext,
    C_MessageVerifyFinal
);

static INTERFACE_NAME: &[u8; 8] = b"PKCS 11\0";

/// `CK_INTERFACE` holds raw pointers; these point to immutable statics, so sharing is safe.
struct Interfaces([CK_INTERFACE; 2]);
// SAFETY: the pointers refer to 'static data that is never written.
unsafe impl Sync for Interfaces {}

/// The 3.0 interface first: it is the default one.
static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTION_LIST_3_0 as *const CK_FUNCTION_LIST_3_0 as *mut std::ffi::c_void,
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: INTERFACE_NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTION_LIST_2_40 as *const CK_FUNCTION_LIST as *mut std::ffi::c_void,
        flags: 0,
    },
]);

fn interface_version(i: &CK_INTERFACE) -> CK_VERSION {
    // SAFETY: every pFunctionList above starts with a CK_VERSION.
    unsafe { (i.pFunctionList as *const CK_VERSION).read() }
}

/// The 2.40 function list (works before `C_Initialize`).
#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)]
pub unsafe extern "C" fn C_GetFunctionList(pp_function_list: CK_FUNCTION_LIST_PTR_PTR) -> CK_RV {
    entry("C_GetFunctionList", || -> Result<()> {
        // SAFETY: checked by `write`.
        unsafe {
            write(
                pp_function_list,
                &FUNCTION_LIST_2_40 as *const CK_FUNCTION_LIST as CK_FUNCTION_LIST_PTR,
            )
        }
    })
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)]
pub unsafe extern "C" fn C_GetInterfaceList(
    p_interfaces_list: CK_INTERFACE_PTR,
    pul_count: CK_ULONG_PTR,
) -> CK_RV {
    entry("C_GetInterfaceList", || -> Result<()> {
        // SAFETY: pointers checked by the helper; the list holds `*pul_count` entries.
        unsafe { list_output(p_interfaces_list, pul_count, || Ok(INTERFACES.0.to_vec())) }
    })
}

#[unsafe(no_mangle)]
#[allow(clippy::missing_safety_doc)]
pub unsafe extern "C" fn C_GetInterface(
    p_interface_name: CK_UTF8CHAR_PTR,
    p_version: CK_VERSION_PTR,
    pp_interface: CK_INTERFACE_PTR_PTR,
    flags: CK_FLAGS,
) -> CK_RV {
    entry("C_GetInterface", || -> Result<()> {
        if pp_interface.is_null() {
            return Err(CKR_ARGUMENTS_BAD.into());
        }
        // SAFETY: a non-NULL name is a NUL-terminated string per the specification.
        let name_ok = p_interface_name.is_null()
            || unsafe { std::ffi::CStr::from_ptr(p_interface_name as *const std::ffi::c_char) }
                .to_bytes()
                == &INTERFACE_NAME[..7];
        let version = if p_version.is_null() {
            None
        } else {
            // SAFETY: checked non-NULL.
            Some(unsafe { read(p_version as *const CK_VERSION)? })
        };
        let found = INTERFACES.0.iter().find(|i| {
            let v = interface_version(i);
            name_ok
                && version.is_none_or(|want| want.major == v.major && want.minor == v.minor)
                && (i.flags & flags) == flags
        });
        let iface = found.ok_or_else(|| Error::new(CKR_ARGUMENTS_BAD, "no such interface"))?;
        // SAFETY: checked non-NULL above.
        unsafe {
            write(
                pp_interface,
                iface as *const CK_INTERFACE as CK_INTERFACE_PTR,
            )
        }
    })
}
