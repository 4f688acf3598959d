//! Processes signing at once on one card, shared by `tests/stack_fair_turns.rs` and
//! `benches/fair_turns.rs`: the parent starts child processes (its own binary again, told what to
//! do by environment variables), waits until every child has loaded the module and found the
//! key, lets them all sign for the same time, and collects per process the signatures made
//! within that time and the longest single `C_Sign`. Every signature is verified against the
//! card's certificate in the child.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

use crate::helpers::stack::{Proc, Stack, certificate_key, load_module, session_with_client_key};

/// Set in a child: the file whose appearance starts the signing.
const CHILD_GO_FILE: &str = "IOTSAFE_FAIR_TURNS_GO_FILE";
const CHILD_MODULE: &str = "IOTSAFE_FAIR_TURNS_MODULE";
const CHILD_CERTIFICATE: &str = "IOTSAFE_FAIR_TURNS_CERTIFICATE";
const CHILD_SIGNING_MS: &str = "IOTSAFE_FAIR_TURNS_SIGNING_MS";

/// How to start the children of one round.
pub struct Round<'a> {
    /// Arguments for this binary that make it run the child (e.g. the test's name).
    pub child_args: &'a [&'a str],
    pub module: &'a Path,
    /// The card's `client.pem`, whose key checks the signatures.
    pub certificate: &'a Path,
    /// `IOTSAFE_PKCS11_CONFIG` for the children (`None`: the default configuration).
    pub config: Option<&'a Path>,
    /// A directory for the start signal.
    pub scratch: &'a Path,
    pub processes: usize,
    pub signing_time: Duration,
}

/// What every process of a round did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub signing_time: Duration,
    /// Signatures finished within the signing time, per process.
    pub signatures: Vec<u64>,
    /// The longest single `C_Sign` per process.
    pub longest_sign: Vec<Duration>,
}

impl Outcome {
    pub fn total(&self) -> u64 {
        self.signatures.iter().sum()
    }

    pub fn mean(&self) -> f64 {
        self.total() as f64 / self.signatures.len() as f64
    }

    pub fn fewest(&self) -> u64 {
        self.signatures.iter().copied().min().unwrap_or(0)
    }

    /// The fewest signatures of any process over the mean.
    pub fn fairness(&self) -> f64 {
        self.fewest() as f64 / self.mean()
    }

    pub fn longest_wait(&self) -> Duration {
        self.longest_sign.iter().copied().max().unwrap_or_default()
    }

    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.signing_time.as_secs_f64()
    }

    /// The aggregate signing rate over the rate of `alone` (one process on the same card).
    pub fn share_of(&self, alone: &Outcome) -> f64 {
        self.rate() / alone.rate()
    }
}

/// The stack's card at 5 ms per APDU and 40 ms per signature while this lives; the stack
/// starts it with no latency, which is restored on drop (also when a test fails).
pub struct SlowStackCard<'a>(&'a Stack);

impl<'a> SlowStackCard<'a> {
    pub fn new(stack: &'a Stack) -> SlowStackCard<'a> {
        stack.sim_command("set-latency apdu=5ms signature=40ms");
        SlowStackCard(stack)
    }
}

impl Drop for SlowStackCard<'_> {
    fn drop(&mut self) {
        self.0.sim_command("set-latency apdu=0 signature=0");
    }
}

/// In a child (the environment says so): signs as told and returns true; else false.
pub fn run_child_if_asked() -> bool {
    let Some(go) = std::env::var_os(CHILD_GO_FILE) else {
        return false;
    };
    let var = |name: &str| std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set"));
    let signing_ms: u64 = var(CHILD_SIGNING_MS)
        .to_string_lossy()
        .parse()
        .expect("signing time in ms");
    sign_when_told(
        Path::new(&go),
        Path::new(&var(CHILD_MODULE)),
        Path::new(&var(CHILD_CERTIFICATE)),
        Duration::from_millis(signing_ms),
    );
    true
}

