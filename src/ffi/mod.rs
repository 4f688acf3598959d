//! The C boundary: the only `unsafe` code of the module, one file per chapter of the PKCS#11
//! specification. Every `C_*` function has the same shape (see `pkcs11_fn!`): panics caught,
//! pointers checked by the helpers in `util`, a safe body returning `Result<()>`, the error
//! mapped to a `CK_RV` in one place.
//!
//! The bodies are safe code; `unsafe` blocks stand only around the reads and writes of the
//! caller's memory. Each of them relies on the PKCS#11 contract of the entry point it is in:
//! the caller's pointers are NULL or valid for their stated lengths.

/// Declares one exported `C_*` function with the common wrapper.
macro_rules! pkcs11_fn {
    (fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        #[unsafe(no_mangle)]
        #[allow(clippy::missing_safety_doc)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> ::cryptoki_sys::CK_RV {
            $crate::ffi::util::entry(
                stringify!($name),
                || -> $crate::error::Result<()> { $body },
            )
        }
    };
}

/// Functions this module does not offer: `CKR_FUNCTION_NOT_SUPPORTED` once initialised.
/// Names joined by `|` before one parameter list declare functions with the same parameters.
macro_rules! not_supported {
    ($name:ident ($($arg:ident: $ty:ty),* $(,)?)) => {
        pkcs11_fn!(fn $name($($arg: $ty),*) {
            let _ = ($($arg,)*);
            $crate::token::module()?;
            Err(::cryptoki_sys::CKR_FUNCTION_NOT_SUPPORTED.into())
        });
    };
    ($first:ident | $($rest:tt)+) => {
        not_supported!(@names [$first] $($rest)+);
    };
    (@names [$($name:ident)+] $next:ident | $($rest:tt)+) => {
        not_supported!(@names [$($name)+ $next] $($rest)+);
    };
    (@names [$($name:ident)+] $last:ident $params:tt) => {
        $(not_supported!($name $params);)+
        not_supported!($last $params);
    };
}

pub mod util;

#[cfg(test)]
mod abi_layout_tests;
mod crypto;
mod general;
mod keys;
mod message;
mod object;
mod params;
mod random;
mod session;
mod slot_token;
mod tables;

pub use crypto::*;
pub use general::*;
pub use keys::*;
pub use message::*;
pub use object::*;
pub use random::*;
pub use session::*;
pub use slot_token::*;
pub use tables::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};
