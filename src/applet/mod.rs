//! The IoT SAFE (GSMA IoT.05) client: one function per applet command over a logical channel,
//! the APDU rules in one place, the card's status words, the link to one card and the first
//! card read. Knows nothing of PKCS#11.

mod apdu;
mod attach;
mod card_link;
mod card_read;
mod channel;
mod channel_census;
mod channel_note;
mod commands;
mod content_cache;
mod crypto;
mod error;
mod formats;
mod info;
mod link;
pub mod objects;
mod pairing;
mod readers;
mod status;
mod store;
pub mod tlv;

pub use apdu::{ClassStyle, Ins, Response, Trace, cla_for_channel};
pub use card_link::{CardLink, LinkLease};
pub use card_read::{CardContents, CardObject, read_card};
pub use channel::AppletChannel;
pub use channel_census::{ChannelCensus, count_free_channels};
pub use channel_note::ContentVersion;
pub use commands::{close_channel, open_channel};
pub use content_cache::ContentCache;
pub use crypto::{GeneratedKeyPair, HkdfKey, HkdfStep, PrfSecret};
pub use error::{AppletError, Result};
pub use formats::{P256_EC_PARAMS, certificate_point, parse_public_key, parse_signature};
pub use info::AppInfo;
pub use objects::{ObjectClass, ObjectInfo};
pub use pairing::{KeyPairs, ProvenPair, pair_keys};
pub use readers::{AppletSettings, ConnectedCard, Readers, modem_endpoint};
pub use status::StatusWord;

/// The GSMA IoT SAFE applet AID.
pub const GSMA_AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x59, 0x00, 0x10];
