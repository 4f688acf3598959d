//! Pre-shared keys on the card (IoT SAFE feature set 2), in-process over the simulated card:
//! PSKs are secret keys usable for derivation only, and every derivation the card computes
//! (COMPUTE PRF, COMPUTE HKDF) equals an independent computation by `openssl kdf` on the same
//! inputs, plus the reference vectors of iot05-apdu.md §9.6.

mod helpers;

use std::process::Command;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;

const CKM_IOTSAFE_TLS12_PSK_KDF: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4953_0001;
const CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4953_0002;
const CKA_IOTSAFE_KEY_DERIVATION: CK_ATTRIBUTE_TYPE = CKA_VENDOR_DEFINED | 0x4953_0006;

/// `CK_IOTSAFE_TLS12_PSK_KDF_PARAMS` of include/iotsafe_pkcs11.h.
#[repr(C)]
#[allow(non_snake_case)]
struct PskKdfParams {
    prfHashMechanism: CK_MECHANISM_TYPE,
    pLabel: *mut u8,
    ulLabelLen: CK_ULONG,
    pSeed: *mut u8,
    ulSeedLen: CK_ULONG,
    pOtherSecret: *mut u8,
    ulOtherSecretLen: CK_ULONG,
}

/// The PSK value the simulator's default card holds under `label`.
fn psk_value(label: &str) -> Vec<u8> {
    iotsafe_sim::default_profile()
        .secret_keys
        .iter()
        .find(|k| k.label.as_deref() == Some(label.as_bytes()))
        .and_then(|k| k.value.clone())
        .unwrap_or_else(|| panic!("no PSK {label} on the default card"))
}

/// `openssl kdf` (OpenSSL 3) → the derived bytes.
fn openssl_kdf(keylen: usize, options: &[String], kdf: &str) -> Vec<u8> {
    let mut cmd = helpers::openssl_plain();
    cmd.args(["kdf", "-keylen", &keylen.to_string()]);
    for o in options {
        cmd.args(["-kdfopt", o]);
    }
    cmd.arg(kdf);
    let out = cmd.output().expect("run openssl kdf");
    assert!(out.status.success(), "openssl kdf: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    hex::decode(text.trim().replace(':', "")).expect("hex bytes")
}

fn tls1_prf(digest: &str, secret: &[u8], label_and_seed: &[u8], len: usize) -> Vec<u8> {
    openssl_kdf(
        len,
        &[
            format!("digest:{digest}"),
            format!("hexsecret:{}", hex::encode(secret)),
            format!("hexseed:{}", hex::encode(label_and_seed)),
        ],
        "TLS1-PRF",
    )
}

/// RFC 4279 §2: the plain-PSK pre-master.
fn plain_psk_pre_master(psk: &[u8]) -> Vec<u8> {
    let n = (psk.len() as u16).to_be_bytes();
    [&n[..], &vec![0u8; psk.len()], &n, psk].concat()
}

/// RFC 5489 §2: the ECDHE-PSK pre-master.
fn ecdhe_psk_pre_master(other: &[u8], psk: &[u8]) -> Vec<u8> {
    let o = (other.len() as u16).to_be_bytes();
    let n = (psk.len() as u16).to_be_bytes();
    [&o[..], other, &n, psk].concat()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, &mut v).unwrap();
    v
}

fn psk_handle(session: CK_SESSION_HANDLE, label: &str) -> CK_OBJECT_HANDLE {
    object_by_label(session, CKO_SECRET_KEY, label)
}

/// A session generic secret with `value` that may be used for derivation.
fn session_secret(session: CK_SESSION_HANDLE, value: &[u8]) -> CK_OBJECT_HANDLE {
    let mut class = CKO_SECRET_KEY;
    let mut key_type = CKK_GENERIC_SECRET.to_ne_bytes();
    let mut value = value.to_vec();
    let mut tru = [1u8];
    let mut fals = [0u8];
    let mut t = [
        class_attr(&mut class),
        attr(CKA_KEY_TYPE, &mut key_type),
        attr(CKA_VALUE, &mut value),
        attr(CKA_TOKEN, &mut fals),
        attr(CKA_DERIVE, &mut tru),
    ];
    let mut h = 0;
    let rv = unsafe { C_CreateObject(session, t.as_mut_ptr(), t.len() as CK_ULONG, &mut h) };
    assert_eq!(rv, CKR_OK, "C_CreateObject of a session secret");
    h
}

