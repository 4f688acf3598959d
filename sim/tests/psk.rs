//! IoT SAFE feature set 2: pre-shared keys (secret keys), COMPUTE PRF (`48`), COMPUTE HKDF
//! (`4A`), IoT.04 I9 (no device access to secret values), remote management of PSKs.

mod common;

use common::*;
use iotsafe_sim::hash::HashAlg;
use iotsafe_sim::pki::{self, DEFAULT_PSKS, DEFAULT_SEED};
use iotsafe_sim::{
    Card, CardOptions, ObjectClass, ObjectState, Profile, SharedCard, control, default_profile,
    default_profile_with_provisioning, kdf,
};

/// A card with the applet selected on the basic channel.
fn sel(profile: Profile, options: CardOptions) -> Card {
    let mut c = Card::new(profile, options);
    assert_eq!(sw(&mut c, "00A4040007A0000005590010"), 0x9000);
    c
}

fn dcard() -> Card {
    sel(default_profile(), CardOptions::default())
}

fn ber(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    if value.len() >= 0x80 {
        v.push(0x81);
    }
    v.push(value.len() as u8);
    v.extend_from_slice(value);
    v
}

fn cmd(c: &mut Card, ins: u8, p1: u8, data: &[u8]) -> (Vec<u8>, u16) {
    tx(c, &apdu(0x80, ins, p1, 0, data, Some(0)))
}

fn prf(c: &mut Card, p1: u8, data: &[u8]) -> (Vec<u8>, u16) {
    cmd(c, 0x48, p1, data)
}

fn hkdf(c: &mut Card, p1: u8, data: &[u8]) -> (Vec<u8>, u16) {
    cmd(c, 0x4A, p1, data)
}

fn psk(id: u8) -> Vec<u8> {
    pki::default_psk(id).unwrap()
}

/// RFC 4279 §2 pre-master secret, written out independently of `kdf`.
fn plain_premaster(psk: &[u8]) -> Vec<u8> {
    let n = psk.len() as u16;
    let mut v = n.to_be_bytes().to_vec();
    v.extend(std::iter::repeat_n(0u8, psk.len()));
    v.extend_from_slice(&n.to_be_bytes());
    v.extend_from_slice(psk);
    v
}

