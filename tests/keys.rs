//! Key life-cycle in-process: on-board key generation and ECDH, checked against independent
//! computations with the simulator's key material.

mod helpers;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

fn keygen(
    session: CK_SESSION_HANDLE,
    public: &mut [CK_ATTRIBUTE],
    private: &mut [CK_ATTRIBUTE],
) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), CK_RV> {
    let mut m = mech(CKM_EC_KEY_PAIR_GEN);
    let (mut pubh, mut privh) = (0, 0);
    let rv = unsafe {
        C_GenerateKeyPair(
            session,
            &mut m,
            public.as_mut_ptr(),
            public.len() as CK_ULONG,
            private.as_mut_ptr(),
            private.len() as CK_ULONG,
            &mut pubh,
            &mut privh,
        )
    };
    if rv == CKR_OK {
        Ok((pubh, privh))
    } else {
        Err(rv)
    }
}

/// The simulator's public point for private key `id` (computed from its scalar).
fn card_point(h: &Harness, id: u8) -> Vec<u8> {
    let profile = h.card().profile();
    let key = profile
        .private_keys
        .iter()
        .find(|k| k.id == [id])
        .expect("private key");
    let scalar = key.private.clone().expect("filled container");
    let secret = p256::SecretKey::from_slice(&scalar).expect("scalar");
    secret.public_key().to_sec1_bytes().to_vec()
}

#[test]
fn generate_key_pair_regenerates_a_container_and_the_handles_show_the_new_key() {
    let h = Harness::default();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let s = open_rw_session(0);
    let before = card_point(&h, 0x04);
    let mut oid = P256_OID.to_vec();
    let mut id = [0x04u8];
    let mut tru = [1u8];
    h.apdus();
    let (pubh, privh) = keygen(
        s,
        &mut [attr(CKA_EC_PARAMS, &mut oid), attr(CKA_TOKEN, &mut tru)],
        &mut [attr(CKA_ID, &mut id), attr(CKA_SENSITIVE, &mut tru)],
    )
    .expect("C_GenerateKeyPair");
    let stats = h.card().stats();
    assert_eq!(stats.by_ins.get(&0xB9), Some(&1));
    assert!(
        stats.total <= 2,
        "GENERATE KEY PAIR (+ READ PUBLIC KEY at most): {stats:?}"
    );
    let after = card_point(&h, 0x04);
    assert_ne!(before, after, "a new key");
    let ec_point = get_attr(s, pubh, CKA_EC_POINT).unwrap();
    assert_eq!(
        &ec_point[2..],
        &after[..],
        "the public key object holds the new point at once"
    );
    assert_eq!(get_attr(s, privh, CKA_ID).unwrap(), vec![0x04]);
    assert_eq!(&get_attr(s, privh, CKA_EC_POINT).unwrap()[2..], &after[..]);
    assert_eq!(get_attr(s, pubh, CKA_EC_PARAMS).unwrap(), P256_OID.to_vec());
    // Found by id as well.
    let mut pub_class = CKO_PUBLIC_KEY;
    let mut id = [0x04u8];
    assert_eq!(
        find(s, &mut [class_attr(&mut pub_class), attr(CKA_ID, &mut id)]),
        vec![pubh]
    );
}

