//! Calls through the `cryptoki` crate (the built `.so` loaded as an application would) that
//! several stack tests make.

use std::time::{Duration, Instant};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};

/// The return value of a failed call.
pub fn rv(e: CkError) -> RvError {
    match e {
        CkError::Pkcs11(rv, _) => rv,
        other => panic!("not a PKCS#11 error: {other:?}"),
    }
}

/// Signs `message` with the key pair of ID 01 (CKM_ECDSA_SHA256) and verifies the signature
/// against the public key's `CKA_EC_POINT`.
pub fn sign_and_verify_with_key_01(session: &Session, message: &[u8]) -> Result<(), RvError> {
    let find = |class| {
        session
            .find_objects(&[Attribute::Class(class), Attribute::Id(vec![1])])
            .map_err(rv)
            .map(|v| v[0])
    };
    let key = find(ObjectClass::PRIVATE_KEY)?;
    let public = find(ObjectClass::PUBLIC_KEY)?;
    let point = match &session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(rv)?[0]
    {
        Attribute::EcPoint(p) => p[2..].to_vec(),
        other => panic!("unexpected {other:?}"),
    };
    let sig = session
        .sign(&Mechanism::EcdsaSha256, key, message)
        .map_err(rv)?;
    let vk = VerifyingKey::from_sec1_bytes(&point).expect("P-256 point");
    vk.verify(message, &Signature::from_slice(&sig).expect("64 bytes"))
        .expect("signature verifies against the card's public key");
    Ok(())
}

/// One signature under `fault` (armed, then cleared, with `control`: a command on the
/// simulator's control channel), printed as a row of the fault table; its outcome and how long
/// `C_Sign` took. `path` names the way to the card in the row.
pub fn sign_under_fault(
    session: &Session,
    path: &str,
    fault: &str,
    control: impl Fn(&str) -> String,
) -> (Result<(), RvError>, Duration) {
    control(&format!("fault {fault}"));
    let start = Instant::now();
    let got = sign_and_verify_with_key_01(session, b"under the fault");
    let took = start.elapsed();
    control("fault clear");
    println!(
        "| {path} | fault {fault} | C_Sign | {got:?} | {} ms |",
        took.as_millis()
    );
    (got, took)
}

/// After a fault: a session that survives it signs again; one that met a removal is closed.
pub fn check_session_after_fault(session: &Session, survives: bool) {
    if survives {
        sign_and_verify_with_key_01(session, b"same session after the fault")
            .expect("recovery in the same session");
    } else {
        assert_eq!(
            sign_and_verify_with_key_01(session, b"old session"),
            Err(RvError::SessionHandleInvalid),
            "the session that met the removal is closed"
        );
    }
}
