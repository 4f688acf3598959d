//! General-purpose functions (PKCS#11 §5.4) and the legacy parallel-function ones (§5.20).

use std::ffi::c_char;

use cryptoki_sys::*;
use log::debug;

use super::util::{padded, read, write};
use crate::config::MAX_CONFIG_BYTES;
use crate::error::{Error, Result};
use crate::token::{self, InitReserved, module};

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
        let mut reserved: *const c_char = std::ptr::null();
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
            // Callbacks without CKF_OS_LOCKING_OK (aziot-keyd): the module is thread-safe on
            // its own locks and never calls them; CKF_LIBRARY_CANT_CREATE_OS_THREADS holds
            // because it creates no threads. See docs/configuration.md.
            if given == 4 && args.flags & CKF_OS_LOCKING_OK == 0 {
                debug!("mutex callbacks given: not used, the module locks on its own");
            }
            reserved = args.pReserved as *const c_char;
        }
        if reserved.is_null() {
            return token::initialize(InitReserved::Null);
        }
        // Only called when the configuration says pReserved carries a string.
        let read_reserved = || unsafe { reserved_string(reserved) };
        token::initialize(InitReserved::Given(&read_reserved))
    }
);

/// The NUL-terminated UTF-8 string at `ptr`, read byte by byte up to
/// [`MAX_CONFIG_BYTES`]: a string without a NUL within that is refused, not read on.
///
/// # Safety
/// `ptr` must point to a NUL-terminated string, or to at least `MAX_CONFIG_BYTES + 1`
/// readable bytes.
unsafe fn reserved_string(ptr: *const c_char) -> Result<String> {
    let mut bytes = Vec::new();
    loop {
        // SAFETY: the caller guarantees the bytes up to the NUL or the limit.
        let byte = unsafe { ptr.add(bytes.len()).read() } as u8;
        if byte == 0 {
            break;
        }
        if bytes.len() == MAX_CONFIG_BYTES {
            return Err(Error::new(
                CKR_ARGUMENTS_BAD,
                format!("pReserved: no NUL within {MAX_CONFIG_BYTES} bytes"),
            ));
        }
        bytes.push(byte);
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::new(CKR_ARGUMENTS_BAD, "pReserved is not a UTF-8 string"))
}

pkcs11_fn!(
    fn C_Finalize(p_reserved: CK_VOID_PTR) {
        if !p_reserved.is_null() {
            return Err(Error::new(CKR_ARGUMENTS_BAD, "pReserved must be NULL"));
        }
        token::finalize()
    }
);

// `C_GetInfo` of the 3.0 interface (and the exported symbol): cryptokiVersion 3.0.
pkcs11_fn!(
    fn C_GetInfo(p_info: CK_INFO_PTR) {
        unsafe { write_info(p_info, CK_VERSION { major: 3, minor: 0 }) }
    }
);

/// `C_GetInfo` of the 2.40 function list (`C_GetFunctionList`): cryptokiVersion 2.40, as 2.x
/// callers such as aziot-keyd require (they refuse a major version other than 2).
pub(super) unsafe extern "C" fn get_info_2_40(p_info: CK_INFO_PTR) -> CK_RV {
    super::util::entry("C_GetInfo", || unsafe {
        write_info(
            p_info,
            CK_VERSION {
                major: 2,
                minor: 40,
            },
        )
    })
}

/// # Safety
/// `p_info` must be NULL or valid for writing a `CK_INFO`.
unsafe fn write_info(p_info: CK_INFO_PTR, cryptoki_version: CK_VERSION) -> Result<()> {
    module()?;
    let info = CK_INFO {
        cryptokiVersion: cryptoki_version,
        manufacturerID: padded(LIBRARY_MANUFACTURER),
        flags: 0,
        libraryDescription: padded(LIBRARY_DESCRIPTION),
        libraryVersion: library_version(),
    };
    // SAFETY: as the caller guarantees.
    unsafe { write(p_info, info) }
}

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
