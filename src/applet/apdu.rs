//! Command APDUs: the instruction set, CLA encoding of logical channels, building and splitting.

use super::error::{AppletError, Result};
use super::status::StatusWord;

/// The instructions this module sends (IoT.05, ISO 7816-4 and GlobalPlatform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Ins {
    PutPublicKeyInit = 0x24,
    ComputeSignatureInit = 0x2A,
    ComputeSignatureUpdate = 0x2B,
    ComputeDh = 0x46,
    ComputePrf = 0x48,
    ComputeHkdf = 0x4A,
    ManageChannel = 0x70,
    GetRandom = 0x84,
    Select = 0xA4,
    ReadFile = 0xB0,
    GenerateKeyPair = 0xB9,
    GetResponse = 0xC0,
    GetData = 0xCB,
    ReadPublicKey = 0xCD,
    PutPublicKeyUpdate = 0xD8,
    StoreData = 0xE2,
}

/// Which CLA class to send IoT SAFE commands in: inter-industry `0x`/`4x` or proprietary
/// `8x`/`Cx`. Real applets accept both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassStyle {
    #[default]
    InterIndustry,
    Proprietary,
}

/// The CLA byte for `channel` (ISO 7816-4 encodings for channels 0–3 and 4–19).
pub fn cla_for_channel(channel: u8, style: ClassStyle) -> u8 {
    let proprietary = if style == ClassStyle::Proprietary {
        0x80
    } else {
        0x00
    };
    if channel < 4 {
        proprietary | channel
    } else {
        proprietary | 0x40 | (channel - 4).min(0x0F)
    }
}

/// Largest data field of one short APDU.
pub const MAX_APDU_DATA: usize = 255;

/// Builds a short APDU.
pub fn build_apdu(
    cla: u8,
    ins: Ins,
    p1: u8,
    p2: u8,
    data: &[u8],
    le: Option<u8>,
) -> Result<Vec<u8>> {
    if data.len() > MAX_APDU_DATA {
        return Err(AppletError::CommandTooLong);
    }
    let mut apdu = vec![cla, ins as u8, p1, p2];
    if !data.is_empty() {
        apdu.push(data.len() as u8);
        apdu.extend_from_slice(data);
    }
    if let Some(le) = le {
        apdu.push(le);
    }
    Ok(apdu)
}

/// A card answer: data and status word.
#[derive(Debug, Clone)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.sw == StatusWord::OK
    }

    /// Splits a raw answer (data ‖ SW1 SW2).
    pub fn from_raw(mut raw: Vec<u8>) -> Result<Response> {
        if raw.len() < 2 {
            return Err(AppletError::Malformed(
                "response shorter than a status word".into(),
            ));
        }
        let sw2 = raw.pop().unwrap_or(0);
        let sw1 = raw.pop().unwrap_or(0);
        Ok(Response {
            data: raw,
            sw: StatusWord::from_bytes(sw1, sw2),
        })
    }
}

/// What an APDU trace may show of a command's data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    Full,
    /// The data carries secrets: only its length is logged.
    Redacted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cla_encodings() {
        assert_eq!(cla_for_channel(0, ClassStyle::InterIndustry), 0x00);
        assert_eq!(cla_for_channel(3, ClassStyle::InterIndustry), 0x03);
        assert_eq!(cla_for_channel(1, ClassStyle::Proprietary), 0x81);
        assert_eq!(cla_for_channel(4, ClassStyle::InterIndustry), 0x40);
        assert_eq!(cla_for_channel(19, ClassStyle::InterIndustry), 0x4F);
        assert_eq!(cla_for_channel(19, ClassStyle::Proprietary), 0xCF);
    }
}
