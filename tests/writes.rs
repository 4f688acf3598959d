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
    // Not a certificate → refused, nothing written; without its type the template is
    // incomplete (PKCS#11 §4.6).
    let mut junk = b"not DER".to_vec();
    assert_eq!(
        create(
            s,
            &mut [
                ulong_attr(CKA_CLASS, &mut cert_class),
                ulong_attr(CKA_CERTIFICATE_TYPE, &mut x509),
                attr(CKA_TOKEN, &mut tru),
                attr(CKA_VALUE, &mut junk)
            ]
        ),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        create(
            s,
            &mut [
                ulong_attr(CKA_CLASS, &mut cert_class),
                attr(CKA_TOKEN, &mut tru),
                attr(CKA_VALUE, &mut der)
            ]
        ),
        Err(CKR_TEMPLATE_INCOMPLETE)
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

fn provisioning_card_with(factory_objects: iotsafe_sim::FactoryObjects) -> Harness {
    let mut profile = iotsafe_sim::default_profile_with_provisioning();
    profile.factory_objects = factory_objects;
    Harness::with_cards(vec![SharedCard::from_profile(
        profile,
        CardOptions::default(),
    )])
}

fn store_data_apdus(h: &Harness) -> u64 {
    let n = h.card().stats().by_ins.get(&0xE2).copied().unwrap_or(0);
    h.card().reset_stats();
    n
}

fn card_file_labels(h: &Harness) -> Vec<Option<Vec<u8>>> {
    let mut labels: Vec<_> = h
        .card()
        .profile()
        .files
        .iter()
        .map(|f| f.label.clone())
        .collect();
    labels.sort();
    labels
}

/// `PKCS11_store_certificate` of libp11 0.4.12 (src/p11_cert.c) sends exactly these attributes,
/// in this order, to a PKCS#11 2.30+ module; the certificate replaces the key pair's old one
/// under the label asked for.
#[test]
fn libp11s_certificate_template_replaces_the_key_pairs_certificate_under_the_label_asked_for() {
    use der::{Decode, Encode};
    use helpers::templates::{Template, create_object};
    let h = provisioning_card_with(iotsafe_sim::FactoryObjects::Writable);
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let s = open_rw_session(0);
    let old = object_by_label(s, CKO_CERTIFICATE, "client");
    let der = get_attr(s, old, CKA_VALUE).unwrap();
    let cert = x509_cert::Certificate::from_der(&der).unwrap();
    let subject = cert.tbs_certificate().subject().to_der().unwrap();
    let issuer = cert.tbs_certificate().issuer().to_der().unwrap();
    // X509_pubkey_digest: the digest of the public key bits, here the card's point.
    let key_hash = Sha256::digest(profile_client_point(h.card())).to_vec();
    let libp11 = |label: &str, key_hash: &[u8]| {
        Template::new()
            .class(CKO_CERTIFICATE)
            .bool(CKA_TOKEN, true)
            .ulong(CKA_CERTIFICATE_TYPE, CKC_X_509)
            .bytes(CKA_SUBJECT, &subject)
            .bytes(CKA_ISSUER, &issuer)
            .ulong(CKA_NAME_HASH_ALGORITHM, CKM_SHA256)
            .bytes(CKA_HASH_OF_SUBJECT_PUBLIC_KEY, key_hash)
            .bytes(CKA_VALUE, &der)
            .bytes(CKA_LABEL, label.as_bytes())
            .bytes(CKA_ID, &[0x01])
    };
    h.card().reset_stats();
    // A hash that is not the certificate's key's: refused before anything is written.
    assert_eq!(
        create_object(s, &libp11("enrolled", &[0u8; 32])),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    // A value the card cannot keep (it stores the certificate's bytes only).
    assert_eq!(
        create_object(
            s,
            &libp11("enrolled", &key_hash).bytes(CKA_URL, b"http://ca/c.der")
        ),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(store_data_apdus(&h), 0, "nothing sent to the card");

    let stored = create_object(s, &libp11("enrolled", &key_hash)).unwrap();
    // A new object: a handle of its own, and the replaced certificate's handle is gone (libp11
    // caches certificates by handle and would show the old one under a handle it knows).
    assert_ne!(stored, old, "the new certificate is a new object");
    assert_eq!(
        get_attr(s, old, CKA_LABEL),
        Err(CKR_OBJECT_HANDLE_INVALID),
        "the replaced certificate's handle"
    );
    assert_eq!(get_attr(s, stored, CKA_LABEL).unwrap(), b"enrolled");
    assert_eq!(get_attr(s, stored, CKA_ID).unwrap(), [0x01]);
    assert_eq!(get_attr(s, stored, CKA_VALUE).unwrap(), der);
    let mut class = CKO_CERTIFICATE;
    let mut client = b"client".to_vec();
    assert!(
        find(
            s,
            &mut [class_attr(&mut class), attr(CKA_LABEL, &mut client)]
        )
        .is_empty()
    );
    let on_card: Vec<_> = h
        .card()
        .profile()
        .files
        .iter()
        .filter(|f| f.content == der)
        .map(|f| f.label.clone())
        .collect();
    assert_eq!(on_card, [Some(b"enrolled".to_vec())], "one file, new label");

    // Every other standard certificate attribute, at the values the card keeps: accepted, and
    // the certificate is updated in place (same label).
    let spki = get_attr(s, stored, CKA_PUBLIC_KEY_INFO).unwrap();
    let serial = cert.tbs_certificate().serial_number().to_der().unwrap();
    let check_value = {
        use sha1::Digest as _;
        sha1::Sha1::digest(&der)[..3].to_vec()
    };
    let full = libp11("enrolled", &key_hash)
        .bool(CKA_PRIVATE, false)
        .bool(CKA_MODIFIABLE, true)
        .bool(CKA_TRUSTED, false)
        .ulong(CKA_CERTIFICATE_CATEGORY, 1)
        .bytes(CKA_CHECK_VALUE, &check_value)
        .bytes(CKA_START_DATE, b"")
        .bytes(CKA_END_DATE, b"")
        .bytes(CKA_PUBLIC_KEY_INFO, &spki)
        .bytes(CKA_SERIAL_NUMBER, &serial)
        .bytes(CKA_URL, b"")
        .bytes(CKA_HASH_OF_ISSUER_PUBLIC_KEY, b"")
        .ulong(CKA_JAVA_MIDP_SECURITY_DOMAIN, 0);
    let updated = create_object(s, &full).unwrap();
    assert_ne!(updated, stored, "replaced in place, still a new object");
    assert_eq!(
        get_attr(s, stored, CKA_VALUE),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_eq!(get_attr(s, updated, CKA_LABEL).unwrap(), b"enrolled");
    // The certificate still signs for its key.
    let sig = sign(s, CKM_ECDSA_SHA256, client_key(s), b"after").unwrap();
    assert!(p256_verify(
        &profile_client_point(h.card()),
        &Sha256::digest(b"after"),
        &sig
    ));
}

#[test]
fn set_attribute_value_changes_a_files_label_and_value_on_the_card_for_every_later_module() {
    use helpers::templates::{Template, create_object, set_attributes};
    let h = provisioning_card();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let s = open_rw_session(0);
    let ro = open_session(0);
    let data = create_object(
        s,
        &Template::new()
            .class(CKO_DATA)
            .bool(CKA_TOKEN, true)
            .bytes(CKA_LABEL, b"endpoint")
            .bytes(CKA_VALUE, b"coap://one"),
    )
    .unwrap();
    assert_eq!(get_attr(s, data, CKA_MODIFIABLE).unwrap(), [1]);
    // The value, in place; the card made the file's slot as large as its first value, so a
    // larger one does not fit there (and the old one stays).
    let value = Template::new().bytes(CKA_VALUE, b"coap://two");
    assert_eq!(set_attributes(ro, data, &value), CKR_SESSION_READ_ONLY);
    assert_eq!(set_attributes(s, data, &value), CKR_OK);
    assert_eq!(get_attr(s, data, CKA_VALUE).unwrap(), b"coap://two");
    let larger = Template::new().bytes(CKA_VALUE, b"coaps://two:5684");
    assert_eq!(set_attributes(s, data, &larger), CKR_DEVICE_MEMORY);
    assert_eq!(get_attr(s, data, CKA_VALUE).unwrap(), b"coap://two");
    // The label (a new file on the card), and both at once: the handle stays.
    assert_eq!(
        set_attributes(s, data, &Template::new().bytes(CKA_LABEL, b"server")),
        CKR_OK
    );
    assert_eq!(get_attr(s, data, CKA_LABEL).unwrap(), b"server");
    // A new label makes a new file, which may be larger.
    let both = Template::new()
        .bytes(CKA_LABEL, b"lwm2m-server")
        .bytes(CKA_VALUE, b"coaps://three:5684");
    assert_eq!(set_attributes(s, data, &both), CKR_OK);
    assert_eq!(object_by_label(s, CKO_DATA, "lwm2m-server"), data);

    // What cannot change, with the code PKCS#11 names.
    let rejected = [
        (
            Template::new().class(CKO_CERTIFICATE),
            CKR_ATTRIBUTE_READ_ONLY,
        ),
        (
            Template::new().bytes(CKA_APPLICATION, b"app"),
            CKR_ATTRIBUTE_READ_ONLY,
        ),
        (
            Template::new().bytes(CKA_EC_POINT, b"x"),
            CKR_ATTRIBUTE_TYPE_INVALID,
        ),
        (
            Template::new().bytes(CKA_VALUE, b""),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        // The card needs file labels to be unique: "ca" is the CA certificate's.
        (
            Template::new().bytes(CKA_LABEL, b"ca"),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
    ];
    for (template, rv) in &rejected {
        assert_eq!(set_attributes(s, data, template), *rv);
    }
    let factory_key = client_key(s);
    assert_eq!(
        set_attributes(s, factory_key, &Template::new().bytes(CKA_LABEL, b"k")),
        CKR_ACTION_PROHIBITED,
        "keys are not modifiable (CKA_MODIFIABLE false)"
    );
    let factory_cert = object_by_label(s, CKO_CERTIFICATE, "client");
    assert_eq!(
        set_attributes(s, factory_cert, &Template::new().bytes(CKA_VALUE, b"x")),
        CKR_ATTRIBUTE_READ_ONLY
    );
    // The card refuses to let the device change a factory file: nothing half-done.
    let before = card_file_labels(&h);
    assert_eq!(
        set_attributes(s, factory_cert, &Template::new().bytes(CKA_LABEL, b"mine")),
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(card_file_labels(&h), before);
    assert_eq!(get_attr(s, factory_cert, CKA_LABEL).unwrap(), b"client");

    // Read back from the card by a new module instance.
    unsafe {
        assert_eq!(C_Finalize(NULL), CKR_OK);
        assert_eq!(C_Initialize(NULL), CKR_OK);
    }
    let s = open_session(0);
    let again = object_by_label(s, CKO_DATA, "lwm2m-server");
    assert_eq!(
        get_attr(s, again, CKA_VALUE).unwrap(),
        b"coaps://three:5684"
    );
    let mut old = b"endpoint".to_vec();
    assert!(find(s, &mut [attr(CKA_LABEL, &mut old)]).is_empty());
    let files = h.card().profile().files;
    assert!(
        files
            .iter()
            .any(|f| f.label.as_deref() == Some(b"lwm2m-server")
                && f.content == b"coaps://three:5684")
    );
    assert!(
        !files
            .iter()
            .any(|f| f.content.starts_with(b"coap") && f.label.as_deref() != Some(b"lwm2m-server"))
    );
}

#[test]
fn a_session_data_object_copied_with_cka_token_true_is_written_to_the_card() {
    use helpers::templates::{Template, copy_object, create_object};
    let h = provisioning_card();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let s = open_rw_session(0);
    let session_object = create_object(
        s,
        &Template::new()
            .class(CKO_DATA)
            .bytes(CKA_LABEL, b"draft")
            .bytes(CKA_VALUE, b"kept"),
    )
    .unwrap();
    h.card().reset_stats();
    let copy = copy_object(
        s,
        session_object,
        &Template::new()
            .bool(CKA_TOKEN, true)
            .bytes(CKA_LABEL, b"final"),
    )
    .unwrap();
    assert!(store_data_apdus(&h) > 0);
    assert_eq!(get_attr(s, copy, CKA_TOKEN).unwrap(), [1]);
    assert_eq!(get_attr(s, copy, CKA_VALUE).unwrap(), b"kept");
    assert!(
        h.card()
            .profile()
            .files
            .iter()
            .any(|f| f.label.as_deref() == Some(b"final") && f.content == b"kept")
    );
    assert_eq!(get_attr(s, session_object, CKA_LABEL).unwrap(), b"draft");
}
