mod common;

use common::*;
use iotsafe_sim::hash::{self, HashAlg};
use iotsafe_sim::{
    AppInfoTags, Card, CardOptions, ObjectListStyle, ObjectState, Profile, SecretKey,
    SignatureLengthStyle, default_profile,
};
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::sec1::ToSec1Point;

fn client_vk(card: &Card) -> VerifyingKey {
    let p = card
        .profile()
        .public_key(&[1])
        .unwrap()
        .point
        .clone()
        .unwrap();
    VerifyingKey::from_sec1_bytes(&p).unwrap()
}

fn sign_init_data(key: &[u8], mode: u8, hash: &[u8], alg: u8) -> Vec<u8> {
    let mut d = key.to_vec();
    d.extend_from_slice(&[0xA1, 0x01, mode, 0x91, hash.len() as u8]);
    d.extend_from_slice(hash);
    d.extend_from_slice(&[0x92, 0x01, alg]);
    d
}

fn mask(alg: HashAlg) -> Vec<u8> {
    alg.mask().to_be_bytes().to_vec()
}

fn raw_sig(resp: &[u8], style: SignatureLengthStyle) -> Vec<u8> {
    match style {
        SignatureLengthStyle::OneByte => {
            assert_eq!(&resp[..2], &[0x33, 0x40]);
            assert_eq!(resp.len(), 66);
            resp[2..].to_vec()
        }
        SignatureLengthStyle::TwoByte => {
            assert_eq!(&resp[..3], &[0x33, 0x00, 0x40]);
            assert_eq!(resp.len(), 67);
            resp[3..].to_vec()
        }
    }
}

fn verify(card: &Card, digest: &[u8], rs: &[u8]) -> bool {
    let sig = Signature::from_slice(rs).unwrap();
    client_vk(card).verify_prehash(digest, &sig).is_ok()
}

/// Update APDUs for a message in the given mode; returns the list of data fields and
/// the expected digest.
fn update_blocks(alg: HashAlg, mode: u8, msg: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let digest = alg.digest(msg);
    let blocks = match mode {
        1 => {
            let mut v = Vec::new();
            let chunks: Vec<&[u8]> = if msg.is_empty() {
                vec![&[][..]]
            } else {
                msg.chunks(chunk).collect()
            };
            for c in chunks {
                let mut d = vec![0x9B];
                if c.len() < 0x80 {
                    d.push(c.len() as u8);
                } else {
                    d.extend_from_slice(&[0x81, c.len() as u8]);
                }
                d.extend_from_slice(c);
                v.push(d);
            }
            v
        }
        2 => {
            let (st, n, tail) = hash::midstate(alg, msg);
            let mut d = vec![0x9A, tail.len() as u8];
            d.extend_from_slice(tail);
            d.extend_from_slice(&[0x9C, st.len() as u8]);
            d.extend_from_slice(&st);
            d.extend_from_slice(&[0x9D, 0x04]);
            d.extend_from_slice(&(n as u32).to_be_bytes());
            vec![d]
        }
        _ => {
            let mut d = vec![0x9E, digest.len() as u8];
            d.extend_from_slice(&digest);
            vec![d]
        }
    };
    (blocks, digest)
}

fn do_sign(
    card: &mut Card,
    ch: u8,
    prop: bool,
    session: u8,
    alg: HashAlg,
    mode: u8,
    msg: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let c = cla(ch, prop);
    let (_, s) = tx(
        card,
        &apdu(
            c,
            0x2A,
            0x00,
            session,
            &sign_init_data(&[0x84, 1, 1], mode, &mask(alg), 4),
            None,
        ),
    );
    assert_eq!(s, 0x9000);
    let (blocks, digest) = update_blocks(alg, mode, msg, 100);
    let n = blocks.len();
    let mut last = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let p1 = if i + 1 == n { 0x80 } else { 0x00 };
        let (d, s) = tx(card, &apdu(c, 0x2B, p1, session, b, Some(0)));
        assert_eq!(s, 0x9000, "update block {i}");
        if i + 1 < n {
            assert!(d.is_empty());
        }
        last = d;
    }
    (last, digest)
}

// ------------------------------------------------------------------ CLA / channels

#[test]
fn cla_encoding_all_channels_both_classes() {
    let mut c = card();
    for ch in 1..=19u8 {
        let (d, s) = txh(&mut c, "0070000001");
        assert_eq!((d, s), (vec![ch], 0x9000));
    }
    assert_eq!(sw(&mut c, "0070000001"), 0x6A81);
    for ch in 0..=19u8 {
        for prop in [false, true] {
            let cl = cla(ch, prop);
            // SELECT only with inter-industry class.
            let (_, s) = tx(&mut c, &apdu(cla(ch, false), 0xA4, 4, 0, &h(AID), None));
            assert_eq!(s, 0x9000);
            let (d, s) = tx(&mut c, &apdu(cl, 0xCB, 0, 0, &[], Some(0)));
            assert_eq!(s, 0x9000, "channel {ch} prop {prop}");
            assert_eq!(d.len(), 68);
        }
    }
    assert_eq!(cla(4, false), 0x40);
    assert_eq!(cla(19, true), 0xCF);
    assert_eq!(cla(3, true), 0x83);
    assert!(iotsafe_sim::cla_for_channel(20, false).is_none());
}

#[test]
fn unsupported_classes() {
    let mut c = card();
    for cl in [
        0xA0u8, 0x90, 0x20, 0x04, 0x0C, 0x10, 0x60, 0xE0, 0xFF, 0x84, 0x50,
    ] {
        assert_eq!(
            tx(&mut c, &apdu(cl, 0xA4, 4, 0, &h(AID), None)).1,
            0x6E00,
            "CLA {cl:02X}"
        );
    }
}

#[test]
fn unopened_channel() {
    let mut c = card();
    assert_eq!(sw(&mut c, "01A4040007A0000005590010"), 0x6881);
    assert_eq!(sw(&mut c, "CFCB000000"), 0x6881);
    assert_eq!(sw(&mut c, "4370800300"), 0x6881);
    let mut p = default_profile();
    p.max_channels = 3;
    let mut c = card_profile(p, CardOptions::default());
    for ch in 1..=3u8 {
        assert_eq!(txh(&mut c, "0070000001").0, vec![ch]);
    }
    assert_eq!(sw(&mut c, "0070000001"), 0x6A81);
    assert_eq!(sw(&mut c, "40CB000000"), 0x6881);
    assert_eq!(sw(&mut c, "0070000401"), 0x6A86);
}

#[test]
fn applet_not_selected_and_unknown_ins() {
    let mut c = card();
    assert_eq!(sw(&mut c, "80CB000000"), 0x6D00);
    assert_eq!(sw(&mut c, "00CB000000"), 0x6D00);
    assert_eq!(sw(&mut c, "0084000008"), 0x6D00);
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    assert_eq!(tx(&mut c, &apdu(cl, 0x12, 0, 0, &[], None)).1, 0x6D00);
    assert_eq!(tx(&mut c, &apdu(cl, 0x4C, 0, 0, &[1, 2], None)).1, 0x6D00);
    // COMPUTE PRF exists (feature set 2): bad data, not an unknown INS.
    assert_eq!(tx(&mut c, &apdu(cl, 0x48, 0, 0, &[1, 2], None)).1, 0x6A80);
    // proprietary-class MANAGE CHANNEL / SELECT are applet commands: unknown.
    assert_eq!(tx(&mut c, &apdu(cl, 0x70, 0, 0, &[], Some(1))).1, 0x6D00);
    assert_eq!(tx(&mut c, &apdu(cl, 0xA4, 4, 0, &h(AID), None)).1, 0x6D00);
    // Basic channel has no applet selected.
    assert_eq!(sw(&mut c, "80CB000000"), 0x6D00);
    // A channel opened but not selected.
    let (d, _) = txh(&mut c, "0070000001");
    assert_eq!(
        tx(&mut c, &apdu(cla(d[0], true), 0xCB, 0, 0, &[], None)).1,
        0x6D00
    );
}

