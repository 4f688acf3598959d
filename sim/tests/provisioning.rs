//! STORE DATA provisioning profile, access rules, capacity, persistence, and IoT.04 G4
//! remote management sessions.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use iotsafe_sim::{
    Card, CardOptions, FactoryObjects, ObjectClass, ObjectState, Profile, SharedCard, control,
    default_profile, default_profile_with_provisioning,
};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

fn pcard() -> Card {
    Card::new(default_profile_with_provisioning(), CardOptions::default())
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iotsafe-sim-prov-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `tag len value` with a BER length.
fn ber(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = value.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n <= 0xFF {
        v.extend_from_slice(&[0x81, n as u8]);
    } else {
        v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(value);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// One STORE DATA sequence for `tlv` in blocks of `chunk` bytes; intermediate blocks must
/// answer 9000. Returns the last block's answer.
fn store_p1(card: &mut Card, ch: u8, tlv: &[u8], chunk: usize, p1_extra: u8) -> (Vec<u8>, u16) {
    let blocks: Vec<&[u8]> = tlv.chunks(chunk).collect();
    for (i, b) in blocks.iter().enumerate() {
        let last = i + 1 == blocks.len();
        let p1 = if last { 0x80 } else { 0x00 } | p1_extra;
        let r = tx(card, &apdu(cla(ch, true), 0xE2, p1, i as u8, b, None));
        if last {
            return r;
        }
        assert_eq!(r.1, 0x9000, "block {i}");
    }
    unreachable!()
}

fn store(card: &mut Card, ch: u8, tlv: &[u8]) -> u16 {
    store_p1(card, ch, tlv, 255, 0).1
}

fn file_slot(id: &[u8], label: Option<&str>, usage: u8, size: u16) -> Vec<u8> {
    let mut v = Vec::new();
    if let Some(l) = label {
        v.extend(ber(0x73, l.as_bytes()));
    }
    v.extend(ber(0x83, id));
    v.extend(ber(0x21, &[usage]));
    v.extend(ber(0x20, &size.to_be_bytes()));
    ber(0x74, &v)
}

fn select_ref(tag: u8, r: &[u8]) -> Vec<u8> {
    ber(0x75, &ber(tag, r))
}

fn delete_ref(tag: u8, r: &[u8]) -> Vec<u8> {
    ber(0x76, &ber(tag, r))
}

/// The whole object list (following 6300 pages).
fn object_list(card: &mut Card, ch: u8) -> Vec<u8> {
    let (mut all, mut s) = tx(card, &apdu(cla(ch, false), 0xCB, 0x01, 0x00, &[], Some(0)));
    while s == 0x6300 {
        let (d, s2) = tx(card, &apdu(cla(ch, false), 0xCB, 0x01, 0x01, &[], Some(0)));
        all.extend(d);
        s = s2;
    }
    assert!(s == 0x9000 || s == 0x63CF, "{s:04X}");
    all
}

/// Info TLVs of the object with `id_tag`/`id` in a per-object list.
fn info(list: &[u8], wrapper: u8, id_tag: u8, id: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    tlvs(list)
        .into_iter()
        .filter(|(t, _)| *t == wrapper)
        .map(|(_, v)| tlvs(&v))
        .find(|i| i.iter().any(|(t, v)| *t == id_tag && v == id))
}

fn field(info: &[(u8, Vec<u8>)], tag: u8) -> Vec<u8> {
    info.iter()
        .find(|(t, _)| *t == tag)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// READ FILE of a whole file.
fn read_file(card: &mut Card, ch: u8, id: &[u8]) -> (Vec<u8>, u16) {
    let mut out = Vec::new();
    loop {
        let off = out.len();
        let (d, s) = tx(
            card,
            &apdu(
                cla(ch, false),
                0xB0,
                (off >> 8) as u8,
                off as u8,
                &ber(0x83, id),
                Some(0),
            ),
        );
        if s != 0x9000 && s != 0x63CF {
            return (out, s);
        }
        if d.is_empty() {
            return (out, 0x9000);
        }
        out.extend(d);
    }
}

fn read_public(card: &mut Card, ch: u8, id: &[u8]) -> (Vec<u8>, u16) {
    let (d, s) = tx(
        card,
        &apdu(cla(ch, false), 0xCD, 0, 0, &ber(0x85, id), Some(0)),
    );
    if s == 0x9000 || s == 0x63CF {
        assert_eq!(&d[..7], &h("34454943864104")[..6 + 1]);
        (d[6..].to_vec(), s)
    } else {
        (d, s)
    }
}

fn sign_init(card: &mut Card, ch: u8, key: &[u8]) -> u16 {
    let data = cat(&[&ber(0x84, key), &h("A10103 91020001 920104")]);
    tx(card, &apdu(cla(ch, false), 0x2A, 0x00, 0x00, &data, None)).1
}

fn sign_update(card: &mut Card, ch: u8, digest: &[u8]) -> (Vec<u8>, u16) {
    tx(
        card,
        &apdu(
            cla(ch, false),
            0x2B,
            0x80,
            0x00,
            &ber(0x9E, digest),
            Some(0),
        ),
    )
}

fn verifies(point: &[u8], digest: &[u8], resp: &[u8]) -> bool {
    assert_eq!(&resp[..2], &[0x33, 0x40]);
    let vk = VerifyingKey::from_sec1_bytes(point).unwrap();
    let sig = Signature::from_slice(&resp[2..]).unwrap();
    vk.verify_prehash(digest, &sig).is_ok()
}

// ------------------------------------------------------------------ switch, dispatch

#[test]
fn provisioning_off_answers_6d00() {
    let mut c = card();
    let ch = open_select(&mut c);
    let t = file_slot(&[0x10], None, 1, 10);
    assert_eq!(store(&mut c, ch, &t), 0x6D00);
    assert!(c.profile().file(&[0x10]).is_none());
    c.set_provisioning(true);
    assert_eq!(store(&mut c, ch, &t), 0x9000);
    // Not selected on the basic channel: 6D00 as for every applet command.
    assert_eq!(sw(&mut c, "80E2800003 7F0100"), 0x6D00);
    assert!(!default_profile().provisioning);
    assert!(default_profile_with_provisioning().provisioning);
}

#[test]
fn p1_p2_tags_and_lengths() {
    let mut c = pcard();
    let ch = open_select(&mut c);
    let k = cla(ch, true);
    let t = file_slot(&[0x10], None, 1, 10);
    assert_eq!(tx(&mut c, &apdu(k, 0xE2, 0x82, 0, &t, None)).1, 0x6A86);
    assert_eq!(tx(&mut c, &apdu(k, 0xE2, 0x80, 1, &t, None)).1, 0x6A86);
    assert_eq!(tx(&mut c, &apdu(k, 0xE2, 0x80, 0, &[], Some(0))).1, 0x6700);
    // 73 (update private key) stays reserved.
    assert_eq!(store(&mut c, ch, &ber(0x73, &ber(0x47, &[1; 32]))), 0x6985);
    // Unknown sub-command, trailing bytes, short TLV, bad length encoding.
    assert_eq!(store(&mut c, ch, &ber(0x70, &[])), 0x6A80);
    assert_eq!(store(&mut c, ch, &cat(&[&t, &[0]])), 0x6A80);
    assert_eq!(store(&mut c, ch, &t[..t.len() - 1]), 0x6A80);
    assert_eq!(store(&mut c, ch, &h("7483000001")), 0x6A80);
    // GlobalPlatform "BER-TLV" bit and Le accepted; inter-industry class too.
    assert_eq!(tx(&mut c, &apdu(k, 0xE2, 0xC0, 0, &t, Some(0))).1, 0x9000);
    let t2 = file_slot(&[0x11], None, 1, 10);
    assert_eq!(
        tx(&mut c, &apdu(cla(ch, false), 0xE2, 0x80, 0, &t2, None)).1,
        0x9000
    );
    // Missing mandatory tags, unknown tags, duplicates, bad usage.
    for bad in [
        ber(0x74, &h("830112 210101")),
        ber(0x74, &h("210101 20020010")),
        ber(0x74, &h("830112 210101 20020010 990100")),
        ber(0x74, &h("830112 830113 210101 20020010")),
        ber(0x74, &h("830112 210103 20020010")),
        ber(0x71, &h("840120 850120")),
        ber(0x71, &h("840120 850120 480123")),
        ber(0x72, &h("840120")),
        ber(0x75, &h("830110 830111")),
        ber(0x75, &h("9901AA")),
        ber(0x7F, b"clear"),
    ] {
        assert_eq!(store(&mut c, ch, &bad), 0x6A80, "{}", hex(&bad));
    }
}

fn hex(b: &[u8]) -> String {
    hex::encode_upper(b)
}

// ------------------------------------------------------------------ files

#[test]
fn readme_examples_exact_bytes() {
    let mut c = pcard();
    txh(&mut c, "00A4040007A0000005590010");
    // Create file slot: ID 10, label "cert", certificate, 1500 bytes.
    assert_eq!(
        txh(
            &mut c,
            "80E2800012 7410 7304 63657274 830110 210102 200205DC"
        )
        .1,
        0x9000
    );
    // Select it, write 6 bytes over two blocks.
    assert_eq!(txh(&mut c, "80E2800005 7503 830110").1, 0x9000);
    assert_eq!(txh(&mut c, "80E2000004 7706 AABB").1, 0x9000);
    assert_eq!(txh(&mut c, "80E2800104 CCDDEEFF").1, 0x9000);
    assert_eq!(
        c.profile().file(&[0x10]).unwrap().content,
        h("AABBCCDDEEFF")
    );
    // Select and read file.
    assert_eq!(
        txh(&mut c, "80E2010005 7E03 830110 00"),
        (h("AABBCCDDEEFF"), 0x9000)
    );
    assert_eq!(txh(&mut c, "80E2010102 7E00 00"), (vec![], 0x9000));
    assert_eq!(txh(&mut c, "80E2010202 7E00 00").1, 0x6A86);
    // Create ECC key pair (persistent: generated at once, P1 01 → answer).
    let (d, s) = txh(&mut c, "80E281000B 7109 840120 850120 480113 00");
    assert_eq!(s, 0x9000);
    assert_eq!(&d[..12], &h("840120 850120 34454943864104")[..12]);
    assert_eq!(d.len(), 6 + 71);
    let point = c
        .profile()
        .public_key(&[0x20])
        .unwrap()
        .point
        .clone()
        .unwrap();
    assert_eq!(&d[6 + 6..], &point[..]);
    // Read public key of the selected object.
    assert_eq!(txh(&mut c, "80E2800005 7503 850120").1, 0x9000);
    assert_eq!(txh(&mut c, "80E2810002 7A00 00"), (point, 0x9000));
    // Delete.
    assert_eq!(txh(&mut c, "80E2800005 7603 830110").1, 0x9000);
    assert!(c.profile().file(&[0x10]).is_none());
    assert_eq!(txh(&mut c, "80E2800005 7603 830110").1, 0x6A82);
    // Reset store.
    assert_eq!(txh(&mut c, "80E280000A 7F08 636C656172616C6C").1, 0x9000);
    assert_eq!(c.profile(), &default_profile_with_provisioning());
}

#[test]
fn file_of_1500_bytes_over_many_blocks() {
    let mut c = pcard();
    let ch = open_select(&mut c);
    assert_eq!(
        store(&mut c, ch, &file_slot(&[0x10], Some("big"), 2, 1500)),
        0x9000
    );
    // Listed at once: slot size in 20, deactivated.
    let list = object_list(&mut c, ch);
    let i = info(&list, 0xC3, 0x83, &[0x10]).expect("listed");
    assert_eq!(field(&i, 0x73), b"big");
    assert_eq!(field(&i, 0x4A), [0x00]);
    assert_eq!(field(&i, 0x21), [0x02]);
    assert_eq!(field(&i, 0x20), [0x05, 0xDC]);
    assert_eq!(read_file(&mut c, ch, &[0x10]).1, 0x6985);

    let content: Vec<u8> = (0..1500u32).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(store(&mut c, ch, &select_ref(0x73, b"big")), 0x9000);
    let t = ber(0x77, &content);
    assert_eq!(&t[..4], &h("778205DC")[..]);
    for chunk in [255, 100, 64] {
        assert_eq!(store_p1(&mut c, ch, &t, chunk, 0).1, 0x9000);
    }
    let list = object_list(&mut c, ch);
    let i = info(&list, 0xC3, 0x83, &[0x10]).unwrap();
    assert_eq!(field(&i, 0x4A), [0x01]);
    assert_eq!(field(&i, 0x20), [0x05, 0xDC]);
    assert_eq!(read_file(&mut c, ch, &[0x10]), (content.clone(), 0x9000));
    // GET DATA C3 for the one file.
    let (d, s) = tx(
        &mut c,
        &apdu(cla(ch, false), 0xCB, 0xC3, 0, &ber(0x73, b"big"), None),
    );
    assert_eq!(s, 0x9000);
    assert_eq!(field(&tlvs(&d), 0x20), [0x05, 0xDC]);

    // 7E select and read: pieces of 256 (Le 00) or Le, an empty piece ends it.
    let k = cla(ch, true);
    let (mut got, s) = tx(
        &mut c,
        &apdu(k, 0xE2, 0x01, 0, &ber(0x7E, &ber(0x83, &[0x10])), Some(0)),
    );
    assert_eq!((got.len(), s), (256, 0x9000));
    let mut block = 1u8;
    loop {
        let le = if block == 2 { 100 } else { 0 };
        let (d, s) = tx(&mut c, &apdu(k, 0xE2, 0x01, block, &h("7E00"), Some(le)));
        assert_eq!(s, 0x9000);
        if block == 2 {
            assert_eq!(d.len(), 100);
        }
        block += 1;
        if d.is_empty() {
            break;
        }
        got.extend(d);
    }
    assert_eq!(got, content);
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x01, block, &h("7E00"), Some(0))).1,
        0x6A86
    );
    // Stopped early with P1 80; label form.
    let (d, _) = tx(
        &mut c,
        &apdu(k, 0xE2, 0x81, 0, &ber(0x7E, &ber(0x73, b"big")), Some(10)),
    );
    assert_eq!(d, content[..10]);
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x01, 1, &h("7E00"), Some(0))).1,
        0x6A86
    );
    // Shorter content: size follows the content.
    assert_eq!(store(&mut c, ch, &select_ref(0x83, &[0x10])), 0x9000);
    assert_eq!(store(&mut c, ch, &ber(0x77, &[1, 2, 3])), 0x9000);
    let list = object_list(&mut c, ch);
    assert_eq!(
        field(&info(&list, 0xC3, 0x83, &[0x10]).unwrap(), 0x20),
        [0, 3]
    );
    // Longer than the slot: no memory.
    assert_eq!(store(&mut c, ch, &ber(0x77, &vec![0; 1501])), 0x6A84);
    assert_eq!(c.profile().file(&[0x10]).unwrap().content, [1, 2, 3]);
}

