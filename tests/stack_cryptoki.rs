//! The built module (`target/release/libiotsafe_pkcs11.so`) loaded through the `cryptoki`
//! crate, on the simulated IoT SAFE card behind the real pcscd + vsmartcard-vpcd stack.
//!
//! Needs the stack: `bash scripts/stack.sh start` (`bash scripts/test.sh` starts it and runs
//! these tests with `--run-ignored all`).

mod helpers;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use helpers::stack::{Stack, StackLock};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256, Sha384};
use x509_cert::Certificate;
use x509_cert::der::Decode;

/// DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const KEY_ID: [u8; 1] = [0x01];
const KEY_LABEL: &[u8] = b"client";
const MESSAGE: &[u8] = b"IoT SAFE: the private key never leaves the SIM";

/// One initialised context per test process (nextest runs each test in its own process;
/// `cargo test` runs them as threads of one process, where a second C_Initialize would fail).
fn context(stack: &Stack) -> &'static Pkcs11 {
    static CONTEXT: OnceLock<Pkcs11> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let p11 = Pkcs11::new(&stack.module)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", stack.module.display()));
        p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize(CKF_OS_LOCKING_OK)");
        p11
    })
}

struct Card {
    stack: Stack,
    _lock: StackLock,
    slot: Slot,
    session: Session,
}

/// The stack, locked for this test, and a session on the one slot that has a token.
fn card() -> Card {
    let stack = Stack::get();
    let lock = stack.lock();
    let p11 = context(&stack);
    let slots = p11
        .get_slots_with_token()
        .expect("C_GetSlotList(tokenPresent)");
    assert_eq!(
        slots.len(),
        1,
        "expected exactly one slot with a token (the simulated card), got {slots:?}"
    );
    let slot = slots[0];
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    Card {
        stack,
        _lock: lock,
        slot,
        session,
    }
}

impl Card {
    fn find_one(&self, what: &str, template: &[Attribute]) -> ObjectHandle {
        let found = self.session.find_objects(template).expect("C_FindObjects");
        assert_eq!(
            found.len(),
            1,
            "expected exactly one {what}, found {}",
            found.len()
        );
        found[0]
    }

