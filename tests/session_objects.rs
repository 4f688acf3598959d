//! Session objects (PKCS#11 3.0 §4.4, §5.7), in-process: data objects, X.509 certificates and
//! P-256 public keys made with `CKA_TOKEN` false live in memory, in read-only sessions too, are
//! found, read, changed, copied and destroyed, are private only to a logged-in user, and are
//! gone with their session, `C_CloseAllSessions` and `C_Finalize`. Nothing reaches the card.

mod helpers;

use cryptoki_sys::*;
use helpers::inprocess::*;
use helpers::templates::{Template, copy_object, create_object, set_attributes, verify};
use iotsafe_pkcs11::ffi::*;
use p256::ecdsa::signature::hazmat::PrehashSigner;
use sha2::{Digest, Sha256};

const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

fn data_object(label: &str, value: &[u8]) -> Template {
    Template::new()
        .class(CKO_DATA)
        .bool(CKA_TOKEN, false)
        .bytes(CKA_LABEL, label.as_bytes())
        .bytes(CKA_APPLICATION, b"tests")
        .bytes(CKA_VALUE, value)
}

fn labelled(s: CK_SESSION_HANDLE, label: &str) -> Vec<CK_OBJECT_HANDLE> {
    let mut label = label.as_bytes().to_vec();
    find(s, &mut [attr(CKA_LABEL, &mut label)])
}

/// The DER of the card's client certificate (the simulator's default profile).
fn client_certificate(s: CK_SESSION_HANDLE) -> Vec<u8> {
    get_attr(s, object_by_label(s, CKO_CERTIFICATE, "client"), CKA_VALUE).unwrap()
}

fn ec_public_key(label: &str, point: &[u8]) -> Template {
    ec_public_key_on(&P256_OID, label, point)
}

fn ec_public_key_on(curve: &[u8], label: &str, point: &[u8]) -> Template {
    let mut der_point = vec![0x04, point.len() as u8];
    der_point.extend_from_slice(point);
    Template::new()
        .class(CKO_PUBLIC_KEY)
        .ulong(CKA_KEY_TYPE, CKK_EC)
        .bool(CKA_TOKEN, false)
        .bytes(CKA_LABEL, label.as_bytes())
        .bytes(CKA_EC_PARAMS, curve)
        .bytes(CKA_EC_POINT, &der_point)
}