/// RFC 5489 §2 pre-master secret.
fn ecdhe_premaster(other: &[u8], psk: &[u8]) -> Vec<u8> {
    let mut v = (other.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(other);
    v.extend_from_slice(&(psk.len() as u16).to_be_bytes());
    v.extend_from_slice(psk);
    v
}

// ------------------------------------------------------------------ default profile

#[test]
fn default_psks_are_derived_from_the_seed() {
    let p = default_profile();
    assert_eq!(p.secret_keys.len(), 4);
    for &(id, label, len, kd) in &DEFAULT_PSKS {
        let k = p.secret_key(&[id]).unwrap();
        assert_eq!(k.label.as_deref(), Some(label.as_bytes()));
        assert_eq!(
            (k.key_type, k.state, k.access, k.crypto_functions),
            (0xA0, ObjectState::Activated, 0x03, 0x08)
        );
        assert_eq!(k.key_derivation_algos, kd);
        let v = k.value.clone().unwrap();
        assert_eq!(v.len(), len);
        assert_eq!(
            v,
            pki::derive_secret(DEFAULT_SEED, &format!("psk-{id:02x}"), len)
        );
        assert_eq!(v, psk(id));
    }
    assert_eq!(
        [0x10, 0x11, 0x12, 0x13].map(|id| p
            .secret_key(&[id])
            .unwrap()
            .value
            .clone()
            .unwrap()
            .len()),
        [32, 16, 48, 64]
    );
    // Known answers (also recomputed with Python's hashlib): the derivation must not change
    // silently, the module's tests rely on it.
    let known = [
        (
            0x10,
            "465DD3BFEC5DBC14A9F4716872B0AE39116836B50C257948AAB0431059A61412",
        ),
        (0x11, "1AFF57930E0224DC29C17A7EFE2565CF"),
        (
            0x12,
            "C0464235212019BAAC2A0DFA27F562CCA117D4004BD81C3A7C6D4728E5A7FDB7\
             1C3448C577B8A1DF7B664C3F532BBB92",
        ),
        (
            0x13,
            "22E103D5E539BDE52F02845391DE0D47476EA4A87B64BC1BE5C642ECC87B80E9\
             A4F4E583C17C0189D40A1D5641FA1BBD7E54F8658E40423AC4A042E63DF6D4B9",
        ),
    ];
    for (id, v) in known {
        assert_eq!(psk(id), h(v), "{id:02X}");
    }
    let other = pki::bundle_from_seed(b"other").unwrap().profile;
    assert_ne!(other.secret_key(&[0x10]), p.secret_key(&[0x10]));
    assert!(pki::default_psk(0x14).is_none());
}

#[test]
fn default_app_info_and_ecdh_public_key() {
    let mut c = dcard();
    let (d, s) = txh(&mut c, "80CB000000");
    assert_eq!(s, 0x9000);
    let t = tlvs(&d);
    let f = |tag: u8| t.iter().find(|x| x.0 == tag).unwrap().1.clone();
    assert_eq!(f(0x90), vec![0x0F]);
    assert_eq!(f(0x94), vec![0x03]);
    assert!(f(0xB4)[0] >= 4);
    // Public key 04 "ecdh": the ECDH container's public half.
    let p = c.profile().clone();
    let k = p.public_key(&[0x04]).unwrap();
    assert_eq!(k.label.as_deref(), Some(&b"ecdh"[..]));
    assert_eq!(
        (k.state, k.crypto_functions, k.signature_algos, k.hash_algos),
        (ObjectState::Activated, 0x06, 0x00, 0x0000)
    );
    use p256::elliptic_curve::sec1::ToSec1Point;
    let sk = p256::SecretKey::from_slice(p.private_key(&[0x04]).unwrap().private.as_ref().unwrap())
        .unwrap();
    assert_eq!(
        k.point.as_deref(),
        Some(sk.public_key().to_sec1_point(false).as_bytes())
    );
    let (d, s) = txh(&mut c, "80CD000003850104 00");
    assert_eq!(s, 0x9000);
    assert_eq!(
        d,
        iotsafe_sim::card::public_key_format(k.point.as_ref().unwrap())
    );
    // GENERATE KEY PAIR on 04 fills public key 04.
    let (d, s) = txh(&mut c, "80B9000003840104 00");
    assert_eq!(s, 0x9000);
    assert_eq!(&d[..6], &h("840104 850104")[..]);
    let new_point = c
        .profile()
        .public_key(&[0x04])
        .unwrap()
        .point
        .clone()
        .unwrap();
    assert_ne!(Some(&new_point), k.point.as_ref());
    assert_eq!(&d[d.len() - 65..], &new_point[..]);
}

#[test]
fn profile_round_trip_keeps_secret_values_as_hex() {
    let p = default_profile();
    let text = p.to_toml().unwrap();
    let v = hex::encode_upper(psk(0x13));
    assert!(text.contains(&format!("value = \"{v}\"")), "{text}");
    assert!(text.contains("label = \"urn:imei:359000000000001\""));
    assert_eq!(Profile::from_toml(&text).unwrap(), p);
    // Values must be 1..64 bytes.
    let mut bad = p.clone();
    bad.secret_keys[0].value = Some(vec![1; 65]);
    assert!(Profile::from_toml(&bad.to_toml().unwrap()).is_err());
    bad.secret_keys[0].value = Some(vec![]);
    assert!(bad.validate().is_err());
    // Debug output never shows a secret value.
    let dbg = format!("{p:?} {:?}", Card::new(p.clone(), CardOptions::default()));
    for &(id, ..) in &DEFAULT_PSKS {
        assert!(!dbg.contains(&format!("{:?}", psk(id))), "{id:02X}");
    }
    assert!(dbg.contains("<redacted, 64 bytes>"));
}

// ------------------------------------------------------------------ COMPUTE PRF

#[test]
fn prf_vector_1_exact_apdu() {
    let mut c = dcard();
    let command = h("80 48 00 00 5D \
         D1 20 C0485B054863F6DFA458789768B9035C6CACB160DD1A01834811F5783309DB81 \
         D2 36 657874656E646564206D617374657220736563726574 \
               CE15B44D68440B652624244DB8D2FB7DD601C759E9EB627FB10529AB0DB76049 \
         D3 01 FF 00");
    let (d, s) = tx(&mut c, &command);
    assert_eq!(s, 0x9000);
    assert_eq!(d.len(), 255);
    assert_eq!(
        d[..48],
        h("A1F02A766DA04C8FD83A40E358267528F8D815C48E3DC353\
           D55FE3861C350622C78B48FE6F49F6E13E1B6B175CFE59FB")[..]
    );
}

#[test]
fn prf_vector_2() {
    let mut c = dcard();
    let secret = h("A1F02A766DA04C8FD83A40E358267528F8D815C48E3DC353\
                    D55FE3861C350622C78B48FE6F49F6E13E1B6B175CFE59FB");
    let seed = h(
        "CB52E451A752CA812EA9646F2E5A0EC138C3D4D8AEFA744E17F01499867450815DCADEED3917D046311A4B5D73BBD75E500CE963A7D05D8122EA9745F2E0D9E9",
    );
    let mut ls = b"key expansion".to_vec();
    ls.extend_from_slice(&seed);
    let data = [ber(0xD1, &secret), ber(0xD2, &ls), h("D301FF")].concat();
    assert_eq!(data.len(), 0x84);
    let command = apdu(0x80, 0x48, 0, 0, &data, Some(0));
    assert_eq!(command[4], 0x84);
    let (d, s) = tx(&mut c, &command);
    assert_eq!((d.len(), s), (255, 0x9000));
    assert_eq!(
        d[..32],
        h("ED6C6644C075653F1919FD05A11A93C8057267B9C2CBD09E6D8882B355473E8E")[..]
    );
    assert_eq!(
        d[255 - 32..],
        h("BA6BD6F753F39DEC1890BAA4283B3139922D80D1E7D3DA69669877125B8C0B41")[..]
    );
}

#[test]
fn prf_with_stored_psks() {
    let mut c = dcard();
    let ls = b"master secretCLIENTRANDOMSERVERRANDOM".to_vec();
    let d2 = ber(0xD2, &ls);
    let ecdhe = [0x5Au8; 32];
    for &(id, label, _, kd) in &DEFAULT_PSKS {
        let key = psk(id);
        for r in [ber(0x86, &[id]), ber(0x76, label.as_bytes())] {
            // Mode 01: plain PSK.
            let (d, s) = prf(&mut c, 1, &[r.clone(), d2.clone(), h("D30130")].concat());
            if kd & 0x01 == 0 {
                assert_eq!((d, s), (vec![], 0x6985), "{id:02X}");
                continue;
            }
            assert_eq!(s, 0x9000, "{id:02X}");
            assert_eq!(
                d,
                kdf::tls12_prf(HashAlg::Sha256, &plain_premaster(&key), &ls, 48)
            );
            // Mode 02: ECDHE-PSK, SHA-384.
            let data = [
                r.clone(),
                ber(0xD4, &ecdhe),
                d2.clone(),
                h("D30130 91020002"),
            ]
            .concat();
            let (d, s) = prf(&mut c, 2, &data);
            assert_eq!(s, 0x9000);
            assert_eq!(
                d,
                kdf::tls12_prf(HashAlg::Sha384, &ecdhe_premaster(&ecdhe, &key), &ls, 48)
            );
        }
    }
    // SHA-256 explicitly = default; one output byte; 255 output bytes.
    let a = prf(
        &mut c,
        1,
        &[h("860110 91020001"), d2.clone(), h("D30101")].concat(),
    );
    let b = prf(&mut c, 1, &[h("860110"), d2.clone(), h("D301FF")].concat());
    assert_eq!((a.0.len(), a.1, b.0.len(), b.1), (1, 0x9000, 255, 0x9000));
    assert_eq!(a.0[0], b.0[0]);
    // Tag order does not matter.
    let c1 = prf(&mut c, 1, &[h("D30120"), d2.clone(), h("860110")].concat());
    assert_eq!(c1.0, b.0[..32]);
}

#[test]
fn prf_errors() {
    let mut c = dcard();
    let ok1 = h("860110 D20141 D30120");
    assert_eq!(prf(&mut c, 1, &ok1).1, 0x9000);
    let cases: &[(u8, &str, u16)] = &[
        // P1/P2
        (3, "860110 D20141 D30120", 0x6A86),
        (0x80, "860110 D20141 D30120", 0x6A86),
        // syntax, missing, duplicated, lengths
        (0, "", 0x6A80),
        (1, "860110 D20141 D301", 0x6A80),
        (1, "860110 D30120", 0x6A80),
        (1, "860110 D20141", 0x6A80),
        (1, "860110 D20141 D30100", 0x6A80),
        (1, "860110 D20141 D3020020", 0x6A80),
        (1, "860110 D20141 D20141 D30120", 0x6A80),
        (1, "860110 860110 D20141 D30120", 0x6A80),
        (1, "860110 D200 D30120", 0x6A80),
        (1, "8600 D20141 D30120", 0x6A80),
        (1, "860110 D20141 D30120 E00100", 0x6A80),
        (1, "D20141 D30120", 0x6A80),
        (1, "860110 760A6465766963652D70736B D20141 D30120", 0x6A80),
        (0, "D100 D20141 D30120", 0x6A80),
        (0, "D20141 D30120", 0x6A80),
        (0, "860110 D20141 D30120", 0x6A80),
        (0, "D10101 D20141 D30120 D40101", 0x6A80),
        // D4 only in mode 02, D1 only in mode 00
        (1, "860110 D40101 D20141 D30120", 0x6A80),
        (2, "860110 D20141 D30120", 0x6A80),
        (2, "860110 D400 D20141 D30120", 0x6A80),
        (1, "D10101 860110 D20141 D30120", 0x6A80),
        (2, "D10101 860110 D40101 D20141 D30120", 0x6A80),
        // hash
        (1, "860110 D20141 D30120 91020004", 0x6A80),
        (1, "860110 D20141 D30120 910101", 0x6A80),
        (0, "D10101 D20141 D30120 91020003", 0x6A80),
        // lookup and use
        (1, "860177 D20141 D30120", 0x6A88),
        (2, "7603787878 D40101 D20141 D30120", 0x6A88),
        (1, "860112 D20141 D30120", 0x6985), // HKDF-only key
        (1, "860101 D20141 D30120", 0x6A88), // a private-key ID is not a secret key
    ];
    for (p1, data, want) in cases {
        assert_eq!(prf(&mut c, *p1, &h(data)).1, *want, "P1 {p1:02X} {data}");
    }
    // P2 ≠ 00.
    assert_eq!(tx(&mut c, &apdu(0x80, 0x48, 1, 1, &ok1, Some(0))).1, 0x6A86);
    // Le too small: 6Cxx with the exact length; Le = n fine.
    assert_eq!(
        tx(&mut c, &apdu(0x80, 0x48, 1, 0, &ok1, Some(0x10))),
        (vec![], 0x6C20)
    );
    assert_eq!(
        tx(&mut c, &apdu(0x80, 0x48, 1, 0, &ok1, Some(0x20))).1,
        0x9000
    );
    // Over-long secret (> 255 bytes) cannot be sent in a short APDU at all; a 200-byte D1 works.
    let d1 = ber(0xD1, &[7u8; 200]);
    let (d, s) = prf(&mut c, 0, &[d1, h("D20141 D30120")].concat());
    assert_eq!(
        (d, s),
        (
            kdf::tls12_prf(HashAlg::Sha256, &[7u8; 200], b"A", 32),
            0x9000
        )
    );
    // Deactivated key, key without function 08, key without PRF bit → 6985.
    for change in 0..3 {
        let mut p = default_profile();
        let k = p.secret_keys.iter_mut().find(|k| k.id == [0x10]).unwrap();
        match change {
            0 => k.state = ObjectState::Deactivated,
            1 => k.crypto_functions = 0x01,
            _ => k.key_derivation_algos = 0x02,
        }
        let mut c = sel(p, CardOptions::default());
        assert_eq!(prf(&mut c, 1, &ok1).1, 0x6985, "change {change}");
        assert_eq!(
            prf(&mut c, 1, &h("760A6465766963652D70736B D20141 D30120")).1,
            0x6985
        );
    }
}

#[test]
fn prf_through_get_response_and_other_channels() {
    let mut c = sel(
        default_profile(),
        CardOptions {
            t0_style: true,
            ..CardOptions::default()
        },
    );
    let data = h("860113 D20141 D30140");
    let (d, s) = prf(&mut c, 1, &data);
    assert_eq!((d.len(), s), (0, 0x6140));
    let (d, s) = txh(&mut c, "80C0000040");
    assert_eq!(s, 0x9000);
    assert_eq!(
        d,
        kdf::tls12_prf(HashAlg::Sha256, &plain_premaster(&psk(0x13)), b"A", 64)
    );
    // Any channel, either class.
    let mut c = Card::new(default_profile(), CardOptions::default());
    let ch = open_select(&mut c);
    for prop in [false, true] {
        let (d, s) = tx(&mut c, &apdu(cla(ch, prop), 0x48, 1, 0, &data, Some(0)));
        assert_eq!((d.len(), s), (64, 0x9000));
    }
}

// ------------------------------------------------------------------ COMPUTE HKDF

struct Rfc5869 {
    ikm: Vec<u8>,
    salt: Vec<u8>,
    info: Vec<u8>,
    len: u8,
    prk: &'static str,
    okm: &'static str,
}

fn rfc5869_cases() -> Vec<Rfc5869> {
    vec![
        Rfc5869 {
            ikm: vec![0x0b; 22],
            salt: (0x00..=0x0c).collect(),
            info: (0xf0..=0xf9).collect(),
            len: 42,
            prk: "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
            okm: "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf\
                  34007208d5b887185865",
        },
        Rfc5869 {
            ikm: (0x00..=0x4f).collect(),
            salt: (0x60..=0xaf).collect(),
            info: (0xb0..=0xff).collect(),
            len: 82,
            prk: "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
            okm: "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c\
                  59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71\
                  cc30c58179ec3e87c14c01d5c1f3434f1d87",
        },
        Rfc5869 {
            ikm: vec![0x0b; 22],
            salt: vec![],
            info: vec![],
            len: 42,
            prk: "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
            okm: "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d\
                  9d201395faa4b61a96c8",
        },
    ]
}

#[test]
fn hkdf_rfc5869_sha256_vectors() {
    let mut c = dcard();
    for (i, t) in rfc5869_cases().iter().enumerate() {
        let (prk, okm) = (h(t.prk), h(t.okm));
        // Extract (P1 00): D1 IKM, D5 salt.
        let (d, s) = hkdf(&mut c, 0, &[ber(0xD1, &t.ikm), ber(0xD5, &t.salt)].concat());
        assert_eq!((d, s), (prk.clone(), 0x9000), "case {} extract", i + 1);
        // Expand (P1 01): D1 PRK, D2 info, D3 length.
        let data = [ber(0xD1, &prk), ber(0xD2, &t.info), ber(0xD3, &[t.len])].concat();
        let (d, s) = hkdf(&mut c, 1, &data);
        assert_eq!((d, s), (okm.clone(), 0x9000), "case {} expand", i + 1);
        // Extract-then-expand (P1 02) in one APDU, with 91 0001.
        let data = [
            ber(0xD1, &t.ikm),
            ber(0xD5, &t.salt),
            ber(0xD2, &t.info),
            ber(0xD3, &[t.len]),
            h("91020001"),
        ]
        .concat();
        let (d, s) = hkdf(&mut c, 2, &data);
        assert_eq!((d, s), (okm.clone(), 0x9000), "case {} both", i + 1);
    }
    // Case 3 without the empty salt/info TLVs at all.
    let t = &rfc5869_cases()[2];
    let (d, _) = hkdf(&mut c, 0, &ber(0xD1, &t.ikm));
    assert_eq!(d, h(t.prk));
    let (d, _) = hkdf(&mut c, 2, &[ber(0xD1, &t.ikm), h("D3012A")].concat());
    assert_eq!(d, h(t.okm));
    let (d, _) = hkdf(&mut c, 1, &[ber(0xD1, &h(t.prk)), h("D3012A")].concat());
    assert_eq!(d, h(t.okm));
    // Empty IKM (extract only).
    let (d, s) = hkdf(&mut c, 0, &h("D100"));
    assert_eq!(
        (d, s),
        (kdf::hkdf_extract(HashAlg::Sha256, &[], &[]), 0x9000)
    );
    // SHA-384 / SHA-512 PRK lengths.
    for (m, alg) in [("0002", HashAlg::Sha384), ("0004", HashAlg::Sha512)] {
        let (d, s) = hkdf(&mut c, 0, &h(&format!("D103010203 D50109 9102{m}")));
        assert_eq!(s, 0x9000);
        assert_eq!(d.len(), alg.output_len());
        assert_eq!(d, kdf::hkdf_extract(alg, &[9], &[1, 2, 3]));
    }
}

#[test]
fn hkdf_with_stored_secret() {
    let mut c = dcard();
    let salt = [0x33u8; 32];
    for &(id, label, _, kd) in &DEFAULT_PSKS {
        let key = psk(id);
        for r in [ber(0x86, &[id]), ber(0x76, label.as_bytes())] {
            let (d, s) = hkdf(&mut c, 0, &[r.clone(), ber(0xD5, &salt)].concat());
            if kd & 0x02 == 0 {
                assert_eq!(s, 0x6985, "{id:02X}");
                assert_eq!(
                    hkdf(&mut c, 1, &[r.clone(), h("D30120")].concat()).1,
                    0x6985
                );
                continue;
            }
            assert_eq!(
                (d, s),
                (kdf::hkdf_extract(HashAlg::Sha256, &salt, &key), 0x9000)
            );
            // Expand with the stored secret as PRK.
            let (d, s) = hkdf(
                &mut c,
                1,
                &[r.clone(), h("D203 696E66 D30140 91020002")].concat(),
            );
            assert_eq!(s, 0x9000);
            assert_eq!(
                d,
                kdf::hkdf_expand(HashAlg::Sha384, &key, b"inf", 64).unwrap()
            );
            // Both.
            let (d, s) = hkdf(
                &mut c,
                2,
                &[r.clone(), ber(0xD5, &salt), h("D30120")].concat(),
            );
            assert_eq!(s, 0x9000);
            let prk = kdf::hkdf_extract(HashAlg::Sha256, &salt, &key);
            assert_eq!(d, kdf::hkdf_expand(HashAlg::Sha256, &prk, &[], 32).unwrap());
        }
    }
    // The TLS 1.3 PSK key 12 (48 bytes, HKDF only) with SHA-384.
    let (d, s) = hkdf(&mut c, 0, &h("860112 91020002"));
    assert_eq!(
        (d, s),
        (kdf::hkdf_extract(HashAlg::Sha384, &[], &psk(0x12)), 0x9000)
    );
}

#[test]
fn hkdf_errors() {
    let mut c = dcard();
    let cases: &[(u8, &str, u16)] = &[
        (3, "D10101", 0x6A86),
        (0, "", 0x6A80),
        (0, "D10101 D20100", 0x6A80),        // info in extract
        (0, "D10101 D30120", 0x6A80),        // length in extract
        (1, "D10101 D50100 D30120", 0x6A80), // salt in expand
        (1, "D10101", 0x6A80),               // no length
        (1, "D10101 D30100", 0x6A80),        // zero length
        (1, "D100 D30120", 0x6A80),          // empty PRK
        (2, "D10101 D50100", 0x6A80),        // no length
        (0, "D10101 860110", 0x6A80),        // both D1 and 86
        (0, "860110 760A6465766963652D70736B", 0x6A80),
        (0, "D50100", 0x6A80), // no key material
        (0, "D10101 D10101", 0x6A80),
        (0, "D10101 91020008", 0x6A80),
        (0, "D10101 910104", 0x6A80),
        (0, "D10101 D40101", 0x6A80),
        (0, "D10101 D5", 0x6A80),
        (0, "860177", 0x6A88),
        (1, "7603787878 D30120", 0x6A88),
        (0, "860111", 0x6985), // PRF-only key
    ];
    for (p1, data, want) in cases {
        assert_eq!(hkdf(&mut c, *p1, &h(data)).1, *want, "P1 {p1:02X} {data}");
    }
    assert_eq!(
        tx(&mut c, &apdu(0x80, 0x4A, 0, 1, &h("D10101"), Some(0))).1,
        0x6A86
    );
    for change in 0..3 {
        let mut p = default_profile();
        let k = p.secret_keys.iter_mut().find(|k| k.id == [0x12]).unwrap();
        match change {
            0 => k.state = ObjectState::Deactivated,
            1 => k.crypto_functions = 0x04,
            _ => k.key_derivation_algos = 0x01,
        }
        let mut c = sel(p, CardOptions::default());
        assert_eq!(hkdf(&mut c, 0, &h("860112")).1, 0x6985, "change {change}");
    }
}

// ------------------------------------------------------------------ I2/I9

#[test]
fn secret_values_never_leave_the_card() {
    let mut c = sel(default_profile_with_provisioning(), CardOptions::default());
    let before = c.profile().secret_keys.clone();
    // GET DATA C4: the info structure only, real-card order.
    for &(id, label, ..) in &DEFAULT_PSKS {
        for r in [ber(0x86, &[id]), ber(0x76, label.as_bytes())] {
            let (d, s) = tx(&mut c, &apdu(0x80, 0xCB, 0xC4, 0, &r, Some(0)));
            assert_eq!(s, 0x9000);
            let t = tlvs(&d);
            let tags: Vec<u8> = t.iter().map(|x| x.0).collect();
            assert_eq!(tags, vec![0x76, 0x86, 0x60, 0x4A, 0x4B, 0x61, 0x94]);
            assert_eq!(t[0].1, label.as_bytes());
            assert_eq!(t[1].1, vec![id]);
        }
    }
    // The object list: no value anywhere (all pages).
    let (mut list, mut s) = txh(&mut c, "80CB010000");
    while s == 0x6300 {
        let (d, s2) = txh(&mut c, "80CB010100");
        list.extend(d);
        s = s2;
    }
    assert_eq!(s, 0x9000);
    for &(id, ..) in &DEFAULT_PSKS {
        let v = psk(id);
        assert!(
            !list.windows(8).any(|w| v.windows(8).any(|x| x == w)),
            "{id:02X}"
        );
    }
    // STORE DATA: select / delete of a secret key (ID or label) → 6985, nothing changes.
    let store = |c: &mut Card, tlv: Vec<u8>| tx(c, &apdu(0x80, 0xE2, 0x80, 0, &tlv, None)).1;
    for &(id, label, ..) in &DEFAULT_PSKS {
        for r in [ber(0x86, &[id]), ber(0x76, label.as_bytes())] {
            assert_eq!(store(&mut c, ber(0x75, &r)), 0x6985);
            assert_eq!(store(&mut c, ber(0x76, &r)), 0x6985);
            // Nothing selected afterwards: updates and reads are refused too.
            assert_eq!(store(&mut c, ber(0x77, &[1, 2, 3])), 0x6985);
            assert_eq!(store(&mut c, ber(0x7A, &[])), 0x6985);
        }
    }
    // Key/file creation with secret-key tags is bad data.
    assert_eq!(store(&mut c, ber(0x72, &h("860120 4B01A0"))), 0x6A80);
    assert_eq!(
        store(&mut c, ber(0x74, &h("860120 210101 20020010"))),
        0x6A80
    );
    // READ FILE / READ PUBLIC KEY with secret-key references: bad data.
    assert_eq!(txh(&mut c, "80B0000003860110 00").1, 0x6A80);
    assert_eq!(txh(&mut c, "80CD000003860110 00").1, 0x6A80);
    assert_eq!(c.profile().secret_keys, before);
    // Reset store leaves secret keys alone, also after a remote change.
    c.remote_begin(ObjectClass::SecretKey, &[0x10]).unwrap();
    c.remote_replace_secret(&[0x10], vec![0xEE; 20]).unwrap();
    c.remote_delete(ObjectClass::SecretKey, &[0x11]).unwrap();
    c.remote_end().unwrap();
    let after_remote = c.profile().secret_keys.clone();
    assert_eq!(store(&mut c, ber(0x7F, b"clearall")), 0x63CF);
    assert_eq!(c.profile().secret_keys, after_remote);
    assert_eq!(
        c.profile().secret_key(&[0x10]).unwrap().value,
        Some(vec![0xEE; 20])
    );
}

// ------------------------------------------------------------------ K1–K3 (G4)

#[test]
fn remote_management_of_psks() {
    let mut c = dcard();
    let ch = open_select(&mut c);
    let q = h("D20141 D30120");
    let by_id = [h("860110"), q.clone()].concat();
    let by_label = [ber(0x76, b"device-psk"), q.clone()].concat();
    let old = prf(&mut c, 1, &by_id).0;
    c.remote_begin(ObjectClass::SecretKey, &[0x10]).unwrap();
    c.remote_replace_secret(&[0x10], vec![0x42; 24]).unwrap();
    assert!(c.remote_replace_secret(&[0x10], vec![]).is_err());
    assert!(c.remote_replace_secret(&[0x10], vec![1; 65]).is_err());
    assert!(c.remote_replace_secret(&[0x77], vec![1]).is_err());
    // During the session: 6984 by ID and label, PRF and HKDF; other keys work.
    assert_eq!(prf(&mut c, 1, &by_id).1, 0x6984);
    assert_eq!(prf(&mut c, 1, &by_label).1, 0x6984);
    assert_eq!(
        prf(&mut c, 2, &[h("860110 D40101"), q.clone()].concat()).1,
        0x6984
    );
    assert_eq!(hkdf(&mut c, 0, &h("860110")).1, 0x6984);
    assert_eq!(
        tx(&mut c, &apdu(0x80, 0xCB, 0xC4, 0, &h("860110"), Some(0))).1,
        0x6984
    );
    assert_eq!(prf(&mut c, 1, &[h("860113"), q.clone()].concat()).1, 0x9000);
    c.remote_end().unwrap();
    // After: the new value, 63CF once per channel.
    let (d, s) = prf(&mut c, 1, &by_id);
    assert_eq!(s, 0x63CF);
    assert_ne!(d, old);
    assert_eq!(
        d,
        kdf::tls12_prf(HashAlg::Sha256, &plain_premaster(&[0x42; 24]), b"A", 32)
    );
    assert_eq!(prf(&mut c, 1, &by_label), (d.clone(), 0x9000));
    let (d2, s) = tx(&mut c, &apdu(cla(ch, true), 0x48, 1, 0, &by_id, Some(0)));
    assert_eq!((d2, s), (d, 0x63CF));

    // Add and delete through the control socket commands.
    let card = SharedCard::new(c);
    let ask = |line: &str| -> serde_json::Value {
        serde_json::from_str(&control::handle_line(&card, line)).unwrap()
    };
    let value = "00112233445566778899AABBCCDDEEFF";
    assert_eq!(
        ask(&format!("remote-add-secret 20 new-id 3 {value}"))["ok"],
        false
    );
    assert_eq!(ask("remote-begin secret 20")["ok"], true);
    let v = ask(&format!("remote-add-secret 20 new-id 3 {value}"));
    assert_eq!(v, serde_json::json!({"ok": true, "size": 16}));
    assert!(!v.to_string().contains(value));
    assert_eq!(
        ask(&format!("remote-add-secret 21 device-psk 1 {value}"))["ok"],
        false
    );
    assert_eq!(
        ask(&format!("remote-add-secret 10 x 1 {value}"))["ok"],
        false
    );
    assert_eq!(
        ask(&format!("remote-add-secret 22 y 4 {value}"))["ok"],
        false
    );
    let v = ask("remote-add-secret 22 y 1 ZZSECRETZZ");
    assert_eq!(v["ok"], false);
    assert!(!v.to_string().contains("ZZSECRETZZ"), "{v}");
    assert_eq!(ask("remote-delete secret 11")["ok"], true);
    assert_eq!(ask("remote-replace-secret 13 0102")["ok"], true);
    // The new key is a target: 6984 by its (new) label.
    card.transmit(&h("00A4040007A0000005590010"));
    let r = card.transmit(&apdu(
        0x80,
        0x48,
        1,
        0,
        &[ber(0x76, b"new-id"), q.clone()].concat(),
        Some(0),
    ));
    assert_eq!(r, h("6984"));
    let v = ask("remote-end");
    assert_eq!(v["changed"].as_array().unwrap().len(), 3, "{v}");
    let p = card.profile();
    let k = p.secret_key(&[0x20]).unwrap();
    assert_eq!(
        (
            k.label.as_deref(),
            k.key_type,
            k.access,
            k.crypto_functions,
            k.key_derivation_algos
        ),
        (Some(&b"new-id"[..]), 0xA0, 0x03, 0x08, 0x03)
    );
    let r = card.transmit(&apdu(
        0x80,
        0x48,
        1,
        0,
        &[ber(0x76, b"new-id"), q.clone()].concat(),
        Some(0),
    ));
    let expect = kdf::tls12_prf(HashAlg::Sha256, &plain_premaster(&h(value)), b"A", 32);
    assert_eq!(r, [expect, h("63CF")].concat());
    let r = card.transmit(&apdu(
        0x80,
        0x48,
        1,
        0,
        &[h("860111"), q.clone()].concat(),
        Some(0),
    ));
    assert_eq!(r, h("6A88"));
    let r = card.transmit(&apdu(0x80, 0x4A, 0, 0, &h("860113"), Some(0)));
    assert_eq!(
        r,
        [kdf::hkdf_extract(HashAlg::Sha256, &[], &[1, 2]), h("9000")].concat()
    );
}
