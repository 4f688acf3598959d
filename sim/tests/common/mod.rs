#![allow(dead_code)]

use iotsafe_sim::profile::decode_hex;
use iotsafe_sim::{Card, CardOptions, Profile, default_profile};

pub const AID: &str = "A0000005590010";

pub fn h(s: &str) -> Vec<u8> {
    decode_hex(s).expect("test hex")
}

pub fn card() -> Card {
    Card::new(default_profile(), CardOptions::default())
}

pub fn card_with(options: CardOptions) -> Card {
    Card::new(default_profile(), options)
}

pub fn card_profile(profile: Profile, options: CardOptions) -> Card {
    Card::new(profile, options)
}

/// Sends an APDU, returns (data, sw).
pub fn tx(card: &mut Card, apdu: &[u8]) -> (Vec<u8>, u16) {
    let r = card.transmit(apdu);
    assert!(r.len() >= 2, "response without SW");
    let (d, s) = r.split_at(r.len() - 2);
    (d.to_vec(), u16::from_be_bytes([s[0], s[1]]))
}

pub fn txh(card: &mut Card, apdu: &str) -> (Vec<u8>, u16) {
    tx(card, &h(apdu))
}

pub fn sw(card: &mut Card, apdu: &str) -> u16 {
    txh(card, apdu).1
}

/// Builds a short APDU.
pub fn apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], le: Option<u8>) -> Vec<u8> {
    let mut v = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        v.push(data.len() as u8);
        v.extend_from_slice(data);
    }
    if let Some(le) = le {
        v.push(le);
    }
    v
}

/// Opens a logical channel from the basic channel and selects the applet on it.
pub fn open_select(card: &mut Card) -> u8 {
    let (d, s) = txh(card, "0070000001");
    assert_eq!(s, 0x9000);
    let ch = d[0];
    let cla = iotsafe_sim::cla_for_channel(ch, false).unwrap();
    let (_, s) = tx(card, &apdu(cla, 0xA4, 0x04, 0x00, &h(AID), None));
    assert_eq!(s, 0x9000);
    ch
}

pub fn cla(ch: u8, proprietary: bool) -> u8 {
    iotsafe_sim::cla_for_channel(ch, proprietary).unwrap()
}

/// Parses concatenated single-byte-tag TLVs with BER lengths.
pub fn tlvs(mut d: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let tag = d[0];
        let (len, hl) = match d[1] {
            0x81 => (d[2] as usize, 2),
            0x82 => (((d[2] as usize) << 8) | d[3] as usize, 3),
            l => (l as usize, 1),
        };
        out.push((tag, d[1 + hl..1 + hl + len].to_vec()));
        d = &d[1 + hl + len..];
    }
    out
}
