//! The MS UICC low-level access messages (CIDs 1–4): their information buffers, with byte
//! arrays written size first, then offset, as the Microsoft tables specify.

use super::message::u32_at;

pub(super) const CID_ATR: u32 = 1;
pub(super) const CID_OPEN_CHANNEL: u32 = 2;
pub(super) const CID_CLOSE_CHANNEL: u32 = 3;
pub(super) const CID_APDU: u32 = 4;

/// BASIC_CONNECT DEVICE_CAPS.
pub(super) const CID_DEVICE_CAPS: u32 = 1;

/// COMMAND_DONE statuses the transport tells apart.
pub(super) mod status {
    pub const SUCCESS: u32 = 0;
    pub const BUSY: u32 = 1;
    pub const SIM_NOT_INSERTED: u32 = 3;
    pub const BAD_SIM: u32 = 4;
    pub const NOT_INITIALIZED: u32 = 14;
    pub const NO_LOGICAL_CHANNELS: u32 = 0x8743_0001;
    pub const SELECT_FAILED: u32 = 0x8743_0002;
    pub const INVALID_LOGICAL_CHANNEL: u32 = 0x8743_0003;
}

/// Appends `bytes` zero-padded to 4.
fn push_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// OPEN_CHANNEL: select `aid` with `select_p2` on a new channel tagged `group`.
pub(super) fn open_channel(aid: &[u8], select_p2: u8, group: u32) -> Vec<u8> {
    let mut info = Vec::with_capacity(16 + aid.len() + 3);
    for v in [aid.len() as u32, 16, u32::from(select_p2), group] {
        info.extend_from_slice(&v.to_le_bytes());
    }
    push_padded(&mut info, aid);
    info
}

/// CLOSE_CHANNEL of `channel` (0: every channel of `group`).
pub(super) fn close_channel(channel: u32, group: u32) -> Vec<u8> {
    let mut info = Vec::with_capacity(8);
    info.extend_from_slice(&channel.to_le_bytes());
    info.extend_from_slice(&group.to_le_bytes());
    info
}

/// APDU on `channel`; the class-byte type follows the command's CLA (proprietary → extended).
pub(super) fn apdu(channel: u32, command: &[u8]) -> Vec<u8> {
    let class_type = u32::from(command.first().is_some_and(|cla| cla & 0x80 != 0));
    let mut info = Vec::with_capacity(20 + command.len() + 3);
    for v in [channel, 0, class_type, command.len() as u32, 20] {
        info.extend_from_slice(&v.to_le_bytes());
    }
    push_padded(&mut info, command);
    info
}

/// A (size, offset) byte array at `at`.
fn uicc_bytes_at(info: &[u8], at: usize) -> Option<&[u8]> {
    let size = u32_at(info, at)? as usize;
    let offset = u32_at(info, at + 4)? as usize;
    if size == 0 {
        return Some(&[]);
    }
    info.get(offset..offset.checked_add(size)?)
}

/// The SW in a Status field (SW1, SW2, 0, 0).
fn status_word(info: &[u8], at: usize) -> Option<[u8; 2]> {
    let s = info.get(at..at + 2)?;
    Some([s[0], s[1]])
}

/// The ATR of an ATR response.
pub(super) fn parse_atr(info: &[u8]) -> Option<Vec<u8>> {
    uicc_bytes_at(info, 0).map(<[u8]>::to_vec)
}

/// An OPEN_CHANNEL response: (SW, channel).
pub(super) fn parse_open_channel(info: &[u8]) -> Option<([u8; 2], u32)> {
    Some((status_word(info, 0)?, u32_at(info, 4)?))
}

/// An APDU response: (SW, data).
pub(super) fn parse_apdu(info: &[u8]) -> Option<([u8; 2], Vec<u8>)> {
    Some((status_word(info, 0)?, uicc_bytes_at(info, 4)?.to_vec()))
}

