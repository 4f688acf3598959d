//! General-purpose functions (PKCS#11 §5.4) and the legacy parallel-function ones (§5.20).

use std::ffi::CStr;

use cryptoki_sys::*;

use super::util::{padded, read, write};
use crate::error::Error;
use crate::token::{self, module};

pub const LIBRARY_MANUFACTURER: &str = "iotsafe-pkcs11 project";
pub const LIBRARY_DESCRIPTION: &str = "IoT SAFE SIM PKCS#11 module";
pub const TOKEN_MANUFACTURER: &str = "IoT SAFE applet";
pub const TOKEN_MODEL: &str = "IoT.05";

pub(super) fn library_version() -> CK_VERSION {
    CK_VERSION {
        major: env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0),
        minor: env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0),
    }
}

pkcs11_fn!(
    fn C_Initialize(p_init_args: CK_VOID_PTR) {
        let mut inline_config = None;
        if !p_init_args.is_null() {
            let args: CK_C_INITIALIZE_ARGS =
                unsafe { read(p_init_args as *const CK_C_INITIALIZE_ARGS)? };
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
                let text = unsafe { CStr::from_ptr(args.pReserved as *const std::ffi::c_char) };
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
        let info = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 0 },
            manufacturerID: padded(LIBRARY_MANUFACTURER),
            flags: 0,
            libraryDescription: padded(LIBRARY_DESCRIPTION),
            libraryVersion: library_version(),
        };
        unsafe { write(p_info, info) }
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
