//! Process and card life-cycle over the real stack (pcscd + vpcd + simulator): a long-running
//! process whose card sat idle, and a forked child.

mod helpers;

use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use helpers::stack::{Proc, Stack, TOOL_TIMEOUT};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};

fn sign_and_verify(p11: &Pkcs11, message: &[u8]) {
    let slot = p11.get_slots_with_token().expect("C_GetSlotList")[0];
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    let find = |class| {
        session
            .find_objects(&[Attribute::Class(class), Attribute::Id(vec![1])])
            .expect("C_FindObjects")[0]
    };
    let key = find(ObjectClass::PRIVATE_KEY);
    let public = find(ObjectClass::PUBLIC_KEY);
    let point = match &session
        .get_attributes(public, &[cryptoki::object::AttributeType::EcPoint])
        .expect("CKA_EC_POINT")[0]
    {
        Attribute::EcPoint(p) => p[2..].to_vec(),
        other => panic!("unexpected {other:?}"),
    };
    let sig = session
        .sign(&Mechanism::EcdsaSha256, key, message)
        .expect("C_Sign");
    let vk = VerifyingKey::from_sec1_bytes(&point).expect("P-256 point");
    vk.verify(message, &Signature::from_slice(&sig).expect("64 bytes"))
        .expect("signature verifies against the card's public key");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn a_long_running_process_still_signs_after_the_card_sat_idle() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let p11 = Pkcs11::new(&stack.module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    sign_and_verify(&p11, b"before the pause");
    // Longer than pcscd's power-off grace period for unused cards (10 s).
    std::thread::sleep(Duration::from_secs(15));
    sign_and_verify(&p11, b"after the pause");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn pkcs11_tool_test_fork_passes() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let f = Proc::spawn(stack.pkcs11_tool().arg("--test-fork"), None).wait(TOOL_TIMEOUT);
    assert!(f.success(), "pkcs11-tool --test-fork exited non-zero:\n{f}");
    let all = f.all_output().to_ascii_lowercase();
    assert!(!all.contains("error"), "{f}");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn a_pcscd_restart_is_recovered_in_the_same_process() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let p11 = Pkcs11::new(&stack.module).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().expect("C_GetSlotList")[0];
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    let key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .expect("C_FindObjects")[0];
    session
        .sign(&Mechanism::EcdsaSha256, key, b"before")
        .expect("C_Sign");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stack.sh");
    let restarted = helpers::stack::run(
        std::process::Command::new("bash")
            .arg(script)
            .arg("restart-pcscd")
            .env("IOTSAFE_STACK_DIR", &stack.dir),
    );
    assert!(restarted.success(), "{restarted}");
    // The old session's card handle died with the old pcscd.
    match session.sign(&Mechanism::EcdsaSha256, key, b"old session") {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => assert_eq!(
            rv,
            cryptoki::error::RvError::DeviceRemoved,
            "the first call on the old session"
        ),
        other => panic!("expected CKR_DEVICE_REMOVED, got {other:?}"),
    }
    // New sessions work again without restarting the process.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if p11
            .get_slots_with_token()
            .map(|s| s.contains(&slot))
            .unwrap_or(false)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "token did not come back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sign_and_verify(&p11, b"after the pcscd restart");
}