/// DEVICE_CAPS' HardwareInfo (the last of its four strings), UTF-16LE, offset first.
pub(super) fn parse_hardware_info(info: &[u8]) -> Option<String> {
    let offset = u32_at(info, 56)? as usize;
    let size = u32_at(info, 60)? as usize;
    let bytes = info.get(offset..offset.checked_add(size)?)?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|u| u16::from_le_bytes([u[0], u[1]]))
        .collect();
    let text = String::from_utf16(&units).ok()?;
    (!text.is_empty()).then_some(text)
}

/// PROXY_CONTROL CONFIGURATION: the device path (UTF-16LE, offset first) and a timeout.
pub(super) fn proxy_configuration(device: &str, timeout_secs: u32) -> Vec<u8> {
    let path: Vec<u8> = device.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut info = Vec::with_capacity(12 + path.len() + 3);
    for v in [12, path.len() as u32, timeout_secs] {
        info.extend_from_slice(&v.to_le_bytes());
    }
    push_padded(&mut info, &path);
    info
}

/// `cla` with logical channel `channel` (1–19) in it; class, chaining and type kept.
pub(super) fn cla_on_channel(cla: u8, channel: u32) -> u8 {
    let kept = cla & 0x90;
    match channel {
        0..=3 => kept | channel as u8,
        _ => kept | 0x40 | (channel.saturating_sub(4).min(15) as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference §1.11: mbimcli's OPEN_CHANNEL info for the IoT SAFE AID, P2 0x0C, group 1.
    #[test]
    fn open_channel_matches_the_capture() {
        let aid = hex::decode("a0000005591010ffffffff8900000100").unwrap();
        assert_eq!(
            hex::encode(open_channel(&aid, 0x0C, 1)),
            "10000000100000000c00000001000000a0000005591010ffffffff8900000100"
        );
    }

    /// Reference §1.11: the APDU info of an 11-byte command on channel 1, padded.
    #[test]
    fn apdu_matches_the_capture() {
        let command = hex::decode("81e2910006bf3e035c015a").unwrap();
        assert_eq!(
            hex::encode(apdu(1, &command)),
            "0100000000000000010000000b0000001400000081e2910006bf3e035c015a00"
        );
    }

    #[test]
    fn close_channel_matches_the_capture() {
        assert_eq!(hex::encode(close_channel(1, 1)), "0100000001000000");
    }

    /// Reference §1.11: a valid ATR reply carries `16000000 08000000` and 22 bytes.
    #[test]
    fn atr_reply_is_read() {
        let atr: Vec<u8> = (1..=22).collect();
        let mut info = hex::decode("1600000008000000").unwrap();
        info.extend_from_slice(&atr);
        info.extend_from_slice(&[0, 0]);
        assert_eq!(parse_atr(&info), Some(atr));
    }

    #[test]
    fn apdu_reply_is_read() {
        let info = hex::decode("9000000003000000 0c000000 bf2e03 00".replace(' ', "")).unwrap();
        assert_eq!(
            parse_apdu(&info),
            Some(([0x90, 0x00], vec![0xbf, 0x2e, 0x03]))
        );
        // A size pointing past the buffer is malformed, never a panic.
        let bad = hex::decode("9000000009000000 0c000000 bf2e03 00".replace(' ', "")).unwrap();
        assert_eq!(parse_apdu(&bad), None);
    }

    /// Captured from `mbimcli -p -d /dev/null` (reference §2.2), timeout 30.
    #[test]
    fn proxy_configuration_matches_the_capture() {
        let info = proxy_configuration("/dev/null", 30);
        assert_eq!(hex::encode(&info[..12]), "0c000000120000001e000000");
        assert_eq!(&info[12..14], b"/\0");
        assert_eq!(info.len(), 32);
    }

    #[test]
    fn channel_goes_into_cla() {
        assert_eq!(cla_on_channel(0x00, 1), 0x01);
        assert_eq!(cla_on_channel(0x80, 3), 0x83);
        assert_eq!(cla_on_channel(0x80, 4), 0xC0);
        assert_eq!(cla_on_channel(0x00, 19), 0x4F);
        assert_eq!(cla_on_channel(0x90, 5), 0xD1);
    }
}
