//! iotsafe-pkcs11: a PKCS#11 module for the keys and certificates held by the GSMA IoT SAFE
//! applet on a SIM / eSIM.
//!
//! Layers (arrows point down only): `ffi` (the C boundary, the only `unsafe`) → `token`
//! (PKCS#11 semantics) → `applet` (IoT.05 commands and codec) → `transport` (APDUs over PC/SC).

#![deny(unsafe_code)]

pub mod applet;
pub mod config;
#[allow(unsafe_code)]
pub mod ffi;
pub mod token;
pub mod transport;

pub use token::error;
pub use token::error::{Error, Result};

use std::sync::Once;

static LOGGING: Once = Once::new();

/// Sets up logging once per process: `IOTSAFE_PKCS11_LOG` (env_logger syntax) wins over the
/// config file's `log`; the default is `warn`. Output goes to stderr, never stdout.
pub(crate) fn init_logging(config_filter: Option<&str>) {
    LOGGING.call_once(|| {
        let filter = std::env::var(config::ENV_LOG)
            .ok()
            .or_else(|| config_filter.map(str::to_owned))
            .unwrap_or_else(|| "warn".to_owned());
        let _ = env_logger::Builder::new()
            .parse_filters(&filter)
            .target(env_logger::Target::Stderr)
            .format_timestamp_millis()
            .try_init();
    });
}