#[test]
fn manage_channel_variants() {
    let mut c = card();
    assert_eq!(txh(&mut c, "0070000000"), (vec![1], 0x9000)); // Le 00
    assert_eq!(txh(&mut c, "00700000"), (vec![2], 0x9000)); // no Le
    assert_eq!(txh(&mut c, "0070000501"), (vec![], 0x9000)); // specific
    assert_eq!(sw(&mut c, "0070000501"), 0x6A81); // already open
    assert_eq!(sw(&mut c, "0070001401"), 0x6A86); // 20 > max
    assert_eq!(txh(&mut c, "0070000001"), (vec![3], 0x9000));
    // close from basic (with and without Le)
    assert_eq!(sw(&mut c, "0070800100"), 0x9000);
    assert_eq!(sw(&mut c, "01CB000000"), 0x6881);
    // close from the channel itself
    assert_eq!(sw(&mut c, "02708002"), 0x9000);
    assert_eq!(sw(&mut c, "02CB000000"), 0x6881);
    // lowest free again
    assert_eq!(txh(&mut c, "0070000001").0, vec![1]);
    assert_eq!(sw(&mut c, "0070800200"), 0x6A86); // not open
    assert_eq!(sw(&mut c, "0070800000"), 0x6A86); // basic
    assert_eq!(sw(&mut c, "0070400000"), 0x6A86); // bad P1
    assert_eq!(sw(&mut c, "007000000101"), 0x6700); // data
    // Channel 5 opened specifically is usable.
    assert_eq!(sw(&mut c, "41A4040007A0000005590010"), 0x9000);
    assert_eq!(sw(&mut c, "C1CB000044"), 0x9000);
}

#[test]
fn open_from_logical_channel_inherits_applet() {
    let mut c = card();
    let ch = open_select(&mut c);
    let (d, s) = tx(&mut c, &apdu(cla(ch, false), 0x70, 0, 0, &[], Some(1)));
    assert_eq!(s, 0x9000);
    assert_eq!(
        tx(&mut c, &apdu(cla(d[0], true), 0xCB, 0, 0, &[], None)).1,
        0x9000
    );
}

#[test]
fn select_variants() {
    let mut c = card();
    assert_eq!(sw(&mut c, "00A4040007A000000559001000"), 0x9000); // with Le
    assert_eq!(sw(&mut c, "00A4040007A000000559001100"), 0x6A82);
    assert_eq!(sw(&mut c, "00A4000002 3F00"), 0x6A86);
    assert_eq!(sw(&mut c, "00A40401 07A0000005590010"), 0x6A86);
    assert_eq!(sw(&mut c, "00A40400"), 0x6700);
    assert_eq!(sw(&mut c, "00A4040C07A0000005590010"), 0x9000);
    // The basic channel now has the applet.
    assert_eq!(sw(&mut c, "80CB000000"), 0x9000);
    // AID override
    let mut c = card_with(CardOptions {
        aid: Some(h("A000000030 53F124 0177010149 5341")),
        ..CardOptions::default()
    });
    assert_eq!(sw(&mut c, "00A4040007A0000005590010"), 0x6A82);
    assert_eq!(
        sw(&mut c, "00A404000FA0000000 3053F1240177010149534100"),
        0x9000
    );
}

#[test]
fn select_resets_channel_state() {
    let mut c = card();
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    let init = sign_init_data(&[0x84, 1, 1], 3, &[0, 1], 4);
    assert_eq!(tx(&mut c, &apdu(cl, 0x2A, 0, 1, &init, None)).1, 0x9000);
    assert_eq!(
        tx(&mut c, &apdu(cla(ch, false), 0xA4, 4, 0, &h(AID), None)).1,
        0x9000
    );
    let mut upd = vec![0x9E, 0x20];
    upd.extend_from_slice(&[7; 32]);
    assert_eq!(tx(&mut c, &apdu(cl, 0x2B, 0x80, 1, &upd, None)).1, 0x6985);
}

#[test]
fn malformed_lengths() {
    let mut c = card();
    open_select(&mut c);
    assert_eq!(c.transmit(&[]), vec![0x67, 0x00]);
    assert_eq!(c.transmit(&[0x81]), vec![0x67, 0x00]);
    assert_eq!(c.transmit(&[0x81, 0xCB, 0x00]), vec![0x67, 0x00]);
    assert_eq!(sw(&mut c, "81B0000005830102"), 0x6700); // Lc too big
    assert_eq!(sw(&mut c, "81B000000283010200 00"), 0x6700); // Lc too small
    assert_eq!(sw(&mut c, "81B00000000003830102"), 0x6700); // extended
    assert_eq!(sw(&mut c, "81CB00000101"), 0x6700); // data where none allowed
    assert_eq!(sw(&mut c, "8184000001 01 08"), 0x6700);
    assert_eq!(sw(&mut c, "81840000"), 0x6700); // GET RANDOM without Le
}

// ------------------------------------------------------------------ GET DATA

#[test]
fn application_info_both_tag_sets() {
    for (tags, cf, ka) in [
        (AppInfoTags::Orange, 0x90, 0x93),
        (AppInfoTags::QtApplet, 0x61, 0x6F),
    ] {
        let mut c = card_with(CardOptions {
            app_info_tags: tags,
            ..CardOptions::default()
        });
        let ch = open_select(&mut c);
        let (d, s) = tx(&mut c, &apdu(cla(ch, true), 0xCB, 0, 0, &[], Some(0x44)));
        assert_eq!(s, 0x9000);
        assert_eq!(d.len(), 68);
        let t = tlvs(&d);
        let tags_seen: Vec<u8> = t.iter().map(|x| x.0).collect();
        assert_eq!(
            tags_seen,
            vec![
                0x10, 0x11, 0xB1, 0xB2, 0xB3, 0xB4, cf, 0x91, 0x92, ka, 0x94, 0xB7
            ]
        );
        assert_eq!(t[1].1.len(), 32);
        assert_eq!(t[7].1, vec![0x00, 0x07]);
        assert_eq!(t[8].1, vec![0x04]);
        assert_eq!(t[11].1, vec![4]);
        // Le too small -> 6C44, then OK.
        let (d, s) = tx(&mut c, &apdu(cla(ch, true), 0xCB, 0, 0, &[], Some(0x10)));
        assert_eq!((d.len(), s), (0, 0x6C44));
        assert_eq!(
            tx(&mut c, &apdu(cla(ch, false), 0xCB, 0, 0, &[], None))
                .0
                .len(),
            68
        );
        assert_eq!(
            tx(&mut c, &apdu(cla(ch, true), 0xCB, 0, 1, &[], None)).1,
            0x6A86
        );
        assert_eq!(
            tx(&mut c, &apdu(cla(ch, true), 0xCB, 0x05, 0, &[], None)).1,
            0x6A86
        );
    }
}

