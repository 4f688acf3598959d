//! Writes through the provisioning profile and remote management (IoT.04 G4), in-process.

mod helpers;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::error::{CKR_IOTSAFE_OBJECT_BEING_UPDATED, CKR_IOTSAFE_OBJECT_CHANGED};
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, ObjectClass, SharedCard};
use sha2::{Digest, Sha256};

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

fn provisioning_card() -> Harness {
    Harness::with_cards(vec![SharedCard::from_profile(
        iotsafe_sim::default_profile_with_provisioning(),
        CardOptions::default(),
    )])
}

fn token_flags() -> CK_FLAGS {
    let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { C_GetTokenInfo(0, &mut ti) }, CKR_OK);
    ti.flags
}

fn create(
    session: CK_SESSION_HANDLE,
    template: &mut [CK_ATTRIBUTE],
) -> Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut h = 0;
    match unsafe {
        C_CreateObject(
            session,
            template.as_mut_ptr(),
            template.len() as CK_ULONG,
            &mut h,
        )
    } {
        CKR_OK => Ok(h),
        rv => Err(rv),
    }
}

fn ulong_attr(t: CK_ATTRIBUTE_TYPE, v: &mut CK_ULONG) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v as *mut CK_ULONG as *mut _,
        ulValueLen: 8,
    }
}

#[test]
fn a_card_without_the_provisioning_profile_stays_write_protected() {
    let h = Harness::default();
    let ro = h.init_and_open();
    assert_eq!(token_flags() & CKF_WRITE_PROTECTED, CKF_WRITE_PROTECTED);
    let s = open_rw_session(0);
    let mut class = CKO_DATA;
    let mut tru = [1u8];
    let mut value = b"hello".to_vec();
    let mut t = [
        ulong_attr(CKA_CLASS, &mut class),
        attr(CKA_TOKEN, &mut tru),
        attr(CKA_VALUE, &mut value),
    ];
    assert_eq!(create(s, &mut t), Err(CKR_TOKEN_WRITE_PROTECTED));
    assert_eq!(create(ro, &mut t), Err(CKR_SESSION_READ_ONLY));
    let cert = object_by_label(s, CKO_CERTIFICATE, "client");
    assert_eq!(
        unsafe { C_DestroyObject(s, cert) },
        CKR_TOKEN_WRITE_PROTECTED
    );
    assert_eq!(unsafe { C_DestroyObject(ro, cert) }, CKR_SESSION_READ_ONLY);
}