#[test]
fn a_data_object_lives_in_a_read_only_session_and_is_read_changed_copied_and_destroyed() {
    let h = Harness::default();
    let s = h.init_and_open();
    h.apdus();
    let object = create_object(s, &data_object("scratch", b"first")).unwrap();
    assert_eq!(get_attr(s, object, CKA_VALUE).unwrap(), b"first");
    assert_eq!(get_attr(s, object, CKA_TOKEN).unwrap(), [0]);
    assert_eq!(get_attr(s, object, CKA_MODIFIABLE).unwrap(), [1]);
    assert_eq!(get_attr(s, object, CKA_APPLICATION).unwrap(), b"tests");
    assert_eq!(labelled(s, "scratch"), [object]);
    // Another session of the application sees it.
    let other = open_session(0);
    assert_eq!(get_attr(other, object, CKA_VALUE).unwrap(), b"first");

    // Value, label and application may change; the class may not; a key attribute is no data
    // object's.
    let change = Template::new()
        .bytes(CKA_VALUE, b"second")
        .bytes(CKA_LABEL, b"renamed");
    assert_eq!(set_attributes(s, object, &change), CKR_OK);
    assert_eq!(get_attr(other, object, CKA_VALUE).unwrap(), b"second");
    assert!(labelled(s, "scratch").is_empty());
    assert_eq!(labelled(s, "renamed"), [object]);
    assert_eq!(
        set_attributes(s, object, &Template::new().class(CKO_CERTIFICATE)),
        CKR_ATTRIBUTE_READ_ONLY
    );
    assert_eq!(
        set_attributes(s, object, &Template::new().bytes(CKA_EC_POINT, b"x")),
        CKR_ATTRIBUTE_TYPE_INVALID
    );
    assert_eq!(
        set_attributes(s, object, &Template::new().bytes(CKA_TOKEN, &[1, 0])),
        CKR_ATTRIBUTE_VALUE_INVALID
    );

    // A copy with its own label; once not copyable, the copy cannot be copied again.
    let copy = copy_object(
        s,
        object,
        &Template::new()
            .bytes(CKA_LABEL, b"copy")
            .bool(CKA_COPYABLE, false),
    )
    .unwrap();
    assert_ne!(copy, object);
    assert_eq!(get_attr(s, copy, CKA_VALUE).unwrap(), b"second");
    assert_eq!(get_attr(s, copy, CKA_LABEL).unwrap(), b"copy");
    assert_eq!(
        copy_object(s, copy, &Template::new()),
        Err(CKR_ACTION_PROHIBITED)
    );
    assert_eq!(
        set_attributes(s, copy, &Template::new().bool(CKA_COPYABLE, true)),
        CKR_ATTRIBUTE_READ_ONLY
    );
    // A token copy needs a read-write session.
    assert_eq!(
        copy_object(s, object, &Template::new().bool(CKA_TOKEN, true)),
        Err(CKR_SESSION_READ_ONLY)
    );
    // Not modifiable: C_SetAttributeValue is a prohibited action.
    let frozen = copy_object(s, object, &Template::new().bool(CKA_MODIFIABLE, false)).unwrap();
    assert_eq!(
        set_attributes(s, frozen, &Template::new().bytes(CKA_LABEL, b"x")),
        CKR_ACTION_PROHIBITED
    );
    let undeletable =
        copy_object(s, object, &Template::new().bool(CKA_DESTROYABLE, false)).unwrap();
    assert_eq!(
        unsafe { C_DestroyObject(s, undeletable) },
        CKR_ACTION_PROHIBITED
    );

    unsafe { assert_eq!(C_DestroyObject(s, object), CKR_OK) };
    assert_eq!(
        get_attr(s, object, CKA_VALUE),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    assert_eq!(get_attr(s, copy, CKA_VALUE).unwrap(), b"second");
    assert_eq!(h.apdus(), 0, "session objects never reach the card");
}

#[test]
fn create_object_checks_the_template_as_pkcs11_says() {
    let h = Harness::default();
    let s = h.init_and_open();
    // No class: the template is incomplete, session object or not.
    let no_class = Template::new()
        .bool(CKA_TOKEN, false)
        .bytes(CKA_VALUE, b"v");
    assert_eq!(create_object(s, &no_class), Err(CKR_TEMPLATE_INCOMPLETE));
    assert_eq!(
        create_object(s, &Template::new().bytes(CKA_VALUE, b"v")),
        Err(CKR_TEMPLATE_INCOMPLETE)
    );
    // An attribute data objects do not have; one only the token sets; a malformed boolean.
    assert_eq!(
        create_object(s, &data_object("d", b"v").ulong(CKA_KEY_TYPE, CKK_EC)),
        Err(CKR_ATTRIBUTE_TYPE_INVALID)
    );
    assert_eq!(
        create_object(s, &data_object("d", b"v").bytes(CKA_UNIQUE_ID, b"1")),
        Err(CKR_ATTRIBUTE_READ_ONLY)
    );
    assert_eq!(
        create_object(s, &data_object("d", b"v").bytes(CKA_PRIVATE, &[0, 0])),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    // Private keys are the card's; a class that does not exist.
    assert_eq!(
        create_object(
            s,
            &Template::new()
                .class(CKO_PRIVATE_KEY)
                .bool(CKA_TOKEN, false)
        ),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        create_object(s, &Template::new().class(0x7777).bool(CKA_TOKEN, false)),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );

    // Certificates: the type and the value are required; what the certificate says must match.
    let der = client_certificate(s);
    let cert = || {
        Template::new()
            .class(CKO_CERTIFICATE)
            .ulong(CKA_CERTIFICATE_TYPE, CKC_X_509)
            .bool(CKA_TOKEN, false)
            .bytes(CKA_VALUE, &der)
    };
    let no_type = Template::new()
        .class(CKO_CERTIFICATE)
        .bool(CKA_TOKEN, false)
        .bytes(CKA_VALUE, &der);
    assert_eq!(create_object(s, &no_type), Err(CKR_TEMPLATE_INCOMPLETE));
    let no_value = Template::new()
        .class(CKO_CERTIFICATE)
        .ulong(CKA_CERTIFICATE_TYPE, CKC_X_509)
        .bool(CKA_TOKEN, false);
    assert_eq!(create_object(s, &no_value), Err(CKR_TEMPLATE_INCOMPLETE));
    let wtls = Template::new()
        .class(CKO_CERTIFICATE)
        .ulong(CKA_CERTIFICATE_TYPE, CKC_WTLS)
        .bool(CKA_TOKEN, false)
        .bytes(CKA_VALUE, &der);
    assert_eq!(create_object(s, &wtls), Err(CKR_ATTRIBUTE_VALUE_INVALID));
    assert_eq!(
        create_object(s, &cert().bytes(CKA_LABEL, b"a").bytes(CKA_LABEL, b"b")),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(
        create_object(s, &cert().bytes(CKA_SUBJECT, b"\x30\x00")),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        create_object(s, &cert().bytes(CKA_CHECK_VALUE, &[1, 2, 3])),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        create_object(s, &cert().bool(CKA_TRUSTED, true)),
        Err(CKR_ATTRIBUTE_READ_ONLY),
        "only a security officer may trust a certificate"
    );
    assert_eq!(
        create_object(s, &cert().ulong(CKA_NAME_HASH_ALGORITHM, CKM_MD5)),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let ok = create_object(s, &cert().bytes(CKA_CHECK_VALUE, &sha1_prefix(&der))).unwrap();
    assert_eq!(get_attr(s, ok, CKA_CHECK_VALUE).unwrap(), sha1_prefix(&der));
    // The subject is filled in from the certificate (the card's own certificate object agrees).
    let card_cert = object_by_label(s, CKO_CERTIFICATE, "client");
    assert_eq!(
        get_attr(s, ok, CKA_SUBJECT).unwrap(),
        get_attr(s, card_cert, CKA_SUBJECT).unwrap()
    );
    assert_eq!(
        get_attr(s, ok, CKA_HASH_OF_SUBJECT_PUBLIC_KEY).unwrap(),
        get_attr(s, card_cert, CKA_HASH_OF_SUBJECT_PUBLIC_KEY).unwrap()
    );
    // Only the ID, issuer and serial number of a certificate may change.
    assert_eq!(
        set_attributes(s, ok, &Template::new().bytes(CKA_ID, b"\x42")),
        CKR_OK
    );
    assert_eq!(get_attr(s, ok, CKA_ID).unwrap(), [0x42]);
    assert_eq!(
        set_attributes(s, ok, &Template::new().bytes(CKA_VALUE, &der)),
        CKR_ATTRIBUTE_READ_ONLY
    );

    // EC public keys: P-256 only, a point on the curve.
    let point = profile_client_point(h.card());
    assert_eq!(
        create_object(
            s,
            &ec_public_key_on(b"\x06\x05\x2b\x81\x04\x00\x22", "P-384", &point)
        ),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let mut off_curve = point.clone();
    off_curve[64] ^= 1;
    assert_eq!(
        create_object(s, &ec_public_key("k", &off_curve)),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    let no_point = Template::new()
        .class(CKO_PUBLIC_KEY)
        .ulong(CKA_KEY_TYPE, CKK_EC)
        .bool(CKA_TOKEN, false)
        .bytes(CKA_EC_PARAMS, &P256_OID);
    assert_eq!(create_object(s, &no_point), Err(CKR_TEMPLATE_INCOMPLETE));
    assert_eq!(
        create_object(s, &ec_public_key("k", &point).bool(CKA_LOCAL, true)),
        Err(CKR_ATTRIBUTE_READ_ONLY)
    );
}

fn sha1_prefix(der: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(der)[..3].to_vec()
}

#[test]
fn a_session_public_key_verifies_signatures_of_the_card_and_of_another_signer() {
    let h = Harness::default();
    let s = h.init_and_open();
    let point = profile_client_point(h.card());
    let key = create_object(s, &ec_public_key("card key", &point)).unwrap();
    assert_eq!(
        get_attr(s, key, CKA_PUBLIC_KEY_INFO).unwrap(),
        get_attr(
            s,
            object_by_label(s, CKO_PUBLIC_KEY, "client"),
            CKA_PUBLIC_KEY_INFO
        )
        .unwrap()
    );
    let message = b"signed on the card";
    let signature = sign(s, CKM_ECDSA_SHA256, client_key(s), message).unwrap();
    assert!(p256_verify(&point, &Sha256::digest(message), &signature));
    assert_eq!(
        verify(s, CKM_ECDSA_SHA256, key, message, &signature),
        CKR_OK
    );
    assert_eq!(
        verify(s, CKM_ECDSA_SHA256, key, b"another message", &signature),
        CKR_SIGNATURE_INVALID
    );
    // A key that never was on the card.
    let secret = p256::SecretKey::from_slice(&[0x17; 32]).unwrap();
    let host_point = secret.public_key().to_sec1_bytes().to_vec();
    let signer = p256::ecdsa::SigningKey::from(&secret);
    let host_key = create_object(s, &ec_public_key("host key", &host_point)).unwrap();
    let host_signature: p256::ecdsa::Signature =
        signer.sign_prehash(&Sha256::digest(b"host")).unwrap();
    let host_signature = host_signature.to_bytes().to_vec();
    assert_eq!(
        verify(s, CKM_ECDSA_SHA256, host_key, b"host", &host_signature),
        CKR_OK
    );
    assert_eq!(
        verify(s, CKM_ECDSA_SHA256, key, b"host", &host_signature),
        CKR_SIGNATURE_INVALID
    );
    // CKA_VERIFY false: the key does not permit it.
    assert_eq!(
        set_attributes(s, host_key, &Template::new().bool(CKA_VERIFY, false)),
        CKR_OK
    );
    assert_eq!(
        verify(s, CKM_ECDSA_SHA256, host_key, b"host", &host_signature),
        CKR_KEY_FUNCTION_NOT_PERMITTED
    );
}

#[test]
fn private_session_objects_need_and_follow_the_login() {
    let h = Harness::default();
    let s = h.init_and_open();
    let private = data_object("secret note", b"v").bool(CKA_PRIVATE, true);
    assert_eq!(create_object(s, &private), Err(CKR_USER_NOT_LOGGED_IN));
    let pin = b"0000";
    unsafe {
        assert_eq!(
            C_Login(s, CKU_USER, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG),
            CKR_OK
        );
    }
    let object = create_object(s, &private).unwrap();
    assert_eq!(labelled(s, "secret note"), [object]);
    unsafe { assert_eq!(C_Logout(s), CKR_OK) };
    assert!(
        labelled(s, "secret note").is_empty(),
        "hidden when logged out"
    );
    assert_eq!(
        get_attr(s, object, CKA_VALUE),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    unsafe {
        assert_eq!(
            C_Login(s, CKU_USER, pin.as_ptr() as *mut u8, pin.len() as CK_ULONG),
            CKR_OK
        );
    }
    assert_eq!(get_attr(s, object, CKA_VALUE).unwrap(), b"v");
}

#[test]
fn session_objects_go_with_their_session_close_all_sessions_and_finalize() {
    let h = Harness::default();
    let s = h.init_and_open();
    let keeper = open_session(0);
    let object = create_object(s, &data_object("mine", b"1")).unwrap();
    unsafe { assert_eq!(C_CloseSession(s), CKR_OK) };
    assert_eq!(
        get_attr(keeper, object, CKA_VALUE),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    assert!(labelled(keeper, "mine").is_empty());

    let object = create_object(keeper, &data_object("all", b"2")).unwrap();
    unsafe { assert_eq!(C_CloseAllSessions(0), CKR_OK) };
    let s = open_session(0);
    assert_eq!(
        get_attr(s, object, CKA_VALUE),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    assert!(labelled(s, "all").is_empty());

    let object = create_object(s, &data_object("finalized", b"3")).unwrap();
    unsafe {
        assert_eq!(C_Finalize(std::ptr::null_mut()), CKR_OK);
        assert_eq!(C_Initialize(std::ptr::null_mut()), CKR_OK);
    }
    let s = open_session(0);
    assert_eq!(
        get_attr(s, object, CKA_VALUE),
        Err(CKR_OBJECT_HANDLE_INVALID)
    );
    assert!(labelled(s, "finalized").is_empty());
}

#[test]
fn card_objects_are_not_copied_and_change_only_on_a_writable_token() {
    let h = Harness::default();
    let ro = h.init_and_open();
    let rw = open_rw_session(0);
    let cert = object_by_label(ro, CKO_CERTIFICATE, "client");
    assert_eq!(
        copy_object(ro, cert, &Template::new()),
        Err(CKR_ACTION_PROHIBITED)
    );
    let relabel = Template::new().bytes(CKA_LABEL, b"other");
    // The default card is write-protected.
    assert_eq!(
        set_attributes(rw, cert, &relabel),
        CKR_TOKEN_WRITE_PROTECTED
    );
    assert_eq!(set_attributes(ro, cert, &relabel), CKR_SESSION_READ_ONLY);
    assert_eq!(
        get_attr(ro, cert, CKA_LABEL).unwrap(),
        b"client",
        "unchanged"
    );
}