/// Splits an object list into (class tag, info structure) pairs, for any style.
fn split_list(data: &[u8], style: ObjectListStyle) -> Vec<(u8, Vec<u8>)> {
    let class_of = |tag: u8| match tag {
        0x74 | 0x84 => 0xC1,
        0x75 | 0x85 => 0xC2,
        0x73 | 0x83 => 0xC3,
        0x76 | 0x86 => 0xC4,
        _ => 0,
    };
    let split_flat = |d: &[u8]| -> Vec<(u8, Vec<u8>)> {
        // Objects start at a label tag, or at an ID tag not preceded by its label.
        let mut out: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut prev_label_class = 0;
        for (tag, val) in tlvs(d) {
            let cls = class_of(tag);
            let is_label = matches!(tag, 0x73..=0x76);
            let starts = cls != 0 && (is_label || prev_label_class != cls);
            prev_label_class = if is_label { cls } else { 0 };
            let mut enc = vec![tag];
            if val.len() >= 0x80 {
                enc.push(0x81);
            }
            enc.push(val.len() as u8);
            enc.extend_from_slice(&val);
            if starts {
                out.push((cls, enc));
            } else if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(&enc);
            }
        }
        out
    };
    match style {
        ObjectListStyle::PerObject => tlvs(data),
        ObjectListStyle::PerClass => tlvs(data)
            .into_iter()
            .flat_map(|(tag, v)| {
                split_flat(&v)
                    .into_iter()
                    .map(move |(cls, o)| {
                        assert_eq!(cls, tag);
                        (tag, o)
                    })
                    .collect::<Vec<_>>()
            })
            .collect(),
        ObjectListStyle::NoWrapper => split_flat(data),
    }
}

fn profile_with_secret() -> Profile {
    let mut p = default_profile();
    p.secret_keys.push(SecretKey {
        id: vec![0x06],
        label: Some(b"psk".to_vec()),
        key_type: 0xA0,
        state: ObjectState::Activated,
        access: 0x03,
        crypto_functions: 0x08,
        key_derivation_algos: 0x01,
        value: Some(vec![0x11; 32]),
    });
    p
}

fn read_list(c: &mut Card, ch: u8) -> (Vec<u8>, usize) {
    let mut all = Vec::new();
    let (d, mut s) = tx(c, &apdu(cla(ch, true), 0xCB, 1, 0, &[], Some(0)));
    all.extend_from_slice(&d);
    let mut pages = 1;
    while s == 0x6300 {
        let (d, s2) = tx(c, &apdu(cla(ch, true), 0xCB, 1, 1, &[], Some(0)));
        all.extend_from_slice(&d);
        s = s2;
        pages += 1;
    }
    assert_eq!(s, 0x9000);
    (all, pages)
}

#[test]
fn object_list_styles() {
    let expected_private =
        h("7406636C69656E74 840101 600102 4A0101 4B0113 4E0101 610105 920104 91020007 6F0101");
    for style in [
        ObjectListStyle::PerObject,
        ObjectListStyle::PerClass,
        ObjectListStyle::NoWrapper,
    ] {
        let mut c = card_profile(
            profile_with_secret(),
            CardOptions {
                object_list_style: style,
                object_list_page_size: 4096,
                ..CardOptions::default()
            },
        );
        let ch = open_select(&mut c);
        // Whole list in one go (> 256 bytes: 61xx chaining).
        let (mut d, s) = tx(&mut c, &apdu(cla(ch, true), 0xCB, 1, 0, &[], Some(0)));
        let mut s = s;
        while s >> 8 == 0x61 {
            let (more, s2) = tx(&mut c, &apdu(cla(ch, true), 0xC0, 0, 0, &[], Some(s as u8)));
            d.extend_from_slice(&more);
            s = s2;
        }
        assert_eq!(s, 0x9000);
        let objs = split_list(&d, style);
        let classes: Vec<u8> = objs.iter().map(|o| o.0).collect();
        match style {
            ObjectListStyle::PerObject => {
                let c4 = [0xC4; 5];
                assert_eq!(
                    classes,
                    [&[0xC1, 0xC1, 0xC2, 0xC2, 0xC2][..], &c4, &[0xC3, 0xC3]].concat()
                )
            }
            _ => assert_eq!(
                classes,
                [&[0xC1, 0xC1, 0xC2, 0xC2, 0xC2, 0xC3, 0xC3][..], &[0xC4; 5]].concat()
            ),
        }
        assert_eq!(objs[0].1, expected_private, "{style:?}");
        let file = objs.iter().find(|o| o.0 == 0xC3).unwrap();
        let t = tlvs(&file.1);
        let order: Vec<u8> = t.iter().map(|x| x.0).collect();
        assert_eq!(order, vec![0x73, 0x83, 0x60, 0x4A, 0x21, 0x20]);
        let size = c.profile().file(&[2]).unwrap().content.len();
        assert_eq!(t[5].1, (size as u16).to_be_bytes().to_vec());
        let secret = objs.iter().find(|o| o.0 == 0xC4).unwrap();
        let order: Vec<u8> = tlvs(&secret.1).iter().map(|x| x.0).collect();
        assert_eq!(order, vec![0x76, 0x86, 0x60, 0x4A, 0x4B, 0x61, 0x94]);
        let peer = objs
            .iter()
            .find(|o| o.0 == 0xC2 && o.1.starts_with(&h("7504 70656572")))
            .unwrap();
        assert_eq!(tlvs(&peer.1)[3], (0x4A, vec![0x00]));
    }
}

#[test]
fn object_list_paging() {
    for page in [1usize, 17, 50, 255] {
        let mut c = card_with(CardOptions {
            object_list_page_size: page,
            ..CardOptions::default()
        });
        let mut full = card_with(CardOptions {
            object_list_page_size: 100_000,
            ..CardOptions::default()
        });
        let ch = open_select(&mut c);
        let (all, pages) = read_list(&mut c, ch);
        let chf = open_select(&mut full);
        let mut expect = Vec::new();
        let (d, mut s) = tx(&mut full, &apdu(cla(chf, true), 0xCB, 1, 0, &[], None));
        expect.extend_from_slice(&d);
        while s >> 8 == 0x61 {
            let (d, s2) = tx(&mut full, &apdu(cla(chf, true), 0xC0, 0, 0, &[], Some(0)));
            expect.extend_from_slice(&d);
            s = s2;
        }
        assert_eq!(all, expect, "page {page}");
        assert_eq!(pages, all.len().div_ceil(page));
    }
    let mut c = card_with(CardOptions {
        object_list_page_size: 50,
        ..CardOptions::default()
    });
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    // continuation without a started list
    assert_eq!(tx(&mut c, &apdu(cl, 0xCB, 1, 1, &[], None)).1, 0x6985);
    assert_eq!(tx(&mut c, &apdu(cl, 0xCB, 1, 2, &[], None)).1, 0x6A86);
    let (p1, s) = tx(&mut c, &apdu(cl, 0xCB, 1, 0, &[], None));
    assert_eq!((p1.len(), s), (50, 0x6300));
    // Le too small: 6C32, cursor kept
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCB, 1, 1, &[], Some(10))),
        (vec![], 0x6C32)
    );
    let (p2, s) = tx(&mut c, &apdu(cl, 0xCB, 1, 1, &[], Some(0x32)));
    assert_eq!((p2.len(), s), (50, 0x6300));
    // another command drops the cursor
    assert_eq!(tx(&mut c, &apdu(cl, 0xCB, 0, 0, &[], None)).1, 0x9000);
    assert_eq!(tx(&mut c, &apdu(cl, 0xCB, 1, 1, &[], None)).1, 0x6985);
}