#[test]
fn cut_off_sequences_leave_the_old_content() {
    let mut c = pcard();
    let ch = open_select(&mut c);
    let k = cla(ch, true);
    store(&mut c, ch, &file_slot(&[0x10], None, 1, 600));
    store(&mut c, ch, &select_ref(0x83, &[0x10]));
    let old: Vec<u8> = vec![0x11; 400];
    assert_eq!(store(&mut c, ch, &ber(0x77, &old)), 0x9000);
    let new = ber(0x77, &[0x22; 500]);
    let blocks: Vec<&[u8]> = new.chunks(200).collect();
    let unchanged = |c: &Card| c.profile().file(&[0x10]).unwrap().content == old;

    // Another command on the channel.
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 0, blocks[0], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 1, blocks[1], None)).1,
        0x9000
    );
    assert_eq!(
        sw(&mut c, &format!("{:02X}CB000000", cla(ch, false))),
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x80, 2, blocks[2], None)).1,
        0x6A86
    );
    assert!(unchanged(&c));
    // A wrong block number.
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 0, blocks[0], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 2, blocks[1], None)).1,
        0x6A86
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x80, 2, blocks[2], None)).1,
        0x6A86
    );
    assert!(unchanged(&c));
    // Last block missing data (length mismatch) and too much data.
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 0, blocks[0], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x80, 1, blocks[1], None)).1,
        0x6A80
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 0, blocks[0], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 1, blocks[1], None)).1,
        0x9000
    );
    assert_eq!(
        tx(
            &mut c,
            &apdu(k, 0xE2, 0x80, 2, &cat(&[blocks[2], &[0]]), None)
        )
        .1,
        0x6A80
    );
    assert!(unchanged(&c));
    // A power cycle.
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 0, blocks[0], None)).1,
        0x9000
    );
    c.power_off();
    assert!(unchanged(&c));
    let ch = open_select(&mut c);
    let k = cla(ch, true);
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x80, 1, blocks[1], None)).1,
        0x6A86
    );
    // Block 0 again restarts; commands on another channel do not cut it.
    store(&mut c, ch, &select_ref(0x83, &[0x10]));
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 0, blocks[0], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 0, blocks[0], None)).1,
        0x9000
    );
    let o = open_select(&mut c);
    assert_eq!(
        sw(&mut c, &format!("{:02X}CB000000", cla(o, false))),
        0x9000
    );
    assert_eq!(store(&mut c, o, &file_slot(&[0x11], None, 1, 10)), 0x9000);
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x00, 1, blocks[1], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x80, 2, blocks[2], None)).1,
        0x9000
    );
    assert_eq!(c.profile().file(&[0x10]).unwrap().content, vec![0x22; 500]);
}