/// The child: one session, ready, then signing from the moment `go` exists until the time is
/// up; never calls C_Finalize (a one-shot process often does not).
fn sign_when_told(go: &Path, module: &Path, certificate: &Path, signing_time: Duration) {
    let key = certificate_key(certificate);
    let p11 = load_module(module);
    let (session, private) = session_with_client_key(&p11);
    println!("ready");
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    let start = Instant::now();
    let (mut signed, mut longest) = (0u64, Duration::ZERO);
    let mut attempt = 0u64;
    while start.elapsed() < signing_time {
        let message = format!("process {} signature {attempt}", std::process::id());
        let asked = Instant::now();
        let raw = session
            .sign(&Mechanism::EcdsaSha256, private, message.as_bytes())
            .unwrap_or_else(|e| panic!("C_Sign {attempt}: {e}"));
        longest = longest.max(asked.elapsed());
        let signature = Signature::from_slice(&raw).expect("r and s in range");
        key.verify(message.as_bytes(), &signature)
            .unwrap_or_else(|e| panic!("signature {attempt}: {e}"));
        attempt += 1;
        if start.elapsed() <= signing_time {
            signed += 1;
        }
    }
    println!(
        "signed {signed} of {attempt} verified, longest C_Sign {} us",
        longest.as_micros()
    );
    std::mem::forget(p11);
}

/// Runs one round and returns what every process did; panics if a child fails.
pub fn run(round: &Round<'_>) -> Outcome {
    let go = round.scratch.join("go");
    let _ = std::fs::remove_file(&go);
    let mut children: Vec<Proc> = (0..round.processes)
        .map(|_| {
            let mut cmd = Command::new(std::env::current_exe().expect("this binary"));
            cmd.args(round.child_args)
                .env(CHILD_GO_FILE, &go)
                .env(CHILD_MODULE, round.module)
                .env(CHILD_CERTIFICATE, round.certificate)
                .env(CHILD_SIGNING_MS, round.signing_time.as_millis().to_string());
            match round.config {
                Some(config) => cmd.env("IOTSAFE_PKCS11_CONFIG", config),
                None => cmd.env_remove("IOTSAFE_PKCS11_CONFIG"),
            };
            Proc::spawn(&mut cmd, None)
        })
        .collect();
    for child in &mut children {
        child.wait_for_line(Duration::from_secs(120), |l| (l == "ready").then_some(()));
    }
    std::fs::write(&go, b"").expect("write the start signal");
    let mut outcome = Outcome {
        signing_time: round.signing_time,
        signatures: Vec::new(),
        longest_sign: Vec::new(),
    };
    for child in children {
        let finished = child.wait(round.signing_time + Duration::from_secs(120));
        assert!(finished.success(), "a signing process failed:\n{finished}");
        let (signed, longest_us) = finished
            .stdout
            .lines()
            .find_map(parse_child_report)
            .unwrap_or_else(|| panic!("no report in the child's output:\n{finished}"));
        outcome.signatures.push(signed);
        outcome.longest_sign.push(Duration::from_micros(longest_us));
    }
    let _ = std::fs::remove_file(&go);
    outcome
}

/// `signed 12 of 13 verified, longest C_Sign 51234 us` → (12, 51234).
fn parse_child_report(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("signed ")?;
    let (signed, rest) = rest.split_once(" of ")?;
    let longest = rest.split_once("longest C_Sign ")?.1.strip_suffix(" us")?;
    Some((signed.parse().ok()?, longest.parse().ok()?))
}

/// One markdown table row: transport, module, signatures per process, fewest / mean, longest
/// wait, aggregate / ceiling.
pub fn table_row(transport: &str, module: &str, shared: &Outcome, alone: &Outcome) -> String {
    let per_process: Vec<String> = shared.signatures.iter().map(u64::to_string).collect();
    format!(
        "| {transport} | {module} | {} | {:.2} | {:.2} s | {:.2} ({:.1}/s of {:.1}/s) |",
        per_process.join(" / "),
        shared.fairness(),
        shared.longest_wait().as_secs_f64(),
        shared.share_of(alone),
        shared.rate(),
        alone.rate()
    )
}

pub const TABLE_HEADER: &str = "| transport | module | signatures per process | fewest / mean | \
     longest C_Sign | aggregate / ceiling (1 process alone) |\n|---|---|---|---|---|---|";