#[test]
fn generate_key_pair_checks_its_templates() {
    let h = Harness::default();
    let ro = h.init_and_open();
    let s = open_rw_session(0);
    let mut oid = P256_OID.to_vec();
    let mut p384 = vec![0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
    let mut id = [0x04u8];
    let mut unknown = [0x55u8];
    let (mut tru, mut fals) = ([1u8], [0u8]);
    let cases: Vec<(
        CK_SESSION_HANDLE,
        Vec<CK_ATTRIBUTE>,
        Vec<CK_ATTRIBUTE>,
        CK_RV,
    )> = vec![
        (
            s,
            vec![],
            vec![attr(CKA_ID, &mut id)],
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            s,
            vec![attr(CKA_EC_PARAMS, &mut p384)],
            vec![attr(CKA_ID, &mut id)],
            CKR_CURVE_NOT_SUPPORTED,
        ),
        (
            s,
            vec![attr(CKA_EC_PARAMS, &mut oid)],
            vec![],
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            ro,
            vec![attr(CKA_EC_PARAMS, &mut oid)],
            vec![attr(CKA_ID, &mut id)],
            CKR_SESSION_READ_ONLY,
        ),
        (
            s,
            vec![attr(CKA_EC_PARAMS, &mut oid)],
            vec![attr(CKA_ID, &mut unknown)],
            CKR_TOKEN_WRITE_PROTECTED,
        ),
        (
            s,
            vec![attr(CKA_EC_PARAMS, &mut oid), attr(CKA_TOKEN, &mut fals)],
            vec![attr(CKA_ID, &mut id)],
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            s,
            vec![attr(CKA_EC_PARAMS, &mut oid)],
            vec![attr(CKA_ID, &mut id), attr(CKA_EXTRACTABLE, &mut tru)],
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
    ];
    for (session, mut public, mut private, expect) in cases {
        assert_eq!(keygen(session, &mut public, &mut private), Err(expect));
    }
    let mut other_id = [0x01u8];
    assert_eq!(
        keygen(
            s,
            &mut [attr(CKA_EC_PARAMS, &mut oid), attr(CKA_ID, &mut other_id)],
            &mut [attr(CKA_ID, &mut id)]
        ),
        Err(CKR_TEMPLATE_INCONSISTENT),
        "different CKA_ID in the two templates"
    );
}

fn derive(
    session: CK_SESSION_HANDLE,
    base: CK_OBJECT_HANDLE,
    kdf: CK_EC_KDF_TYPE,
    shared: &[u8],
    peer: &[u8],
    template: &mut [CK_ATTRIBUTE],
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut params = CK_ECDH1_DERIVE_PARAMS {
        kdf,
        ulSharedDataLen: shared.len() as CK_ULONG,
        pSharedData: if shared.is_empty() {
            std::ptr::null_mut()
        } else {
            shared.as_ptr() as *mut _
        },
        ulPublicDataLen: peer.len() as CK_ULONG,
        pPublicData: peer.as_ptr() as *mut _,
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_ECDH1_DERIVE,
        pParameter: &mut params as *mut _ as *mut _,
        ulParameterLen: std::mem::size_of::<CK_ECDH1_DERIVE_PARAMS>() as CK_ULONG,
    };
    let mut key = 0;
    let rv = unsafe {
        C_DeriveKey(
            session,
            &mut m,
            base,
            template.as_mut_ptr(),
            template.len() as CK_ULONG,
            &mut key,
        )
    };
    if rv == CKR_OK { Ok(key) } else { Err(rv) }
}

/// ANSI X9.63 KDF computed by OpenSSL 3 (`openssl kdf … X963KDF`), an implementation of its
/// own: the module's derivations are checked against it, never against a second copy of the
/// algorithm.
fn openssl_x963(digest: &str, z: &[u8], shared: &[u8], len: usize) -> Vec<u8> {
    let mut cmd = helpers::openssl_plain();
    cmd.args(["kdf", "-keylen", &len.to_string(), "-kdfopt"])
        .arg(format!("digest:{digest}"))
        .arg("-kdfopt")
        .arg(format!("hexsecret:{}", hex::encode(z)));
    if !shared.is_empty() {
        cmd.arg("-kdfopt")
            .arg(format!("hexinfo:{}", hex::encode(shared)));
    }
    let out = cmd.arg("X963KDF").output().expect("run openssl kdf");
    assert!(out.status.success(), "openssl kdf: {out:?}");
    let text = String::from_utf8(out.stdout).expect("openssl prints hex");
    hex::decode(text.trim().replace(':', "")).expect("openssl kdf output is hex")
}

/// The ECDH secret of the card's `ecdh` key (04) with the peer scalar 0x42…42, and the peer's
/// point (raw, uncompressed).
fn ecdh_peer_and_secret(h: &Harness) -> (Vec<u8>, Vec<u8>) {
    let peer = p256::SecretKey::from_slice(&[0x42u8; 32]).unwrap();
    let card_public = p256::PublicKey::from_sec1_bytes(&card_point(h, 0x04)).unwrap();
    let z = p256::ecdh::diffie_hellman(peer.to_nonzero_scalar(), card_public.as_affine());
    (
        peer.public_key().to_sec1_bytes().to_vec(),
        z.raw_secret_bytes().to_vec(),
    )
}

#[test]
fn ecdh_with_every_x963_kdf_equals_openssl() {
    let h = Harness::default();
    let s = h.init_and_open();
    let base = object_by_label(s, CKO_PRIVATE_KEY, "ecdh");
    let (peer_point, z) = ecdh_peer_and_secret(&h);
    // 70 bytes: 2 to 4 blocks of the counter; with and without shared data.
    for (kdf, digest) in [
        (CKD_SHA1_KDF, "SHA1"),
        (CKD_SHA224_KDF, "SHA224"),
        (CKD_SHA256_KDF, "SHA256"),
        (CKD_SHA384_KDF, "SHA384"),
        (CKD_SHA512_KDF, "SHA512"),
    ] {
        for shared in [&b"shared info"[..], &[]] {
            let mut generic = CKK_GENERIC_SECRET;
            let mut len: CK_ULONG = 70;
            let mut template = [
                CK_ATTRIBUTE {
                    type_: CKA_KEY_TYPE,
                    pValue: &mut generic as *mut _ as *mut _,
                    ulValueLen: 8,
                },
                CK_ATTRIBUTE {
                    type_: CKA_VALUE_LEN,
                    pValue: &mut len as *mut _ as *mut _,
                    ulValueLen: 8,
                },
            ];
            let k = derive(s, base, kdf, shared, &peer_point, &mut template)
                .unwrap_or_else(|rv| panic!("{digest}: C_DeriveKey 0x{rv:x}"));
            assert_eq!(
                hex::encode(get_attr(s, k, CKA_VALUE).unwrap()),
                hex::encode(openssl_x963(digest, &z, shared, 70)),
                "ECDH + X9.63 {digest}, shared data {shared:?}"
            );
        }
    }
}

#[test]
fn ecdh_matches_an_independent_computation() {
    let h = Harness::default();
    let s = h.init_and_open();
    let base = object_by_label(s, CKO_PRIVATE_KEY, "ecdh");
    assert_eq!(get_attr(s, base, CKA_DERIVE).unwrap(), vec![1]);
    // The peer: a key pair made here; the expected secret computed with p256's ECDH.
    let (peer_point, z) = ecdh_peer_and_secret(&h);

    // CKD_NULL, raw point: the shared secret itself.
    h.apdus();
    let k = derive(s, base, CKD_NULL, &[], &peer_point, &mut []).unwrap();
    let stats = h.card().stats();
    assert_eq!(
        stats.total, 3,
        "PUT PUBLIC KEY init + update, COMPUTE DH: {stats:?}"
    );
    assert_eq!(get_attr(s, k, CKA_VALUE).unwrap(), z);
    assert_eq!(
        get_attr(s, k, CKA_CLASS).unwrap(),
        CKO_SECRET_KEY.to_ne_bytes().to_vec()
    );
    assert_eq!(
        get_attr(s, k, CKA_VALUE_LEN).unwrap(),
        32u64.to_ne_bytes().to_vec()
    );

    // X9.63 SHA-256 KDF with shared data, peer point DER-wrapped, a 16-byte AES key.
    let der_point = [&[0x04, 0x41][..], &peer_point].concat();
    let mut aes = CKK_AES;
    let mut len: CK_ULONG = 16;
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_KEY_TYPE,
            pValue: &mut aes as *mut _ as *mut _,
            ulValueLen: 8,
        },
        CK_ATTRIBUTE {
            type_: CKA_VALUE_LEN,
            pValue: &mut len as *mut _ as *mut _,
            ulValueLen: 8,
        },
    ];
    let k2 = derive(
        s,
        base,
        CKD_SHA256_KDF,
        b"shared info",
        &der_point,
        &mut template,
    )
    .unwrap();
    assert_eq!(
        get_attr(s, k2, CKA_VALUE).unwrap(),
        openssl_x963("SHA256", &z, b"shared info", 16)
    );
    assert_eq!(
        get_attr(s, k2, CKA_KEY_TYPE).unwrap(),
        CKK_AES.to_ne_bytes().to_vec()
    );

    // A sensitive result is never revealed; it can be found and destroyed.
    let mut tru = [1u8];
    let k3 = derive(
        s,
        base,
        CKD_NULL,
        &[],
        &peer_point,
        &mut [attr(CKA_SENSITIVE, &mut tru)],
    )
    .unwrap();
    assert_eq!(get_attr(s, k3, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
    // The three derived keys (session objects; the card's PSKs are token objects).
    let mut secret_class = CKO_SECRET_KEY;
    let mut session_only = [0u8];
    assert_eq!(
        find(
            s,
            &mut [
                class_attr(&mut secret_class),
                attr(CKA_TOKEN, &mut session_only)
            ]
        )
        .len(),
        3
    );
    unsafe { assert_eq!(C_DestroyObject(s, k3), CKR_OK) };
    assert_eq!(get_attr(s, k3, CKA_CLASS), Err(CKR_OBJECT_HANDLE_INVALID));
    // Session objects go with their session.
    unsafe { assert_eq!(C_CloseSession(s), CKR_OK) };
    let s2 = open_session(0);
    assert!(
        find(
            s2,
            &mut [
                class_attr(&mut secret_class),
                attr(CKA_TOKEN, &mut session_only)
            ]
        )
        .is_empty()
    );
    assert_eq!(get_attr(s2, k, CKA_CLASS), Err(CKR_OBJECT_HANDLE_INVALID));
}

#[test]
fn ecdh_refuses_bad_parameters_exactly() {
    let h = Harness::default();
    let s = h.init_and_open();
    let base = object_by_label(s, CKO_PRIVATE_KEY, "ecdh");
    let public = object_by_label(s, CKO_PUBLIC_KEY, "client");
    let peer = p256::SecretKey::from_slice(&[0x42u8; 32])
        .unwrap()
        .public_key()
        .to_sec1_bytes()
        .to_vec();
    let mut bad_point = peer.clone();
    bad_point[64] ^= 1;
    let mut tru = [1u8];
    assert_eq!(
        derive(s, base, CKD_NULL, b"x", &peer, &mut []),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    assert_eq!(
        derive(s, base, CKD_NULL, &[], &bad_point, &mut []),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    assert_eq!(
        derive(s, base, CKD_NULL, &[], &peer[..33], &mut []),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    assert_eq!(
        derive(s, base, 0x77, &[], &peer, &mut []),
        Err(CKR_MECHANISM_PARAM_INVALID)
    );
    assert_eq!(
        derive(s, public, CKD_NULL, &[], &peer, &mut []),
        Err(CKR_KEY_TYPE_INCONSISTENT)
    );
    assert_eq!(
        derive(s, 987654, CKD_NULL, &[], &peer, &mut []),
        Err(CKR_KEY_HANDLE_INVALID)
    );
    assert_eq!(
        derive(
            s,
            base,
            CKD_NULL,
            &[],
            &peer,
            &mut [attr(CKA_TOKEN, &mut tru)]
        ),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(
        derive(s, base, CKD_SHA256_KDF, &[], &peer, &mut []),
        Err(CKR_TEMPLATE_INCOMPLETE)
    );
    unsafe {
        let mut m = mech(CKM_ECDH1_DERIVE);
        let mut key = 0;
        assert_eq!(
            C_DeriveKey(s, &mut m, base, std::ptr::null_mut(), 0, &mut key),
            CKR_MECHANISM_PARAM_INVALID
        );
    }
}
