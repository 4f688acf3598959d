//! Key pairs whose halves carry different object IDs (issue #13 item 1), in-process: for each
//! key layout of the simulator (`iotsafe_sim::KeyLayout`) the private key, the public key and the
//! certificate share the private key's `CKA_ID`, the private key carries the point, a signature
//! verifies against the certificate's key; the pairing proof (one signature of a random
//! challenge) is made once per card and remembered; candidates that do not verify pair nothing.

mod helpers;

use cryptoki_sys::*;
use helpers::TempDir;
use helpers::inprocess::*;
use helpers::sim_reader::unplug_sim_readers;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, KEY_LAYOUTS, KeyLayout, ModemOptions, Profile, SharedCard};
use sha2::{Digest, Sha256};
use x509_cert::der::Decode;

const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const NULL: *mut std::ffi::c_void = std::ptr::null_mut();

fn layout_profile(layout: KeyLayout) -> Profile {
    iotsafe_sim::default_profile().with_key_layout(layout)
}

/// COMPUTE SIGNATURE INIT commands the card received since its stats were last reset.
fn signatures_begun(card: &SharedCard) -> u64 {
    card.stats().by_ins.get(&0x2A).copied().unwrap_or(0)
}

/// The pairing proofs a card read of `layout` makes: one where nothing the card says pairs
/// the client key.
fn proofs_of(layout: KeyLayout) -> u64 {
    u64::from(layout == KeyLayout::SplitIdsSplitLabels)
}

/// The client pair's private key, public key and certificate, by their card labels.
fn client_objects(
    s: CK_SESSION_HANDLE,
    layout: KeyLayout,
) -> (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) {
    let c = layout.client();
    (
        object_by_label(s, CKO_PRIVATE_KEY, c.private_label),
        object_by_label(s, CKO_PUBLIC_KEY, c.public_label),
        object_by_label(s, CKO_CERTIFICATE, c.certificate_label),
    )
}