#[test]
fn data_objects_and_certificates_are_written_read_and_deleted() {
    let h = provisioning_card();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    assert_eq!(token_flags() & CKF_WRITE_PROTECTED, 0);
    let s = open_rw_session(0);
    // A data object larger than one APDU: several STORE DATA blocks.
    let content: Vec<u8> = (0..1500u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut class = CKO_DATA;
    let mut tru = [1u8];
    let mut value = content.clone();
    let mut label = b"endpoint".to_vec();
    h.apdus();
    let data = create(
        s,
        &mut [
            ulong_attr(CKA_CLASS, &mut class),
            attr(CKA_TOKEN, &mut tru),
            attr(CKA_VALUE, &mut value),
            attr(CKA_LABEL, &mut label),
        ],
    )
    .unwrap();
    assert!(
        h.card().stats().by_ins.get(&0xE2).copied().unwrap_or(0) >= 8,
        "multi-block STORE DATA"
    );
    assert_eq!(get_attr(s, data, CKA_VALUE).unwrap(), content);
    assert_eq!(object_by_label(s, CKO_DATA, "endpoint"), data);
    // On the card too.
    let profile = h.card().profile();
    assert!(profile.files.iter().any(|f| f.content == content));
    // A certificate (of a key this card does not hold) gets a file of its own.
    let other = iotsafe_sim::bundle_from_seed(b"another device").unwrap();
    let mut der = pem_to_der(&other.client_cert_pem);
    let mut cert_class = CKO_CERTIFICATE;
    let mut x509 = CKC_X_509;
    let mut cert_label = b"foreign".to_vec();
    let cert = create(
        s,
        &mut [
            ulong_attr(CKA_CLASS, &mut cert_class),
            ulong_attr(CKA_CERTIFICATE_TYPE, &mut x509),
            attr(CKA_TOKEN, &mut tru),
            attr(CKA_VALUE, &mut der),
            attr(CKA_LABEL, &mut cert_label),
        ],
    )
    .unwrap();
    assert_eq!(get_attr(s, cert, CKA_VALUE).unwrap(), der);
    assert!(!get_attr(s, cert, CKA_SUBJECT).unwrap().is_empty());
    // Not a certificate → refused, nothing written.
    let mut junk = b"not DER".to_vec();
    assert_eq!(
        create(
            s,
            &mut [
                ulong_attr(CKA_CLASS, &mut cert_class),
                attr(CKA_TOKEN, &mut tru),
                attr(CKA_VALUE, &mut junk)
            ]
        ),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    // Deleting what the device wrote works; factory objects are not the device's to delete.
    unsafe {
        assert_eq!(C_DestroyObject(s, data), CKR_OK);
        assert_eq!(C_DestroyObject(s, cert), CKR_OK);
    }
    assert_eq!(get_attr(s, data, CKA_VALUE), Err(CKR_OBJECT_HANDLE_INVALID));
    assert!(
        !h.card()
            .profile()
            .files
            .iter()
            .any(|f| f.content == content)
    );
    let factory_cert = object_by_label(s, CKO_CERTIFICATE, "client");
    assert_eq!(
        unsafe { C_DestroyObject(s, factory_cert) },
        CKR_ACTION_PROHIBITED
    );
    assert!(get_attr(s, factory_cert, CKA_VALUE).is_ok(), "still there");
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use std::io::Write;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut out = Vec::new();
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut acc = 0u32;
    let mut bits = 0;
    for c in body.bytes().filter(|c| *c != b'=') {
        let v = table.iter().position(|t| *t == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.write_all(&[(acc >> bits) as u8]).unwrap();
        }
    }
    out
}

#[test]
fn a_new_key_pair_container_is_created_used_and_deleted() {
    let h = provisioning_card();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let s = open_rw_session(0);
    let mut oid = P256_OID.to_vec();
    let mut id = [0x30u8];
    let mut label = b"fresh".to_vec();
    let mut tru = [1u8];
    let mut m = mech(CKM_EC_KEY_PAIR_GEN);
    let (mut pubh, mut privh) = (0, 0);
    let mut public = [attr(CKA_EC_PARAMS, &mut oid), attr(CKA_TOKEN, &mut tru)];
    let mut private = [
        attr(CKA_ID, &mut id),
        attr(CKA_LABEL, &mut label),
        attr(CKA_SIGN, &mut tru),
    ];
    unsafe {
        assert_eq!(
            C_GenerateKeyPair(
                s,
                &mut m,
                public.as_mut_ptr(),
                2,
                private.as_mut_ptr(),
                3,
                &mut pubh,
                &mut privh
            ),
            CKR_OK
        );
    }
    assert_eq!(get_attr(s, privh, CKA_ID).unwrap(), vec![0x30]);
    assert_eq!(get_attr(s, privh, CKA_LABEL).unwrap(), b"fresh".to_vec());
    let point = get_attr(s, pubh, CKA_EC_POINT).unwrap()[2..].to_vec();
    let sig = sign(s, CKM_ECDSA_SHA256, privh, b"new key").unwrap();
    assert!(p256_verify(&point, &Sha256::digest(b"new key"), &sig));
    // The device made it, so the device may delete it (private and public key).
    unsafe { assert_eq!(C_DestroyObject(s, privh), CKR_OK) };
    assert_eq!(get_attr(s, pubh, CKA_ID), Err(CKR_OBJECT_HANDLE_INVALID));
    let mut id = [0x30u8];
    assert!(find(s, &mut [attr(CKA_ID, &mut id)]).is_empty());
    // The factory key pair is not the device's to delete.
    let factory = object_by_label(s, CKO_PRIVATE_KEY, "client");
    assert_eq!(
        unsafe { C_DestroyObject(s, factory) },
        CKR_ACTION_PROHIBITED
    );
    // Refused as a whole: the factory private key is untouched and still signs.
    let sig = sign(s, CKM_ECDSA_SHA256, factory, b"still here").unwrap();
    assert!(p256_verify(
        &profile_client_point(h.card()),
        &Sha256::digest(b"still here"),
        &sig
    ));
}

#[test]
fn remote_management_blocks_only_the_object_being_updated_and_the_new_key_is_used_after() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let old_point = profile_client_point(h.card());
    let ecdh = object_by_label(s, CKO_PRIVATE_KEY, "ecdh");
    sign(s, CKM_ECDSA_SHA256, key, b"before").unwrap();

    h.card()
        .remote_begin(ObjectClass::PrivateKey, &[0x01])
        .unwrap();
    // The key being updated: the documented vendor error, the session stays usable.
    assert_eq!(
        sign(s, CKM_ECDSA_SHA256, key, b"during"),
        Err(CKR_IOTSAFE_OBJECT_BEING_UPDATED)
    );
    assert_eq!(
        sign(s, CKM_ECDSA_SHA256, key, b"during"),
        Err(CKR_IOTSAFE_OBJECT_BEING_UPDATED)
    );
    // Other objects keep working: ECDH with the other key.
    let peer = p256::SecretKey::from_slice(&[0x42u8; 32])
        .unwrap()
        .public_key()
        .to_sec1_bytes()
        .to_vec();
    let mut params = CK_ECDH1_DERIVE_PARAMS {
        kdf: CKD_NULL,
        ulSharedDataLen: 0,
        pSharedData: std::ptr::null_mut(),
        ulPublicDataLen: 65,
        pPublicData: peer.as_ptr() as *mut _,
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_ECDH1_DERIVE,
        pParameter: &mut params as *mut _ as *mut _,
        ulParameterLen: std::mem::size_of::<CK_ECDH1_DERIVE_PARAMS>() as CK_ULONG,
    };
    let mut derived = 0;
    assert_eq!(
        unsafe { C_DeriveKey(s, &mut m, ecdh, std::ptr::null_mut(), 0, &mut derived) },
        CKR_OK
    );

    let new_point = h.card().remote_replace_key(&[0x01]).unwrap();
    h.card().remote_end().unwrap();
    assert_ne!(new_point, old_point);
    // The first command after the remote session answers 63CF: the module signs (with the new
    // key — the card holds nothing else) and re-reads its objects at once.
    let sig = sign(s, CKM_ECDSA_SHA256, key, b"after").unwrap();
    assert!(
        p256_verify(&new_point, &Sha256::digest(b"after"), &sig),
        "made with the new key"
    );
    let public = object_by_label(s, CKO_PUBLIC_KEY, "client");
    assert_eq!(
        &get_attr(s, public, CKA_EC_POINT).unwrap()[2..],
        &new_point[..],
        "the cache shows the new key"
    );
    assert_eq!(
        &get_attr(s, key, CKA_EC_POINT).unwrap()[2..],
        &new_point[..],
        "same handle, new key"
    );
    let _ = CKR_IOTSAFE_OBJECT_CHANGED;
}

#[test]
fn a_remotely_replaced_certificate_is_served_after_the_card_reports_completion() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let cert = object_by_label(s, CKO_CERTIFICATE, "client");
    let old = get_attr(s, cert, CKA_VALUE).unwrap();
    let replacement = pem_to_der(
        &iotsafe_sim::bundle_from_seed(b"renewed")
            .unwrap()
            .ca_cert_pem,
    );
    h.card().remote_begin(ObjectClass::File, &[0x02]).unwrap();
    h.card()
        .remote_replace_file(&[0x02], replacement.clone())
        .unwrap();
    // Signing uses the key, not the certificate being updated: it works during the session.
    sign(s, CKM_ECDSA_SHA256, key, b"during").unwrap();
    assert_eq!(
        get_attr(s, cert, CKA_VALUE).unwrap(),
        old,
        "the card still shows the old one"
    );
    h.card().remote_end().unwrap();
    // The next card command learns of the completion (63CF) and the cache is re-read.
    sign(s, CKM_ECDSA_SHA256, key, b"after").unwrap();
    let mut class = CKO_CERTIFICATE;
    let certs: Vec<Vec<u8>> = find(s, &mut [class_attr(&mut class)])
        .into_iter()
        .map(|c| get_attr(s, c, CKA_VALUE).unwrap())
        .collect();
    assert!(
        certs.contains(&replacement),
        "the new certificate is served"
    );
    assert!(!certs.contains(&old), "never the stale one");
}

