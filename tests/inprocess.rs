//! The module in-process over the simulator library: PKCS#11 behaviour, exact return values,
//! signatures verified with p256 against the card's public key, APDU counts.

mod helpers;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{AppInfoTags, CardOptions, ObjectListStyle, SignatureLengthStyle};
use sha2::{Digest, Sha256, Sha384, Sha512};

const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const NULL: *mut std::ffi::c_void = std::ptr::null_mut();

#[test]
fn everything_before_initialize_is_not_initialized() {
    let _h = Harness::default();
    unsafe {
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(C_GetInfo(&mut info), CKR_CRYPTOKI_NOT_INITIALIZED);
        let mut n: CK_ULONG = 0;
        assert_eq!(
            C_GetSlotList(0, std::ptr::null_mut(), &mut n),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(C_CloseSession(1), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(
            C_WaitForSlotEvent(0, std::ptr::null_mut(), NULL),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
        assert_eq!(C_GetFunctionList(std::ptr::null_mut()), CKR_ARGUMENTS_BAD);
        let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        assert_eq!(C_GetFunctionList(&mut list), CKR_OK);
        assert_eq!((*list).version.major, 2);
        assert_eq!((*list).version.minor, 40);
    }
}

extern "C" fn create_mutex(m: *mut *mut std::ffi::c_void) -> CK_RV {
    unsafe { *m = std::ptr::dangling_mut() };
    CKR_OK
}
extern "C" fn mutex_op(_: *mut std::ffi::c_void) -> CK_RV {
    CKR_OK
}

#[test]
fn initialize_argument_matrix() {
    let _h = Harness::default();
    let args = |flags, callbacks: usize| CK_C_INITIALIZE_ARGS {
        CreateMutex: (callbacks > 0).then_some(create_mutex as _),
        DestroyMutex: (callbacks > 1).then_some(mutex_op as _),
        LockMutex: (callbacks > 2).then_some(mutex_op as _),
        UnlockMutex: (callbacks > 3).then_some(mutex_op as _),
        flags,
        pReserved: std::ptr::null_mut(),
    };
    unsafe {
        for (flags, callbacks, expect) in [
            (CKF_OS_LOCKING_OK, 0, CKR_OK),
            (CKF_OS_LOCKING_OK, 4, CKR_OK), // what p11-kit passes
            (0, 0, CKR_OK),
            (0, 4, CKR_OK), // the module locks on its own (aziot-keyd: tests/initialization.rs)
            (CKF_OS_LOCKING_OK, 2, CKR_ARGUMENTS_BAD),
        ] {
            let mut a = args(flags, callbacks);
            let rv = C_Initialize(&mut a as *mut _ as *mut _);
            assert_eq!(rv, expect, "flags {flags:x} callbacks {callbacks}");
            if rv == CKR_OK {
                assert_eq!(
                    C_Initialize(&mut a as *mut _ as *mut _),
                    CKR_CRYPTOKI_ALREADY_INITIALIZED
                );
                assert_eq!(C_Finalize(std::ptr::dangling_mut()), CKR_ARGUMENTS_BAD);
                assert_eq!(C_Finalize(NULL), CKR_OK);
            }
        }
        // Re-initialisation after C_Finalize works and finds the token again.
        assert_eq!(C_Initialize(NULL), CKR_OK);
        let mut n: CK_ULONG = 0;
        assert_eq!(C_GetSlotList(1, std::ptr::null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 1);
        // A non-NULL pReserved is refused unless the configuration expects a string there
        // (p11-kit x-init-reserved: tests/initialization.rs).
        assert_eq!(C_Finalize(NULL), CKR_OK);
        let mut a = args(CKF_OS_LOCKING_OK, 0);
        a.pReserved = c"[applet]\ntoken_label = \"configured\"".as_ptr() as *mut _;
        assert_eq!(C_Initialize(&mut a as *mut _ as *mut _), CKR_ARGUMENTS_BAD);
        assert_eq!(
            C_GetSlotList(1, std::ptr::null_mut(), &mut n),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
    }
}

#[test]
fn interfaces_2_40_and_3_0() {
    let _h = Harness::default();
    unsafe {
        let mut iface: *mut CK_INTERFACE = std::ptr::null_mut();
        assert_eq!(
            C_GetInterface(std::ptr::null_mut(), std::ptr::null_mut(), &mut iface, 0),
            CKR_OK
        );
        let v = *((*iface).pFunctionList as *const CK_VERSION);
        assert_eq!((v.major, v.minor), (3, 0));
        let name = std::ffi::CStr::from_ptr((*iface).pInterfaceName as *const _);
        assert_eq!(name.to_bytes(), b"PKCS 11");
        let mut want = CK_VERSION {
            major: 2,
            minor: 40,
        };
        assert_eq!(
            C_GetInterface(c"PKCS 11".as_ptr() as *mut _, &mut want, &mut iface, 0),
            CKR_OK
        );
        let v = *((*iface).pFunctionList as *const CK_VERSION);
        assert_eq!((v.major, v.minor), (2, 40));
        let mut bad = CK_VERSION { major: 9, minor: 9 };
        assert_eq!(
            C_GetInterface(std::ptr::null_mut(), &mut bad, &mut iface, 0),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_GetInterface(
                c"Vendor".as_ptr() as *mut _,
                std::ptr::null_mut(),
                &mut iface,
                0
            ),
            CKR_ARGUMENTS_BAD
        );
        let mut n: CK_ULONG = 0;
        assert_eq!(C_GetInterfaceList(std::ptr::null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 2);
        let mut list = [std::mem::zeroed::<CK_INTERFACE>(); 2];
        let mut small: CK_ULONG = 1;
        assert_eq!(
            C_GetInterfaceList(list.as_mut_ptr(), &mut small),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(small, 2);
        assert_eq!(C_GetInterfaceList(list.as_mut_ptr(), &mut n), CKR_OK);
        // The 3.0 table works: C_GetInfo through it.
        let f = &*((*iface).pFunctionList as *const CK_FUNCTION_LIST);
        assert!(f.C_Initialize.is_some() && f.C_Sign.is_some() && f.C_WaitForSlotEvent.is_some());
    }
}

#[test]
fn slot_and_token_info_are_blank_padded_and_exact() {
    let h = Harness::default();
    unsafe {
        assert_eq!(C_Initialize(NULL), CKR_OK);
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(C_GetInfo(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (3, 0)
        );
        assert!(info.manufacturerID.iter().all(|b| *b != 0));
        let mut n: CK_ULONG = 0;
        assert_eq!(C_GetSlotList(1, std::ptr::null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 1);
        let mut slots = [99 as CK_SLOT_ID; 1];
        let mut zero: CK_ULONG = 0;
        assert_eq!(
            C_GetSlotList(1, slots.as_mut_ptr(), &mut zero),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(zero, 1);
        assert_eq!(C_GetSlotList(1, slots.as_mut_ptr(), &mut n), CKR_OK);
        assert_eq!(slots[0], 0);
        let mut si: CK_SLOT_INFO = std::mem::zeroed();
        assert_eq!(C_GetSlotInfo(0, &mut si), CKR_OK);
        assert_eq!(si.flags & CKF_TOKEN_PRESENT, CKF_TOKEN_PRESENT);
        assert!(si.slotDescription.starts_with(b"Sim Reader 00 "));
        assert_eq!(C_GetSlotInfo(7, &mut si), CKR_SLOT_ID_INVALID);
        let mut ti: CK_TOKEN_INFO = std::mem::zeroed();
        assert_eq!(C_GetTokenInfo(0, &mut ti), CKR_OK);
        assert!(ti.label.starts_with(b"IoT SAFE "));
        assert!(
            ti.label
                .iter()
                .chain(&ti.serialNumber)
                .chain(&ti.model)
                .all(|b| *b != 0)
        );
        assert_eq!(
            ti.flags,
            CKF_RNG | CKF_WRITE_PROTECTED | CKF_TOKEN_INITIALIZED,
            "no login required: IoT SAFE has no PIN"
        );
        assert_eq!(C_GetTokenInfo(0, std::ptr::null_mut()), CKR_ARGUMENTS_BAD);
        // Mechanisms: exactly what works.
        let mut n: CK_ULONG = 0;
        assert_eq!(C_GetMechanismList(0, std::ptr::null_mut(), &mut n), CKR_OK);
        let mut mechs = vec![0 as CK_MECHANISM_TYPE; n as usize];
        assert_eq!(C_GetMechanismList(0, mechs.as_mut_ptr(), &mut n), CKR_OK);
        assert_eq!(
            mechs,
            vec![
                CKM_ECDSA,
                CKM_ECDSA_SHA256,
                CKM_ECDSA_SHA384,
                CKM_ECDSA_SHA512,
                CKM_EC_KEY_PAIR_GEN,
                CKM_ECDH1_DERIVE,
                CKM_TLS12_MASTER_KEY_DERIVE,
                CKM_TLS12_MASTER_KEY_DERIVE_DH,
                CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE,
                CKM_TLS12_EXTENDED_MASTER_KEY_DERIVE_DH,
                CKM_TLS12_KDF,
                CKM_VENDOR_DEFINED | 0x4953_0001, // CKM_IOTSAFE_TLS12_PSK_KDF
                CKM_VENDOR_DEFINED | 0x4953_0002, // CKM_IOTSAFE_TLS12_ECDHE_PSK_KDF
                CKM_HKDF_DERIVE,
                CKM_SHA256,
                CKM_SHA384,
                CKM_SHA512
            ]
        );
        let mut mi: CK_MECHANISM_INFO = std::mem::zeroed();
        assert_eq!(C_GetMechanismInfo(0, CKM_ECDSA, &mut mi), CKR_OK);
        assert_eq!((mi.ulMinKeySize, mi.ulMaxKeySize), (256, 256));
        assert_eq!(
            mi.flags & (CKF_SIGN | CKF_VERIFY | CKF_HW),
            CKF_SIGN | CKF_VERIFY | CKF_HW
        );
        assert_eq!(
            C_GetMechanismInfo(0, CKM_RSA_PKCS, &mut mi),
            CKR_MECHANISM_INVALID
        );
        assert_eq!(C_GetMechanismInfo(0, CKM_EC_KEY_PAIR_GEN, &mut mi), CKR_OK);
        assert_eq!(mi.flags & CKF_GENERATE_KEY_PAIR, CKF_GENERATE_KEY_PAIR);
        assert_eq!(C_GetMechanismInfo(0, CKM_ECDH1_DERIVE, &mut mi), CKR_OK);
        assert_eq!(mi.flags & CKF_DERIVE, CKF_DERIVE);
    }
    drop(h);
}

#[test]
fn sessions_follow_the_state_machine() {
    let _h = Harness::default();
    unsafe {
        assert_eq!(C_Initialize(NULL), CKR_OK);
        let mut s: CK_SESSION_HANDLE = 0;
        assert_eq!(
            C_OpenSession(0, 0, NULL, None, &mut s),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED
        );
        // Accepted (pkcs11-tool --test and p11test always ask for one); writes still fail.
        assert_eq!(
            C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, None, &mut s),
            CKR_OK
        );
        let mut si: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(C_GetSessionInfo(s, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_PUBLIC_SESSION);
        let mut ti: CK_TOKEN_INFO = std::mem::zeroed();
        assert_eq!(C_GetTokenInfo(0, &mut ti), CKR_OK);
        assert_eq!((ti.ulSessionCount, ti.ulRwSessionCount), (1, 1));
        let mut tru = [1u8];
        let mut t = [attr(CKA_TOKEN, &mut tru)];
        let mut out: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            C_CreateObject(s, t.as_mut_ptr(), 1, &mut out),
            CKR_TOKEN_WRITE_PROTECTED
        );
        // No read-only session is open: the SO logs in (tests/initialization.rs).
        assert_eq!(C_Login(s, CKU_SO, std::ptr::null_mut(), 0), CKR_OK);
        assert_eq!(C_Logout(s), CKR_OK);
        assert_eq!(C_CloseSession(s), CKR_OK);
        assert_eq!(
            C_OpenSession(5, CKF_SERIAL_SESSION, NULL, None, &mut s),
            CKR_SLOT_ID_INVALID
        );
        assert_eq!(
            C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, std::ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        let a = open_session(0);
        let b = open_session(0);
        assert_ne!(a, b);
        let mut si: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(C_GetSessionInfo(a, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RO_PUBLIC_SESSION);
        // Login is per token and does not gate the card (IoT.05 has no PIN).
        assert_eq!(C_Login(a, CKU_USER, b"1234".as_ptr() as *mut _, 4), CKR_OK);
        assert_eq!(
            C_Login(b, CKU_USER, b"1234".as_ptr() as *mut _, 4),
            CKR_USER_ALREADY_LOGGED_IN
        );
        assert_eq!(C_GetSessionInfo(b, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RO_USER_FUNCTIONS);
        assert_eq!(
            C_Login(a, CKU_SO, std::ptr::null_mut(), 0),
            CKR_SESSION_READ_ONLY_EXISTS
        );
        assert_eq!(
            C_Login(a, 7, std::ptr::null_mut(), 0),
            CKR_USER_TYPE_INVALID
        );
        assert_eq!(C_Logout(a), CKR_OK);
        assert_eq!(C_Logout(a), CKR_USER_NOT_LOGGED_IN);
        assert_eq!(C_CloseSession(a), CKR_OK);
        assert_eq!(C_CloseSession(a), CKR_SESSION_HANDLE_INVALID);
        assert_eq!(C_GetSessionInfo(a, &mut si), CKR_SESSION_HANDLE_INVALID);
        let c = open_session(0);
        assert!(c > b, "session handles are never reused");
        assert_eq!(C_CloseAllSessions(0), CKR_OK);
        assert_eq!(C_GetSessionInfo(b, &mut si), CKR_SESSION_HANDLE_INVALID);
        assert_eq!(C_CloseAllSessions(3), CKR_SLOT_ID_INVALID);
    }
}

#[test]
fn objects_pair_key_and_certificate_under_one_id() {
    let h = Harness::default();
    let s = h.init_and_open();
    let point = profile_client_point(h.card());
    let priv_key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let pub_key = object_by_label(s, CKO_PUBLIC_KEY, "client");
    let cert = object_by_label(s, CKO_CERTIFICATE, "client");
    for o in [priv_key, pub_key, cert] {
        assert_eq!(
            get_attr(s, o, CKA_ID).unwrap(),
            vec![0x01],
            "CKA_ID is the raw applet ID"
        );
    }
    for o in [priv_key, pub_key] {
        assert_eq!(get_attr(s, o, CKA_EC_PARAMS).unwrap(), P256_OID.to_vec());
        assert_eq!(
            get_attr(s, o, CKA_KEY_TYPE).unwrap(),
            CKK_EC.to_ne_bytes().to_vec()
        );
        let ec_point = get_attr(s, o, CKA_EC_POINT).unwrap();
        assert_eq!(ec_point.len(), 67);
        assert_eq!(&ec_point[..2], &[0x04, 0x41]);
        assert_eq!(&ec_point[2..], &point[..]);
        let spki = get_attr(s, o, CKA_PUBLIC_KEY_INFO).unwrap();
        assert_eq!(&spki[spki.len() - 65..], &point[..]);
    }
    assert_eq!(get_attr(s, priv_key, CKA_SIGN).unwrap(), vec![1]);
    assert_eq!(get_attr(s, priv_key, CKA_SENSITIVE).unwrap(), vec![1]);
    assert_eq!(get_attr(s, priv_key, CKA_EXTRACTABLE).unwrap(), vec![0]);
    assert_eq!(get_attr(s, priv_key, CKA_PRIVATE).unwrap(), vec![0]);
    assert_eq!(
        get_attr(s, priv_key, CKA_VALUE),
        Err(CKR_ATTRIBUTE_SENSITIVE)
    );
    assert_eq!(
        get_attr(s, priv_key, CKA_MODULUS),
        Err(CKR_ATTRIBUTE_TYPE_INVALID)
    );
    // The certificate: real DER, subject/issuer/serial consistent with the value.
    let der = get_attr(s, cert, CKA_VALUE).unwrap();
    let profile_cert = h
        .card()
        .profile()
        .files
        .iter()
        .find(|f| f.id == [0x02])
        .unwrap()
        .content
        .clone();
    assert_eq!(der, profile_cert);
    let subject = get_attr(s, cert, CKA_SUBJECT).unwrap();
    assert_eq!(subject[0], 0x30);
    assert!(der.windows(subject.len()).any(|w| w == &subject[..]));
    assert_eq!(get_attr(s, cert, CKA_SERIAL_NUMBER).unwrap()[0], 0x02);
    assert_eq!(
        get_attr(s, cert, CKA_CERTIFICATE_TYPE).unwrap(),
        CKC_X_509.to_ne_bytes().to_vec()
    );
    assert_eq!(get_attr(s, priv_key, CKA_SUBJECT).unwrap(), subject);
    {
        use sha1::Digest as _;
        assert_eq!(
            get_attr(s, cert, CKA_CHECK_VALUE).unwrap(),
            sha1::Sha1::digest(&der)[..3].to_vec()
        );
    }
    // The ECDH container: its public half is on the card too, and both halves derive.
    let ecdh = object_by_label(s, CKO_PRIVATE_KEY, "ecdh");
    let ecdh_public = object_by_label(s, CKO_PUBLIC_KEY, "ecdh");
    assert_eq!(get_attr(s, ecdh, CKA_PUBLIC_KEY_INFO).unwrap().len(), 91);
    assert_eq!(
        get_attr(s, ecdh, CKA_PUBLIC_KEY_INFO).unwrap(),
        get_attr(s, ecdh_public, CKA_PUBLIC_KEY_INFO).unwrap()
    );
    assert_eq!(get_attr(s, ecdh, CKA_SIGN).unwrap(), vec![0]);
    assert_eq!(get_attr(s, ecdh, CKA_DERIVE).unwrap(), vec![1]);
    assert_eq!(get_attr(s, ecdh_public, CKA_DERIVE).unwrap(), vec![1]);
    // The CA certificate keeps its own file ID and is an authority.
    let ca = object_by_label(s, CKO_CERTIFICATE, "ca");
    assert_eq!(get_attr(s, ca, CKA_ID).unwrap(), vec![0x03]);
    assert_eq!(
        get_attr(s, ca, CKA_CERTIFICATE_CATEGORY).unwrap(),
        (2 as CK_ULONG).to_ne_bytes().to_vec()
    );
    // Finding by CKA_ID returns the key pair and its certificate.
    let mut id = [0x01u8];
    let found = find(s, &mut [attr(CKA_ID, &mut id)]);
    assert_eq!(found.len(), 3);
    // Empty template finds everything; an unknown class nothing.
    assert!(find(s, &mut []).len() >= 4);
    let mut profile_class = CKO_PROFILE;
    assert!(find(s, &mut [class_attr(&mut profile_class)]).is_empty());
    // Finding and reading attributes costs no APDU.
    h.apdus();
    find(s, &mut []);
    get_attr(s, cert, CKA_VALUE).unwrap();
    assert_eq!(h.apdus(), 0);
}

#[test]
fn get_attribute_value_follows_the_spec() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    unsafe {
        // Mixed: valid, sensitive, invalid, short buffer — all processed in one call.
        let mut label = [0u8; 64];
        let mut value = [0u8; 64];
        let mut modulus = [0u8; 64];
        let mut params = [0u8; 2];
        let mut t = [
            attr(CKA_LABEL, &mut label),
            attr(CKA_VALUE, &mut value),
            attr(CKA_MODULUS, &mut modulus),
            attr(CKA_EC_PARAMS, &mut params),
        ];
        let rv = C_GetAttributeValue(s, key, t.as_mut_ptr(), 4);
        assert!(
            [
                CKR_ATTRIBUTE_SENSITIVE,
                CKR_ATTRIBUTE_TYPE_INVALID,
                CKR_BUFFER_TOO_SMALL
            ]
            .contains(&rv),
            "{rv:x}"
        );
        assert_eq!(t[0].ulValueLen, 6);
        assert_eq!(&label[..6], b"client");
        assert_eq!(t[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(t[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        assert_eq!(t[3].ulValueLen, CK_UNAVAILABLE_INFORMATION);
        // Only an invalid attribute besides valid ones → CKR_ATTRIBUTE_TYPE_INVALID exactly.
        let mut t = [attr(CKA_LABEL, &mut label), attr(CKA_MODULUS, &mut modulus)];
        assert_eq!(
            C_GetAttributeValue(s, key, t.as_mut_ptr(), 2),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        assert_eq!(t[0].ulValueLen, 6);
        // Size query for all.
        let mut q = CK_ATTRIBUTE {
            type_: CKA_EC_POINT,
            pValue: std::ptr::null_mut(),
            ulValueLen: 0,
        };
        assert_eq!(C_GetAttributeValue(s, key, &mut q, 1), CKR_OK);
        assert_eq!(q.ulValueLen, 67);
        assert_eq!(
            C_GetAttributeValue(s, key, std::ptr::null_mut(), 1),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_GetAttributeValue(s, 999_999, &mut q, 1),
            CKR_OBJECT_HANDLE_INVALID
        );
        assert_eq!(
            C_GetAttributeValue(999_999, key, &mut q, 1),
            CKR_SESSION_HANDLE_INVALID
        );
    }
}

#[test]
fn find_objects_state_rules() {
    let h = Harness::default();
    let s = h.init_and_open();
    unsafe {
        let mut n: CK_ULONG = 0;
        let mut buf = [0 as CK_OBJECT_HANDLE; 4];
        assert_eq!(
            C_FindObjects(s, buf.as_mut_ptr(), 4, &mut n),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(C_FindObjectsFinal(s), CKR_OPERATION_NOT_INITIALIZED);
        assert_eq!(C_FindObjectsInit(s, std::ptr::null_mut(), 0), CKR_OK);
        assert_eq!(
            C_FindObjectsInit(s, std::ptr::null_mut(), 0),
            CKR_OPERATION_ACTIVE
        );
        assert_eq!(
            C_FindObjects(s, buf.as_mut_ptr(), 4, std::ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(C_FindObjectsFinal(s), CKR_OK);
        assert_eq!(
            C_FindObjectsInit(s, std::ptr::null_mut(), 2),
            CKR_ARGUMENTS_BAD
        );
    }
}

#[test]
fn ecdsa_signatures_verify_against_the_card_key() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    let point = profile_client_point(h.card());
    let msg = b"the private key never leaves the SIM";
    for (m, digest) in [
        (CKM_ECDSA_SHA256, Sha256::digest(msg).to_vec()),
        (CKM_ECDSA_SHA384, Sha384::digest(msg).to_vec()),
        (CKM_ECDSA_SHA512, Sha512::digest(msg).to_vec()),
    ] {
        let sig = sign(s, m, key, msg).unwrap();
        assert_eq!(sig.len(), 64);
        assert!(p256_verify(&point, &digest, &sig), "mechanism {m:x}");
    }
    // Raw CKM_ECDSA with any input length, fitted as ECDSA does.
    for len in [1usize, 20, 32, 48, 64, 100] {
        let input: Vec<u8> = (0..len as u8)
            .map(|b| b.wrapping_mul(7).wrapping_add(1))
            .collect();
        let sig = sign(s, CKM_ECDSA, key, &input).unwrap();
        assert!(
            p256_verify(&point, &input, &sig),
            "CKM_ECDSA with {len} bytes"
        );
    }
}

#[test]
fn steady_state_signature_is_two_apdus_and_size_queries_none() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    sign(s, CKM_ECDSA_SHA256, key, b"warm up").unwrap();
    let data = b"steady";
    unsafe {
        let mut m = mech(CKM_ECDSA_SHA256);
        assert_eq!(C_SignInit(s, &mut m, key), CKR_OK);
        assert_eq!(C_SignInit(s, &mut m, key), CKR_OPERATION_ACTIVE);
        h.apdus();
        let mut len: CK_ULONG = 0;
        assert_eq!(
            C_Sign(
                s,
                data.as_ptr() as *mut _,
                6,
                std::ptr::null_mut(),
                &mut len
            ),
            CKR_OK
        );
        assert_eq!(len, 64);
        let mut small = [0u8; 10];
        let mut small_len: CK_ULONG = 10;
        assert_eq!(
            C_Sign(
                s,
                data.as_ptr() as *mut _,
                6,
                small.as_mut_ptr(),
                &mut small_len
            ),
            CKR_BUFFER_TOO_SMALL
        );
        assert_eq!(small_len, 64);
        assert_eq!(h.apdus(), 0, "size query and short buffer send nothing");
        assert_eq!(
            C_Sign(
                s,
                data.as_ptr() as *mut _,
                6,
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            CKR_ARGUMENTS_BAD
        );
        // A failed C_Sign ends the operation (PKCS#11 §5.12): sign again from C_SignInit.
        let mut sig = [0u8; 64];
        assert_eq!(
            C_Sign(s, data.as_ptr() as *mut _, 6, sig.as_mut_ptr(), &mut len),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(h.apdus(), 0, "nothing was sent for the failed calls");
        assert_eq!(C_SignInit(s, &mut m, key), CKR_OK);
        assert_eq!(
            C_Sign(s, data.as_ptr() as *mut _, 6, sig.as_mut_ptr(), &mut len),
            CKR_OK
        );
        let stats = h.card().stats();
        assert_eq!(stats.total, 2, "steady-state signature: INIT + UPDATE");
        assert_eq!(stats.by_ins.get(&0x2A), Some(&1));
        assert_eq!(stats.by_ins.get(&0x2B), Some(&1));
        h.apdus();
        assert!(p256_verify(
            &profile_client_point(h.card()),
            &Sha256::digest(data),
            &sig
        ));
        // C_Sign ended the operation.
        assert_eq!(
            C_Sign(s, data.as_ptr() as *mut _, 6, sig.as_mut_ptr(), &mut len),
            CKR_OPERATION_NOT_INITIALIZED
        );
    }
}

#[test]
fn multi_part_signing_and_host_verification() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    let pubkey = object_by_label(s, CKO_PUBLIC_KEY, "client");
    let parts: [&[u8]; 3] = [b"multi", b"-part", b" message"];
    unsafe {
        let mut m = mech(CKM_ECDSA_SHA256);
        assert_eq!(C_SignInit(s, &mut m, key), CKR_OK);
        for p in parts {
            assert_eq!(
                C_SignUpdate(s, p.as_ptr() as *mut _, p.len() as CK_ULONG),
                CKR_OK
            );
        }
        let mut sig = [0u8; 64];
        let mut len: CK_ULONG = 64;
        assert_eq!(C_SignFinal(s, sig.as_mut_ptr(), &mut len), CKR_OK);
        let whole: Vec<u8> = parts.concat();
        assert!(p256_verify(
            &profile_client_point(h.card()),
            &Sha256::digest(&whole),
            &sig
        ));
        // Verification on the host: 0 APDUs.
        h.apdus();
        assert_eq!(C_VerifyInit(s, &mut m, pubkey), CKR_OK);
        assert_eq!(
            C_Verify(
                s,
                whole.as_ptr() as *mut _,
                whole.len() as CK_ULONG,
                sig.as_mut_ptr(),
                64
            ),
            CKR_OK
        );
        assert_eq!(C_VerifyInit(s, &mut m, pubkey), CKR_OK);
        for p in parts {
            assert_eq!(
                C_VerifyUpdate(s, p.as_ptr() as *mut _, p.len() as CK_ULONG),
                CKR_OK
            );
        }
        assert_eq!(C_VerifyFinal(s, sig.as_mut_ptr(), 64), CKR_OK);
        sig[10] ^= 1;
        assert_eq!(C_VerifyInit(s, &mut m, pubkey), CKR_OK);
        assert_eq!(
            C_Verify(
                s,
                whole.as_ptr() as *mut _,
                whole.len() as CK_ULONG,
                sig.as_mut_ptr(),
                64
            ),
            CKR_SIGNATURE_INVALID
        );
        assert_eq!(C_VerifyInit(s, &mut m, pubkey), CKR_OK);
        assert_eq!(
            C_Verify(
                s,
                whole.as_ptr() as *mut _,
                whole.len() as CK_ULONG,
                sig.as_mut_ptr(),
                63
            ),
            CKR_SIGNATURE_LEN_RANGE
        );
        assert_eq!(h.apdus(), 0);
    }
}

#[test]
fn signing_refuses_the_wrong_key_or_mechanism() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    let pubkey = object_by_label(s, CKO_PUBLIC_KEY, "client");
    let cert = object_by_label(s, CKO_CERTIFICATE, "client");
    unsafe {
        let mut m = mech(CKM_ECDSA);
        assert_eq!(
            C_SignInit(s, &mut m, pubkey),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        assert_eq!(C_SignInit(s, &mut m, cert), CKR_KEY_FUNCTION_NOT_PERMITTED);
        assert_eq!(C_SignInit(s, &mut m, 424242), CKR_KEY_HANDLE_INVALID);
        assert_eq!(C_SignInit(s, std::ptr::null_mut(), key), CKR_ARGUMENTS_BAD);
        let mut rsa = mech(CKM_RSA_PKCS);
        assert_eq!(C_SignInit(s, &mut rsa, key), CKR_MECHANISM_INVALID);
        let mut sha = mech(CKM_SHA256);
        assert_eq!(C_SignInit(s, &mut sha, key), CKR_MECHANISM_INVALID);
        let mut param = [0u8; 4];
        let mut with_param = CK_MECHANISM {
            mechanism: CKM_ECDSA,
            pParameter: param.as_mut_ptr() as *mut _,
            ulParameterLen: 4,
        };
        assert_eq!(
            C_SignInit(s, &mut with_param, key),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(C_VerifyInit(s, &mut m, key), CKR_KEY_FUNCTION_NOT_PERMITTED);
        let mut len: CK_ULONG = 64;
        let mut sig = [0u8; 64];
        assert_eq!(
            C_SignFinal(s, sig.as_mut_ptr(), &mut len),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(
            C_SignUpdate(s, sig.as_mut_ptr(), 4),
            CKR_OPERATION_NOT_INITIALIZED
        );
    }
}

fn check_card_variant(options: CardOptions) {
    let h = Harness::new(options.clone());
    let s = h.init_and_open();
    let key = client_key(s);
    let cert = object_by_label(s, CKO_CERTIFICATE, "client");
    assert_eq!(
        get_attr(s, cert, CKA_ID).unwrap(),
        vec![0x01],
        "{options:?}"
    );
    let sig = sign(s, CKM_ECDSA_SHA256, key, b"variant").unwrap();
    assert!(
        p256_verify(
            &profile_client_point(h.card()),
            &Sha256::digest(b"variant"),
            &sig
        ),
        "{options:?}"
    );
}

#[test]
fn every_card_variant_works() {
    for style in [
        ObjectListStyle::PerObject,
        ObjectListStyle::PerClass,
        ObjectListStyle::NoWrapper,
    ] {
        check_card_variant(CardOptions {
            object_list_style: style,
            ..Default::default()
        });
    }
    check_card_variant(CardOptions {
        t0_style: true,
        ..Default::default()
    });
    check_card_variant(CardOptions {
        signature_length_style: SignatureLengthStyle::TwoByte,
        app_info_tags: AppInfoTags::QtApplet,
        ..Default::default()
    });
    check_card_variant(CardOptions {
        object_list_page_size: 40,
        ..Default::default()
    });
}

#[test]
fn random_comes_from_the_card_in_256_byte_chunks() {
    let h = Harness::default();
    let s = h.init_and_open();
    h.apdus();
    unsafe {
        let mut buf = vec![0u8; 1024];
        assert_eq!(C_GenerateRandom(s, buf.as_mut_ptr(), 1024), CKR_OK);
        assert_eq!(h.apdus(), 4);
        assert!(buf.iter().any(|b| *b != 0));
        assert_eq!(C_GenerateRandom(s, buf.as_mut_ptr(), 0), CKR_OK);
        assert_eq!(h.apdus(), 0);
        assert_eq!(
            C_GenerateRandom(s, std::ptr::null_mut(), 5),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_SeedRandom(s, buf.as_mut_ptr(), 4),
            CKR_RANDOM_SEED_NOT_SUPPORTED
        );
        let mut one = [0u8; 1];
        assert_eq!(C_GenerateRandom(s, one.as_mut_ptr(), 1), CKR_OK);
    }
}

#[test]
fn digests_on_the_host() {
    let h = Harness::default();
    let s = h.init_and_open();
    h.apdus();
    unsafe {
        let mut m = mech(CKM_SHA256);
        assert_eq!(C_DigestInit(s, &mut m), CKR_OK);
        let mut len: CK_ULONG = 0;
        assert_eq!(
            C_Digest(
                s,
                b"abc".as_ptr() as *mut _,
                3,
                std::ptr::null_mut(),
                &mut len
            ),
            CKR_OK
        );
        assert_eq!(len, 32);
        let mut out = [0u8; 32];
        assert_eq!(
            C_Digest(s, b"abc".as_ptr() as *mut _, 3, out.as_mut_ptr(), &mut len),
            CKR_OK
        );
        assert_eq!(out.to_vec(), Sha256::digest(b"abc").to_vec());
        let mut m = mech(CKM_SHA512);
        assert_eq!(C_DigestInit(s, &mut m), CKR_OK);
        assert_eq!(C_DigestUpdate(s, b"a".as_ptr() as *mut _, 1), CKR_OK);
        assert_eq!(C_DigestUpdate(s, b"bc".as_ptr() as *mut _, 2), CKR_OK);
        let mut out = [0u8; 64];
        let mut len: CK_ULONG = 64;
        assert_eq!(C_DigestFinal(s, out.as_mut_ptr(), &mut len), CKR_OK);
        assert_eq!(out.to_vec(), Sha512::digest(b"abc").to_vec());
        let mut bad = mech(CKM_MD5);
        assert_eq!(C_DigestInit(s, &mut bad), CKR_MECHANISM_INVALID);
    }
    assert_eq!(h.apdus(), 0);
}

#[test]
fn write_functions_are_refused_exactly() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    unsafe {
        let mut tru = [1u8];
        let mut t = [attr(CKA_TOKEN, &mut tru)];
        let mut out: CK_OBJECT_HANDLE = 0;
        assert_eq!(
            C_CreateObject(s, t.as_mut_ptr(), 1, &mut out),
            CKR_SESSION_READ_ONLY
        );
        assert_eq!(C_DestroyObject(s, key), CKR_SESSION_READ_ONLY);
        assert_eq!(C_DestroyObject(s, 31337), CKR_OBJECT_HANDLE_INVALID);
        assert_eq!(
            C_SetAttributeValue(s, key, t.as_mut_ptr(), 1),
            CKR_SESSION_READ_ONLY
        );
        assert_eq!(
            C_CopyObject(s, key, std::ptr::null_mut(), 0, &mut out),
            CKR_ACTION_PROHIBITED
        );
        let mut m = mech(CKM_EC_KEY_PAIR_GEN);
        let (mut a, mut b) = (0, 0);
        assert_eq!(
            C_GenerateKeyPair(
                s,
                &mut m,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
                0,
                &mut a,
                &mut b
            ),
            CKR_TEMPLATE_INCOMPLETE
        );
        assert_eq!(C_EncryptInit(s, &mut m, key), CKR_FUNCTION_NOT_SUPPORTED);
        let mut size: CK_ULONG = 0;
        assert_eq!(C_GetObjectSize(s, key, &mut size), CKR_OK);
        assert_eq!(C_GetFunctionStatus(s), CKR_FUNCTION_NOT_PARALLEL);
    }
}

#[test]
fn first_session_apdu_count_is_reported() {
    let h = Harness::default();
    h.apdus();
    let _s = h.init_and_open();
    let stats = h.card().stats();
    // MANAGE CHANNEL + SELECT + GET DATA (app) + GET DATA (list, two pages on the default card)
    // + READ PUBLIC KEYs + READ FILEs.
    assert_eq!(stats.by_ins.get(&0x70), Some(&1));
    assert_eq!(stats.by_ins.get(&0xA4), Some(&1));
    assert_eq!(stats.by_ins.get(&0xCB), Some(&3));
    assert!(
        stats.total <= 14,
        "first session took {} APDUs",
        stats.total
    );
    println!(
        "first session after C_Initialize: {} APDUs ({:?})",
        stats.total, stats.by_ins
    );
}

#[test]
fn finalize_closes_the_logical_channel() {
    let h = Harness::default();
    let _s = h.init_and_open();
    assert_eq!(h.card().lock().open_channels(), vec![0, 1]);
    unsafe { assert_eq!(C_Finalize(NULL), CKR_OK) };
    assert_eq!(h.card().lock().open_channels(), vec![0]);
}

#[test]
fn removed_card_gives_device_removed_then_invalid_handle() {
    let h = Harness::default();
    let s = h.init_and_open();
    let idle = open_session(0);
    let key = client_key(s);
    h.readers[0]
        .present
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The session whose operation met the removal is told once, by that operation.
    assert_eq!(
        sign(s, CKM_ECDSA_SHA256, key, b"x"),
        Err(CKR_DEVICE_REMOVED)
    );
    unsafe {
        let mut si: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(C_GetSessionInfo(s, &mut si), CKR_SESSION_HANDLE_INVALID);
        // Another session of the token is told on its next call.
        assert_eq!(C_GetSessionInfo(idle, &mut si), CKR_DEVICE_REMOVED);
        assert_eq!(C_GetSessionInfo(idle, &mut si), CKR_SESSION_HANDLE_INVALID);
        let mut slot: CK_SLOT_INFO = std::mem::zeroed();
        assert_eq!(C_GetSlotInfo(0, &mut slot), CKR_OK);
        assert_eq!(slot.flags & CKF_TOKEN_PRESENT, 0);
    }
    // The card comes back: a new session works without restarting.
    h.readers[0]
        .present
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let s2 = open_session(0);
    let key2 = client_key(s2);
    assert!(sign(s2, CKM_ECDSA_SHA256, key2, b"x").is_ok());
}

#[test]
fn threads_sign_concurrently_on_one_token() {
    let h = Harness::default();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    sign_from_threads(h.card(), 8, 25);
    assert_eq!(
        h.card().stats().interleaved,
        0,
        "no channel saw an interleaved init/update"
    );
}

#[test]
fn a_card_without_logical_channels_is_used_on_the_basic_channel() {
    let mut profile = iotsafe_sim::default_profile();
    profile.max_channels = 0;
    let h = Harness::with_cards(vec![iotsafe_sim::SharedCard::from_profile(
        profile,
        CardOptions::default(),
    )]);
    let s = h.init_and_open();
    assert_eq!(h.card().lock().open_channels(), vec![0]);
    let sig = sign(s, CKM_ECDSA_SHA256, client_key(s), b"basic").unwrap();
    assert!(p256_verify(
        &profile_client_point(h.card()),
        &Sha256::digest(b"basic"),
        &sig
    ));
}

#[test]
fn proprietary_class_is_configurable() {
    let h = Harness::default();
    initialize_with_config("[applet]\ncla = \"proprietary\"");
    let s = open_session(0);
    let sig = sign(s, CKM_ECDSA_SHA256, client_key(s), b"8x").unwrap();
    assert!(p256_verify(
        &profile_client_point(h.card()),
        &Sha256::digest(b"8x"),
        &sig
    ));
}

#[test]
fn a_forked_child_initialises_again_and_signs() {
    let h = Harness::default();
    let s = h.init_and_open();
    let point = profile_client_point(h.card());
    sign(s, CKM_ECDSA_SHA256, client_key(s), b"parent").unwrap();
    // SAFETY: the child only calls the module and exits with _exit, never unwinding.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(|| unsafe {
            let mut info: CK_INFO = std::mem::zeroed();
            // The parent's state is not usable in the child...
            if C_GetInfo(&mut info) != CKR_CRYPTOKI_NOT_INITIALIZED {
                return 10;
            }
            // ...and C_Initialize works there (pkcs11-provider, libp11 and --test-fork do this).
            if C_Initialize(NULL) != CKR_OK {
                return 11;
            }
            let s = open_session(0);
            let sig = match sign(s, CKM_ECDSA_SHA256, client_key(s), b"child") {
                Ok(sig) => sig,
                Err(_) => return 12,
            };
            if !p256_verify(&point, &Sha256::digest(b"child"), &sig) {
                return 13;
            }
            if C_Finalize(NULL) != CKR_OK {
                return 14;
            }
            0
        })
        .unwrap_or(15);
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child did not exit normally");
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "child failed at step {}",
        libc::WEXITSTATUS(status)
    );
    // The parent is unaffected.
    let sig = sign(s, CKM_ECDSA_SHA256, client_key(s), b"parent again").unwrap();
    assert!(p256_verify(&point, &Sha256::digest(b"parent again"), &sig));
}

#[test]
fn general_purpose_files_are_data_objects_read_in_chunks() {
    let mut profile = iotsafe_sim::default_profile();
    let content: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
    profile.files.push(iotsafe_sim::File {
        id: vec![0x07],
        label: Some(b"endpoint".to_vec()),
        usage: 0x01,
        state: iotsafe_sim::ObjectState::Activated,
        access: 0x01,
        content: content.clone(),
    });
    let h = Harness::with_cards(vec![iotsafe_sim::SharedCard::from_profile(
        profile,
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
    )]);
    let s = h.init_and_open();
    let data = object_by_label(s, CKO_DATA, "endpoint");
    assert_eq!(get_attr(s, data, CKA_VALUE).unwrap(), content);
    assert_eq!(get_attr(s, data, CKA_ID).unwrap(), vec![0x07]);
    assert_eq!(get_attr(s, data, CKA_PRIVATE).unwrap(), vec![0]);
    unsafe {
        let mut size: CK_ULONG = 0;
        assert_eq!(C_GetObjectSize(s, data, &mut size), CKR_OK);
        assert_eq!(size, 700);
    }
}

#[test]
fn a_card_with_no_free_channel_is_a_device_error_until_one_is_free() {
    let mut profile = iotsafe_sim::default_profile();
    profile.max_channels = 1;
    let h = Harness::with_cards(vec![iotsafe_sim::SharedCard::from_profile(
        profile,
        CardOptions::default(),
    )]);
    // Another application holds the card's only logical channel.
    let other = h.card().transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]);
    assert_eq!(other, vec![0x01, 0x90, 0x00]);
    assert_eq!(unsafe { C_Initialize(std::ptr::null_mut()) }, CKR_OK);
    let mut s: CK_SESSION_HANDLE = 0;
    let rv = unsafe { C_OpenSession(0, CKF_SERIAL_SESSION, std::ptr::null_mut(), None, &mut s) };
    assert_eq!(rv, CKR_DEVICE_ERROR, "no channel left: 0x{rv:x}");
    assert_eq!(
        h.card().open_channels(),
        vec![0, 1],
        "the other application's channel is left alone"
    );
    // It closes its channel: the next call finds the token.
    let closed = h.card().transmit(&[0x00, 0x70, 0x80, 0x01]);
    assert_eq!(closed, vec![0x90, 0x00]);
    let s = open_session(0);
    let sig = sign(s, CKM_ECDSA_SHA256, client_key(s), b"a channel again").unwrap();
    assert!(p256_verify(
        &profile_client_point(h.card()),
        &Sha256::digest(b"a channel again"),
        &sig
    ));
}
