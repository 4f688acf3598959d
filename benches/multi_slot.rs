//! Tokens never wait for each other: signatures per second on one token, alone and while a
//! slow neighbour token (200 ms per signature) is kept busy by another thread; and the
//! aggregate rate of 1, 2 and 4 tokens signing at once. In-process simulated cards with a
//! latency model (per APDU and per signature), the module's real code paths.
//! Run: `cargo bench --bench multi_slot`.

#[path = "../tests/helpers/mod.rs"]
mod helpers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, SharedCard};

const RUN: Duration = Duration::from_secs(3);

fn card(apdu_ms: u64, signature_ms: u64) -> SharedCard {
    SharedCard::from_profile(
        iotsafe_sim::default_profile(),
        CardOptions {
            latency_per_apdu: Duration::from_millis(apdu_ms),
            latency_per_signature: Duration::from_millis(signature_ms),
            ..Default::default()
        },
    )
}

/// Signs on `slot` until `stop`, counting signatures.
fn sign_loop(slot: CK_SLOT_ID, stop: &AtomicBool, count: &AtomicU64) {
    let s = open_session(slot);
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    while !stop.load(Ordering::Relaxed) {
        sign(s, CKM_ECDSA_SHA256, key, b"rate").expect("signature");
        count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Signatures per second on each of `slots`, all signing at once for RUN.
fn rates(slots: &[CK_SLOT_ID]) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU64>> = slots.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (slot, count) in slots.iter().zip(&counts) {
            let stop = stop.clone();
            scope.spawn(move || sign_loop(*slot, &stop, count));
        }
        std::thread::sleep(RUN);
        stop.store(true, Ordering::Relaxed);
    });
    let secs = start.elapsed().as_secs_f64();
    counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as f64 / secs)
        .collect()
}

fn main() {
    // Slot 1 is a slow neighbour (200 ms per signature); the others are "fast" cards with
    // 5 ms per APDU + 20 ms per signature, i.e. a ceiling of 1 / (2 × 5 + 20) ms = 33.3/s.
    let h = Harness::with_cards(vec![
        card(5, 20),
        card(5, 200),
        card(5, 20),
        card(5, 20),
        card(5, 20),
    ]);
    unsafe { assert_eq!(C_Initialize(std::ptr::null_mut()), CKR_OK) };
    let ceiling = 1.0 / (2.0 * 0.005 + 0.020);

    println!("| measurement | signatures/s | ratio |");
    println!("|---|---|---|");
    let alone = rates(&[0])[0];
    println!(
        "| slot 0 alone (card ceiling {ceiling:.1}/s) | {alone:.1} | {:.2} of ceiling |",
        alone / ceiling
    );
    let with_neighbour = rates(&[0, 1]);
    println!(
        "| slot 0 while slot 1 (200 ms/signature) signs too | {:.1} | {:.2} of alone |",
        with_neighbour[0],
        with_neighbour[0] / alone
    );
    println!(
        "| slot 1, the slow neighbour, meanwhile | {:.1} | |",
        with_neighbour[1]
    );
    for slots in [vec![0, 2], vec![0, 2, 3, 4]] {
        let total: f64 = rates(&slots).iter().sum();
        println!(
            "| {} fast tokens at once, aggregate | {total:.1} | {:.2} × N |",
            slots.len(),
            total / (alone * slots.len() as f64)
        );
    }
    drop(h);
}
