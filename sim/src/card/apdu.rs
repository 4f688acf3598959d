//! The command APDU as the card parses it, the reply a handler gives back, the CLA ↔ channel
//! mapping, the ATR, and the readers of a command's TLV data.

use super::*;

/// A parsed short command APDU.
#[derive(Debug, Clone, Copy)]
pub(super) struct Apdu<'a> {
    pub(super) ins: u8,
    pub(super) p1: u8,
    pub(super) p2: u8,
    pub(super) data: &'a [u8],
    pub(super) has_lc: bool,
    /// Le byte as sent (`Some(0)` means 256).
    pub(super) le: Option<u8>,
}

impl<'a> Apdu<'a> {
    pub(super) fn parse(b: &'a [u8]) -> Option<Apdu<'a>> {
        if b.len() < 4 {
            return None;
        }
        let (ins, p1, p2) = (b[1], b[2], b[3]);
        let mk = |data, has_lc, le| Apdu {
            ins,
            p1,
            p2,
            data,
            has_lc,
            le,
        };
        match b.len() {
            4 => Some(mk(&[][..], false, None)),
            5 => Some(mk(&[][..], false, Some(b[4]))),
            n => {
                let lc = b[4] as usize;
                if lc == 0 {
                    None // extended length is not supported
                } else if n == 5 + lc {
                    Some(mk(&b[5..], true, None))
                } else if n == 6 + lc {
                    Some(mk(&b[5..5 + lc], true, Some(b[n - 1])))
                } else {
                    None
                }
            }
        }
    }

    /// Le as a byte count (`00` ⇒ 256).
    pub(super) fn le_len(&self) -> Option<usize> {
        self.le.map(|l| if l == 0 { 256 } else { l as usize })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeRule {
    /// A non-zero Le smaller than the data ⇒ `6Cxx`.
    Exact,
    /// Le was already applied or must be ignored.
    Free,
}

pub(super) struct Reply {
    pub(super) data: Vec<u8>,
    pub(super) sw: u16,
    pub(super) le_rule: LeRule,
}

impl Reply {
    pub(super) fn ok() -> Reply {
        Reply {
            data: Vec::new(),
            sw: sw::OK,
            le_rule: LeRule::Free,
        }
    }
    pub(super) fn data(data: Vec<u8>) -> Reply {
        Reply {
            data,
            sw: sw::OK,
            le_rule: LeRule::Exact,
        }
    }
    pub(super) fn free(data: Vec<u8>) -> Reply {
        Reply {
            data,
            sw: sw::OK,
            le_rule: LeRule::Free,
        }
    }
}

pub(super) type CmdResult = Result<Reply, u16>;

pub(super) fn sw_bytes(sw: u16) -> [u8; 2] {
    sw.to_be_bytes()
}

/// Decodes a CLA into `(channel, proprietary class)`; `None` for unsupported classes
/// (secure messaging, command chaining, RFU).
pub(super) fn decode_cla(cla: u8) -> Option<(usize, bool)> {
    match cla {
        0x00..=0x03 => Some(((cla & 0x03) as usize, false)),
        0x80..=0x83 => Some(((cla & 0x03) as usize, true)),
        0x40..=0x4F => Some((4 + (cla & 0x0F) as usize, false)),
        0xC0..=0xCF => Some((4 + (cla & 0x0F) as usize, true)),
        _ => None,
    }
}

/// The CLA byte for a channel (0..=19) in the inter-industry (`proprietary = false`) or
/// proprietary class. Returns `None` for channels above 19.
pub fn cla_for_channel(channel: u8, proprietary: bool) -> Option<u8> {
    let base = match channel {
        0..=3 => channel,
        4..=19 => 0x40 | (channel - 4),
        _ => return None,
    };
    Some(if proprietary { base | 0x80 } else { base })
}

/// The answer-to-reset: a UICC-style ATR offering T=0 and T=1.
pub const ATR: [u8; 23] = {
    let mut a = [
        0x3B, 0x9F, 0x96, 0x80, 0x81, 0x1F, 0xC7, // TS T0 TA1 TD1 TD2 TD3 TA4
        0x80, 0x31, 0xE0, 0x73, 0xFE, 0x21, 0x1B, 0x63, 0x3A, 0x20, 0x4E, 0x83, 0x00, 0x90,
        0x00, // 15 historical bytes
        0x00, // TCK
    ];
    let mut tck = 0u8;
    let mut i = 1;
    while i < 22 {
        tck ^= a[i];
        i += 1;
    }
    a[22] = tck;
    a
};

pub(super) fn parse_tlvs(data: &[u8]) -> Result<Vec<Tlv<'_>>, u16> {
    tlv::parse(data, &[]).map_err(|_| sw::WRONG_DATA)
}

/// The TLVs of a command or STORE DATA value: only `allowed` tags, each at most once (else
/// `6A80`).
pub(super) fn fields<'a>(data: &'a [u8], allowed: &[u8]) -> Result<Vec<Tlv<'a>>, u16> {
    let t = parse_tlvs(data)?;
    for (i, x) in t.iter().enumerate() {
        if !allowed.contains(&x.tag) || t[..i].iter().any(|y| y.tag == x.tag) {
            return Err(sw::WRONG_DATA);
        }
    }
    Ok(t)
}

/// The value of the first `tag` among `t`.
pub(super) fn get<'a>(t: &[Tlv<'a>], tag: u8) -> Option<&'a [u8]> {
    t.iter().find(|x| x.tag == tag).map(|x| x.value)
}

pub(super) fn need<'a>(tlvs: &[Tlv<'a>], tag: u8) -> Result<&'a [u8], u16> {
    tlv::single(tlvs, tag)
        .map_err(|_| sw::WRONG_DATA)?
        .ok_or(sw::WRONG_DATA)
}
