//! One modem slot shared by several processes (issue #11 item 1): four processes load the built
//! module and sign at once on one simulated modem (AT+CGLA, and AT+CSIM with T=0 answers).
//! The port is opened shared and each operation takes a turn on the port's lock, so every
//! process sees the token, every signature verifies against the card's certificate and the
//! card never sees two sequences interleaved.

mod helpers;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use helpers::stack::{
    Proc, SimModem, certificate_key, load_module, release_module, session_with_client_key,
    sim_control,
};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

const CHILD: &str = "IOTSAFE_SHARED_MODEM_CHILD";
const PROCESSES: usize = 4;
const SIGNING_TIME: Duration = Duration::from_secs(10);

#[test]
#[ignore = "needs the release build of the module (scripts/test.sh builds it)"]
fn four_processes_share_one_modem_slot_over_cgla() {
    shared_modem("cgla", &["--at", "both"], "cgla");
}

#[test]
#[ignore = "needs the release build of the module (scripts/test.sh builds it)"]
fn four_processes_share_one_modem_slot_over_csim_with_t0() {
    shared_modem("csim", &["--at", "csim", "--t0"], "csim");
}

fn shared_modem(name: &str, modem_flags: &[&str], at_mode: &str) {
    if let Some(config) = std::env::var_os(CHILD) {
        return sign_until_time_is_up(Path::new(&config));
    }
    let dir = std::env::temp_dir().join(format!(
        "iotsafe-shared-modem-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mut args = vec!["--latency-apdu", "2ms"];
    args.extend_from_slice(modem_flags);
    let modem = SimModem::start(&dir, &args);
    let (control, config) = (
        modem.control.clone(),
        modem.module_config("", &format!("at_mode = \"{at_mode}\"")),
    );
    sim_control(&control, "reset-stats");
    let test = format!(
        "four_processes_share_one_modem_slot_over_{}",
        name_of(at_mode)
    );
    let children: Vec<Proc> = (0..PROCESSES)
        .map(|_| {
            Proc::spawn(
                Command::new(std::env::current_exe().expect("test binary"))
                    .args(["--exact", &test, "--ignored", "--nocapture"])
                    .env(CHILD, &config)
                    .env("IOTSAFE_PKCS11_CONFIG", &config),
                None,
            )
        })
        .collect();
    let mut counts = Vec::new();
    for child in children {
        let finished = child.wait(SIGNING_TIME + Duration::from_secs(60));
        assert!(finished.success(), "a signing process failed:\n{finished}");
        let out = finished.all_output();
        let count: usize = out
            .lines()
            .find_map(|l| l.strip_suffix(" signatures verified")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count in the child's output:\n{out}"));
        counts.push(count);
    }
    let stats = sim_control(&control, "stats");
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    let fewest = *counts.iter().min().unwrap_or(&0);
    println!(
        "{at_mode}: signatures per process {counts:?}, fewest {:.2} of the mean",
        fewest as f64 / mean
    );
    assert!(fewest > 0, "every process signs: {counts:?}");
    assert!(
        stats.contains("\"interleaved\":0,"),
        "no sequence interleaved on the card: {stats}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn name_of(at_mode: &str) -> &'static str {
    match at_mode {
        "cgla" => "cgla",
        _ => "csim_with_t0",
    }
}

/// The child: one session, signing until the time is up, every signature checked against the
/// card's certificate; never calls C_Finalize (a one-shot process often does not).
fn sign_until_time_is_up(config: &Path) {
    let key = certificate_key(&config.with_file_name("client.pem"));
    let p11 = load_module(&release_module());
    let (session, private) = session_with_client_key(&p11);
    let start = Instant::now();
    let mut signed = 0usize;
    while start.elapsed() < SIGNING_TIME {
        let message = format!("process {} signature {signed}", std::process::id());
        let raw = session
            .sign(&Mechanism::EcdsaSha256, private, message.as_bytes())
            .unwrap_or_else(|e| panic!("C_Sign {signed}: {e}"));
        let signature = Signature::from_slice(&raw).expect("r and s in range");
        key.verify(message.as_bytes(), &signature)
            .unwrap_or_else(|e| panic!("signature {signed}: {e}"));
        signed += 1;
    }
    println!("{signed} signatures verified");
    std::mem::forget(p11);
}