    fn private_key(&self) -> ObjectHandle {
        self.find_one(
            "private key labelled 'client' with CKA_ID 01",
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(KEY_LABEL.to_vec()),
                Attribute::Id(KEY_ID.to_vec()),
            ],
        )
    }

    fn public_key(&self) -> ObjectHandle {
        self.find_one(
            "public key with CKA_ID 01",
            &[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Id(KEY_ID.to_vec()),
            ],
        )
    }

    fn certificate(&self) -> ObjectHandle {
        self.find_one(
            "certificate with CKA_ID 01",
            &[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::Id(KEY_ID.to_vec()),
            ],
        )
    }

    fn bytes(&self, object: ObjectHandle, ty: AttributeType) -> Vec<u8> {
        let attrs = self
            .session
            .get_attributes(object, &[ty])
            .expect("C_GetAttributeValue");
        match attrs.as_slice() {
            [Attribute::Value(v)]
            | [Attribute::EcParams(v)]
            | [Attribute::EcPoint(v)]
            | [Attribute::Id(v)]
            | [Attribute::Label(v)] => v.clone(),
            other => panic!("{ty:?}: unexpected answer {other:?}"),
        }
    }

    fn flag(&self, object: ObjectHandle, ty: AttributeType) -> bool {
        let attrs = self
            .session
            .get_attributes(object, &[ty])
            .expect("C_GetAttributeValue");
        match attrs.as_slice() {
            [Attribute::Sign(b)]
            | [Attribute::Sensitive(b)]
            | [Attribute::Extractable(b)]
            | [Attribute::NeverExtractable(b)]
            | [Attribute::AlwaysSensitive(b)] => *b,
            other => panic!("{ty:?}: unexpected answer {other:?}"),
        }
    }

    /// The uncompressed point (04 || X || Y) of the certificate read from the card.
    fn certificate_point(&self) -> Vec<u8> {
        let der = self.bytes(self.certificate(), AttributeType::Value);
        let cert = Certificate::from_der(&der).expect("the card's certificate parses as X.509");
        let spki = cert.tbs_certificate().subject_public_key_info();
        let point = spki
            .subject_public_key
            .as_bytes()
            .expect("public key bit string")
            .to_vec();
        assert_eq!(
            point.len(),
            65,
            "P-256 uncompressed point expected in the certificate"
        );
        assert_eq!(point[0], 0x04);
        point
    }

    fn certificate_key(&self) -> VerifyingKey {
        VerifyingKey::from_sec1_bytes(&self.certificate_point())
            .expect("certificate key is a P-256 point")
    }

    fn sign(&self, mechanism: &Mechanism, data: &[u8]) -> Signature {
        let raw = self
            .session
            .sign(mechanism, self.private_key(), data)
            .unwrap_or_else(|e| panic!("C_Sign({mechanism:?}, {} bytes): {e}", data.len()));
        assert_eq!(
            raw.len(),
            64,
            "raw r||s of 64 bytes expected, got {raw:02X?}"
        );
        Signature::from_slice(&raw).expect("r and s in range")
    }
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn one_token_holds_the_client_key_pair_and_certificate_under_id_01() {
    let card = card();
    let info = context(&card.stack)
        .get_token_info(card.slot)
        .expect("C_GetTokenInfo");
    assert!(
        info.token_initialized(),
        "CKF_TOKEN_INITIALIZED must be set"
    );
    let key = card.private_key();
    assert_eq!(card.bytes(key, AttributeType::Id), KEY_ID);
    assert_eq!(card.bytes(key, AttributeType::Label), KEY_LABEL);
    let attrs = card
        .session
        .get_attributes(key, &[AttributeType::KeyType])
        .expect("CKA_KEY_TYPE");
    assert!(
        matches!(attrs.as_slice(), [Attribute::KeyType(KeyType::EC)]),
        "CKK_EC expected, got {attrs:?}"
    );
    assert!(card.flag(key, AttributeType::Sign), "CKA_SIGN must be true");
    assert_eq!(card.bytes(card.public_key(), AttributeType::Id), KEY_ID);
    assert_eq!(card.bytes(card.certificate(), AttributeType::Id), KEY_ID);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn ec_params_and_ec_point_match_the_certificate() {
    let card = card();
    let key = card.private_key();
    let public = card.public_key();
    assert_eq!(
        card.bytes(key, AttributeType::EcParams),
        P256_PARAMS,
        "private key CKA_EC_PARAMS"
    );
    assert_eq!(
        card.bytes(public, AttributeType::EcParams),
        P256_PARAMS,
        "public key CKA_EC_PARAMS"
    );

    let ec_point = card.bytes(public, AttributeType::EcPoint);
    assert_eq!(
        ec_point.len(),
        67,
        "CKA_EC_POINT = DER OCTET STRING (04 41) around 04||X||Y"
    );
    assert_eq!(&ec_point[..3], &[0x04, 0x41, 0x04], "CKA_EC_POINT header");
    assert_eq!(
        ec_point[2..],
        card.certificate_point()[..],
        "public key equals the certificate's key"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn private_key_value_is_sensitive() {
    let card = card();
    let key = card.private_key();
    let info = card
        .session
        .get_attribute_info(key, &[AttributeType::Value])
        .expect("C_GetAttributeValue(CKA_VALUE) must fail with CKR_ATTRIBUTE_SENSITIVE only");
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "CKA_VALUE of the private key: CKR_ATTRIBUTE_SENSITIVE expected, got {info:?}"
    );
    assert!(card.flag(key, AttributeType::Sensitive), "CKA_SENSITIVE");
    assert!(
        !card.flag(key, AttributeType::Extractable),
        "CKA_EXTRACTABLE"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn ecdsa_sha256_signature_verifies_against_the_certificate() {
    let card = card();
    let key = card.certificate_key();
    let sig = card.sign(&Mechanism::EcdsaSha256, MESSAGE);
    key.verify(MESSAGE, &sig)
        .expect("CKM_ECDSA_SHA256 signature verifies with the certificate's key");
    assert!(
        key.verify(b"another message", &sig).is_err(),
        "the same signature must not verify another message"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn ecdsa_over_a_sha256_digest_verifies_against_the_certificate() {
    let card = card();
    let key = card.certificate_key();
    let digest = Sha256::digest(MESSAGE);
    let sig = card.sign(&Mechanism::Ecdsa, &digest);
    key.verify_prehash(&digest, &sig)
        .expect("CKM_ECDSA over a SHA-256 digest verifies");
    key.verify(MESSAGE, &sig)
        .expect("... and equals an ECDSA-SHA256 signature of the message");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn ecdsa_over_a_48_byte_input_verifies_against_the_certificate() {
    // What TLS 1.2 asks for when it picks ecdsa_secp384r1_sha384-style hashing with a P-256 key:
    // ECDSA uses the leftmost 256 bits of the input.
    let card = card();
    let key = card.certificate_key();
    let input = Sha384::digest(MESSAGE);
    assert_eq!(input.len(), 48);
    let sig = card.sign(&Mechanism::Ecdsa, &input);
    key.verify_prehash(&input, &sig)
        .expect("CKM_ECDSA over a 48-byte input verifies (leftmost 32 bytes)");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn generate_random_returns_1000_bytes() {
    let card = card();
    let a = card
        .session
        .generate_random_vec(1000)
        .expect("C_GenerateRandom(1000)");
    let b = card
        .session
        .generate_random_vec(1000)
        .expect("C_GenerateRandom(1000)");
    assert_eq!(a.len(), 1000);
    assert_eq!(b.len(), 1000);
    assert_ne!(a, b, "two random draws are equal");
    assert!(
        a.iter().any(|&x| x != a[0]),
        "1000 equal bytes are not random"
    );
}

/// The module's own function list, from the copy of the library the `cryptoki` context loaded
/// (RTLD_NOLOAD: the same instance, so its sessions and handles are valid here). Used for the
/// calls the `cryptoki` crate does not expose one by one (C_Sign's size query).
fn raw_functions(stack: &Stack) -> &'static cryptoki_sys::CK_FUNCTION_LIST {
    let path = CString::new(stack.module.as_os_str().as_bytes()).unwrap();
    // SAFETY: dlopen/dlsym with valid C strings; the symbol is the PKCS#11 entry point with the
    // signature CK_C_GetFunctionList; the list it returns lives as long as the library, which
    // stays loaded (the context is never dropped).
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        assert!(
            !handle.is_null(),
            "module not loaded by the cryptoki context"
        );
        let sym = libc::dlsym(handle, c"C_GetFunctionList".as_ptr());
        assert!(!sym.is_null(), "C_GetFunctionList not exported");
        let get: unsafe extern "C" fn(
            cryptoki_sys::CK_FUNCTION_LIST_PTR_PTR,
        ) -> cryptoki_sys::CK_RV = std::mem::transmute(sym);
        let mut list: cryptoki_sys::CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        assert_eq!(get(&mut list), cryptoki_sys::CKR_OK, "C_GetFunctionList");
        assert!(!list.is_null());
        &*list
    }
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn sign_size_query_returns_64_and_a_steady_state_signature_costs_two_apdus() {
    let card = card();
    let key = card.private_key();
    let verifying_key = card.certificate_key();
    let f = raw_functions(&card.stack);
    let digest = Sha256::digest(MESSAGE);

    // Warm-up: the first signature may open the logical channel and select the applet.
    card.sign(&Mechanism::Ecdsa, &digest);

    card.stack.reset_stats();
    assert_eq!(card.stack.stats().total, 0, "stats after reset-stats");

    let mut mechanism = cryptoki_sys::CK_MECHANISM {
        mechanism: cryptoki_sys::CKM_ECDSA,
        pParameter: std::ptr::null_mut(),
        ulParameterLen: 0,
    };
    let mut signature = [0u8; 64];
    let mut len: cryptoki_sys::CK_ULONG = 0;
    // SAFETY: valid session and key handles of this library instance, pointers to live buffers
    // with their true lengths.
    unsafe {
        let rv = f.C_SignInit.unwrap()(card.session.handle(), &mut mechanism, key.handle());
        assert_eq!(rv, cryptoki_sys::CKR_OK, "C_SignInit(CKM_ECDSA)");
        let rv = f.C_Sign.unwrap()(
            card.session.handle(),
            digest.as_ptr() as *mut u8,
            digest.len() as cryptoki_sys::CK_ULONG,
            std::ptr::null_mut(),
            &mut len,
        );
        assert_eq!(rv, cryptoki_sys::CKR_OK, "C_Sign size query (NULL buffer)");
        assert_eq!(len, 64, "C_Sign size query for a P-256 key");
        let rv = f.C_Sign.unwrap()(
            card.session.handle(),
            digest.as_ptr() as *mut u8,
            digest.len() as cryptoki_sys::CK_ULONG,
            signature.as_mut_ptr(),
            &mut len,
        );
        assert_eq!(rv, cryptoki_sys::CKR_OK, "C_Sign");
        assert_eq!(len, 64, "signature length");
    }
    let sig = Signature::from_slice(&signature).expect("r and s in range");
    verifying_key
        .verify_prehash(&digest, &sig)
        .expect("the signature verifies with the certificate's key");

    let stats = card.stack.stats();
    assert_eq!(
        (stats.total, stats.ins("2A"), stats.ins("2B")),
        (2, 1, 1),
        "one signature (incl. its size query) = COMPUTE SIGNATURE INIT + UPDATE only; got {stats:?}"
    );
}
