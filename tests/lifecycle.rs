//! Card life-cycle in-process: slot events, a card reset by someone else, removal during a
//! signing loop, several tokens at once.

mod helpers;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, SharedCard};
use sha2::{Digest, Sha256};

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();

fn wait_event(flags: CK_FLAGS) -> Result<CK_SLOT_ID, CK_RV> {
    let mut slot: CK_SLOT_ID = 999;
    match unsafe { C_WaitForSlotEvent(flags, &mut slot, NULL) } {
        CKR_OK => Ok(slot),
        rv => Err(rv),
    }
}

#[test]
fn slot_events_report_removal_and_insertion() {
    let h = Harness::with_cards(vec![
        SharedCard::from_profile(iotsafe_sim::default_profile(), CardOptions::default()),
        SharedCard::from_profile(iotsafe_sim::default_profile(), CardOptions::default()),
    ]);
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    assert_eq!(wait_event(CKF_DONT_BLOCK), Err(CKR_NO_EVENT));
    unsafe {
        let mut slot: CK_SLOT_ID = 0;
        assert_eq!(
            C_WaitForSlotEvent(0, std::ptr::null_mut(), NULL),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_WaitForSlotEvent(0, &mut slot, std::ptr::dangling_mut()),
            CKR_ARGUMENTS_BAD
        );
    }
    h.readers[1].present.store(false, Ordering::SeqCst);
    assert_eq!(wait_event(CKF_DONT_BLOCK), Ok(1));
    assert_eq!(wait_event(CKF_DONT_BLOCK), Err(CKR_NO_EVENT));
    // Blocking: a card inserted while we wait.
    let reader = h.readers[1].present.clone();
    let inserter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        reader.store(true, Ordering::SeqCst);
    });
    assert_eq!(wait_event(0), Ok(1));
    inserter.join().unwrap();
    let mut n: CK_ULONG = 0;
    unsafe { assert_eq!(C_GetSlotList(1, std::ptr::null_mut(), &mut n), CKR_OK) };
    assert_eq!(n, 2);
}

#[test]
fn finalize_wakes_a_blocked_waiter() {
    let _h = Harness::default();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let waiter = std::thread::spawn(|| wait_event(0));
    std::thread::sleep(Duration::from_millis(300));
    unsafe { assert_eq!(C_Finalize(NULL), CKR_OK) };
    assert_eq!(waiter.join().unwrap(), Err(CKR_CRYPTOKI_NOT_INITIALIZED));
}

#[test]
fn a_card_reset_by_someone_else_is_recovered_transparently() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    let point = profile_client_point(h.card());
    sign(s, CKM_ECDSA_SHA256, key, b"before").unwrap();
    h.readers[0].reset_pending.store(true, Ordering::SeqCst);
    h.apdus();
    // Same session, same key handle: the module reopens its channel and signs.
    let sig = sign(s, CKM_ECDSA_SHA256, key, b"after reset").unwrap();
    assert!(p256_verify(&point, &Sha256::digest(b"after reset"), &sig));
    let stats = h.card().stats();
    assert_eq!(stats.by_ins.get(&0x70), Some(&1), "MANAGE CHANNEL again");
    assert_eq!(stats.by_ins.get(&0xA4), Some(&1), "SELECT again");
    assert_eq!(h.card().lock().open_channels(), vec![0, 1]);
}