#[test]
fn single_object_info() {
    let mut c = card_profile(profile_with_secret(), CardOptions::default());
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    let get = |c: &mut Card, p1: u8, data: &str| tx(c, &apdu(cl, 0xCB, p1, 0, &h(data), Some(0)));
    let (d, s) = get(&mut c, 0xC1, "840101");
    assert_eq!(s, 0x9000);
    assert_eq!(
        d,
        iotsafe_sim::card::private_key_info(&c.profile().private_keys[0])
    );
    assert_eq!(get(&mut c, 0xC1, "7406636C69656E74").0, d);
    let (d, s) = get(&mut c, 0xC2, "850105");
    assert_eq!(s, 0x9000);
    assert_eq!(&d[..6], &h("7504706565728501 05")[..6]);
    let (d, _) = get(&mut c, 0xC3, "830102");
    let t = tlvs(&d);
    assert_eq!(
        t[5].1,
        (c.profile().files[0].content.len() as u16).to_be_bytes()
    );
    assert_eq!(
        get(&mut c, 0xC3, "7302 6361").0,
        get(&mut c, 0xC3, "830103").0
    );
    assert_eq!(get(&mut c, 0xC4, "860106").1, 0x9000);
    assert_eq!(get(&mut c, 0xC4, "7603 70736B").1, 0x9000);
    assert_eq!(get(&mut c, 0xC1, "840109").1, 0x6A82);
    assert_eq!(get(&mut c, 0xC1, "7403 787878").1, 0x6A82);
    assert_eq!(get(&mut c, 0xC1, "850101").1, 0x6A80); // wrong tag family
    assert_eq!(get(&mut c, 0xC1, "840101 7406636C69656E74").1, 0x6A80); // both
    assert_eq!(get(&mut c, 0xC1, "840201").1, 0x6A80); // truncated TLV
    assert_eq!(get(&mut c, 0xC1, "8400").1, 0x6A80); // empty id
    assert_eq!(tx(&mut c, &apdu(cl, 0xCB, 0xC1, 0, &[], None)).1, 0x6A80);
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCB, 0xC1, 1, &h("840101"), None)).1,
        0x6A86
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCB, 0xC5, 0, &h("840101"), None)).1,
        0x6A86
    );
}

// ------------------------------------------------------------------ READ FILE etc.

#[test]
fn read_file() {
    let mut c = card();
    let ch = open_select(&mut c);
    let content = c.profile().file(&[2]).unwrap().content.clone();
    assert!(content.len() > 256);
    for prop in [false, true] {
        let cl = cla(ch, prop);
        // 256-byte chunks with Le 00
        let mut got = Vec::new();
        loop {
            let off = got.len();
            let (d, s) = tx(
                &mut c,
                &apdu(cl, 0xB0, (off >> 8) as u8, off as u8, &h("830102"), Some(0)),
            );
            assert_eq!(s, 0x9000);
            assert!(d.len() <= 256);
            if d.is_empty() {
                break;
            }
            got.extend_from_slice(&d);
        }
        assert_eq!(got, content);
        // 50-byte chunks by label, without Le for the last
        let mut got = Vec::new();
        while got.len() < content.len() {
            let off = got.len();
            let (d, s) = tx(
                &mut c,
                &apdu(
                    cl,
                    0xB0,
                    (off >> 8) as u8,
                    off as u8,
                    &h("7306636C69656E74"),
                    Some(50),
                ),
            );
            assert_eq!(s, 0x9000);
            got.extend_from_slice(&d);
        }
        assert_eq!(got, content);
    }
    let cl = cla(ch, true);
    let n = content.len();
    let (d, s) = tx(&mut c, &apdu(cl, 0xB0, 0, 0, &h("830102"), None));
    assert_eq!((d.len(), s), (256, 0x9000));
    let (d, s) = tx(
        &mut c,
        &apdu(cl, 0xB0, (n >> 8) as u8, n as u8, &h("830102"), None),
    );
    assert_eq!((d.len(), s), (0, 0x9000));
    let m = n + 1;
    assert_eq!(
        tx(
            &mut c,
            &apdu(cl, 0xB0, (m >> 8) as u8, m as u8, &h("830102"), None)
        )
        .1,
        0x6A86
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB0, 0, 0, &h("830109"), None)).1,
        0x6A82
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB0, 0, 0, &h("840102"), None)).1,
        0x6A80
    );
    assert_eq!(tx(&mut c, &apdu(cl, 0xB0, 0, 0, &[], Some(0))).1, 0x6A80);

    let mut p = default_profile();
    p.files[0].state = ObjectState::Deactivated;
    p.files[1].access = 0x00;
    let mut c = card_profile(p, CardOptions::default());
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB0, 0, 0, &h("830102"), None)).1,
        0x6985
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB0, 0, 0, &h("830103"), None)).1,
        0x6985
    );
}

#[test]
fn read_public_key() {
    let mut c = card();
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    let point = c.profile().public_key(&[1]).unwrap().point.clone().unwrap();
    let (d, s) = tx(&mut c, &apdu(cl, 0xCD, 0, 0, &h("850101"), Some(0)));
    assert_eq!(s, 0x9000);
    assert_eq!(&d[..7], &h("34454943864104")[..]);
    assert_eq!(&d[6..], &point[..]);
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCD, 0, 0, &h("7506636C69656E74"), None)).0,
        d
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCD, 0, 0, &h("850105"), None)).1,
        0x6985
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCD, 0, 0, &h("850109"), None)).1,
        0x6A82
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCD, 1, 0, &h("850101"), None)).1,
        0x6A86
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCD, 0, 0, &h("850101"), Some(0x10))).1,
        0x6C47
    );
}

#[test]
fn get_random() {
    let mut c = card();
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    let (a, s) = tx(&mut c, &apdu(cl, 0x84, 0, 0, &[], Some(8)));
    assert_eq!((a.len(), s), (8, 0x9000));
    let (b, _) = tx(&mut c, &apdu(cla(ch, false), 0x84, 0, 0, &[], Some(8)));
    assert_ne!(a, b);
    let (d, s) = tx(&mut c, &apdu(cl, 0x84, 0, 0, &[], Some(0)));
    assert_eq!((d.len(), s), (256, 0x9000));
    assert_eq!(tx(&mut c, &apdu(cl, 0x84, 1, 0, &[], Some(8))).1, 0x6A86);
}

// ------------------------------------------------------------------ signatures

