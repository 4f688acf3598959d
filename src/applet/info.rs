//! GET DATA (application): what the applet says about itself.

use super::objects;
use super::tlv;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct AppInfo {
    pub version: Option<u8>,
    pub identifier: Vec<u8>,
    pub max_sessions: Option<u8>,
    /// Cryptographic functions (tag `90`, or `61` on some applets): bit 1 signature, 2 key
    /// generation, 4 key agreement, 8 key derivation.
    pub functions: Option<u8>,
    /// Key-derivation algorithms (tag `94`): bit 1 TLS 1.2 PRF, 2 HKDF.
    pub key_derivation: Option<u8>,
}

impl AppInfo {
    /// Whether the applet offers a function (unknown: assume it does).
    pub fn offers(&self, function_bit: u8) -> bool {
        self.functions.is_none_or(|f| f & function_bit != 0)
    }

    /// Whether the applet offers a key-derivation algorithm (tag `94` bit), with the key
    /// derivation function (unknown: assume it does).
    pub fn offers_derivation(&self, algorithm_bit: u8) -> bool {
        self.offers(objects::FUNCTION_KEY_DERIVATION)
            && self.key_derivation.is_none_or(|k| k & algorithm_bit != 0)
    }

    pub(super) fn parse(data: &[u8]) -> AppInfo {
        let mut info = AppInfo::default();
        // Tolerant: one applet sends a wrong length for tag 11; read what parses.
        let mut rest = data;
        while let Ok((t, used)) = tlv::read_one(rest) {
            match t.tag {
                0x10 => info.version = t.value.first().copied(),
                0x11 => info.identifier = t.value.to_vec(),
                0xB7 => info.max_sessions = t.value.first().copied(),
                0x90 | 0x61 => info.functions = t.value.first().copied(),
                0x94 => info.key_derivation = t.value.first().copied(),
                _ => {}
            }
            rest = &rest[used..];
        }
        info
    }
}