#[test]
fn select_and_update_rules() {
    let mut c = pcard();
    let ch = open_select(&mut c);
    // Nothing selected, wrong class selected.
    assert_eq!(store(&mut c, ch, &ber(0x77, &[1])), 0x6985);
    assert_eq!(store(&mut c, ch, &select_ref(0x85, &[0x05])), 0x9000);
    assert_eq!(store(&mut c, ch, &ber(0x77, &[1])), 0x6985);
    assert_eq!(store(&mut c, ch, &select_ref(0x83, &[0x99])), 0x6A82);
    // Factory certificate: readable, not writable (access 01).
    assert_eq!(store(&mut c, ch, &select_ref(0x73, b"client")), 0x9000);
    assert_eq!(store(&mut c, ch, &ber(0x77, &[1])), 0x6985);
    let cert = c.profile().file(&[0x02]).unwrap().content.clone();
    let (d, s) = store_p1(&mut c, ch, &ber(0x7E, &ber(0x83, &[0x02])), 255, 1);
    assert_eq!(d, cert[..256.min(cert.len())].to_vec());
    assert_eq!(s, 0x9000);
    // Secret keys: never.
    assert_eq!(store(&mut c, ch, &select_ref(0x86, &[0x06])), 0x6985);
    assert_eq!(store(&mut c, ch, &delete_ref(0x76, b"psk")), 0x6985);
    // SELECT of the applet drops the selection.
    assert_eq!(store(&mut c, ch, &select_ref(0x83, &[0x02])), 0x9000);
    tx(&mut c, &apdu(cla(ch, false), 0xA4, 4, 0, &h(AID), None));
    assert_eq!(store(&mut c, ch, &ber(0x77, &[1])), 0x6985);
}

// ------------------------------------------------------------------ keys

#[test]
fn key_pair_persistent_signs_and_volatile_is_generated_later() {
    let mut c = pcard();
    let ch = open_select(&mut c);
    let t = ber(
        0x71,
        &cat(&[
            &ber(0x74, b"dev"),
            &ber(0x84, &[0x20]),
            &ber(0x75, b"dev"),
            &ber(0x85, &[0x20]),
            &h("480113"),
        ]),
    );
    // Without P1 01: no data.
    let (d, s) = store_p1(&mut c, ch, &t, 255, 0);
    assert_eq!((d.len(), s), (0, 0x9000));
    let list = object_list(&mut c, ch);
    let pi = info(&list, 0xC1, 0x84, &[0x20]).unwrap();
    assert_eq!(field(&pi, 0x74), b"dev");
    assert_eq!(field(&pi, 0x4A), [1]);
    assert_eq!(field(&pi, 0x4B), [0x13]);
    assert_eq!(field(&pi, 0x61), [0x07]);
    let (point, s) = read_public(&mut c, ch, &[0x20]);
    assert_eq!(s, 0x9000);
    let digest = Sha256::digest(b"device key").to_vec();
    assert_eq!(sign_init(&mut c, ch, &[0x20]), 0x9000);
    let (r, s) = sign_update(&mut c, ch, &digest);
    assert_eq!(s, 0x9000);
    assert!(verifies(&point, &digest, &r));
    // Duplicates: same ID or label.
    assert_eq!(store(&mut c, ch, &t), 0x6A80);
    // Regenerate with B9 (crypto functions include key generation).
    let (d, s) = tx(
        &mut c,
        &apdu(cla(ch, false), 0xB9, 0, 0, &h("840120"), Some(0)),
    );
    assert_eq!(s, 0x9000);
    assert_ne!(&d[12..], &point[..]);

    // Volatile pair with different IDs: empty containers, B9 fills both.
    let t = ber(0x71, &h("840130 850131 480114"));
    let (d, s) = store_p1(&mut c, ch, &t, 255, 1);
    assert_eq!((d.len(), s), (0, 0x9000));
    assert_eq!(
        c.profile().private_key(&[0x30]).unwrap().state,
        ObjectState::Deactivated
    );
    assert_eq!(read_public(&mut c, ch, &[0x31]).1, 0x6985);
    let (d, s) = tx(
        &mut c,
        &apdu(cla(ch, false), 0xB9, 0, 0, &h("840130"), Some(0)),
    );
    assert_eq!(s, 0x9000);
    assert_eq!(&d[..6], &h("840130 850131")[..]);
    let (p, s) = read_public(&mut c, ch, &[0x31]);
    assert_eq!(s, 0x9000);
    assert_eq!(&d[12..], &p[..]);
    // ECDH with the new volatile key and the factory peer slot filled by 79.
    let peer = iotsafe_sim::pki::derive_key(b"test", "peer");
    use p256::elliptic_curve::sec1::ToSec1Point;
    let peer_point = peer.public_key().to_sec1_point(false).as_bytes().to_vec();
    assert_eq!(store(&mut c, ch, &select_ref(0x75, b"peer")), 0x9000);
    let pk = iotsafe_sim::card::public_key_format(&peer_point);
    assert_eq!(store(&mut c, ch, &ber(0x79, &pk)), 0x9000);
    let (d, s) = tx(
        &mut c,
        &apdu(cla(ch, false), 0x46, 0, 0, &h("840130 850105"), Some(0)),
    );
    assert_eq!(s, 0x9000);
    let card_pub = p256::PublicKey::from_sec1_bytes(&p).unwrap();
    let shared = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), card_pub.as_affine());
    assert_eq!(d, shared.raw_secret_bytes().to_vec());
}

