//! PKCS#11 semantics without `unsafe` and without bytes on the wire: slots, tokens, sessions,
//! objects, operations.
//!
//! - `module`: the module state (slots, tokens, session table, handle allocator), initialise
//!   and finalise, slot and token information.
//! - `sessions`: open, close, look up, login. `session`: what one session holds.
//! - `find`: objects by handle and by template. `operation`: sign, verify and digest through
//!   one operation model. `random`: random numbers from the card.
//! - `keys`, `kdf`, `store`: key generation, derivations and writes to the card;
//!   `session_objects`: objects the application makes in memory, attribute changes, copies.
//! - `slot`, `object`, `handles`, `mechanism`, `template`: the pieces they are built from.

pub mod error;
pub mod find;
pub mod handles;
pub mod kdf;
pub mod keys;
pub mod mechanism;
pub mod module;
pub mod object;
pub mod operation;
pub mod random;
pub mod session;
pub mod session_objects;
pub mod sessions;
pub mod slot;
pub mod store;
pub mod template;

pub use find::attribute_value;
pub use module::{
    InitReserved, Module, SessionObject, SlotInfo, TokenInfo, finalize, initialize,
    initialize_with, module,
};
pub use operation::{OperationKind, Parts, SIGNATURE_LEN};

// `keys.rs` and `store.rs` name the token as `super::Token`.
use slot::Token;
