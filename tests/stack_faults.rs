//! Fault injection through the real PC/SC path (pcscd + vsmartcard-vpcd + the simulator's
//! `fault` control command): the same faults as `tests/faults.rs`, now reaching the module as
//! pcscd reports them. Each row: the exact `CK_RV`, a bounded time, and the next signature
//! working (recovery) in the same process.
//!
//! Not here: a card that stops answering. The vpcd driver waits for the card's answer without
//! a timeout (pcscd blocks in `recv`), so the whole reader would hang; a real reader's driver
//! reports a timeout, which `tests/faults.rs` models in-process (`READER_TIMEOUT`) and the
//! modem path measures against the module's own `timeout_ms`.

mod helpers;

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::Session;
// Signs with the key pair 01 and verifies against the card's public key.
use helpers::cryptoki_calls::{
    check_session_after_fault, sign_and_verify_with_key_01 as sign, sign_under_fault,
};
use helpers::stack::Stack;

/// A session on the card's token, once pcscd shows the card (it may just have been put back).
fn session(p11: &Pkcs11) -> Session {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let slots = p11.get_slots_with_token().expect("C_GetSlotList");
        if let Some(slot) = slots.first() {
            return p11.open_ro_session(*slot).expect("C_OpenSession");
        }
        assert!(Instant::now() < deadline, "no token in any slot");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Leaves the card as the other stack tests expect it, whatever happened: no fault armed,
/// card inserted.
struct Restore<'a>(&'a Stack);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.0.sim_command("fault clear");
        self.0.sim_command("insert");
    }
}

/// One fault row on the stack.
fn fault_row(fault: &str, expect: RvError, session_survives: bool) {
    let stack = Stack::get();
    let _lock = stack.lock();
    let _restore = Restore(&stack);
    stack.sim_command("fault clear");
    let p11 = Pkcs11::new(&stack.module).expect("load module");
    match p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // cargo test runs the rows as threads of one process, where an earlier row's
        // module may still be initialised (nextest gives each row its own process).
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e:?}"),
    }
    let s = session(&p11);
    sign(&s, b"before the fault").expect("signs before the fault");
    let (got, took) = sign_under_fault(&s, "vpcd", fault, |c| stack.sim_command(c));
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
    let mut wrong = None;
    if got != Err(expect) {
        let next = sign(&s, b"the session's next call");
        wrong = Some(format!(
            "C_Sign under `fault {fault}`: {got:?}, expected Err({expect:?}); the session's next \
             C_Sign: {next:?}"
        ));
    } else {
        check_session_after_fault(&s, session_survives);
    }
    stack.sim_command("insert");
    // A new session in the same process, once pcscd shows the card again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let slots = p11.get_slots_with_token().expect("C_GetSlotList");
        let last = match slots.first() {
            None => "no slot with a token".to_string(),
            Some(slot) => match p11.open_ro_session(*slot) {
                Err(e) => format!("C_OpenSession: {e}"),
                Ok(s2) => match sign(&s2, b"new session after the fault") {
                    Ok(()) => break,
                    Err(e) => format!("C_Sign: {e:?}"),
                },
            },
        };
        assert!(
            Instant::now() < deadline,
            "no recovery after `fault {fault}` within 20 s: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("recovered: a new session in the same process signs");
    if let Some(w) = wrong {
        panic!("{w}");
    }
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn vpcd_signature_update_answers_6f00() {
    fault_row("sw=6F00 ins=2B", RvError::DeviceError, true);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn vpcd_signature_response_truncated_to_one_byte() {
    fault_row("truncate=1 ins=2B", RvError::DeviceError, true);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn vpcd_signature_response_truncated_inside_the_data() {
    fault_row("truncate=20 ins=2B", RvError::DeviceError, true);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn vpcd_signature_update_endless_61xx() {
    fault_row("endless-61xx ins=2B", RvError::DeviceError, true);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn vpcd_signature_update_garbage() {
    fault_row("garbage ins=2B", RvError::DeviceError, true);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn vpcd_signature_update_bad_tlv() {
    fault_row("bad-tlv ins=2B", RvError::DeviceError, true);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn vpcd_card_pulled_between_signature_init_and_update() {
    fault_row("remove ins=2A", RvError::DeviceRemoved, false);
}
