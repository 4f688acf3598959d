//! Stress and memory, in-process on the simulated card:
//! - 8 threads signing on one token at once, every signature verified, no deadlock (a watchdog
//!   fails the test instead of hanging), exactly 2 APDUs per signature, no interleaved
//!   sequences on the card;
//! - a long `C_Initialize` / `C_OpenSession` / `C_Sign` / `C_Finalize` loop whose live heap
//!   (counted by this binary's allocator) does not grow.
//!
//! Sizes: `IOTSAFE_STRESS_SIGNATURES` per thread (default 10 000 in a release build, 200 in a
//! debug one) and `IOTSAFE_STRESS_CYCLES` (default 1 000 / 200). `scripts/test.sh` runs the
//! full size: `cargo test --release --test stress`.

mod helpers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;
use sha2::{Digest, Sha256};

/// Counts the bytes this process has live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn size(var: &str, release: usize, debug: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            debug
        } else {
            release
        })
}

/// Resident set size in KiB (Linux).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4
}

const THREADS: usize = 8;

#[test]
fn eight_threads_sign_on_one_token_all_valid_no_deadlock() {
    let per_thread = size("IOTSAFE_STRESS_SIGNATURES", 10_000, 200);
    let h = Harness::default();
    let card = h.card().clone();
    assert_eq!(unsafe { C_Initialize(std::ptr::null_mut()) }, CKR_OK);
    let point = profile_client_point(&card);
    // Warm up: the token is connected and its objects read before the counting starts.
    let s = open_session(0);
    object_by_label(s, CKO_PRIVATE_KEY, "client");
    card.reset_stats();
    let signed = AtomicU64::new(0);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let done = done_tx.clone();
            let (signed, point) = (&signed, &point);
            scope.spawn(move || {
                let s = open_session(0);
                let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
                for i in 0..per_thread {
                    let msg = format!("thread {t} signature {i}");
                    let sig = sign(s, CKM_ECDSA_SHA256, key, msg.as_bytes())
                        .unwrap_or_else(|rv| panic!("thread {t} signature {i}: {rv:#x}"));
                    assert!(
                        p256_verify(point, &Sha256::digest(msg.as_bytes()), &sig),
                        "thread {t} signature {i} verifies"
                    );
                    signed.fetch_add(1, Ordering::Relaxed);
                }
                unsafe { C_CloseSession(s) };
                drop(done);
            });
        }
        drop(done_tx);
        // Watchdog: every thread finishes well within this, or the test fails (deadlock).
        let limit = Duration::from_secs(600);
        let deadline = Instant::now() + limit;
        loop {
            match done_rx.recv_timeout(Duration::from_secs(1)) {
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                _ if Instant::now() > deadline => {
                    eprintln!(
                        "stress: {} of {} signatures after {limit:?}: deadlock?",
                        signed.load(Ordering::Relaxed),
                        THREADS * per_thread
                    );
                    std::process::abort();
                }
                _ => {}
            }
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let n = (THREADS * per_thread) as u64;
    assert_eq!(signed.load(Ordering::Relaxed), n);
    let stats = card.stats();
    assert_eq!(stats.total, 2 * n, "2 APDUs per signature: {stats:?}");
    assert_eq!(stats.interleaved, 0, "no interleaved sequences on the card");
    println!(
        "stress: {THREADS} threads × {per_thread} signatures = {n} valid signatures in {secs:.1} s ({:.0}/s), {} APDUs, 0 interleaved",
        n as f64 / secs,
        stats.total
    );
}

#[test]
fn initialize_finalize_loop_does_not_grow() {
    let cycles = size("IOTSAFE_STRESS_CYCLES", 1_000, 200);
    let h = Harness::default();
    let card = h.card().clone();
    let point = profile_client_point(&card);
    let cycle = |i: usize| unsafe {
        assert_eq!(C_Initialize(std::ptr::null_mut()), CKR_OK);
        let s = open_session(0);
        let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
        let msg = format!("cycle {i}");
        let sig = sign(s, CKM_ECDSA_SHA256, key, msg.as_bytes()).expect("C_Sign");
        assert!(p256_verify(&point, &Sha256::digest(msg.as_bytes()), &sig));
        assert_eq!(C_Finalize(std::ptr::null_mut()), CKR_OK);
    };
    // Warm-up: one-time allocations (logger, lazily built tables) happen here.
    for i in 0..20 {
        cycle(i);
    }
    let (heap0, rss0) = (LIVE.load(Ordering::SeqCst), rss_kib());
    for i in 0..cycles {
        cycle(i);
    }
    let (heap1, rss1) = (LIVE.load(Ordering::SeqCst), rss_kib());
    let growth = heap1 - heap0;
    println!(
        "init/finalize: {cycles} cycles, live heap {heap0} → {heap1} bytes ({growth:+}), RSS {rss0} → {rss1} KiB"
    );
    // A leak of even 64 bytes per cycle would show; allow a little slack for the test harness.
    assert!(
        growth < 16 * 1024,
        "live heap grew by {growth} bytes over {cycles} C_Initialize/C_Finalize cycles"
    );
    assert_eq!(
        card.open_channels(),
        vec![0],
        "every cycle closed its channel"
    );
}