#[test]
fn key_slots_and_public_key_update() {
    let mut c = pcard();
    let ch = open_select(&mut c);
    // 72: private slot with explicit attributes.
    let t = ber(
        0x72,
        &h("7403 6B6579 840140 600102 4B0114 4E0101 610106 6F0101"),
    );
    assert_eq!(store(&mut c, ch, &t), 0x9000);
    let k = c.profile().private_key(&[0x40]).unwrap().clone();
    assert_eq!(
        (k.key_type, k.crypto_functions, k.state),
        (0x14, 0x06, ObjectState::Deactivated)
    );
    assert!(k.private.is_none());
    assert_eq!(store(&mut c, ch, &ber(0x72, &h("840141 4B0123"))), 0x6A80);
    // 78: public slot; 79 writes it; 7A reads it.
    assert_eq!(
        store(&mut c, ch, &ber(0x78, &h("7504 70656572 850142 4B0113"))),
        0x6A80
    );
    assert_eq!(
        store(&mut c, ch, &ber(0x78, &h("7505 7065657232 850142 4B0113"))),
        0x9000
    );
    let pk = c.profile().public_key(&[0x42]).unwrap().clone();
    assert_eq!((pk.access, pk.state), (0x03, ObjectState::Deactivated));
    assert_eq!(store(&mut c, ch, &select_ref(0x75, b"peer")), 0x9000);
    assert_eq!(store(&mut c, ch, &ber(0x7A, &[])), 0x6985);
    assert_eq!(store(&mut c, ch, &select_ref(0x85, &[0x42])), 0x9000);
    assert_eq!(store(&mut c, ch, &ber(0x7A, &[])), 0x6985);
    let point = c
        .profile()
        .public_key(&[0x01])
        .unwrap()
        .point
        .clone()
        .unwrap();
    let pkf = iotsafe_sim::card::public_key_format(&point);
    let mut bad = point.clone();
    bad[64] ^= 1;
    assert_eq!(
        store(
            &mut c,
            ch,
            &ber(0x79, &iotsafe_sim::card::public_key_format(&bad))
        ),
        0x6A80
    );
    assert_eq!(store(&mut c, ch, &ber(0x79, &pkf)), 0x9000);
    assert_eq!(
        store_p1(&mut c, ch, &ber(0x7A, &[]), 255, 1),
        (point.clone(), 0x9000)
    );
    assert_eq!(read_public(&mut c, ch, &[0x42]), (point.clone(), 0x9000));
    // The factory client public key (access 01) is not writable.
    assert_eq!(store(&mut c, ch, &select_ref(0x85, &[0x01])), 0x9000);
    assert_eq!(store(&mut c, ch, &ber(0x79, &pkf)), 0x6985);
    assert_eq!(
        store_p1(&mut c, ch, &ber(0x7A, &[]), 255, 1),
        (point, 0x9000)
    );
}

// ------------------------------------------------------------------ access, capacity

#[test]
fn delete_follows_the_access_rules() {
    let profile = {
        let mut p = default_profile_with_provisioning();
        p.secret_keys.push(iotsafe_sim::SecretKey {
            id: vec![0x06],
            label: Some(b"psk".to_vec()),
            key_type: 0xA0,
            state: ObjectState::Activated,
            access: 0x03,
            crypto_functions: 0x08,
            key_derivation_algos: 0x01,
            value: Some(vec![7; 32]),
        });
        p
    };
    let mut c = Card::new(profile.clone(), CardOptions::default());
    let ch = open_select(&mut c);
    // Factory objects without update access: refused.
    assert_eq!(store(&mut c, ch, &delete_ref(0x83, &[0x02])), 0x6985);
    assert_eq!(store(&mut c, ch, &delete_ref(0x85, &[0x01])), 0x6985);
    assert_eq!(store(&mut c, ch, &delete_ref(0x86, &[0x06])), 0x6985);
    assert_eq!(store(&mut c, ch, &delete_ref(0x84, &[0x99])), 0x6A82);
    // Device-created: allowed whatever the access byte.
    let t = ber(0x74, &h("830110 600100 210101 20020010"));
    assert_eq!(store(&mut c, ch, &t), 0x9000);
    assert!(c.profile().is_device_object(ObjectClass::File, &[0x10]));
    assert_eq!(store(&mut c, ch, &delete_ref(0x83, &[0x10])), 0x9000);
    assert!(c.profile().device_objects.is_empty());
    // Factory objects with update access (default rule): allowed.
    assert_eq!(store(&mut c, ch, &delete_ref(0x75, b"peer")), 0x9000);
    assert!(c.profile().public_key(&[0x05]).is_none());
    assert_eq!(c.profile().secret_keys, profile.secret_keys);

    // factory_objects = protected: none; writable: all but secret keys.
    let mut p = profile.clone();
    p.factory_objects = FactoryObjects::Protected;
    let mut c = Card::new(p, CardOptions::default());
    let ch = open_select(&mut c);
    assert_eq!(store(&mut c, ch, &delete_ref(0x84, &[0x01])), 0x6985);
    assert_eq!(store(&mut c, ch, &select_ref(0x85, &[0x05])), 0x9000);
    let point = c
        .profile()
        .public_key(&[0x01])
        .unwrap()
        .point
        .clone()
        .unwrap();
    let pkf = iotsafe_sim::card::public_key_format(&point);
    assert_eq!(store(&mut c, ch, &ber(0x79, &pkf)), 0x6985);
    let mut p = profile;
    p.factory_objects = FactoryObjects::Writable;
    let mut c = Card::new(p, CardOptions::default());
    let ch = open_select(&mut c);
    assert_eq!(store(&mut c, ch, &delete_ref(0x83, &[0x02])), 0x9000);
    assert_eq!(store(&mut c, ch, &delete_ref(0x86, &[0x06])), 0x6985);
    assert_eq!(store(&mut c, ch, &delete_ref(0x73, b"ca")), 0x9000);
    assert!(c.profile().files.is_empty());
}