#[test]
fn a_write_cut_off_mid_transfer_changes_nothing_visible() {
    let h = provisioning_card();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let s = open_rw_session(0);
    let cert = object_by_label(s, CKO_CERTIFICATE, "client");
    let cert_before = get_attr(s, cert, CKA_VALUE).unwrap();
    // The card is pulled out after the third STORE DATA block of a 1500-byte write.
    h.card().faults().arm(
        iotsafe_sim::Fault::new(iotsafe_sim::FaultKind::Remove)
            .on_ins(0xE2)
            .skip(4),
    );
    let mut class = CKO_DATA;
    let mut tru = [1u8];
    let mut value = vec![0x5Au8; 1500];
    let mut label = b"half".to_vec();
    let rv = create(
        s,
        &mut [
            ulong_attr(CKA_CLASS, &mut class),
            attr(CKA_TOKEN, &mut tru),
            attr(CKA_VALUE, &mut value),
            attr(CKA_LABEL, &mut label),
        ],
    );
    assert_eq!(
        rv,
        Err(CKR_DEVICE_REMOVED),
        "the module reports the failure"
    );
    h.card().insert();
    let s2 = open_session(0);
    // Nothing half-written is visible, and what was there is intact.
    let mut half = b"half".to_vec();
    assert!(find(s2, &mut [attr(CKA_LABEL, &mut half)]).is_empty());
    let cert = object_by_label(s2, CKO_CERTIFICATE, "client");
    assert_eq!(get_attr(s2, cert, CKA_VALUE).unwrap(), cert_before);
    assert!(
        !h.card()
            .profile()
            .files
            .iter()
            .any(|f| f.content == value && f.state == iotsafe_sim::ObjectState::Activated)
    );
}