#[test]
fn sign_all_modes_and_hashes() {
    let msgs: Vec<Vec<u8>> = vec![
        vec![],
        b"abc".to_vec(),
        (0..300u32).map(|i| i as u8).collect(),
        (0..1000u32).map(|i| (i * 13) as u8).collect(),
    ];
    for style in [SignatureLengthStyle::OneByte, SignatureLengthStyle::TwoByte] {
        let mut c = card_with(CardOptions {
            signature_length_style: style,
            ..CardOptions::default()
        });
        let ch = open_select(&mut c);
        for alg in HashAlg::ALL {
            for mode in [1u8, 2, 3] {
                for msg in &msgs {
                    if mode == 2 && msg.len() > 200 + alg.block_len() {
                        continue; // last block must fit one APDU
                    }
                    let (resp, digest) = do_sign(&mut c, ch, mode % 2 == 0, 1, alg, mode, msg);
                    let rs = raw_sig(&resp, style);
                    assert!(
                        verify(&c, &digest, &rs),
                        "{alg:?} mode {mode} len {}",
                        msg.len()
                    );
                }
            }
        }
    }
}

#[test]
fn sign_known_trace_shape() {
    // QT-tool trace shape: full text, two APDUs.
    let mut c = card();
    assert_eq!(sw(&mut c, "00A4040007A0000005590010"), 0x9000);
    assert_eq!(
        sw(
            &mut c,
            "802A00010E840101A10101910200019201040A"[..36].as_ref()
        ),
        0x6700
    );
    assert_eq!(sw(&mut c, "802A00010D840101A1010191020001920104"), 0x9000);
    let (d, s) = txh(&mut c, "802B80010A9B080102030405060708");
    assert_eq!(s, 0x9000);
    let digest = HashAlg::Sha256.digest(&h("0102030405060708"));
    assert!(verify(&c, &digest, &d[2..]));
    // session closed automatically
    assert_eq!(sw(&mut c, "802B80010A9B080102030405060708"), 0x6985);
    assert_eq!(sw(&mut c, "802A0101"), 0x9000);
    assert_eq!(sw(&mut c, "802A010100"), 0x9000);
}

#[test]
fn sign_ber_lengths_and_one_byte_hash() {
    let mut c = card();
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    // 91 with one byte, full text with 81 and (non-minimal) 82 lengths across blocks.
    let init = h("840101 A10101 910101 920104");
    assert_eq!(tx(&mut c, &apdu(cl, 0x2A, 0, 2, &init, None)).1, 0x9000);
    let part1 = vec![0x55u8; 200];
    let mut d1 = vec![0x9B, 0x81, 200];
    d1.extend_from_slice(&part1);
    assert_eq!(tx(&mut c, &apdu(cl, 0x2B, 0x00, 2, &d1, None)).1, 0x9000);
    let mut d2 = vec![0x9B, 0x82, 0x00, 0x05];
    d2.extend_from_slice(b"hello");
    d2.extend_from_slice(&[0x9B, 0x02, b'!', b'!']);
    let (resp, s) = tx(&mut c, &apdu(cl, 0x2B, 0x80, 2, &d2, Some(0x10))); // Le ignored
    assert_eq!(s, 0x9000);
    let mut msg = part1.clone();
    msg.extend_from_slice(b"hello!!");
    assert!(verify(&c, &HashAlg::Sha256.digest(&msg), &resp[2..]));
}

#[test]
fn sign_errors() {
    let mut c = card();
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    let init =
        |c: &mut Card, p1: u8, p2: u8, d: &str| tx(c, &apdu(cl, 0x2A, p1, p2, &h(d), None)).1;
    assert_eq!(init(&mut c, 0, 1, "840101 A10101 91020003 920104"), 0x6A80); // hash mask
    assert_eq!(init(&mut c, 0, 1, "840101 A10101 91020008 920104"), 0x6A80);
    assert_eq!(init(&mut c, 0, 1, "840101 A10101 91020001 920101"), 0x6A80); // RSA
    assert_eq!(init(&mut c, 0, 1, "840101 A10104 91020001 920104"), 0x6A80); // mode
    assert_eq!(init(&mut c, 0, 1, "840101 91020001 920104"), 0x6A80); // no A1
    assert_eq!(init(&mut c, 0, 1, "840101 A10101 920104"), 0x6A80); // no 91
    assert_eq!(init(&mut c, 0, 1, "840101 A10101 91020001"), 0x6A80); // no 92
    assert_eq!(init(&mut c, 0, 1, "A10101 91020001 920104"), 0x6A80); // no key
    assert_eq!(init(&mut c, 0, 1, "840101 A101"), 0x6A80); // malformed
    assert_eq!(init(&mut c, 0, 1, "840109 A10101 91020001 920104"), 0x6A82);
    assert_eq!(
        init(&mut c, 0, 1, "7403787878 A10101 91020001 920104"),
        0x6A82
    );
    assert_eq!(init(&mut c, 0, 1, "840104 A10101 91020001 920104"), 0x6985); // no sign usage
    assert_eq!(init(&mut c, 2, 1, "840101 A10101 91020001 920104"), 0x6A86);
    assert_eq!(
        init(&mut c, 0, 0x10, "840101 A10101 91020001 920104"),
        0x6A86
    );
    // update errors
    let upd = |c: &mut Card, p1: u8, p2: u8, d: &str| tx(c, &apdu(cl, 0x2B, p1, p2, &h(d), None)).1;
    assert_eq!(upd(&mut c, 0x80, 3, "9B0101"), 0x6985); // not open
    assert_eq!(init(&mut c, 0, 3, "840101 A10103 91020001 920104"), 0x9000);
    assert_eq!(upd(&mut c, 0x80, 3, "9E03010203"), 0x6A80); // wrong hash length
    assert_eq!(
        upd(&mut c, 0x00, 3, &format!("9E20{}", "00".repeat(32))),
        0x6A86
    ); // not last
    assert_eq!(upd(&mut c, 0x40, 3, "9B0101"), 0x6A86);
    assert_eq!(upd(&mut c, 0x80, 0x11, "9B0101"), 0x6A86);
    assert_eq!(upd(&mut c, 0x80, 3, "9B0101"), 0x6A80); // wrong tag for mode
    assert_eq!(upd(&mut c, 0x80, 3, "9E2001"), 0x6A80); // malformed
    assert_eq!(upd(&mut c, 0x80, 3, ""), 0x6A80);
    // session still open after errors: sign works
    assert_eq!(
        upd(&mut c, 0x80, 3, &format!("9E20{}", "AB".repeat(32))),
        0x9000
    );
    // mode 2 errors
    assert_eq!(init(&mut c, 0, 4, "840101 A10102 91020001 920104"), 0x9000);
    let st = "00".repeat(32);
    assert_eq!(
        upd(&mut c, 0x80, 4, &format!("9A0101 9C20{st} 9D0400000003")),
        0x6A80
    ); // count
    assert_eq!(
        upd(&mut c, 0x80, 4, &format!("9A0101 9C1F{}", "00".repeat(31))),
        0x6A80
    );
    assert_eq!(upd(&mut c, 0x80, 4, "9A0101 9D0400000000"), 0x6A80); // no state
    assert_eq!(
        upd(&mut c, 0x80, 4, &format!("9A0101 9C20{st} 9D03000000")),
        0x6A80
    );
    // deactivated key
    let mut p = default_profile();
    p.private_keys[0].state = ObjectState::Deactivated;
    let mut c2 = card_profile(p, CardOptions::default());
    let ch2 = open_select(&mut c2);
    let d = sign_init_data(&[0x84, 1, 1], 3, &[0, 1], 4);
    assert_eq!(
        tx(&mut c2, &apdu(cla(ch2, true), 0x2A, 0, 1, &d, None)).1,
        0x6985
    );
    // hash not allowed for key
    let mut p = default_profile();
    p.private_keys[0].hash_algos = 0x0001;
    let mut c3 = card_profile(p, CardOptions::default());
    let ch3 = open_select(&mut c3);
    let d = sign_init_data(&[0x84, 1, 1], 3, &[0, 2], 4);
    assert_eq!(
        tx(&mut c3, &apdu(cla(ch3, true), 0x2A, 0, 1, &d, None)).1,
        0x6985
    );
}