#[test]
fn capacity_and_memory() {
    let mut p = default_profile_with_provisioning();
    p.app_info.max_files = 3;
    p.app_info.max_private_keys = 3;
    p.app_info.max_public_keys = 4; // the default profile has 3
    p.store_size = 4000;
    let mut c = Card::new(p, CardOptions::default());
    let ch = open_select(&mut c);
    let used: usize = c.profile().files.iter().map(|f| f.content.len()).sum();
    // Slot beyond the store size: no memory.
    let too_big = (4000 - used + 1) as u16;
    assert_eq!(
        store(&mut c, ch, &file_slot(&[0x10], None, 1, too_big)),
        0x6A84
    );
    assert_eq!(
        store(&mut c, ch, &file_slot(&[0x10], None, 1, too_big - 1)),
        0x9000
    );
    // Fourth file: capacity reached.
    assert_eq!(store(&mut c, ch, &file_slot(&[0x11], None, 1, 1)), 0x6989);
    // Key pair: private 3rd ok, then capacity.
    assert_eq!(
        store(&mut c, ch, &ber(0x71, &h("840120 850120 480114"))),
        0x9000
    );
    assert_eq!(
        store(&mut c, ch, &ber(0x71, &h("840121 850121 480114"))),
        0x6989
    );
    assert_eq!(store(&mut c, ch, &ber(0x78, &h("850121 4B0113"))), 0x6989);
    // Freeing space makes room again.
    assert_eq!(store(&mut c, ch, &delete_ref(0x83, &[0x10])), 0x9000);
    assert_eq!(store(&mut c, ch, &file_slot(&[0x11], None, 1, 1)), 0x9000);
    // Application information still announces the maxima.
    let (d, _) = txh(&mut c, &format!("{:02X}CB000000", cla(ch, false)));
    assert_eq!(field(&tlvs(&d), 0xB1), [3]);
}

#[test]
fn reset_store_and_all_channel_forms() {
    let mut p = default_profile_with_provisioning();
    p.app_info.max_files = 60;
    let mut c = Card::new(p.clone(), CardOptions::default());
    // Channels 0..=19, both classes.
    txh(&mut c, "00A4040007A0000005590010");
    for n in 1..=19u8 {
        assert_eq!(tx(&mut c, &apdu(0x00, 0x70, 0x00, n, &[], None)).1, 0x9000);
        tx(&mut c, &apdu(cla(n, false), 0xA4, 4, 0, &h(AID), None));
    }
    for n in 0..=19u8 {
        for prop in [false, true] {
            let id = [0x50 + n, prop as u8];
            let t = file_slot(&id, None, 1, 4);
            let r = tx(&mut c, &apdu(cla(n, prop), 0xE2, 0x80, 0, &t, None));
            assert_eq!(r.1, 0x9000, "channel {n} {prop}");
        }
    }
    assert_eq!(c.profile().files.len(), 42);
    assert_eq!(c.profile().device_objects.len(), 40);
    assert_eq!(store(&mut c, 3, &ber(0x7F, b"clearall")), 0x9000);
    assert_eq!(c.profile(), &p);
}

// ------------------------------------------------------------------ persistence