/// Derives a readable generic secret of `len` bytes (`None`: no CKA_VALUE_LEN in the template).
fn derive<P>(
    session: CK_SESSION_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    params: &mut P,
    base: CK_OBJECT_HANDLE,
    len: Option<usize>,
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut m = CK_MECHANISM {
        mechanism,
        pParameter: params as *mut P as *mut _,
        ulParameterLen: std::mem::size_of::<P>() as CK_ULONG,
    };
    let mut class = CKO_SECRET_KEY;
    let mut key_type = CKK_GENERIC_SECRET.to_ne_bytes();
    let mut value_len = (len.unwrap_or(0) as CK_ULONG).to_ne_bytes();
    let mut fals = [0u8];
    let mut tru = [1u8];
    let mut fals2 = [0u8];
    let mut tru2 = [1u8];
    let mut t = vec![
        class_attr(&mut class),
        attr(CKA_KEY_TYPE, &mut key_type),
        attr(CKA_SENSITIVE, &mut fals),
        attr(CKA_EXTRACTABLE, &mut tru),
        attr(CKA_TOKEN, &mut fals2),
        attr(CKA_DERIVE, &mut tru2),
    ];
    if len.is_some() {
        t.push(attr(CKA_VALUE_LEN, &mut value_len));
    }
    let mut h = 0;
    let rv = unsafe {
        C_DeriveKey(
            session,
            &mut m,
            base,
            t.as_mut_ptr(),
            t.len() as CK_ULONG,
            &mut h,
        )
    };
    if rv == CKR_OK { Ok(h) } else { Err(rv) }
}