#[test]
fn removal_in_a_signing_loop_then_reinsertion_in_the_same_process() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    let point = profile_client_point(h.card());
    let mut results = Vec::new();
    for i in 0..10 {
        if i == 4 {
            h.readers[0].present.store(false, Ordering::SeqCst);
        }
        results.push(sign(s, CKM_ECDSA_SHA256, key, b"loop").map(|_| ()));
    }
    assert_eq!(&results[..4], &[Ok(()); 4]);
    // The running session: CKR_DEVICE_REMOVED once, then the handle is gone.
    assert_eq!(results[4], Err(CKR_DEVICE_REMOVED));
    assert!(
        results[5..]
            .iter()
            .all(|r| *r == Err(CKR_SESSION_HANDLE_INVALID)),
        "{results:?}"
    );
    let mut slot_info: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    unsafe { assert_eq!(C_GetSlotInfo(0, &mut slot_info), CKR_OK) };
    assert_eq!(slot_info.flags & CKF_TOKEN_PRESENT, 0);
    unsafe {
        let mut s2: CK_SESSION_HANDLE = 0;
        assert_eq!(
            C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut s2),
            CKR_TOKEN_NOT_PRESENT
        );
    }
    // Back in: a new session signs without restarting the process.
    h.readers[0].present.store(true, Ordering::SeqCst);
    let s2 = open_session(0);
    let key2 = client_key(s2);
    let sig = sign(s2, CKM_ECDSA_SHA256, key2, b"back").unwrap();
    assert!(p256_verify(&point, &Sha256::digest(b"back"), &sig));
}

#[test]
fn two_tokens_with_their_own_keys() {
    let other = iotsafe_sim::bundle_from_seed(b"a second card")
        .unwrap()
        .profile;
    let h = Harness::with_cards(vec![
        SharedCard::from_profile(iotsafe_sim::default_profile(), CardOptions::default()),
        SharedCard::from_profile(other, CardOptions::default()),
    ]);
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let points: Vec<Vec<u8>> = h
        .readers
        .iter()
        .map(|r| profile_client_point(&r.card))
        .collect();
    assert_ne!(points[0], points[1]);
    std::thread::scope(|scope| {
        for slot in 0..2u64 {
            let point = points[slot as usize].clone();
            scope.spawn(move || {
                let s = open_session(slot);
                let key = client_key(s);
                for i in 0..20 {
                    let msg = format!("slot {slot} #{i}");
                    let sig = sign(s, CKM_ECDSA_SHA256, key, msg.as_bytes()).unwrap();
                    assert!(p256_verify(&point, &Sha256::digest(msg.as_bytes()), &sig));
                }
            });
        }
    });
    let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    unsafe { assert_eq!(C_GetTokenInfo(1, &mut ti), CKR_OK) };
}

fn eight_threads_signing(h: &Harness) {
    sign_from_threads(h.card(), 8, 15);
    assert_eq!(
        h.card().stats().interleaved,
        0,
        "no channel saw an interleaved sequence"
    );
}

fn slow_card(profile: iotsafe_sim::Profile) -> SharedCard {
    SharedCard::from_profile(
        profile,
        CardOptions {
            latency_per_apdu: Duration::from_millis(2),
            ..Default::default()
        },
    )
}

/// `applet.max_channels` from earlier versions is accepted and ignored: a process uses one
/// logical channel per card, however many threads sign (a pool of channels halved the
/// throughput over pcscd; see src/applet/card_link.rs).
#[test]
fn max_channels_above_one_still_uses_one_channel() {
    let h = Harness::with_cards(vec![slow_card(iotsafe_sim::default_profile())]);
    initialize_with_config("[applet]\nmax_channels = 4");
    eight_threads_signing(&h);
    assert_eq!(
        h.card().open_channels(),
        vec![0, 1],
        "one logical channel in use"
    );
    unsafe { assert_eq!(C_Finalize(NULL), CKR_OK) };
    assert_eq!(h.card().open_channels(), vec![0], "closed at C_Finalize");
}

#[test]
fn a_card_with_one_logical_channel_serves_eight_threads() {
    let mut profile = iotsafe_sim::default_profile();
    profile.max_channels = 1;
    let h = Harness::with_cards(vec![slow_card(profile)]);
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    eight_threads_signing(&h);
    assert_eq!(h.card().open_channels(), vec![0, 1]);
}

#[test]
fn one_channel_by_default_even_with_eight_threads() {
    let h = Harness::with_cards(vec![slow_card(iotsafe_sim::default_profile())]);
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    eight_threads_signing(&h);
    assert_eq!(h.card().open_channels(), vec![0, 1]);
}