#[test]
fn session_limits_and_per_channel_sessions() {
    let mut c = card();
    let ch1 = open_select(&mut c);
    let ch2 = open_select(&mut c);
    let d = sign_init_data(&[0x84, 1, 1], 3, &[0, 1], 4);
    for s in 0..3 {
        assert_eq!(
            tx(&mut c, &apdu(cla(ch1, true), 0x2A, 0, s, &d, None)).1,
            0x9000
        );
    }
    // session 0 on another channel: independent, 4th session overall
    assert_eq!(
        tx(&mut c, &apdu(cla(ch2, true), 0x2A, 0, 0, &d, None)).1,
        0x9000
    );
    // 5th -> 6989; replacing an open one is fine
    assert_eq!(
        tx(&mut c, &apdu(cla(ch2, true), 0x2A, 0, 1, &d, None)).1,
        0x6989
    );
    assert_eq!(
        tx(&mut c, &apdu(cla(ch1, true), 0x2A, 0, 2, &d, None)).1,
        0x9000
    );
    // close one, then open works
    assert_eq!(
        tx(&mut c, &apdu(cla(ch1, true), 0x2A, 1, 2, &[], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(cla(ch2, true), 0x2A, 0, 1, &d, None)).1,
        0x9000
    );
    // sessions are per channel: sign on ch2 session 0 and ch1 session 0 separately
    for ch in [ch1, ch2] {
        let mut u = vec![0x9E, 0x20];
        u.extend_from_slice(&[ch; 32]);
        let (r, s) = tx(&mut c, &apdu(cla(ch, true), 0x2B, 0x80, 0, &u, None));
        assert_eq!(s, 0x9000);
        assert!(verify(&c, &[ch; 32], &r[2..]));
    }
    // closing the channel frees its sessions
    assert_eq!(tx(&mut c, &apdu(0, 0x70, 0x80, ch1, &[], None)).1, 0x9000);
    let ch3 = open_select(&mut c);
    for s in 5..7 {
        assert_eq!(
            tx(&mut c, &apdu(cla(ch3, true), 0x2A, 0, s, &d, None)).1,
            0x9000
        );
    }
}

#[test]
fn verify_signature() {
    for style in [SignatureLengthStyle::OneByte, SignatureLengthStyle::TwoByte] {
        let mut c = card();
        let ch = open_select(&mut c);
        let cl = cla(ch, true);
        let sk =
            SigningKey::from_slice(c.profile().private_keys[0].private.as_ref().unwrap()).unwrap();
        for alg in HashAlg::ALL {
            for mode in [1u8, 2, 3] {
                let msg = b"verify me please".to_vec();
                let (blocks, digest) = update_blocks(alg, mode, &msg, 100);
                let sig: Signature = sk.sign_prehash(&digest).unwrap();
                for good in [true, false] {
                    let mut rs = sig.to_bytes().to_vec();
                    if !good {
                        rs[10] ^= 1;
                    }
                    let init = sign_init_data(&[0x85, 1, 1], mode, &mask(alg), 4);
                    assert_eq!(tx(&mut c, &apdu(cl, 0x2C, 0, 2, &init, None)).1, 0x9000);
                    let mut last = blocks[0].clone();
                    match style {
                        SignatureLengthStyle::OneByte => last.extend_from_slice(&[0x33, 0x40]),
                        SignatureLengthStyle::TwoByte => {
                            last.extend_from_slice(&[0x33, 0x00, 0x40])
                        }
                    }
                    last.extend_from_slice(&rs);
                    let (d, s) = tx(&mut c, &apdu(cl, 0x2D, 0x80, 2, &last, None));
                    assert!(d.is_empty());
                    assert_eq!(s, if good { 0x9000 } else { 0x6D01 }, "{alg:?} {mode}");
                    // session closed
                    assert_eq!(tx(&mut c, &apdu(cl, 0x2D, 0x80, 2, &last, None)).1, 0x6985);
                }
            }
        }
        // multi-block full text + errors
        let init = sign_init_data(
            &[0x75, 6, b'c', b'l', b'i', b'e', b'n', b't'],
            1,
            &[0, 1],
            4,
        );
        assert_eq!(tx(&mut c, &apdu(cl, 0x2C, 0, 1, &init, None)).1, 0x9000);
        assert_eq!(
            tx(&mut c, &apdu(cl, 0x2D, 0, 1, &h("9B03616263"), None)).1,
            0x9000
        );
        // 33 on a non-last block is not allowed
        assert_eq!(
            tx(&mut c, &apdu(cl, 0x2D, 0, 1, &h("9B0161 330100"), None)).1,
            0x6A80
        );
        // missing signature on last block
        assert_eq!(
            tx(&mut c, &apdu(cl, 0x2D, 0x80, 1, &h("9B0164"), None)).1,
            0x6A80
        );
        // wrong signature length
        assert_eq!(
            tx(
                &mut c,
                &apdu(cl, 0x2D, 0x80, 1, &h("9B0164 33020102"), None)
            )
            .1,
            0x6A80
        );
        let sig: Signature = sk.sign_prehash(&HashAlg::Sha256.digest(b"abcd")).unwrap();
        let mut last = h("9B0164 3340");
        last.extend_from_slice(&sig.to_bytes());
        assert_eq!(tx(&mut c, &apdu(cl, 0x2D, 0x80, 1, &last, None)).1, 0x9000);
        // verify with empty peer container -> 6985; with private-key tag -> 6A80
        let init = sign_init_data(&[0x85, 1, 5], 3, &[0, 1], 4);
        assert_eq!(tx(&mut c, &apdu(cl, 0x2C, 0, 1, &init, None)).1, 0x6985);
        let init = sign_init_data(&[0x84, 1, 1], 3, &[0, 1], 4);
        assert_eq!(tx(&mut c, &apdu(cl, 0x2C, 0, 1, &init, None)).1, 0x6A80);
        // all-zero signature -> mismatch
        let init = sign_init_data(&[0x85, 1, 1], 3, &[0, 1], 4);
        assert_eq!(tx(&mut c, &apdu(cl, 0x2C, 0, 1, &init, None)).1, 0x9000);
        let mut last = vec![0x9E, 0x20];
        last.extend_from_slice(&[1; 32]);
        last.extend_from_slice(&[0x33, 0x40]);
        last.extend_from_slice(&[0; 64]);
        assert_eq!(tx(&mut c, &apdu(cl, 0x2D, 0x80, 1, &last, None)).1, 0x6D01);
    }
}

// ------------------------------------------------------------------ T=0 style, GET RESPONSE

#[test]
fn t0_style_get_response_chains() {
    let mut c = card_with(CardOptions {
        t0_style: true,
        ..CardOptions::default()
    });
    let ch = open_select(&mut c);
    let (cl, cli) = (cla(ch, true), cla(ch, false));
    let (d, s) = tx(&mut c, &apdu(cl, 0xCB, 0, 0, &[], None));
    assert_eq!((d.len(), s), (0, 0x6144));
    let (part, s) = tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(0x10)));
    assert_eq!((part.len(), s), (16, 0x6134));
    let (rest, s) = tx(&mut c, &apdu(cli, 0xC0, 0, 0, &[], Some(0x34)));
    assert_eq!((rest.len(), s), (0x34, 0x9000));
    assert_eq!(tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(0))).1, 0x6985);
    // signature via 61xx
    let d = sign_init_data(&[0x84, 1, 1], 3, &[0, 1], 4);
    assert_eq!(tx(&mut c, &apdu(cl, 0x2A, 0, 1, &d, None)).1, 0x9000);
    let mut u = vec![0x9E, 0x20];
    u.extend_from_slice(&[5; 32]);
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x2B, 0x80, 1, &u, None)),
        (vec![], 0x6142)
    );
    // on another channel there is nothing pending
    assert_eq!(
        tx(&mut c, &apdu(0x80, 0xC0, 0, 0, &[], Some(0x42))).1,
        0x6985
    );
    let (sig, s) = tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(0x42)));
    assert_eq!(s, 0x9000);
    assert!(verify(&c, &[5; 32], &sig[2..]));
    // any other command discards pending data
    assert_eq!(tx(&mut c, &apdu(cl, 0x84, 0, 0, &[], Some(8))).1, 0x6108);
    assert_eq!(tx(&mut c, &apdu(cl, 0xCB, 0, 0, &[], None)).1, 0x6144);
    assert_eq!(tx(&mut c, &apdu(cl, 0x84, 0, 0, &[], Some(8))).1, 0x6108);
    let (r, s) = tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(8)));
    assert_eq!((r.len(), s), (8, 0x9000));
    // GET RESPONSE errors
    assert_eq!(tx(&mut c, &apdu(cl, 0xCB, 0, 0, &[], None)).1, 0x6144);
    assert_eq!(tx(&mut c, &apdu(cl, 0xC0, 1, 0, &[], Some(0))).1, 0x6A86);
    assert_eq!(tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[1], Some(0))).1, 0x6700);
    assert_eq!(tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(0))).1, 0x6985);
    // paging in T=0 style keeps the 6300 as final SW
    let mut c = card_with(CardOptions {
        t0_style: true,
        object_list_page_size: 40,
        ..CardOptions::default()
    });
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCB, 1, 0, &[], None)),
        (vec![], 0x6128)
    );
    let (d, s) = tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(0x28)));
    assert_eq!((d.len(), s), (40, 0x6300));
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xCB, 1, 1, &[], None)),
        (vec![], 0x6128)
    );
    // read file: Le decides the amount, then 61xx
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB0, 0, 0, &h("830102"), Some(0))).1,
        0x6100
    );
    let (d, s) = tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(0)));
    assert_eq!((d.len(), s), (256, 0x9000));
}

