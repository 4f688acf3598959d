//! The UIM messages the module sends (Open Logical Channel, Logical Channel close, Send APDU),
//! the CTL client-id messages, the QMI error codes it tells apart, and the CLA byte of a
//! command on a logical channel.

/// CTL messages.
pub(super) const CTL_ALLOCATE_CID: u16 = 0x0022;
pub(super) const CTL_RELEASE_CID: u16 = 0x0023;
/// libqmi's proxy handshake: TLV 0x01 holds the device path.
pub(super) const CTL_INTERNAL_PROXY_OPEN: u16 = 0xFF00;

/// UIM messages.
pub(super) const UIM_SEND_APDU: u16 = 0x003B;
pub(super) const UIM_LOGICAL_CHANNEL: u16 = 0x003F;
pub(super) const UIM_OPEN_LOGICAL_CHANNEL: u16 = 0x0042;

/// QMI protocol errors (result TLV) this module reacts to.
pub(super) mod error {
    pub const CLIENT_IDS_EXHAUSTED: u16 = 5;
    pub const INVALID_CLIENT_ID: u16 = 7;
    pub const NO_EFFECT: u16 = 26;
    pub const UIM_UNINITIALIZED: u16 = 37;
    pub const INVALID_ARGUMENT: u16 = 48;
    pub const DEVICE_NOT_READY: u16 = 52;
    pub const INSUFFICIENT_RESOURCES: u16 = 68;
    pub const INVALID_QMI_COMMAND: u16 = 71;
    pub const SIM_FILE_NOT_FOUND: u16 = 80;
    pub const ACCESS_DENIED: u16 = 82;
    pub const INCOMPATIBLE_STATE: u16 = 90;
    pub const NOT_SUPPORTED: u16 = 94;
}

/// A QMI error code's name, for log lines.
pub(super) fn error_name(code: u16) -> &'static str {
    match code {
        3 => "Internal",
        error::CLIENT_IDS_EXHAUSTED => "ClientIdsExhausted",
        error::INVALID_CLIENT_ID => "InvalidClientId",
        17 => "MissingArgument",
        22 => "InvalidTransactionId",
        error::NO_EFFECT => "NoEffect",
        error::UIM_UNINITIALIZED => "UimUninitialized",
        error::INVALID_ARGUMENT => "InvalidArgument",
        error::DEVICE_NOT_READY => "DeviceNotReady",
        error::INSUFFICIENT_RESOURCES => "InsufficientResources",
        error::INVALID_QMI_COMMAND => "InvalidQmiCommand",
        error::SIM_FILE_NOT_FOUND => "SimFileNotFound",
        error::ACCESS_DENIED => "AccessDenied",
        error::INCOMPATIBLE_STATE => "IncompatibleState",
        error::NOT_SUPPORTED => "NotSupported",
        _ => "error",
    }
}

/// The AID TLV of Open Logical Channel: u8 length, then the AID.
pub(super) fn aid_tlv(aid: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(aid.len() + 1);
    v.push(aid.len() as u8);
    v.extend_from_slice(aid);
    v
}

/// The APDU TLV of Send APDU: u16 length, then the command.
pub(super) fn apdu_tlv(command: &[u8]) -> Vec<u8> {
    let mut v = (command.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(command);
    v
}

/// The card's answer in a Send APDU response (TLV 0x10: u16 length, data ‖ SW1 SW2).
pub(super) fn apdu_response(tlv: &[u8]) -> Option<Vec<u8>> {
    match tlv {
        [l0, l1, rest @ ..] if usize::from(u16::from_le_bytes([*l0, *l1])) == rest.len() => {
            (rest.len() >= 2).then(|| rest.to_vec())
        }
        _ => None,
    }
}

/// The CLA byte of a command built for the basic channel (`cla` has channel bits 0), sent on
/// logical channel `channel` (1–19): ISO 7816-4 first inter-industry coding for 1–3
/// (`0x0N`/`0x8N`), further coding for 4–19 (`0x40 + n − 4`/`0xC0 + n − 4`). The class
/// (inter-industry or proprietary) and command chaining are kept.
pub(super) fn cla_on_channel(cla: u8, channel: u8) -> u8 {
    let class = cla & 0x80;
    let chaining = cla & 0x10;
    if channel < 4 {
        (cla & !0x03) | channel
    } else {
        class | 0x40 | chaining | ((channel - 4) & 0x0F)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cla_carries_the_channel_in_both_codings() {
        assert_eq!(cla_on_channel(0x00, 1), 0x01);
        assert_eq!(cla_on_channel(0x00, 3), 0x03);
        assert_eq!(cla_on_channel(0x80, 2), 0x82);
        assert_eq!(cla_on_channel(0x10, 2), 0x12);
        assert_eq!(cla_on_channel(0x00, 4), 0x40);
        assert_eq!(cla_on_channel(0x00, 19), 0x4F);
        assert_eq!(cla_on_channel(0x80, 4), 0xC0);
        assert_eq!(cla_on_channel(0x90, 7), 0xD3);
    }

    #[test]
    fn apdu_tlvs_carry_a_u16_length() {
        assert_eq!(
            apdu_tlv(&[0x00, 0xA4, 0x04, 0x00]),
            vec![4, 0, 0x00, 0xA4, 0x04, 0x00]
        );
        assert_eq!(
            apdu_response(&[4, 0, 0xBF, 0x2E, 0x90, 0x00]),
            Some(vec![0xBF, 0x2E, 0x90, 0x00])
        );
        assert_eq!(apdu_response(&[5, 0, 0x90, 0x00]), None);
        assert_eq!(apdu_response(&[1, 0, 0x90]), None);
        assert_eq!(aid_tlv(&[0xA0, 0x00]), vec![2, 0xA0, 0x00]);
    }
}
