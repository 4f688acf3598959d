//! The token layer's one table from lower-layer errors to `CK_RV`, for what the transport
//! reports (the status-word rows are unit tests in `src/token/error.rs`).

use cryptoki_sys::*;
use iotsafe_pkcs11::applet::AppletError;
use iotsafe_pkcs11::error::rv_name;
use iotsafe_pkcs11::transport::TransportError;

#[test]
fn transport_failures_map_to_return_values() {
    for (e, want) in [
        (TransportError::CardRemoved, CKR_DEVICE_REMOVED),
        (TransportError::NoCard, CKR_DEVICE_REMOVED),
        (TransportError::CardReset, CKR_DEVICE_REMOVED),
        (TransportError::ReaderUnavailable, CKR_DEVICE_REMOVED),
        (TransportError::Timeout, CKR_DEVICE_ERROR),
        (TransportError::Other("x".into()), CKR_DEVICE_ERROR),
        (TransportError::UnsupportedRoute, CKR_GENERAL_ERROR),
    ] {
        let error = iotsafe_pkcs11::Error::from(AppletError::Transport(e.clone()));
        assert_eq!(rv_name(error.rv()), rv_name(want), "{e}");
        assert_eq!(error.detail(), e.to_string());
    }
}
