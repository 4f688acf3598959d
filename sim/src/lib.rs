//! A simulated GSMA IoT SAFE (IoT.05) card.
//!
//! * [`Card`] — the card model: `transmit(apdu) -> response`.
//! * [`SharedCard`] — the same behind `Arc<Mutex<_>>` for multi-threaded tests.
//! * [`Profile`] — the card content (TOML), [`default_profile`] — the test content.
//! * [`vpcd`] — connect the card to pcscd's vsmartcard-vpcd driver.
//! * [`modem`] — the card behind a simulated cellular modem on a pty (AT+CSIM/+CGLA).
//! * [`control`] — the line/JSON control channel.
//! * [`faults`] — [`FaultyCard`]: fault injection wrapped around a card's `transmit`.
//!
//! Module dependencies (`use crate::…`), each arrow pointing down; no cycles:
//!
//! ```text
//! control ──► modem ──► shared (CardSlot trait, SharedCard) ──► faults ──► card
//!    │          │                                                            │
//!    │          └─► card (cla_for_channel)          vpcd ──► shared          ▼
//!    └─► faults, shared, profile          pki, layout ──► profile   hash, kdf, tlv, profile
//! ```
//!
//! The card knows nothing of faults, threads or transports; the modem talks to the card
//! only through [`CardSlot`]; the control channel sits on top and calls down.

pub mod hash;
pub mod kdf;
pub mod layout;
pub mod pki;
pub mod profile;
pub mod tlv;
pub mod trace;

pub use layout::{ClientReferences, KEY_LAYOUTS, KeyLayout};
pub use pki::{
    DefaultBundle, bundle_from_seed, default_bundle, default_profile,
    default_profile_with_provisioning,
};
pub use profile::{
    AppInfo, DeviceObject, FactoryObjects, File, ObjectClass, ObjectState, PrivateKey, Profile,
    ProfileError, PublicKey, SecretKey,
};
pub mod card;
pub use card::{
    AppInfoTags, Card, CardOptions, CardStats, ObjectListStyle, SignatureLengthStyle,
    cla_for_channel,
};
pub mod control;
pub mod faults;
pub use faults::{Fault, FaultKind, Faults, FaultyCard};
pub mod shared;
pub use shared::{CardSlot, SharedCard};
pub mod modem;
pub mod vpcd;

pub use modem::{
    AtDialect, ModemControl, ModemHandle, ModemOptions, ModemStats, spawn as spawn_modem,
};
