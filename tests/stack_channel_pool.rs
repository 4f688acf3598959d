//! `applet.max_channels = 4` over the real pcscd (issue #11 item 6): eight threads of one
//! process sign at once. With the channel pool of earlier versions, growing the pool called
//! `SCardConnect` on the PC/SC context a transacting thread was using, which hung the process
//! and pcscd with it. The pool is gone (one logical channel per card and process; the setting is
//! accepted and ignored) and every connection has a PC/SC context of its own. The signing runs
//! in a child process under a watchdog, so a hang fails the test instead of hanging it.

mod helpers;

use std::process::Command;
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use helpers::stack::{Proc, Stack, certificate_key, load_module, session_with_client_key};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

const CHILD: &str = "IOTSAFE_CHANNEL_POOL_CHILD";
const THREADS: usize = 8;
const SIGNATURES_PER_THREAD: usize = 25;

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn max_channels_four_with_eight_threads_over_pcscd_does_not_hang() {
    let stack = Stack::get();
    if std::env::var_os(CHILD).is_some() {
        return sign_from_threads(&stack);
    }
    let _lock = stack.lock();
    let scratch = stack.scratch("channel_pool");
    let config = scratch.join("module.toml");
    std::fs::write(&config, "[applet]\nmax_channels = 4\n").expect("write the configuration");
    stack.reset_stats();
    let child = Proc::spawn(
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "max_channels_four_with_eight_threads_over_pcscd_does_not_hang",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("IOTSAFE_PKCS11_CONFIG", &config),
        None,
    );
    // The watchdog: a hang kills the child and fails here.
    let finished = child.wait(Duration::from_secs(90));
    assert!(
        finished.success(),
        "the signing process failed:\n{finished}"
    );
    let out = finished.all_output();
    let total = THREADS * SIGNATURES_PER_THREAD;
    assert!(
        out.contains(&format!("{total} signatures verified")),
        "every thread signs and every signature verifies:\n{out}"
    );
    let stats = stack.sim_command("stats");
    assert!(
        stats.contains("\"max_open_channels\":1,") && stats.contains("\"interleaved\":0,"),
        "one logical channel at most, no interleaved sequence: {stats}"
    );
}

/// The child: eight threads, one session each, every signature checked against the card's
/// certificate.
fn sign_from_threads(stack: &Stack) {
    let key = certificate_key(&stack.card_file("client.pem"));
    let p11 = load_module(&stack.module);
    let verified: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (p11, key) = (&p11, &key);
                scope.spawn(move || {
                    let (session, private) = session_with_client_key(p11);
                    for i in 0..SIGNATURES_PER_THREAD {
                        let message = format!("thread {t} signature {i}");
                        let raw = session
                            .sign(&Mechanism::EcdsaSha256, private, message.as_bytes())
                            .unwrap_or_else(|e| panic!("thread {t} C_Sign {i}: {e}"));
                        let signature = Signature::from_slice(&raw).expect("r and s in range");
                        key.verify(message.as_bytes(), &signature)
                            .unwrap_or_else(|e| panic!("thread {t} signature {i}: {e}"));
                    }
                    SIGNATURES_PER_THREAD
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a signing thread panicked"))
            .sum()
    });
    println!("{verified} signatures verified");
}