fn value(session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> Vec<u8> {
    get_attr(session, key, CKA_VALUE).expect("CKA_VALUE of a readable derived key")
}

fn psk_params(hash: CK_MECHANISM_TYPE, label: &mut [u8], seed: &mut [u8]) -> PskKdfParams {
    PskKdfParams {
        prfHashMechanism: hash,
        pLabel: label.as_mut_ptr(),
        ulLabelLen: label.len() as CK_ULONG,
        pSeed: seed.as_mut_ptr(),
        ulSeedLen: seed.len() as CK_ULONG,
        pOtherSecret: std::ptr::null_mut(),
        ulOtherSecretLen: 0,
    }
}

fn ulong_attr(session: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE, t: CK_ATTRIBUTE_TYPE) -> CK_ULONG {
    let v = get_attr(session, o, t).expect("attribute");
    CK_ULONG::from_ne_bytes(v.try_into().expect("CK_ULONG"))
}

fn mechanisms_of(session: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Vec<CK_MECHANISM_TYPE> {
    get_attr(session, o, CKA_ALLOWED_MECHANISMS)
        .expect("CKA_ALLOWED_MECHANISMS")
        .chunks_exact(std::mem::size_of::<CK_MECHANISM_TYPE>())
        .map(|c| CK_MECHANISM_TYPE::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn psks_are_secret_keys_that_derive_and_are_never_readable_changeable_or_deletable() {
    let h = Harness::default();
    let s = h.init_and_open();
    let mut class = CKO_SECRET_KEY;
    let found = find(s, &mut [class_attr(&mut class)]);
    assert_eq!(found.len(), 4, "the default card's four PSKs");
    let expected = [
        ("device-psk", 0x03u8),
        ("urn:imei:359000000000001", 0x01),
        ("tls13-psk", 0x02),
        ("psk-64", 0x03),
    ];
    for (label, kd) in expected {
        let k = psk_handle(s, label);
        assert_eq!(ulong_attr(s, k, CKA_KEY_TYPE), CKK_GENERIC_SECRET);
        for (a, want) in [
            (CKA_TOKEN, 1u8),
            (CKA_SENSITIVE, 1),
            (CKA_ALWAYS_SENSITIVE, 1),
            (CKA_EXTRACTABLE, 0),
            (CKA_NEVER_EXTRACTABLE, 1),
            (CKA_DERIVE, 1),
            (CKA_MODIFIABLE, 0),
            (CKA_DESTROYABLE, 0),
            (CKA_COPYABLE, 0),
            (CKA_SIGN, 0),
            (CKA_ENCRYPT, 0),
            (CKA_DECRYPT, 0),
            (CKA_WRAP, 0),
            (CKA_UNWRAP, 0),
        ] {
            assert_eq!(
                get_attr(s, k, a),
                Ok(vec![want]),
                "{label}: attribute 0x{a:x}"
            );
        }
        assert_eq!(get_attr(s, k, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
        // The card does not tell the length: no false 0, the attribute cannot be revealed.
        assert_eq!(get_attr(s, k, CKA_VALUE_LEN), Err(CKR_ATTRIBUTE_SENSITIVE));
        assert_eq!(get_attr(s, k, CKA_IOTSAFE_KEY_DERIVATION), Ok(vec![kd]));
        let mut want = Vec::new();
        if kd & 1 != 0 {
            want.extend([CKM_IOTSAFE_TLS12_PSK_KDF, CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF]);
        }
        if kd & 2 != 0 {
            want.push(CKM_HKDF_DERIVE);
        }
        assert_eq!(mechanisms_of(s, k), want, "{label}");
    }

    // Never changed or deleted, in a read-write session too; nothing reaches the card.
    let rw = open_rw_session(0);
    let k = psk_handle(rw, "device-psk");
    h.apdus();
    let mut label = b"renamed".to_vec();
    let mut t = [attr(CKA_LABEL, &mut label)];
    assert_eq!(
        unsafe { C_SetAttributeValue(rw, k, t.as_mut_ptr(), 1) },
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(unsafe { C_DestroyObject(rw, k) }, CKR_ACTION_PROHIBITED);
    let mut copy = 0;
    assert_eq!(
        unsafe { C_CopyObject(rw, k, std::ptr::null_mut(), 0, &mut copy) },
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(h.apdus(), 0, "refused without asking the card");
    // A PSK cannot be written onto the card either (IoT.04 I9: the security service does it).
    let mut class = CKO_SECRET_KEY;
    let mut tru = [1u8];
    let mut value = vec![7u8; 32];
    let mut t = [
        class_attr(&mut class),
        attr(CKA_TOKEN, &mut tru),
        attr(CKA_VALUE, &mut value),
    ];
    let mut created = 0;
    let rv = unsafe { C_CreateObject(rw, t.as_mut_ptr(), 3, &mut created) };
    assert!(
        rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_TOKEN_WRITE_PROTECTED,
        "C_CreateObject of a token secret key: 0x{rv:x}"
    );
    assert_eq!(psk_handle(rw, "device-psk"), k, "still there, same handle");
    let profile = h.card().profile();
    let stored = profile
        .secret_keys
        .iter()
        .find(|k| k.label.as_deref() == Some(&b"device-psk"[..]))
        .and_then(|k| k.value.clone());
    assert_eq!(
        stored,
        Some(psk_value("device-psk")),
        "card value unchanged"
    );
}

#[test]
fn plain_psk_master_secret_equals_openssl_tls1_prf_over_the_rfc4279_pre_master() {
    let h = Harness::default();
    let s = h.init_and_open();
    for (label, hash, digest) in [
        ("device-psk", CKM_SHA256, "SHA256"),
        ("urn:imei:359000000000001", CKM_SHA256, "SHA256"),
        ("psk-64", CKM_SHA384, "SHA384"),
    ] {
        let k = psk_handle(s, label);
        let mut prf_label = b"master secret".to_vec();
        let mut seed = random_bytes(64);
        let mut p = psk_params(hash, &mut prf_label, &mut seed);
        h.apdus();
        let derived = derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, k, None).expect("derive");
        assert_eq!(h.apdus(), 1, "one COMPUTE PRF");
        let got = value(s, derived);
        assert_eq!(got.len(), 48, "a master secret by default");
        let want = tls1_prf(
            digest,
            &plain_psk_pre_master(&psk_value(label)),
            &[&b"master secret"[..], &seed].concat(),
            48,
        );
        assert_eq!(hex::encode(&got), hex::encode(&want), "{label} {digest}");
    }
}

#[test]
fn ecdhe_psk_derivation_equals_openssl_over_the_rfc5489_pre_master() {
    let h = Harness::default();
    let s = h.init_and_open();
    let k = psk_handle(s, "device-psk");
    let mut other = random_bytes(32);
    let mut prf_label = b"extended master secret".to_vec();
    let mut session_hash = random_bytes(32);
    let mut p = psk_params(CKM_SHA256, &mut prf_label, &mut session_hash);
    p.pOtherSecret = other.as_mut_ptr();
    p.ulOtherSecretLen = other.len() as CK_ULONG;
    let derived = derive(s, CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF, &mut p, k, Some(100)).expect("derive");
    let want = tls1_prf(
        "SHA256",
        &ecdhe_psk_pre_master(&other, &psk_value("device-psk")),
        &[&b"extended master secret"[..], &session_hash].concat(),
        100,
    );
    assert_eq!(hex::encode(value(s, derived)), hex::encode(&want));

    // Without the ECDHE secret, ECDHE-PSK is a parameter error; plain PSK refuses one.
    p.pOtherSecret = std::ptr::null_mut();
    p.ulOtherSecretLen = 0;
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF, &mut p, k, None),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    p.pOtherSecret = other.as_mut_ptr();
    p.ulOtherSecretLen = other.len() as CK_ULONG;
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, k, None),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
}

#[test]
fn tls12_kdf_reproduces_the_reference_prf_vectors() {
    let h = Harness::default();
    let s = h.init_and_open();
    // iot05-apdu.md §9.6 vector 1: 255 bytes, the first 48 given.
    let secret1 = "C0485B054863F6DFA458789768B9035C6CACB160DD1A01834811F5783309DB81";
    let seed1 = "CE15B44D68440B652624244DB8D2FB7DD601C759E9EB627FB10529AB0DB76049";
    let first48 = "A1F02A766DA04C8FD83A40E358267528F8D815C48E3DC353\
                   D55FE3861C350622C78B48FE6F49F6E13E1B6B175CFE59FB";
    let unhex = |s: &str| hex::decode(s).expect("hex");
    let base = session_secret(s, &unhex(secret1));
    let mut label = b"extended master secret".to_vec();
    let mut client = unhex(seed1);
    let mut p = CK_TLS_KDF_PARAMS {
        prfMechanism: CKM_SHA256,
        pLabel: label.as_mut_ptr(),
        ulLabelLength: label.len() as CK_ULONG,
        RandomInfo: CK_SSL3_RANDOM_DATA {
            pClientRandom: client.as_mut_ptr(),
            ulClientRandomLen: client.len() as CK_ULONG,
            pServerRandom: std::ptr::null_mut(),
            ulServerRandomLen: 0,
        },
        pContextData: std::ptr::null_mut(),
        ulContextDataLength: 0,
    };
    let got = value(
        s,
        derive(s, CKM_TLS12_KDF, &mut p, base, Some(255)).unwrap(),
    );
    assert_eq!(got.len(), 255);
    assert_eq!(hex::encode(&got[..48]), first48.to_lowercase());
    let want = tls1_prf(
        "SHA256",
        &unhex(secret1),
        &[&label[..], &unhex(seed1)].concat(),
        255,
    );
    assert_eq!(
        hex::encode(&got),
        hex::encode(&want),
        "all 255 bytes equal openssl's"
    );

    // Vector 2: the 48 bytes above as secret, "key expansion", a 64-byte seed (split into the
    // two randoms), first and last 32 bytes given.
    let base = session_secret(s, &unhex(first48));
    let seed2 = unhex(
        "CB52E451A752CA812EA9646F2E5A0EC138C3D4D8AEFA744E17F01499867450815DCADEED3917D046311A4B5D73BBD75E500CE963A7D05D8122EA9745F2E0D9E9",
    );
    let mut label = b"key expansion".to_vec();
    let (mut c, mut sv) = (seed2[..32].to_vec(), seed2[32..].to_vec());
    let mut p = CK_TLS_KDF_PARAMS {
        prfMechanism: CKM_SHA256,
        pLabel: label.as_mut_ptr(),
        ulLabelLength: label.len() as CK_ULONG,
        RandomInfo: CK_SSL3_RANDOM_DATA {
            pClientRandom: c.as_mut_ptr(),
            ulClientRandomLen: 32,
            pServerRandom: sv.as_mut_ptr(),
            ulServerRandomLen: 32,
        },
        pContextData: std::ptr::null_mut(),
        ulContextDataLength: 0,
    };
    let got = value(
        s,
        derive(s, CKM_TLS12_KDF, &mut p, base, Some(255)).unwrap(),
    );
    assert_eq!(
        hex::encode(&got[..32]),
        "ED6C6644C075653F1919FD05A11A93C8057267B9C2CBD09E6D8882B355473E8E".to_lowercase()
    );
    assert_eq!(
        hex::encode(&got[223..]),
        "BA6BD6F753F39DEC1890BAA4283B3139922D80D1E7D3DA69669877125B8C0B41".to_lowercase()
    );

    // With a context (RFC 5705 exporter form): seed ‖ uint16 length ‖ context.
    let mut context = b"lwm2m".to_vec();
    p.pContextData = context.as_mut_ptr();
    p.ulContextDataLength = context.len() as CK_ULONG;
    let got = value(s, derive(s, CKM_TLS12_KDF, &mut p, base, Some(20)).unwrap());
    let want = tls1_prf(
        "SHA256",
        &unhex(first48),
        &[&b"key expansion"[..], &seed2, &[0, 5], b"lwm2m"].concat(),
        20,
    );
    assert_eq!(hex::encode(&got), hex::encode(&want));
}

#[test]
fn tls12_master_secret_from_a_session_pre_master_reports_its_version() {
    let h = Harness::default();
    let s = h.init_and_open();
    let mut pre_master = random_bytes(48);
    pre_master[0] = 3;
    pre_master[1] = 3;
    let base = session_secret(s, &pre_master);
    let mut client = random_bytes(32);
    let mut server = random_bytes(32);
    let mut version = CK_VERSION { major: 0, minor: 0 };
    let mut p = CK_TLS12_MASTER_KEY_DERIVE_PARAMS {
        RandomInfo: CK_SSL3_RANDOM_DATA {
            pClientRandom: client.as_mut_ptr(),
            ulClientRandomLen: 32,
            pServerRandom: server.as_mut_ptr(),
            ulServerRandomLen: 32,
        },
        pVersion: &mut version,
        prfHashMechanism: CKM_SHA256,
    };
    let got = value(
        s,
        derive(s, CKM_TLS12_MASTER_KEY_DERIVE, &mut p, base, None).unwrap(),
    );
    assert_eq!((version.major, version.minor), (3, 3));
    let want = tls1_prf(
        "SHA256",
        &pre_master,
        &[&b"master secret"[..], &client, &server].concat(),
        48,
    );
    assert_eq!(hex::encode(&got), hex::encode(&want));
    // The DH form takes any pre-master length and reports no version.
    let base = session_secret(s, &pre_master[..32]);
    p.pVersion = std::ptr::null_mut();
    let got = value(
        s,
        derive(s, CKM_TLS12_MASTER_KEY_DERIVE_DH, &mut p, base, None).unwrap(),
    );
    let want = tls1_prf(
        "SHA384",
        &pre_master[..32],
        &[&b"master secret"[..], &client, &server].concat(),
        48,
    );
    assert_ne!(
        hex::encode(&got),
        hex::encode(&want),
        "SHA-256 was asked, not SHA-384"
    );
    let want = tls1_prf(
        "SHA256",
        &pre_master[..32],
        &[&b"master secret"[..], &client, &server].concat(),
        48,
    );
    assert_eq!(hex::encode(&got), hex::encode(&want));

    // RFC 7627 extended master secret, SHA-384 PRF.
    let mut session_hash = random_bytes(48);
    let mut p = CK_TLS12_EXTENDED_MASTER_KEY_DERIVE_PARAMS {
        prfHashMechanism: CKM_SHA384,
        pSessionHash: session_hash.as_mut_ptr(),
        ulSessionHashLen: 48,
        pVersion: std::ptr::null_mut(),
    };
    let got = value(
        s,
        derive(
            s,
            CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH,
            &mut p,
            base,
            None,
        )
        .unwrap(),
    );
    let want = tls1_prf(
        "SHA384",
        &pre_master[..32],
        &[&b"extended master secret"[..], &session_hash].concat(),
        48,
    );
    assert_eq!(hex::encode(&got), hex::encode(&want));
}

fn hkdf_params(
    extract: bool,
    expand: bool,
    hash: CK_MECHANISM_TYPE,
    salt: &mut [u8],
    info: &mut [u8],
) -> CK_HKDF_PARAMS {
    CK_HKDF_PARAMS {
        bExtract: extract as CK_BBOOL,
        bExpand: expand as CK_BBOOL,
        prfHashMechanism: hash,
        ulSaltType: if salt.is_empty() {
            CKF_HKDF_SALT_NULL
        } else {
            CKF_HKDF_SALT_DATA
        },
        pSalt: if salt.is_empty() {
            std::ptr::null_mut()
        } else {
            salt.as_mut_ptr()
        },
        ulSaltLen: salt.len() as CK_ULONG,
        hSaltKey: CK_INVALID_HANDLE,
        pInfo: if info.is_empty() {
            std::ptr::null_mut()
        } else {
            info.as_mut_ptr()
        },
        ulInfoLen: info.len() as CK_ULONG,
    }
}

fn openssl_hkdf(
    mode: &str,
    digest: &str,
    key: &[u8],
    salt: &[u8],
    info: &[u8],
    len: usize,
) -> Vec<u8> {
    let mut o = vec![
        format!("digest:{digest}"),
        format!("hexkey:{}", hex::encode(key)),
        format!("mode:{mode}"),
    ];
    if !salt.is_empty() {
        o.push(format!("hexsalt:{}", hex::encode(salt)));
    }
    if !info.is_empty() {
        o.push(format!("hexinfo:{}", hex::encode(info)));
    }
    openssl_kdf(len, &o, "HKDF")
}

#[test]
fn hkdf_from_psks_and_session_keys_equals_openssl_hkdf() {
    let h = Harness::default();
    let s = h.init_and_open();
    // TLS 1.3: early secret = HKDF-Extract(salt 0, PSK), on the card from the stored PSK.
    let psk = psk_handle(s, "tls13-psk");
    let mut p = hkdf_params(true, false, CKM_SHA384, &mut [], &mut []);
    h.apdus();
    let early = derive(s, CKM_HKDF_DERIVE, &mut p, psk, None).unwrap();
    assert_eq!(h.apdus(), 1, "one COMPUTE HKDF");
    let want = openssl_hkdf(
        "EXTRACT_ONLY",
        "SHA384",
        &psk_value("tls13-psk"),
        &[],
        &[],
        48,
    );
    assert_eq!(
        hex::encode(value(s, early)),
        hex::encode(&want),
        "extract, no salt"
    );

    // Extract and expand with salt and info, each hash.
    for (label, hash, digest) in [
        ("device-psk", CKM_SHA256, "SHA256"),
        ("psk-64", CKM_SHA512, "SHA512"),
        ("tls13-psk", CKM_SHA256, "SHA256"),
    ] {
        let k = psk_handle(s, label);
        let mut salt = random_bytes(20);
        let mut info = b"tls13 c e traffic".to_vec();
        let mut p = hkdf_params(true, true, hash, &mut salt, &mut info);
        let got = value(s, derive(s, CKM_HKDF_DERIVE, &mut p, k, Some(42)).unwrap());
        let want = openssl_hkdf(
            "EXTRACT_AND_EXPAND",
            digest,
            &psk_value(label),
            &salt,
            &info,
            42,
        );
        assert_eq!(hex::encode(&got), hex::encode(&want), "{label} {digest}");
    }

    // Expand only, from a session key as PRK (the early secret above).
    let mut info = random_bytes(30);
    let mut p = hkdf_params(false, true, CKM_SHA384, &mut [], &mut info);
    let got = value(
        s,
        derive(s, CKM_HKDF_DERIVE, &mut p, early, Some(200)).unwrap(),
    );
    let want = openssl_hkdf("EXPAND_ONLY", "SHA384", &value(s, early), &[], &info, 200);
    assert_eq!(hex::encode(&got), hex::encode(&want), "expand only");

    // Salt from a key (CKF_HKDF_SALT_KEY).
    let salt_key = session_secret(s, b"0123456789abcdef");
    let k = psk_handle(s, "device-psk");
    let mut p = hkdf_params(true, false, CKM_SHA256, &mut [], &mut []);
    p.ulSaltType = CKF_HKDF_SALT_KEY;
    p.hSaltKey = salt_key;
    let got = value(s, derive(s, CKM_HKDF_DERIVE, &mut p, k, None).unwrap());
    let want = openssl_hkdf(
        "EXTRACT_ONLY",
        "SHA256",
        &psk_value("device-psk"),
        b"0123456789abcdef",
        &[],
        32,
    );
    assert_eq!(hex::encode(&got), hex::encode(&want), "salt from a key");
}

#[test]
fn derivations_refuse_what_the_key_or_the_card_does_not_allow() {
    let h = Harness::default();
    let s = h.init_and_open();
    let hkdf_only = psk_handle(s, "tls13-psk");
    let prf_only = psk_handle(s, "urn:imei:359000000000001");
    let mut label = b"master secret".to_vec();
    let mut seed = random_bytes(64);
    let mut p = psk_params(CKM_SHA256, &mut label, &mut seed);
    h.apdus();
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, hkdf_only, None),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
        "PRF with an HKDF-only PSK"
    );
    let mut hp = hkdf_params(true, false, CKM_SHA256, &mut [], &mut []);
    assert_eq!(
        derive(s, CKM_HKDF_DERIVE, &mut hp, prf_only, None),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
        "HKDF with a PRF-only PSK"
    );
    // The standard PRF mechanisms key the PRF with the base key itself: not with a card PSK.
    let mut client = random_bytes(32);
    let mut tp = CK_TLS_KDF_PARAMS {
        prfMechanism: CKM_SHA256,
        pLabel: label.as_mut_ptr(),
        ulLabelLength: label.len() as CK_ULONG,
        RandomInfo: CK_SSL3_RANDOM_DATA {
            pClientRandom: client.as_mut_ptr(),
            ulClientRandomLen: 32,
            pServerRandom: std::ptr::null_mut(),
            ulServerRandomLen: 0,
        },
        pContextData: std::ptr::null_mut(),
        ulContextDataLength: 0,
    };
    let device = psk_handle(s, "device-psk");
    assert_eq!(
        derive(s, CKM_TLS12_KDF, &mut tp, device, Some(32)),
        Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
    );
    // The PSK mechanisms need a PSK on the card.
    let session_key = session_secret(s, &random_bytes(32));
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, session_key, None),
        Err(CKR_KEY_TYPE_INCONSISTENT)
    );
    // Parameters and templates.
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, device, Some(256)),
        Err(CKR_ATTRIBUTE_VALUE_INVALID),
        "the card derives at most 255 bytes"
    );
    let mut bad_hash = psk_params(CKM_SHA512, &mut label, &mut seed);
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut bad_hash, device, None),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    let mut short = [0u8; 8];
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut short, device, None),
        Err(CKR_MECHANISM_PARAM_INVALID),
        "wrong parameter size"
    );
    let mut neither = hkdf_params(false, false, CKM_SHA256, &mut [], &mut []);
    assert_eq!(
        derive(s, CKM_HKDF_DERIVE, &mut neither, device, None),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    let mut expand = hkdf_params(true, true, CKM_SHA256, &mut [], &mut []);
    assert_eq!(
        derive(s, CKM_HKDF_DERIVE, &mut expand, device, None),
        Err(CKR_TEMPLATE_INCOMPLETE),
        "expand needs CKA_VALUE_LEN"
    );
    let mut long_seed = random_bytes(300);
    let mut too_long = psk_params(CKM_SHA256, &mut label, &mut long_seed);
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut too_long, device, None),
        Err(CKR_MECHANISM_PARAM_INVALID),
        "more than one APDU"
    );
    assert_eq!(h.apdus(), 0, "every refusal before the card");
    // A token object cannot be derived.
    let mut m = CK_MECHANISM {
        mechanism: CKM_IOTSAFE_TLS12_PSK_KDF,
        pParameter: &mut p as *mut PskKdfParams as *mut _,
        ulParameterLen: std::mem::size_of::<PskKdfParams>() as CK_ULONG,
    };
    let mut tru = [1u8];
    let mut t = [attr(CKA_TOKEN, &mut tru)];
    let mut out = 0;
    assert_eq!(
        unsafe { C_DeriveKey(s, &mut m, device, t.as_mut_ptr(), 1, &mut out) },
        CKR_TEMPLATE_INCONSISTENT
    );
    // A derived key is sensitive when asked to be: its value is then never readable.
    let mut fals = [0u8];
    let mut t = [
        attr(CKA_SENSITIVE, &mut tru),
        attr(CKA_EXTRACTABLE, &mut fals),
    ];
    assert_eq!(
        unsafe { C_DeriveKey(s, &mut m, device, t.as_mut_ptr(), 2, &mut out) },
        CKR_OK
    );
    assert_eq!(get_attr(s, out, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
    assert_eq!(
        get_attr(s, out, CKA_VALUE_LEN),
        Ok(48usize.to_ne_bytes().to_vec())
    );
    // A private key only while the user is logged in (and then it is seen), refused before
    // the card.
    let mut t = [attr(CKA_PRIVATE, &mut tru)];
    h.apdus();
    assert_eq!(
        unsafe { C_DeriveKey(s, &mut m, device, t.as_mut_ptr(), 1, &mut out) },
        CKR_USER_NOT_LOGGED_IN
    );
    assert_eq!(h.apdus(), 0);
    assert_eq!(
        unsafe { C_Login(s, CKU_USER, std::ptr::null_mut(), 0) },
        CKR_OK
    );
    assert_eq!(
        unsafe { C_DeriveKey(s, &mut m, device, t.as_mut_ptr(), 1, &mut out) },
        CKR_OK
    );
    assert_eq!(get_attr(s, out, CKA_PRIVATE), Ok(vec![1]));
}

#[test]
fn the_derivation_mechanisms_are_listed_only_when_the_card_offers_them() {
    let wanted = [
        CKM_TLS12_MASTER_KEY_DERIVE,
        CKM_TLS12_MASTER_KEY_DERIVE_DH,
        CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE,
        CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH,
        CKM_TLS12_KDF,
        CKM_IOTSAFE_TLS12_PSK_KDF,
        CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF,
        CKM_HKDF_DERIVE,
    ];
    let list = || -> Vec<CK_MECHANISM_TYPE> {
        unsafe {
            let mut n: CK_ULONG = 0;
            assert_eq!(C_GetMechanismList(0, std::ptr::null_mut(), &mut n), CKR_OK);
            let mut v = vec![0; n as usize];
            assert_eq!(C_GetMechanismList(0, v.as_mut_ptr(), &mut n), CKR_OK);
            v
        }
    };
    {
        let h = Harness::default();
        h.init_and_open();
        let l = list();
        for m in wanted {
            assert!(l.contains(&m), "0x{m:x} listed: {l:x?}");
            let mut info = CK_MECHANISM_INFO {
                ulMinKeySize: 0,
                ulMaxKeySize: 0,
                flags: 0,
            };
            assert_eq!(unsafe { C_GetMechanismInfo(0, m, &mut info) }, CKR_OK);
            assert_eq!(info.flags, CKF_HW | CKF_DERIVE);
        }
    }
    // A card without key derivation (no function bit 08): none of them.
    let mut profile = iotsafe_sim::default_profile();
    profile.app_info.crypto_functions &= !0x08;
    let h = Harness::with_cards(vec![iotsafe_sim::SharedCard::from_profile(
        profile,
        iotsafe_sim::CardOptions::default(),
    )]);
    h.init_and_open();
    let l = list();
    for m in wanted {
        assert!(!l.contains(&m), "0x{m:x} not listed: {l:x?}");
    }
}

/// Run by `secrets_never_reach_the_trace_log` in a child process with trace logging on.
#[test]
fn psk_derivations_for_the_trace_log_child() {
    if std::env::var_os("IOTSAFE_PSK_TRACE_CHILD").is_none() {
        return;
    }
    let h = Harness::default();
    let s = h.init_and_open();
    let mut label = b"master secret".to_vec();
    let mut seed = vec![0x5Au8; 64];
    let mut p = psk_params(CKM_SHA256, &mut label, &mut seed);
    let k = psk_handle(s, "device-psk");
    let derived = derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, k, None).unwrap();
    println!("DERIVED={}", hex::encode(value(s, derived)));
    let base = session_secret(s, &[0xC3; 48]);
    let mut p = hkdf_params(true, true, CKM_SHA256, &mut [], &mut []);
    let derived = derive(s, CKM_HKDF_DERIVE, &mut p, base, Some(40)).unwrap();
    println!("DERIVED={}", hex::encode(value(s, derived)));
}