/// The P-256 point of a DER certificate.
fn certificate_point(der: &[u8]) -> Vec<u8> {
    let cert = x509_cert::Certificate::from_der(der).expect("the certificate parses");
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

fn ec_point_der(point: &[u8]) -> Vec<u8> {
    [&[0x04, point.len() as u8][..], point].concat()
}

fn objects_with_id(s: CK_SESSION_HANDLE, id: u8) -> Vec<CK_OBJECT_HANDLE> {
    let mut id = [id];
    find(s, &mut [attr(CKA_ID, &mut id)])
}

/// The three objects of the client pair in `layout` share the private key's ID, the private
/// key has the point, and a signature verifies against the certificate's key.
fn check_presented_pair(s: CK_SESSION_HANDLE, layout: KeyLayout, card: &SharedCard) {
    let c = layout.client();
    let (private, public, certificate) = client_objects(s, layout);
    for (what, handle) in [
        ("private key", private),
        ("public key", public),
        ("certificate", certificate),
    ] {
        assert_eq!(
            get_attr(s, handle, CKA_ID),
            Ok(vec![c.private_id]),
            "{layout}: CKA_ID of the {what}"
        );
    }
    let mut with_id = objects_with_id(s, c.private_id);
    with_id.sort_unstable();
    let mut three = vec![private, public, certificate];
    three.sort_unstable();
    assert_eq!(
        with_id, three,
        "{layout}: the objects with the pair's CKA_ID"
    );

    let point = card
        .profile()
        .public_key(&[c.public_id])
        .and_then(|k| k.point.clone())
        .expect("the public key's point");
    assert_eq!(
        get_attr(s, private, CKA_EC_POINT),
        Ok(ec_point_der(&point)),
        "{layout}: CKA_EC_POINT of the private key"
    );
    let spki = get_attr(s, private, CKA_PUBLIC_KEY_INFO).expect("CKA_PUBLIC_KEY_INFO");
    assert!(!spki.is_empty(), "{layout}: CKA_PUBLIC_KEY_INFO is empty");
    assert_eq!(Ok(spki), get_attr(s, public, CKA_PUBLIC_KEY_INFO));
    assert_eq!(get_attr(s, private, CKA_EC_PARAMS), Ok(P256_OID.to_vec()));

    let cert_der = get_attr(s, certificate, CKA_VALUE).expect("the certificate's value");
    let cert_point = certificate_point(&cert_der);
    assert_eq!(
        cert_point, point,
        "{layout}: the certificate certifies the pair"
    );
    let message = format!("signed on a card of layout {layout}");
    let signature = sign(s, CKM_ECDSA_SHA256, private, message.as_bytes()).expect("C_Sign");
    assert!(
        p256_verify(&cert_point, &Sha256::digest(message.as_bytes()), &signature),
        "{layout}: the signature does not verify against the certificate's key"
    );
}

#[test]
fn every_layout_presents_one_key_pair_under_the_private_keys_id() {
    for layout in KEY_LAYOUTS {
        let h = Harness::with_cards(vec![SharedCard::from_profile(
            layout_profile(layout),
            CardOptions::default(),
        )]);
        h.card().reset_stats();
        let s = h.init_and_open();
        assert_eq!(
            signatures_begun(h.card()),
            proofs_of(layout),
            "{layout}: signatures while reading the card"
        );
        check_presented_pair(s, layout, h.card());
        assert_eq!(
            signatures_begun(h.card()),
            proofs_of(layout) + 1,
            "{layout}: the proof is not made again"
        );
    }
}

#[test]
fn a_re_read_after_a_remote_update_keeps_the_proof_without_signing_again() {
    let layout = KeyLayout::SplitIdsSplitLabels;
    let h = Harness::with_cards(vec![SharedCard::from_profile(
        layout_profile(layout),
        CardOptions::default(),
    )]);
    h.card().reset_stats();
    let s = h.init_and_open();
    let private = object_by_label(s, CKO_PRIVATE_KEY, "client");
    sign(s, CKM_ECDSA_SHA256, private, b"before").expect("C_Sign");
    // A remote-management session replaces the CA certificate (03): the next command answers
    // 63CF and the token reads the card again.
    let ca = h
        .card()
        .profile()
        .file(&[0x03])
        .expect("the CA file")
        .content
        .clone();
    let mut new_ca = ca.clone();
    let last = new_ca.len() - 1;
    new_ca[last] ^= 0x55;
    h.card()
        .remote_begin(iotsafe_sim::ObjectClass::File, &[0x03])
        .unwrap();
    h.card()
        .remote_replace_file(&[0x03], new_ca.clone())
        .unwrap();
    h.card().remote_end().unwrap();
    sign(s, CKM_ECDSA_SHA256, private, b"takes the 63CF").expect("C_Sign");
    let ca_object = object_by_label(s, CKO_CERTIFICATE, "ca");
    assert_eq!(get_attr(s, ca_object, CKA_VALUE), Ok(new_ca), "re-read");
    assert_eq!(
        signatures_begun(h.card()),
        3,
        "one proof and two signatures: the re-read kept the proof"
    );
    check_presented_pair(s, layout, h.card());
}

/// Two candidate halves (a public key and a certificate of other keys) that do not verify the
/// private key's signature: the key stays unpaired, and nothing takes its ID.
#[test]
fn candidates_that_do_not_verify_leave_the_private_key_unpaired() {
    use iotsafe_sim::pki::{DEFAULT_SEED, derive_key};
    use p256::elliptic_curve::sec1::ToSec1Point;
    let mut profile = layout_profile(KeyLayout::SplitIdsSplitLabels);
    let stranger = derive_key(DEFAULT_SEED, "a key of no public half");
    let private = profile
        .private_keys
        .iter_mut()
        .find(|k| k.id == [0x06])
        .expect("private key 06");
    private.private = Some(stranger.to_bytes().to_vec());
    let mut other = profile.public_key(&[0x07]).expect("public key 07").clone();
    other.id = vec![0x09];
    other.label = Some(b"other".to_vec());
    other.point = Some(
        derive_key(DEFAULT_SEED, "another key")
            .public_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec(),
    );
    profile.public_keys.push(other);
    let h = Harness::with_cards(vec![SharedCard::from_profile(
        profile,
        CardOptions::default(),
    )]);
    h.card().reset_stats();
    let s = h.init_and_open();
    assert_eq!(signatures_begun(h.card()), 1, "the proof was tried once");
    let private = object_by_label(s, CKO_PRIVATE_KEY, "client");
    assert_eq!(
        get_attr(s, private, CKA_EC_POINT),
        Err(CKR_ATTRIBUTE_TYPE_INVALID)
    );
    assert_eq!(get_attr(s, private, CKA_PUBLIC_KEY_INFO), Ok(Vec::new()));
    assert_eq!(get_attr(s, private, CKA_ID), Ok(vec![0x06]));
    assert_eq!(objects_with_id(s, 0x06), vec![private]);
    for (label, id) in [("client-pub", 0x07), ("other", 0x09)] {
        let public = object_by_label(s, CKO_PUBLIC_KEY, label);
        assert_eq!(get_attr(s, public, CKA_ID), Ok(vec![id]), "{label}");
    }
    let certificate = object_by_label(s, CKO_CERTIFICATE, "client-cert");
    assert_eq!(get_attr(s, certificate, CKA_ID), Ok(vec![0x07]));
}

/// Over the AT path with the content cache, as one-shot processes run: the first process makes
/// the proof, the next ones take it from the cache and send no signature before their own.
#[test]
fn a_warm_process_takes_the_proof_from_the_content_cache() {
    for layout in KEY_LAYOUTS {
        let _guard = module_lock();
        unplug_sim_readers();
        unsafe { C_Finalize(NULL) };
        let dir = TempDir::new(&format!(
            "iotsafe-key-pairing-{}-{layout}",
            std::process::id()
        ));
        let link = dir.path().join("modem");
        let card = SharedCard::from_profile(layout_profile(layout), CardOptions::default());
        let modem = iotsafe_sim::modem::spawn(card, &link, ModemOptions::default())
            .expect("spawn the simulated modem");
        let config = format!(
            "lock_dir = \"{dir}\"\ncache_dir = \"{dir}/cache\"\n[pcsc]\nenabled = false\n\
             [[modem]]\ndevice = \"{}\"\nat_mode = \"cgla\"\n",
            link.display(),
            dir = dir.path().display()
        );
        let card = modem.card();
        for process in 0..3 {
            card.reset_stats();
            initialize_with_config(&config);
            let s = open_session(0);
            let before = signatures_begun(card);
            let expected = if process == 0 { proofs_of(layout) } else { 0 };
            assert_eq!(before, expected, "{layout}, process {process}: proofs");
            check_presented_pair(s, layout, card);
            assert_eq!(signatures_begun(card), before + 1);
            unsafe { C_Finalize(NULL) };
        }
        drop(modem);
    }
}

/// A key pair regenerated on the card into a public key of another ID: the private key shows
/// the new point at once, not the one its certificate (from before) still holds.
#[test]
fn a_regenerated_pair_replaces_the_proven_point() {
    let mut profile = layout_profile(KeyLayout::SplitIdsSplitLabels);
    let private = profile
        .private_keys
        .iter_mut()
        .find(|k| k.id == [0x06])
        .expect("private key 06");
    private.crypto_functions |= iotsafe_sim::profile::CF_KEY_GENERATION;
    // The card generates into public key 07 for private key 06.
    profile.device_objects.push(iotsafe_sim::DeviceObject {
        class: iotsafe_sim::ObjectClass::PrivateKey,
        id: vec![0x06],
        slot_size: None,
        public_id: Some(vec![0x07]),
    });
    let h = Harness::with_cards(vec![SharedCard::from_profile(
        profile,
        CardOptions::default(),
    )]);
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let s = open_rw_session(0);
    let old_point = h
        .card()
        .profile()
        .public_key(&[0x07])
        .unwrap()
        .point
        .clone();
    let (mut oid, mut id, mut yes) = (P256_OID.to_vec(), [0x06u8], [1u8]);
    let mut public_template = [attr(CKA_EC_PARAMS, &mut oid)];
    let mut private_template = [attr(CKA_ID, &mut id), attr(CKA_SIGN, &mut yes)];
    let (mut public, mut private) = (0, 0);
    let mut mechanism = mech(CKM_EC_KEY_PAIR_GEN);
    let rv = unsafe {
        C_GenerateKeyPair(
            s,
            &mut mechanism,
            public_template.as_mut_ptr(),
            public_template.len() as CK_ULONG,
            private_template.as_mut_ptr(),
            private_template.len() as CK_ULONG,
            &mut public,
            &mut private,
        )
    };
    assert_eq!(rv, CKR_OK, "C_GenerateKeyPair");
    let new_point = h
        .card()
        .profile()
        .public_key(&[0x07])
        .unwrap()
        .point
        .clone();
    assert_ne!(new_point, old_point, "a new key in public key 07");
    let new_point = new_point.expect("filled");
    assert_eq!(
        get_attr(s, private, CKA_EC_POINT),
        Ok(ec_point_der(&new_point))
    );
    assert_eq!(get_attr(s, public, CKA_ID), Ok(vec![0x06]));
    // The certificate certifies the old key: it is no longer the pair's.
    let certificate = object_by_label(s, CKO_CERTIFICATE, "client-cert");
    assert_ne!(get_attr(s, certificate, CKA_ID), Ok(vec![0x06]));
    let signature = sign(s, CKM_ECDSA_SHA256, private, b"new key").expect("C_Sign");
    assert!(p256_verify(
        &new_point,
        &Sha256::digest(b"new key"),
        &signature
    ));
}