#[test]
fn long_response_chains_without_t0() {
    let mut p = default_profile();
    for i in 0..20u8 {
        let mut f = p.files[0].clone();
        f.id = vec![0x40 + i];
        f.label = Some(format!("extra-file-{i}").into_bytes());
        p.files.push(f);
    }
    let mut c = card_profile(
        p,
        CardOptions {
            object_list_page_size: 4000,
            ..CardOptions::default()
        },
    );
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    let (d, s) = tx(&mut c, &apdu(cl, 0xCB, 1, 0, &[], Some(0)));
    assert_eq!(d.len(), 256);
    assert_eq!(s >> 8, 0x61);
    let mut all = d;
    let mut s = s;
    while s >> 8 == 0x61 {
        let (d2, s2) = tx(&mut c, &apdu(cl, 0xC0, 0, 0, &[], Some(s as u8)));
        assert!(!d2.is_empty() && d2.len() <= 256);
        all.extend_from_slice(&d2);
        s = s2;
    }
    assert_eq!(s, 0x9000);
    assert!(all.len() > 512);
    // 2 private keys, 3 public keys, 4 secret keys, 2 + 20 files.
    assert_eq!(tlvs(&all).len(), 9 + 22);
}

// ------------------------------------------------------------------ key generation, DH

#[test]
fn generate_key_pair_put_public_key_and_dh() {
    let mut c = card();
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    // DH before the peer key is put -> 6985
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x46, 0, 0, &h("840104 850105"), None)).1,
        0x6985
    );
    let (d, s) = tx(&mut c, &apdu(cl, 0xB9, 0, 0, &h("840104"), Some(0)));
    assert_eq!(s, 0x9000);
    assert_eq!(&d[..13], &h("840104 850104 34454943864104")[..]);
    let scalar = c
        .profile()
        .private_key(&[4])
        .unwrap()
        .private
        .clone()
        .unwrap();
    let sk = p256::SecretKey::from_slice(&scalar).unwrap();
    assert_eq!(&d[12..], sk.public_key().to_sec1_point(false).as_bytes());
    // by label, twice: new key each time
    let (d2, _) = tx(&mut c, &apdu(cl, 0xB9, 0, 0, &h("740465636468"), None));
    assert_ne!(d, d2);
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB9, 0, 0, &h("840101"), None)).1,
        0x6985
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB9, 0, 0, &h("840109"), None)).1,
        0x6A82
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB9, 0, 1, &h("840104"), None)).1,
        0x6A86
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xB9, 0, 0, &h("840104"), Some(0x10))).1,
        0x6C4D
    );

    // PUT PUBLIC KEY of a host key into 05
    let host = iotsafe_sim::pki::derive_key(b"test", "host");
    let hp = host.public_key().to_sec1_point(false).as_bytes().to_vec();
    let mut put = h("34454943864104");
    put.extend_from_slice(&hp[1..]);
    assert_eq!(tx(&mut c, &apdu(cl, 0xD8, 0x80, 0, &put, None)).1, 0x6985); // no session
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x24, 0, 0, &h("850101"), None)).1,
        0x6985
    ); // no update
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x24, 0, 0, &h("850109"), None)).1,
        0x6A82
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x24, 0, 0, &h("850105"), None)).1,
        0x9000
    );
    let mut bad = put.clone();
    bad[40] ^= 1;
    assert_eq!(tx(&mut c, &apdu(cl, 0xD8, 0x80, 0, &bad, None)).1, 0x6A80);
    // split in two blocks (tag only in the first)
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xD8, 0x00, 0, &put[..30], None)).1,
        0x9000
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0xD8, 0x80, 0, &put[30..], None)).1,
        0x9000
    );
    assert_eq!(tx(&mut c, &apdu(cl, 0xD8, 0x80, 0, &put, None)).1, 0x6985); // closed
    assert_eq!(
        c.profile().public_key(&[5]).unwrap().point.as_ref(),
        Some(&hp)
    );
    assert_eq!(
        c.profile().public_key(&[5]).unwrap().state,
        ObjectState::Activated
    );
    let (rp, s) = tx(&mut c, &apdu(cl, 0xCD, 0, 0, &h("850105"), None));
    assert_eq!(s, 0x9000);
    assert_eq!(&rp[6..], &hp[..]);
    assert_eq!(tx(&mut c, &apdu(cl, 0x24, 1, 0, &[], None)).1, 0x9000);

    // DH
    let (secret, s) = tx(&mut c, &apdu(cl, 0x46, 0, 0, &h("840104 850105"), Some(0)));
    assert_eq!(s, 0x9000);
    let scalar = c
        .profile()
        .private_key(&[4])
        .unwrap()
        .private
        .clone()
        .unwrap();
    let card_sk = p256::SecretKey::from_slice(&scalar).unwrap();
    let expect =
        p256::ecdh::diffie_hellman(host.to_nonzero_scalar(), card_sk.public_key().as_affine());
    assert_eq!(secret, expect.raw_secret_bytes().to_vec());
    assert_eq!(
        tx(
            &mut c,
            &apdu(cl, 0x46, 0, 0, &h("7404656364687504 70656572"), None)
        )
        .0,
        secret
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x46, 0, 0, &h("840104"), None)).1,
        0x6A80
    );
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x46, 0, 0, &h("840109 850105"), None)).1,
        0x6A82
    );
    // key 01 allows key agreement too
    assert_eq!(
        tx(&mut c, &apdu(cl, 0x46, 0, 0, &h("840101 850105"), None)).1,
        0x9000
    );
    // verify with the put peer key works
    let hs = SigningKey::from(&host);
    let digest = HashAlg::Sha256.digest(b"peer");
    let sig: Signature = hs.sign_prehash(&digest).unwrap();
    let init = sign_init_data(&[0x85, 1, 5], 3, &[0, 1], 4);
    assert_eq!(tx(&mut c, &apdu(cl, 0x2C, 0, 1, &init, None)).1, 0x9000);
    let mut last = vec![0x9E, 0x20];
    last.extend_from_slice(&digest);
    last.extend_from_slice(&[0x33, 0x00, 0x40]);
    last.extend_from_slice(&sig.to_bytes());
    assert_eq!(tx(&mut c, &apdu(cl, 0x2D, 0x80, 1, &last, None)).1, 0x9000);
}