#[test]
fn secrets_never_reach_the_trace_log() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "psk_derivations_for_the_trace_log_child",
            "--nocapture",
        ])
        .env("IOTSAFE_PSK_TRACE_CHILD", "1")
        .env("IOTSAFE_PKCS11_LOG", "trace")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(out.status.success(), "child failed:\n{stdout}\n{log}");
    assert!(log.contains("redacted"), "trace log on:\n{log}");
    assert!(
        log.contains("480100") && log.contains("4a0200"),
        "COMPUTE PRF traced:\n{log}"
    );
    let derived: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("DERIVED="))
        .collect();
    assert_eq!(derived.len(), 2, "{stdout}");
    let psk = hex::encode(psk_value("device-psk"));
    let session_secret = hex::encode([0xC3; 48]);
    for secret in [
        psk.as_str(),
        session_secret.as_str(),
        derived[0],
        derived[1],
    ] {
        // Any 8 consecutive bytes of a secret would be a leak.
        for i in (0..secret.len().saturating_sub(16)).step_by(8) {
            let piece = &secret[i..i + 16];
            assert!(
                !log.contains(piece),
                "secret bytes {piece} in the log:\n{log}"
            );
        }
    }
}

#[test]
fn a_psk_replaced_by_remote_management_is_used_after_the_card_reports_completion() {
    use iotsafe_pkcs11::error::CKR_IOTSAFE_OBJECT_BEING_UPDATED;
    use iotsafe_sim::ObjectClass;
    let h = Harness::default();
    let s = h.init_and_open();
    let k = psk_handle(s, "device-psk");
    let other = psk_handle(s, "psk-64");
    let mut label = b"master secret".to_vec();
    let mut seed = random_bytes(64);
    let mut p = psk_params(CKM_SHA256, &mut label, &mut seed);
    let before = value(
        s,
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, k, None).unwrap(),
    );

    h.card()
        .remote_begin(ObjectClass::SecretKey, &[0x10])
        .unwrap();
    assert_eq!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, k, None),
        Err(CKR_IOTSAFE_OBJECT_BEING_UPDATED),
        "the PSK being updated"
    );
    assert!(
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, other, None).is_ok(),
        "another PSK keeps working"
    );
    let new_psk = random_bytes(32);
    h.card()
        .remote_replace_secret(&[0x10], new_psk.clone())
        .unwrap();
    h.card().remote_end().unwrap();

    let after = value(
        s,
        derive(s, CKM_IOTSAFE_TLS12_PSK_KDF, &mut p, k, None).unwrap(),
    );
    assert_ne!(hex::encode(&after), hex::encode(&before));
    let want = tls1_prf(
        "SHA256",
        &plain_psk_pre_master(&new_psk),
        &[&b"master secret"[..], &seed].concat(),
        48,
    );
    assert_eq!(
        hex::encode(&after),
        hex::encode(&want),
        "made with the new PSK"
    );
    assert_eq!(psk_handle(s, "device-psk"), k, "same object, same handle");
}
