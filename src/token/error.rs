//! The token layer's error: a `CK_RV` and a detail for the log. Every inner function returns
//! `Result<T>`; the FFI layer hands the `CK_RV` to the caller in exactly one place
//! (`ffi::entry`). The one table from the lower layers' errors to `CK_RV` is here.

use cryptoki_sys::*;
use std::fmt;

use crate::applet::{AppletError, StatusWord};
use crate::config::ConfigError;

/// Vendor return value: the object is being updated by a remote-management session of the
/// card's security service (SW `6984`, IoT.04 G4). Other objects keep working; retry later.
pub const CKR_IOTSAFE_OBJECT_BEING_UPDATED: CK_RV = CKR_VENDOR_DEFINED | 0x4953_0001;
/// Vendor return value: the object changed during the operation (SW `6989` after a remote
/// update), or the card's capacity is reached. The cache is refreshed; retry.
pub const CKR_IOTSAFE_OBJECT_CHANGED: CK_RV = CKR_VENDOR_DEFINED | 0x4953_0002;

#[derive(Debug, Clone)]
pub struct Error {
    rv: CK_RV,
    detail: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(rv: CK_RV, detail: impl Into<String>) -> Self {
        Error {
            rv,
            detail: detail.into(),
        }
    }

    pub fn rv(&self) -> CK_RV {
        self.rv
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Problems of the card, the transport or the module itself (logged as warnings); every
    /// other error is the caller's or part of normal API use (logged at debug level).
    pub fn is_device_problem(&self) -> bool {
        matches!(
            self.rv,
            CKR_DEVICE_ERROR
                | CKR_DEVICE_REMOVED
                | CKR_DEVICE_MEMORY
                | CKR_GENERAL_ERROR
                | CKR_FUNCTION_FAILED
                | CKR_FUNCTION_REJECTED
                | CKR_IOTSAFE_OBJECT_BEING_UPDATED
                | CKR_IOTSAFE_OBJECT_CHANGED
        )
    }
}

impl From<CK_RV> for Error {
    fn from(rv: CK_RV) -> Self {
        Error::new(rv, "")
    }
}

/// What a card or transport failure means to a PKCS#11 caller: the one table.
fn rv_of(e: &AppletError) -> CK_RV {
    if e.card_gone() {
        return CKR_DEVICE_REMOVED;
    }
    if e.is_internal() {
        return CKR_GENERAL_ERROR;
    }
    match e {
        AppletError::Status { sw, .. } => match *sw {
            StatusWord::OBJECT_BEING_UPDATED => CKR_IOTSAFE_OBJECT_BEING_UPDATED,
            StatusWord::OBJECT_CHANGED => CKR_IOTSAFE_OBJECT_CHANGED,
            StatusWord::NOT_ENOUGH_MEMORY => CKR_DEVICE_MEMORY,
            StatusWord::SECURITY_STATUS_NOT_SATISFIED => CKR_FUNCTION_REJECTED,
            StatusWord::CONDITIONS_OF_USE_NOT_SATISFIED => CKR_FUNCTION_FAILED,
            StatusWord::NOT_FOUND | StatusWord::REFERENCED_DATA_NOT_FOUND => CKR_KEY_HANDLE_INVALID,
            _ => CKR_DEVICE_ERROR,
        },
        AppletError::ParameterTooLong(_) => CKR_MECHANISM_PARAM_INVALID,
        AppletError::ObjectTooLarge => CKR_DATA_LEN_RANGE,
        _ => CKR_DEVICE_ERROR,
    }
}

impl From<AppletError> for Error {
    fn from(e: AppletError) -> Self {
        Error::new(rv_of(&e), e.to_string())
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::new(CKR_GENERAL_ERROR, e.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", rv_name(self.rv))?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// The symbolic name of a return value, for log lines.
pub fn rv_name(rv: CK_RV) -> String {
    let name = match rv {
        CKR_OK => "CKR_OK",
        CKR_CANCEL => "CKR_CANCEL",
        CKR_HOST_MEMORY => "CKR_HOST_MEMORY",
        CKR_SLOT_ID_INVALID => "CKR_SLOT_ID_INVALID",
        CKR_GENERAL_ERROR => "CKR_GENERAL_ERROR",
        CKR_FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
        CKR_ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
        CKR_CANT_LOCK => "CKR_CANT_LOCK",
        CKR_ATTRIBUTE_SENSITIVE => "CKR_ATTRIBUTE_SENSITIVE",
        CKR_ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
        CKR_ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
        CKR_ACTION_PROHIBITED => "CKR_ACTION_PROHIBITED",
        CKR_DATA_LEN_RANGE => "CKR_DATA_LEN_RANGE",
        CKR_DEVICE_ERROR => "CKR_DEVICE_ERROR",
        CKR_DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
        CKR_DEVICE_REMOVED => "CKR_DEVICE_REMOVED",
        CKR_FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
        CKR_KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
        CKR_KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
        CKR_MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
        CKR_MECHANISM_PARAM_INVALID => "CKR_MECHANISM_PARAM_INVALID",
        CKR_OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
        CKR_OPERATION_ACTIVE => "CKR_OPERATION_ACTIVE",
        CKR_OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
        CKR_PIN_INCORRECT => "CKR_PIN_INCORRECT",
        CKR_SESSION_CLOSED => "CKR_SESSION_CLOSED",
        CKR_SESSION_COUNT => "CKR_SESSION_COUNT",
        CKR_SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
        CKR_SESSION_PARALLEL_NOT_SUPPORTED => "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
        CKR_SESSION_READ_ONLY => "CKR_SESSION_READ_ONLY",
        CKR_SESSION_EXISTS => "CKR_SESSION_EXISTS",
        CKR_SESSION_READ_ONLY_EXISTS => "CKR_SESSION_READ_ONLY_EXISTS",
        CKR_SIGNATURE_INVALID => "CKR_SIGNATURE_INVALID",
        CKR_SIGNATURE_LEN_RANGE => "CKR_SIGNATURE_LEN_RANGE",
        CKR_TEMPLATE_INCOMPLETE => "CKR_TEMPLATE_INCOMPLETE",
        CKR_TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
        CKR_TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
        CKR_TOKEN_NOT_RECOGNIZED => "CKR_TOKEN_NOT_RECOGNIZED",
        CKR_TOKEN_WRITE_PROTECTED => "CKR_TOKEN_WRITE_PROTECTED",
        CKR_USER_ALREADY_LOGGED_IN => "CKR_USER_ALREADY_LOGGED_IN",
        CKR_USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
        CKR_USER_TYPE_INVALID => "CKR_USER_TYPE_INVALID",
        CKR_RANDOM_SEED_NOT_SUPPORTED => "CKR_RANDOM_SEED_NOT_SUPPORTED",
        CKR_BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
        CKR_CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
        CKR_CRYPTOKI_ALREADY_INITIALIZED => "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        CKR_FUNCTION_REJECTED => "CKR_FUNCTION_REJECTED",
        CKR_NO_EVENT => "CKR_NO_EVENT",
        CKR_STATE_UNSAVEABLE => "CKR_STATE_UNSAVEABLE",
        CKR_CURVE_NOT_SUPPORTED => "CKR_CURVE_NOT_SUPPORTED",
        CKR_IOTSAFE_OBJECT_BEING_UPDATED => "CKR_IOTSAFE_OBJECT_BEING_UPDATED",
        CKR_IOTSAFE_OBJECT_CHANGED => "CKR_IOTSAFE_OBJECT_CHANGED",
        _ => return format!("CK_RV(0x{rv:08X})"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(e: AppletError) -> CK_RV {
        Error::from(e).rv()
    }

    fn refused(sw: u16) -> AppletError {
        AppletError::Status {
            command: "TEST",
            sw: StatusWord(sw),
        }
    }

    #[test]
    fn status_words_map_to_return_values() {
        for (sw, want) in [
            (0x6984, CKR_IOTSAFE_OBJECT_BEING_UPDATED),
            (0x6989, CKR_IOTSAFE_OBJECT_CHANGED),
            (0x6A84, CKR_DEVICE_MEMORY),
            (0x6982, CKR_FUNCTION_REJECTED),
            (0x6985, CKR_FUNCTION_FAILED),
            (0x6A82, CKR_KEY_HANDLE_INVALID),
            (0x6A88, CKR_KEY_HANDLE_INVALID),
            (0x6881, CKR_DEVICE_ERROR),
            (0x6D00, CKR_DEVICE_ERROR),
            (0x6F00, CKR_DEVICE_ERROR),
            (0x6A80, CKR_DEVICE_ERROR),
        ] {
            assert_eq!(rv_name(rv(refused(sw))), rv_name(want), "SW {sw:04X}");
        }
        let e = Error::from(refused(0x6984));
        assert_eq!(
            e.detail(),
            "TEST: card answered SW 6984 (the object is being updated by a remote-management session)"
        );
    }

    #[test]
    fn card_failures_map_to_return_values() {
        assert_eq!(rv(AppletError::NotConnected), CKR_DEVICE_REMOVED);
        assert_eq!(rv(AppletError::AppletGone), CKR_DEVICE_REMOVED);
        assert_eq!(rv(AppletError::Malformed("x".into())), CKR_DEVICE_ERROR);
        assert_eq!(
            rv(AppletError::ParameterTooLong("x".into())),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(rv(AppletError::ObjectTooLarge), CKR_DATA_LEN_RANGE);
        assert_eq!(rv(AppletError::CommandTooLong), CKR_GENERAL_ERROR);
    }

    #[test]
    fn configuration_errors_are_general_errors() {
        let e = Error::from(ConfigError("configuration t: bad".into()));
        assert_eq!(e.rv(), CKR_GENERAL_ERROR);
        assert_eq!(e.detail(), "configuration t: bad");
    }
}