// ------------------------------------------------------------------ misc

#[test]
fn power_off_reset_and_stats() {
    let mut c = card();
    let ch = open_select(&mut c);
    assert_eq!(c.open_channels(), vec![0, ch]);
    tx(&mut c, &apdu(cla(ch, true), 0x84, 0, 0, &[], Some(4)));
    let st = c.stats();
    assert_eq!(st.total, 3);
    assert_eq!(st.by_ins.get(&0x70), Some(&1));
    assert_eq!(st.by_ins.get(&0xA4), Some(&1));
    assert_eq!(st.by_ins.get(&0x84), Some(&1));
    c.power_off();
    assert_eq!(c.open_channels(), vec![0]);
    assert_eq!(
        tx(&mut c, &apdu(cla(ch, true), 0x84, 0, 0, &[], Some(4))).1,
        0x6881
    );
    assert_eq!(c.stats().total, 4);
    c.reset_stats();
    assert_eq!(c.stats().total, 0);
    let _ = c.transmit(&[0x00]);
    assert_eq!(c.stats().total, 1);
    assert!(c.stats().by_ins.is_empty());
    assert_eq!(sw(&mut c, "00A4040007A0000005590010"), 0x9000);
    c.reset();
    assert_eq!(sw(&mut c, "80CB000000"), 0x6D00);
    let atr = c.atr();
    assert_eq!(atr[0], 0x3B);
    assert_eq!(atr.iter().skip(1).fold(0u8, |a, b| a ^ b), 0, "TCK");
}

#[test]
fn latency_options() {
    let mut c = card_with(CardOptions {
        latency_per_apdu: std::time::Duration::from_millis(20),
        latency_per_signature: std::time::Duration::from_millis(30),
        ..CardOptions::default()
    });
    let t = std::time::Instant::now();
    let ch = open_select(&mut c);
    assert!(t.elapsed() >= std::time::Duration::from_millis(40));
    let t = std::time::Instant::now();
    do_sign(&mut c, ch, true, 1, HashAlg::Sha256, 3, b"x");
    assert!(t.elapsed() >= std::time::Duration::from_millis(70));
}

#[test]
fn shared_card_threads() {
    let shared = iotsafe_sim::SharedCard::from_profile(default_profile(), CardOptions::default());
    let vk = {
        let p = shared.profile();
        VerifyingKey::from_sec1_bytes(p.public_key(&[1]).unwrap().point.as_ref().unwrap()).unwrap()
    };
    let mut handles = Vec::new();
    for t in 0..4u8 {
        let card = shared.clone();
        handles.push(std::thread::spawn(move || {
            let r = card.transmit(&h("0070000001"));
            assert_eq!(&r[1..], &[0x90, 0x00]);
            let ch = r[0];
            let cl = cla(ch, true);
            let r = card.transmit(&apdu(cla(ch, false), 0xA4, 4, 0, &h(AID), None));
            assert_eq!(r, vec![0x90, 0x00]);
            for i in 0..10u8 {
                let d = sign_init_data(&[0x84, 1, 1], 3, &[0, 1], 4);
                assert_eq!(
                    card.transmit(&apdu(cl, 0x2A, 0, 1, &d, None)),
                    vec![0x90, 0]
                );
                let digest = [t * 16 + i; 32];
                let mut u = vec![0x9E, 0x20];
                u.extend_from_slice(&digest);
                let r = card.transmit(&apdu(cl, 0x2B, 0x80, 1, &u, None));
                assert_eq!(&r[r.len() - 2..], &[0x90, 0x00]);
                let sig = Signature::from_slice(&r[2..66]).unwrap();
                vk.verify_prehash(&digest, &sig).unwrap();
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(shared.stats().by_ins.get(&0x2B), Some(&40));
    shared.reset_stats();
    assert_eq!(shared.stats().total, 0);
    assert_eq!(shared.with(|c| c.open_channels().len()), 5);
    shared.power_off();
    assert_eq!(shared.with(|c| c.open_channels().len()), 1);
    assert_eq!(shared.atr()[0], 0x3B);
    shared.reset();
}

#[test]
fn fuzz_no_panic() {
    // Deterministic pseudo-random APDUs against an open, selected channel.
    let mut c = card_with(CardOptions {
        object_list_page_size: 30,
        ..CardOptions::default()
    });
    let ch = open_select(&mut c);
    let mut x: u64 = 0x1234_5678_9ABC_DEF0;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let ins_set = [
        0x70, 0xA4, 0xCB, 0xB0, 0xCD, 0x84, 0x2A, 0x2B, 0x2C, 0x2D, 0x24, 0xD8, 0xB9, 0x46, 0xC0,
    ];
    for _ in 0..20_000 {
        let r = next();
        let cla_b = if r & 1 == 0 {
            cla(ch, r & 2 == 0)
        } else {
            (r >> 8) as u8
        };
        let ins = ins_set[(r >> 16) as usize % ins_set.len()];
        let len = (next() % 40) as usize;
        let mut a = vec![cla_b, ins, (r >> 24) as u8 & 0x83, (r >> 32) as u8 & 0x0F];
        for _ in 0..len {
            a.push(next() as u8);
        }
        if r & 4 == 0 && a.len() > 5 {
            a[4] = (a.len() - 5) as u8;
        }
        let resp = c.transmit(&a);
        assert!(resp.len() >= 2);
    }
}