#[test]
fn persistence_unit_and_restart() {
    let dir = temp_dir("unit");
    let file = dir.join("card.toml");
    default_profile_with_provisioning().save(&file).unwrap();
    let mut c = Card::new(Profile::load(&file).unwrap(), CardOptions::default());
    c.set_persist_path(Some(file.clone()));
    let ch = open_select(&mut c);
    assert_eq!(
        store(&mut c, ch, &file_slot(&[0x10], Some("csr"), 1, 100)),
        0x9000
    );
    store(&mut c, ch, &select_ref(0x83, &[0x10]));
    assert_eq!(store(&mut c, ch, &ber(0x77, b"hello")), 0x9000);
    assert_eq!(
        store(&mut c, ch, &ber(0x71, &h("840120 850120 480113"))),
        0x9000
    );
    let saved = Profile::load(&file).unwrap();
    assert_eq!(&saved, c.profile());
    assert!(saved.is_device_object(ObjectClass::File, &[0x10]));
    assert_eq!(
        saved
            .device_object(ObjectClass::File, &[0x10])
            .unwrap()
            .slot_size,
        Some(100)
    );
    assert!(saved.private_key(&[0x20]).unwrap().private.is_some());
    assert!(c.last_save_error().is_none());
    // B9 of the persistent factory key is saved too; the volatile one is not.
    let before = std::fs::read_to_string(&file).unwrap();
    tx(
        &mut c,
        &apdu(cla(ch, false), 0xB9, 0, 0, &h("840104"), None),
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    tx(
        &mut c,
        &apdu(cla(ch, false), 0xB9, 0, 0, &h("840120"), None),
    );
    assert_ne!(std::fs::read_to_string(&file).unwrap(), before);
    // Restart: the device's objects are still there and still the device's.
    let mut c2 = Card::new(Profile::load(&file).unwrap(), CardOptions::default());
    let ch = open_select(&mut c2);
    assert_eq!(read_file(&mut c2, ch, &[0x10]), (b"hello".to_vec(), 0x9000));
    assert_eq!(store(&mut c2, ch, &delete_ref(0x84, &[0x20])), 0x9000);
    assert_eq!(store(&mut c2, ch, &ber(0x7F, b"clearall")), 0x9000);
    assert!(c2.profile().file(&[0x10]).is_none());
    assert_eq!(c2.profile().files.len(), 2);
    // No temporary files left behind.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn persistence_through_the_binary() {
    let dir = temp_dir("bin");
    let file = dir.join("card.toml");
    let bin = || Command::new(env!("CARGO_BIN_EXE_iotsafe-sim"));
    assert!(
        bin()
            .arg("init-profile")
            .arg(&file)
            .arg("--provisioning")
            .status()
            .unwrap()
            .success()
    );
    assert!(Profile::load(&file).unwrap().provisioning);
    let select = "00A4040007A0000005590010";
    let out = bin()
        .args(["apdu", "--profile"])
        .arg(&file)
        .args([
            select,
            "80E2800012741073046365727483011021010220020010",
            "80E2800005 7503 830110",
            "80E2800007 7705 68656C6C6F",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.matches("< 9000").count(), 4, "{text}");
    let p = Profile::load(&file).unwrap();
    assert_eq!(p.file(&[0x10]).unwrap().content, b"hello");
    // A second run sees it.
    let out = bin()
        .args(["apdu", "--profile"])
        .arg(&file)
        .args([select, "00B00000 03 830110 00"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("< 68656C6C6F9000"));
    // --no-persist leaves the file alone; without provisioning: 6D00.
    let before = std::fs::read_to_string(&file).unwrap();
    let out = bin()
        .args(["apdu", "--no-persist", "--profile"])
        .arg(&file)
        .args([select, "80E2800005 7603 830110"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("< 9000\n"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    let plain = dir.join("plain.toml");
    default_profile().save(&plain).unwrap();
    let out = bin()
        .args(["apdu", "--profile"])
        .arg(&plain)
        .args([select, "80E2800005 7603 830102"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("< 6D00\n"));
    let out = bin()
        .args(["apdu", "--provisioning", "--profile"])
        .arg(&plain)
        .args([select, "80E2800005 7603 830102"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("< 6985\n"));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------ G4 remote management

#[test]
fn remote_file_update_6984_then_63cf_once() {
    let mut c = pcard();
    let a = open_select(&mut c);
    let b = open_select(&mut c);
    let old = c.profile().file(&[0x02]).unwrap().content.clone();
    let list_before = object_list(&mut c, a);
    c.remote_begin(ObjectClass::File, &[0x02]).unwrap();
    assert!(c.remote_begin(ObjectClass::File, &[0x03]).is_err());
    // The object being updated: by ID and by label, READ FILE and GET DATA C3.
    assert_eq!(read_file(&mut c, a, &[0x02]).1, 0x6984);
    let r = tx(
        &mut c,
        &apdu(cla(a, false), 0xB0, 0, 0, &ber(0x73, b"client"), Some(0)),
    );
    assert_eq!(r.1, 0x6984);
    let r = tx(
        &mut c,
        &apdu(cla(a, false), 0xCB, 0xC3, 0, &h("830102"), None),
    );
    assert_eq!(r.1, 0x6984);
    assert_eq!(store(&mut c, a, &select_ref(0x83, &[0x02])), 0x6984);
    // Other objects and the list: normal.
    assert_eq!(read_file(&mut c, a, &[0x03]).1, 0x9000);
    let new = b"new certificate bytes".to_vec();
    c.remote_replace_file(&[0x02], new.clone()).unwrap();
    assert_eq!(object_list(&mut c, a), list_before);
    assert_eq!(c.profile().file(&[0x02]).unwrap().content, old);
    let digest = Sha256::digest(b"x").to_vec();
    assert_eq!(sign_init(&mut c, b, &[0x01]), 0x9000);
    assert_eq!(sign_update(&mut c, b, &digest).1, 0x9000);
    let changed = c.remote_end().unwrap();
    assert_eq!(changed, vec![(ObjectClass::File, vec![0x02])]);
    assert!(c.remote_end().is_err());
    // First successful applet command per open channel: 63CF with its normal data.
    let r = tx(
        &mut c,
        &apdu(cla(a, false), 0xB0, 0, 0, &h("830102"), Some(0)),
    );
    assert_eq!(r, (new.clone(), 0x63CF));
    assert_eq!(read_file(&mut c, a, &[0x02]), (new.clone(), 0x9000));
    let (_, s) = txh(&mut c, &format!("{:02X}CB000000", cla(b, false)));
    assert_eq!(s, 0x63CF);
    let (_, s) = txh(&mut c, &format!("{:02X}CB000000", cla(b, false)));
    assert_eq!(s, 0x9000);
    // A channel opened afterwards: plain 9000.
    let n = open_select(&mut c);
    assert_eq!(
        sw(&mut c, &format!("{:02X}CB000000", cla(n, false))),
        0x9000
    );
    // The list shows the new size.
    let list = object_list(&mut c, a);
    assert_eq!(
        field(&info(&list, 0xC3, 0x83, &[0x02]).unwrap(), 0x20),
        (new.len() as u16).to_be_bytes()
    );
}

#[test]
fn remote_63cf_exact_answer_and_errors_do_not_consume_it() {
    let mut c = pcard();
    let a = open_select(&mut c);
    c.remote_begin(ObjectClass::File, &[0x03]).unwrap();
    c.remote_end().unwrap();
    // Errors keep the flag; MANAGE CHANNEL / SELECT do not take it.
    assert_eq!(read_file(&mut c, a, &[0x77]).1, 0x6A82);
    assert_eq!(
        tx(&mut c, &apdu(cla(a, false), 0xA4, 4, 0, &h(AID), None)).1,
        0x9000
    );
    // 6Cxx keeps it too.
    assert_eq!(
        sw(&mut c, &format!("{:02X}CB000010", cla(a, false))),
        0x6C44
    );
    let (d, s) = txh(&mut c, &format!("{:02X}CB000000", cla(a, false)));
    assert_eq!((d.len(), s), (0x44, 0x63CF));
    // T=0 style: 61xx, then GET RESPONSE ends with 63CF.
    let mut t0 = Card::new(
        default_profile_with_provisioning(),
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
    );
    txh(&mut t0, "00A4040007A0000005590010");
    t0.remote_begin(ObjectClass::File, &[0x03]).unwrap();
    t0.remote_end().unwrap();
    assert_eq!(txh(&mut t0, "80CB000000"), (vec![], 0x6144));
    let (d, s) = txh(&mut t0, "00C0000044");
    assert_eq!((d.len(), s), (0x44, 0x63CF));
    assert_eq!(txh(&mut t0, "80CB000000").1, 0x6144);
    assert_eq!(txh(&mut t0, "00C0000044").1, 0x9000);
}

#[test]
fn remote_key_replacement_interrupts_a_signature() {
    let mut c = pcard();
    let a = open_select(&mut c);
    let b = open_select(&mut c);
    let old_point = c
        .profile()
        .public_key(&[0x01])
        .unwrap()
        .point
        .clone()
        .unwrap();
    let digest = Sha256::digest(b"to be signed").to_vec();
    // INIT before the session.
    assert_eq!(sign_init(&mut c, a, &[0x01]), 0x9000);
    c.remote_begin(ObjectClass::PrivateKey, &[0x01]).unwrap();
    // UPDATE during: 6984 (the session stays), new INIT: 6984, by label too.
    assert_eq!(sign_update(&mut c, a, &digest).1, 0x6984);
    assert_eq!(sign_init(&mut c, b, &[0x01]), 0x6984);
    let data = cat(&[&ber(0x74, b"client"), &h("A10103 91020001 920104")]);
    assert_eq!(
        tx(&mut c, &apdu(cla(b, false), 0x2A, 0, 0, &data, None)).1,
        0x6984
    );
    // Public key 01 is not part of the session yet; after replace-key it is.
    assert_eq!(read_public(&mut c, b, &[0x01]).1, 0x9000);
    let new_point = c.remote_replace_key(&[0x01]).unwrap();
    assert_eq!(read_public(&mut c, b, &[0x01]).1, 0x6984);
    assert_eq!(
        tx(&mut c, &apdu(cla(b, false), 0xB9, 0, 0, &h("840101"), None)).1,
        0x6984
    );
    // Other keys work: ECDH key 04 generation.
    assert_eq!(
        tx(&mut c, &apdu(cla(b, false), 0xB9, 0, 0, &h("840104"), None)).1,
        0x9000
    );
    let changed = c.remote_end().unwrap();
    assert_eq!(changed.len(), 2);
    // The interrupted UPDATE: 6989, the session is gone.
    assert_eq!(sign_update(&mut c, a, &digest).1, 0x6989);
    assert_eq!(sign_update(&mut c, a, &digest).1, 0x6985);
    // A fresh sequence signs with the new key; INIT carries 63CF.
    assert_eq!(sign_init(&mut c, a, &[0x01]), 0x63CF);
    let (r, s) = sign_update(&mut c, a, &digest);
    assert_eq!(s, 0x9000);
    assert!(verifies(&new_point, &digest, &r));
    assert!(!verifies(&old_point, &digest, &r));
    let (p, s) = read_public(&mut c, b, &[0x01]);
    assert_eq!((p, s), (new_point, 0x63CF));
}

#[test]
fn remote_add_and_delete_and_interrupted_store_data() {
    let mut c = pcard();
    let a = open_select(&mut c);
    // A selection made before the session is interrupted by it.
    assert_eq!(store(&mut c, a, &ber(0x72, &h("840150 4B0114"))), 0x9000);
    store(&mut c, a, &select_ref(0x85, &[0x05]));
    c.remote_begin(ObjectClass::File, &[0x09]).unwrap();
    c.remote_add_file(&[0x09], Some(b"server".to_vec()), 2, b"DER".to_vec())
        .unwrap();
    assert!(c.remote_add_file(&[0x02], None, 2, vec![1]).is_err());
    assert!(
        c.remote_add_file(&[0x0A], Some(b"ca".to_vec()), 2, vec![1])
            .is_err()
    );
    assert!(c.remote_add_file(&[0x0A], None, 3, vec![1]).is_err());
    c.remote_delete(ObjectClass::PublicKey, &[0x05]).unwrap();
    assert!(c.remote_delete(ObjectClass::File, &[0x77]).is_err());
    // Not visible yet; references to targets → 6984 (also for creation with that ID).
    assert!(c.profile().file(&[0x09]).is_none());
    let r = tx(
        &mut c,
        &apdu(cla(a, false), 0xB0, 0, 0, &ber(0x73, b"server"), Some(0)),
    );
    assert_eq!(r.1, 0x6984);
    assert_eq!(store(&mut c, a, &file_slot(&[0x09], None, 1, 3)), 0x6984);
    assert_eq!(store(&mut c, a, &ber(0x7A, &[])), 0x6984);
    assert_eq!(store(&mut c, a, &ber(0x7F, b"clearall")), 0x6984);
    // Device work on other objects continues.
    assert_eq!(store(&mut c, a, &file_slot(&[0x0B], None, 1, 3)), 0x9000);
    assert_eq!(c.remote_session().unwrap().len(), 2);
    c.remote_end().unwrap();
    assert_eq!(c.profile().file(&[0x09]).unwrap().content, b"DER");
    assert!(c.profile().public_key(&[0x05]).is_none());
    assert!(c.profile().file(&[0x0B]).is_some());
    assert!(!c.profile().is_device_object(ObjectClass::File, &[0x09]));
    // The selection of the deleted key: 6989 once, then nothing selected.
    assert_eq!(store(&mut c, a, &ber(0x7A, &[])), 0x6989);
    assert_eq!(store(&mut c, a, &ber(0x7A, &[])), 0x6985);
    let list = object_list(&mut c, a);
    assert!(info(&list, 0xC3, 0x83, &[0x09]).is_some());
    assert!(info(&list, 0xC2, 0x85, &[0x05]).is_none());
    // Remote deletion of a secret key is allowed (security service).
    let mut p = default_profile_with_provisioning();
    p.secret_keys.push(iotsafe_sim::SecretKey {
        id: vec![0x06],
        label: None,
        key_type: 0xA0,
        state: ObjectState::Activated,
        access: 0x03,
        crypto_functions: 0x08,
        key_derivation_algos: 0x01,
        value: Some(vec![1; 32]),
    });
    let mut c = Card::new(p, CardOptions::default());
    c.remote_begin(ObjectClass::SecretKey, &[0x06]).unwrap();
    c.remote_delete(ObjectClass::SecretKey, &[0x06]).unwrap();
    c.remote_end().unwrap();
    assert!(c.profile().secret_key(&[0x06]).is_none());
}

#[test]
fn remote_file_read_in_progress_is_interrupted() {
    let mut c = pcard();
    let a = open_select(&mut c);
    let k = cla(a, true);
    let (d, s) = tx(
        &mut c,
        &apdu(k, 0xE2, 0x01, 0, &ber(0x7E, &h("830102")), Some(0x10)),
    );
    assert_eq!((d.len(), s), (0x10, 0x9000));
    c.remote_begin(ObjectClass::File, &[0x02]).unwrap();
    c.remote_replace_file(&[0x02], vec![5; 40]).unwrap();
    c.remote_end().unwrap();
    assert_eq!(
        tx(&mut c, &apdu(k, 0xE2, 0x01, 1, &h("7E00"), Some(0x10))).1,
        0x6989
    );
    let (d, s) = tx(
        &mut c,
        &apdu(k, 0xE2, 0x01, 0, &ber(0x7E, &h("830102")), Some(0)),
    );
    assert_eq!((d, s), (vec![5; 40], 0x63CF));
}

#[test]
fn shared_card_and_control_socket_commands() {
    let card =
        SharedCard::from_profile(default_profile_with_provisioning(), CardOptions::default());
    let dir = temp_dir("ctl");
    let pem = dir.join("new.pem");
    let der = b"\x30\x03\x02\x01\x05".to_vec();
    let pem_text = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der).unwrap();
    std::fs::write(&pem, pem_text).unwrap();
    let raw = dir.join("raw.der");
    std::fs::write(&raw, b"raw bytes").unwrap();
    let ask = |line: &str| -> serde_json::Value {
        serde_json::from_str(&control::handle_line(&card, line)).unwrap()
    };
    assert_eq!(ask("remote")["session"], serde_json::Value::Null);
    assert_eq!(ask("remote-end")["ok"], false);
    assert_eq!(ask("remote-begin bogus 02")["ok"], false);
    assert_eq!(ask("remote-begin file zz")["ok"], false);
    let v = ask("remote-begin file 02");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["session"][0]["class"], "file");
    assert_eq!(ask("remote-begin file 03")["ok"], false);
    let v = ask(&format!("remote-replace-file 02 {}", pem.display()));
    assert_eq!(
        (v["ok"].clone(), v["size"].clone()),
        (true.into(), 5.into()),
        "{v}"
    );
    assert_eq!(ask("remote-replace-file 02 /nonexistent")["ok"], false);
    let v = ask(&format!("remote-add-file 0A endpoint 1 {}", raw.display()));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        ask(&format!("remote-add-file 0B - 7 {}", raw.display()))["ok"],
        false
    );
    let v = ask("remote-replace-key 01");
    let point = v["point"].as_str().unwrap().to_string();
    assert_eq!(point.len(), 130);
    assert_eq!(ask("remote-replace-key 77")["ok"], false);
    assert_eq!(ask("remote-delete public 05")["ok"], true);
    assert_eq!(ask("remote")["session"].as_array().unwrap().len(), 5);
    // In-process device command during the session.
    card.transmit(&h("00A4040007A0000005590010"));
    assert_eq!(card.transmit(&h("00B0000003830102 00")), h("6984"));
    let v = ask("remote-end");
    assert_eq!(v["ok"], true);
    assert_eq!(v["changed"].as_array().unwrap().len(), 5);
    assert_eq!(
        card.transmit(&h("00B0000003830102 00")),
        h("300302010563CF")
    );
    assert_eq!(card.profile().file(&[0x0A]).unwrap().content, b"raw bytes");
    assert_eq!(
        hex(card
            .profile()
            .public_key(&[0x01])
            .unwrap()
            .point
            .as_ref()
            .unwrap()),
        point
    );
    // Library API on SharedCard.
    card.remote_begin(ObjectClass::File, &[0x03]).unwrap();
    card.remote_replace_file(&[0x03], vec![1]).unwrap();
    assert!(card.remote_session().is_some());
    card.remote_end().unwrap();
    assert_eq!(card.profile().file(&[0x03]).unwrap().content, [1]);
    // provisioning switch.
    assert_eq!(ask("provisioning")["provisioning"], true);
    assert_eq!(ask("provisioning off")["provisioning"], false);
    assert_eq!(card.transmit(&h("80E2800003 7F0100")), h("6D00"));
    assert!(ask("help")["commands"]["remote-begin"].is_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn remote_end_persists() {
    let dir = temp_dir("rpersist");
    let file = dir.join("card.toml");
    default_profile().save(&file).unwrap();
    let card = SharedCard::from_profile(Profile::load(&file).unwrap(), CardOptions::default());
    card.set_persist_path(Some(file.clone()));
    let epoch = card.content_epoch();
    card.remote_begin(ObjectClass::File, &[0x02]).unwrap();
    card.remote_replace_file(&[0x02], b"renewed".to_vec())
        .unwrap();
    assert_eq!(Profile::load(&file).unwrap(), default_profile());
    card.remote_end().unwrap();
    assert!(card.content_epoch() > epoch);
    assert_eq!(
        Profile::load(&file).unwrap().file(&[0x02]).unwrap().content,
        b"renewed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------ robustness

#[test]
fn random_store_data_never_panics() {
    let mut c = pcard();
    let ch = open_select(&mut c);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let tags = [
        0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x7E, 0x7F,
    ];
    let inner = [
        0x73, 0x74, 0x75, 0x83, 0x84, 0x85, 0x86, 0x20, 0x21, 0x48, 0x4B, 0x34, 0x60,
    ];
    for i in 0..20000 {
        let p1 = [0x00, 0x01, 0x80, 0x81, 0xC0, rnd() as u8][(rnd() % 6) as usize];
        let p2 = (rnd() % 4) as u8;
        let mut value = Vec::new();
        for _ in 0..(rnd() % 4) {
            let l = (rnd() % 5) as usize;
            let v: Vec<u8> = (0..l).map(|_| (rnd() % 0x30) as u8).collect();
            value.extend(ber(inner[(rnd() as usize) % inner.len()], &v));
        }
        let mut data = if rnd() % 5 == 0 {
            (0..(rnd() % 12)).map(|_| rnd() as u8).collect()
        } else {
            ber(tags[(rnd() as usize) % tags.len()], &value)
        };
        if rnd() % 7 == 0 {
            data.truncate((rnd() as usize) % (data.len() + 1));
        }
        let cl = if rnd() % 2 == 0 {
            cla(ch, true)
        } else {
            cla(ch, false)
        };
        let r = c.transmit(&apdu(
            cl,
            0xE2,
            p1,
            p2,
            &data,
            if rnd() % 2 == 0 { Some(0) } else { None },
        ));
        assert!(r.len() >= 2);
        if i % 1000 == 0 {
            c.remote_begin(ObjectClass::File, &[0x10]).ok();
        }
        if i % 1000 == 500 {
            c.remote_end().ok();
        }
    }
    c.profile().validate().unwrap();
}

// ------------------------------------------------------------------ through the vpcd binary

mod vpcd_binary {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    struct Sim(std::process::Child);

    impl Drop for Sim {
        fn drop(&mut self) {
            if let Ok(None) = self.0.try_wait() {
                unsafe {
                    libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(5) {
                    if let Ok(Some(_)) = self.0.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    fn start(file: &std::path::Path, sock: &std::path::Path, extra: &[&str]) -> (Sim, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_iotsafe-sim"))
            .args(["vpcd", "--host", "127.0.0.1", "--port", &port, "--profile"])
            .arg(file)
            .arg("--control")
            .arg(sock)
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let sim = Sim(child);
        listener.set_nonblocking(true).unwrap();
        let t = Instant::now();
        let s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if t.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no connection: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t = Instant::now();
        while !sock.exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        (sim, s)
    }

    fn xfer(s: &mut TcpStream, apdu_hex: &str) -> String {
        let a = h(apdu_hex);
        iotsafe_sim::vpcd::write_frame(s, &a).unwrap();
        let mut hdr = [0u8; 2];
        s.read_exact(&mut hdr).unwrap();
        let mut p = vec![0u8; u16::from_be_bytes(hdr) as usize];
        s.read_exact(&mut p).unwrap();
        hex(&p)
    }

    fn ask(sock: &std::path::Path, line: &str) -> serde_json::Value {
        let mut w = UnixStream::connect(sock).unwrap();
        let mut r = BufReader::new(w.try_clone().unwrap());
        w.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap()
    }

    #[test]
    fn vpcd_provisioning_remote_session_and_restart() {
        let dir = temp_dir("vpcd");
        let file = dir.join("card.toml");
        default_profile().save(&file).unwrap();
        let cert = dir.join("new.der");
        std::fs::write(&cert, b"\x30\x02\x05\x00").unwrap();
        let sock = dir.join("ctl.sock");
        {
            let (_sim, mut s) = start(&file, &sock, &["--provisioning"]);
            assert_eq!(xfer(&mut s, "00A4040007A0000005590010"), "9000");
            assert_eq!(
                xfer(
                    &mut s,
                    "80E2800012 7410 7304 63657274 830110 210102 200205DC"
                ),
                "9000"
            );
            assert_eq!(xfer(&mut s, "80E2800005 7503 830110"), "9000");
            assert_eq!(xfer(&mut s, "80E2800004 7702 ABCD"), "9000");
            assert_eq!(ask(&sock, "remote-begin file 02")["ok"], true);
            assert_eq!(xfer(&mut s, "00B0000003 830102 00"), "6984");
            let v = ask(&sock, &format!("remote-replace-file 02 {}", cert.display()));
            assert_eq!(v["ok"], true, "{v}");
            assert_eq!(ask(&sock, "remote-end")["ok"], true);
            assert_eq!(xfer(&mut s, "00B0000003 830102 00"), "3002050063CF");
            assert_eq!(xfer(&mut s, "00B0000003 830110 00"), "ABCD9000");
        }
        // Saved: the device's file (and who created it) and the remote change.
        let p = Profile::load(&file).unwrap();
        assert!(p.provisioning);
        assert!(p.is_device_object(ObjectClass::File, &[0x10]));
        assert_eq!(p.file(&[0x02]).unwrap().content, h("30020500"));
        // Restarted: still there.
        let (_sim, mut s) = start(&file, &sock, &[]);
        assert_eq!(xfer(&mut s, "00A4040007A0000005590010"), "9000");
        assert_eq!(xfer(&mut s, "00B0000003 830110 00"), "ABCD9000");
        assert_eq!(xfer(&mut s, "00B0000003 830102 00"), "300205009000");
        assert_eq!(xfer(&mut s, "80E2800005 7603 830110"), "9000");
        drop(_sim);
        assert!(Profile::load(&file).unwrap().file(&[0x10]).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
