//! The module over MBIM (issue #14), with real tools, on the simulated MBIM modem
//! (`iotsafe-sim modem --protocol mbim` on a pseudo-terminal), each over three paths: the
//! control device directly, the simulator's own proxy mode (an abstract socket of the test's
//! own), and Debian's `/usr/libexec/mbim-proxy` in front of the simulated device.
//!
//! - pkcs11-tool signs, OpenSSL's certificate key verifies; mutual TLS through
//!   pkcs11-provider (`s_client` with key and certificate by `pkcs11:` URI);
//! - the SIM removed and re-inserted: `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, then
//!   signatures again in the same process; a hung modem: `CKR_DEVICE_ERROR` within the
//!   configured timeout, then signatures again; a late answer (a slow modem) never taken
//!   for the next request; the SIM reset underneath (channels gone): a new channel, same session;
//! - 4 pkcs11-tool processes signing at once all verify; a process killed with SIGKILL in the
//!   middle of its signature leaves the next one working; one-shot processes leave at most one
//!   logical channel open (stats);
//! - bad input: a device that is not MBIM (the AT simulator's pty, a pty that prints URCs
//!   without end), a device nobody answers, a
//!   proxy that refuses the device: a clear `CK_RV` within the timeout; no free logical channel:
//!   `CKR_DEVICE_ERROR` until one is free;
//! - the APDUs and MBIM requests per steady-state signature (printed; 2 and 2), and the time
//!   per signature with 30 ms per APDU over AT+CGLA and MBIM on each path (printed).
//!
//! Needs the release build (`cargo build --release --workspace`), pkcs11-tool, openssl with
//! pkcs11-provider, and for the real-proxy rows root and libmbim-utils (`mbim-proxy`); the
//! real proxy is started with `--no-exit` when nothing listens on `@mbim-proxy` and left
//! running for the other tests, as ModemManager's would be.

mod helpers;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use helpers::stack::{
    ModemConsumers, Proc, ServerReport, SimModem, TOOL_TIMEOUT, TlsServer, certificate_key,
    client_certificate_on_status_page, first_pem_certificate_der, load_module, pkcs11_rv,
    release_module, run, session_with_client_key,
};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

/// How the module reaches the simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path3 {
    Direct,
    SimulatorProxy,
    RealProxy,
}

const REAL_PROXY: &str = "/usr/libexec/mbim-proxy";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotsafe-mbim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The real mbim-proxy on `@mbim-proxy` (started when nothing listens there).
fn ensure_real_proxy() {
    iotsafe_sim::modem::abstract_socket::ensure_modemmanager_proxy("mbim-proxy")
        .unwrap_or_else(|e| panic!("{e} (libmbim-utils)"));
}

/// A simulated MBIM modem reached over `path`, with the module's keys for it.
struct Rig {
    consumers: ModemConsumers,
    path: Path3,
}

impl Rig {
    fn start(name: &str, path: Path3, sim_args: &[&str], extra_keys: &str) -> Rig {
        let dir = scratch(&format!("{name}-{path:?}"));
        let proxy_name = format!("iotsafe-test-mbim-{}-{name}", std::process::id());
        let mut args = vec!["--protocol", "mbim"];
        let keys = match path {
            Path3::Direct => "protocol = \"mbim\"\nproxy = false".to_string(),
            Path3::SimulatorProxy => {
                args.extend(["--proxy-socket", &proxy_name]);
                format!("protocol = \"mbim\"\nproxy_socket = \"{proxy_name}\"")
            }
            Path3::RealProxy => {
                ensure_real_proxy();
                "protocol = \"mbim\"".to_string()
            }
        };
        args.extend_from_slice(sim_args);
        let modem = SimModem::start(&dir, &args);
        let consumers = ModemConsumers::with_modem_keys(modem, &format!("{keys}\n{extra_keys}"));
        Rig { consumers, path }
    }

    fn modem(&self) -> &SimModem {
        &self.consumers.modem
    }

    fn requests(&self, name: &str) -> u64 {
        self.modem().stats()["modem"]["requests"][name]
            .as_u64()
            .unwrap_or(0)
    }

    /// The requests show the path the module took.
    fn assert_path_taken(&self) {
        let stats = self.modem().stats();
        let requests = &stats["modem"]["requests"];
        let count = |n: &str| requests[n].as_u64().unwrap_or(0);
        match self.path {
            // The module probes first and opens the function only when told it is not open.
            Path3::Direct => {
                assert!(count("NOT_OPENED") >= 1 && count("OPEN") >= 1, "{stats}");
                assert_eq!(count("PROXY_CONFIGURATION"), 0, "{stats}");
            }
            Path3::SimulatorProxy => {
                assert!(count("PROXY_CONFIGURATION") >= 1, "{stats}");
                assert_eq!(count("OPEN"), 0, "{stats}");
            }
            // The real proxy opened the device itself; the module's OPEN stayed in the proxy.
            Path3::RealProxy => {
                assert_eq!(count("NOT_OPENED"), 0, "{stats}");
                assert_eq!(count("OPEN"), 1, "{stats}");
                assert_eq!(count("PROXY_CONFIGURATION"), 0, "{stats}");
            }
        }
        assert!(count("UICC_APDU") > 0, "{stats}");
    }

    fn message(&self, text: &str) -> PathBuf {
        let path = self.consumers.file("message.txt");
        std::fs::write(&path, text).expect("message");
        path
    }

    fn pkcs11_tool_sign(&self, message: &Path, signature: &Path) -> Command {
        let mut cmd = self.consumers.pkcs11_tool();
        cmd.args(["--sign", "--id", "01", "-m", "ECDSA-SHA256"])
            .args(["--signature-format", "openssl", "-i"])
            .arg(message)
            .arg("-o")
            .arg(signature);
        cmd
    }

    fn verify(&self, message: &Path, signature: &Path) {
        let key = certificate_key(&self.consumers.file("client.pem"));
        let der = std::fs::read(signature).expect("signature file");
        let sig = Signature::from_der(&der).expect("a DER ECDSA signature");
        let data = std::fs::read(message).expect("message");
        key.verify(&data, &sig)
            .expect("the card's signature verifies with its certificate's key");
    }

    /// Loads the module in this process with this rig's configuration (nextest runs every
    /// test in a process of its own).
    fn load(&self) -> cryptoki::context::Pkcs11 {
        // SAFETY: set before any thread of the module exists; nothing else reads it meanwhile.
        unsafe { std::env::set_var("IOTSAFE_PKCS11_CONFIG", &self.consumers.module_conf) };
        load_module(&release_module())
    }

    fn sign_in_process(&self, p11: &cryptoki::context::Pkcs11, data: &[u8]) -> Result<(), RvError> {
        let (session, key) = match p11.get_slots_with_token() {
            Ok(slots) if slots.is_empty() => return Err(RvError::TokenNotPresent),
            Ok(_) => session_with_client_key(p11),
            Err(e) => return Err(pkcs11_rv(&e).expect("a CK_RV")),
        };
        let sig = session
            .sign(&Mechanism::EcdsaSha256, key, data)
            .map_err(|e| pkcs11_rv(&e).expect("a CK_RV"))?;
        let key_of_cert = certificate_key(&self.consumers.file("client.pem"));
        key_of_cert
            .verify(data, &Signature::from_slice(&sig).expect("r‖s"))
            .expect("verifies with the certificate's key");
        Ok(())
    }
}

macro_rules! on_each_path {
    ($check:ident: $($name:ident => $path:expr),+) => {
        $(
            #[test]
            #[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
            fn $name() {
                $check($path);
            }
        )+
    };
}

// --- sign and verify --------------------------------------------------------------------------

fn pkcs11_tool_signs_and_openssl_verifies(path: Path3) {
    let rig = Rig::start("sign", path, &[], "");
    let message = rig.message("signed over MBIM\n");
    let signature = rig.consumers.file("signature.der");
    run(&mut rig.pkcs11_tool_sign(&message, &signature)).expect_success();
    // OpenSSL itself, with the certificate's key.
    let pubkey = rig.consumers.file("pub.pem");
    run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(rig.consumers.file("client.pem"))
        .arg("-out")
        .arg(&pubkey))
    .expect_success();
    let verified = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pubkey)
        .arg("-signature")
        .arg(&signature)
        .arg(&message))
    .expect_success();
    assert_eq!(verified.stdout.trim(), "Verified OK");
    rig.verify(&message, &signature);
    rig.assert_path_taken();
}

on_each_path!(pkcs11_tool_signs_and_openssl_verifies:
    signs_directly => Path3::Direct,
    signs_through_the_simulators_proxy => Path3::SimulatorProxy,
    signs_through_the_real_mbim_proxy => Path3::RealProxy);

// --- mutual TLS through pkcs11-provider -------------------------------------------------------

fn mutual_tls_through_pkcs11_provider(path: Path3) {
    let rig = Rig::start("tls", path, &[], "");
    let dir = rig.modem().dir.clone();
    let server = TlsServer::start_with_card_files(&dir, &[]);
    let mut cmd = rig.consumers.openssl_with_provider();
    cmd.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .args(["-verify_return_error", "-ign_eof"])
        .args(["-cert", "pkcs11:id=%01;type=cert"])
        .args(["-key", "pkcs11:object=client;type=private"]);
    let client = Proc::spawn(&mut cmd, Some(b"GET / HTTP/1.0\r\n\r\n")).wait(TOOL_TIMEOUT);
    assert!(client.success(), "client failed:\n{client}");
    let server = server.finish();
    let report = ServerReport::read(&server);
    assert!(
        report.handshake_finished && report.client_leaf_verified,
        "the server did not verify the card's certificate:\n{client}\n{server}"
    );
    let card_cert = first_pem_certificate_der(
        &std::fs::read_to_string(dir.join("client.pem")).expect("client.pem"),
    );
    assert_eq!(
        client_certificate_on_status_page(&client.stdout),
        card_cert,
        "the status page must show the card's certificate"
    );
    rig.assert_path_taken();
}

on_each_path!(mutual_tls_through_pkcs11_provider:
    mutual_tls_directly => Path3::Direct,
    mutual_tls_through_the_simulators_proxy => Path3::SimulatorProxy,
    mutual_tls_through_the_real_mbim_proxy => Path3::RealProxy);

// --- the SIM goes and comes back; a hung modem --------------------------------------------------

fn sim_removed_and_reinserted(path: Path3) {
    let rig = Rig::start("removal", path, &[], "");
    let p11 = rig.load();
    rig.sign_in_process(&p11, b"before").expect("signs");
    let slot = p11.get_slots_with_token().expect("C_GetSlotList")[0];
    let info = p11.get_slot_info(slot).expect("C_GetSlotInfo");
    assert_eq!(
        info.manufacturer_id(),
        "iotsafe-sim",
        "the manufacturer from DEVICE_CAPS"
    );
    let (session, key) = session_with_client_key(&p11);
    rig.modem().control("remove");
    let removed = session
        .sign(&Mechanism::EcdsaSha256, key, b"while out")
        .expect_err("no SIM");
    assert_eq!(pkcs11_rv(&removed), Some(RvError::DeviceRemoved));
    drop(session);
    assert_eq!(
        rig.sign_in_process(&p11, b"out"),
        Err(RvError::TokenNotPresent)
    );
    rig.modem().control("insert");
    rig.sign_in_process(&p11, b"back in").expect("signs again");
    rig.assert_path_taken();
}

on_each_path!(sim_removed_and_reinserted:
    removal_directly => Path3::Direct,
    removal_through_the_simulators_proxy => Path3::SimulatorProxy,
    removal_through_the_real_mbim_proxy => Path3::RealProxy);

fn a_hung_modem_is_a_clear_error_then_recovers(path: Path3) {
    let rig = Rig::start("hang", path, &[], "timeout_ms = 1500");
    let p11 = rig.load();
    rig.sign_in_process(&p11, b"before").expect("signs");
    rig.modem().control("hang");
    let started = Instant::now();
    let hung = rig.sign_in_process(&p11, b"hung");
    let waited = started.elapsed();
    eprintln!("{path:?}: a hung modem answered {hung:?} after {waited:?}");
    assert_eq!(hung, Err(RvError::DeviceError));
    rig.modem().control("unhang");
    rig.sign_in_process(&p11, b"after")
        .expect("signs again after the modem answers again");
    assert!(
        rig.modem().stats()["modem"]["dropped"].as_u64() >= Some(1),
        "the modem dropped what it got while hung"
    );
}

on_each_path!(a_hung_modem_is_a_clear_error_then_recovers:
    hang_directly => Path3::Direct,
    hang_through_the_simulators_proxy => Path3::SimulatorProxy,
    hang_through_the_real_mbim_proxy => Path3::RealProxy);

/// An answer that comes after the timeout (the modem is slow, not hung) arrives while the next
/// request waits: it is dropped by its TransactionId, never taken for the next answer.
fn a_late_answer_is_never_taken_for_the_next_one(path: Path3) {
    let rig = Rig::start("late", path, &[], "timeout_ms = 1500");
    let p11 = rig.load();
    rig.sign_in_process(&p11, b"before").expect("signs");
    // Later than the timeout and the token layer's settling after it (1.5 s).
    rig.modem().control("quirk delay_ms 3500");
    assert_eq!(
        rig.sign_in_process(&p11, b"late"),
        Err(RvError::DeviceError)
    );
    rig.modem().control("quirk delay_ms 0");
    rig.sign_in_process(&p11, b"after")
        .expect("signs, with its own answer");
    rig.sign_in_process(&p11, b"and again").expect("signs");
}

on_each_path!(a_late_answer_is_never_taken_for_the_next_one:
    late_answer_directly => Path3::Direct,
    late_answer_through_the_simulators_proxy => Path3::SimulatorProxy,
    late_answer_through_the_real_mbim_proxy => Path3::RealProxy);

/// Another program on the device (here mbimcli, which sends OPEN and, at its exit, CLOSE)
/// closes the function between two signatures; the module opens it again when the modem says
/// NotOpened. Busy answers are retried.
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn the_function_closed_by_another_program_is_opened_again_and_busy_is_retried() {
    let rig = Rig::start("reopen", Path3::Direct, &["--busy-every", "3"], "");
    let p11 = rig.load();
    rig.sign_in_process(&p11, b"before").expect("signs");
    let not_opened = rig.requests("NOT_OPENED");
    let mbimcli = run(Command::new("mbimcli")
        .arg("-d")
        .arg(&rig.modem().link)
        .arg("--ms-query-uicc-atr"));
    assert!(mbimcli.success(), "{mbimcli}");
    assert!(rig.requests("CLOSE") >= 1, "mbimcli closed the function");
    rig.sign_in_process(&p11, b"after").expect("signs again");
    assert_eq!(rig.requests("NOT_OPENED"), not_opened + 1);
    let busy = rig.modem().stats()["modem"]["busy"].as_u64().unwrap_or(0);
    assert!(
        busy >= 2,
        "the modem answered Busy ({busy} times), and it was retried"
    );
}

/// The SIM is reset underneath the module (ModemManager resetting it, a power cycle): the modem
/// forgets the channels and answers InvalidLogicalChannel; the module opens a new channel and
/// the operation still signs, in the same session.
fn a_channel_closed_underneath_is_reopened(path: Path3) {
    let rig = Rig::start("underneath", path, &[], "");
    let p11 = rig.load();
    let (session, key) = session_with_client_key(&p11);
    let verify = |data: &[u8], sig: &[u8]| {
        certificate_key(&rig.consumers.file("client.pem"))
            .verify(data, &Signature::from_slice(sig).expect("r‖s"))
            .expect("verifies");
    };
    let sig = session
        .sign(&Mechanism::EcdsaSha256, key, b"before")
        .expect("signs");
    verify(b"before", &sig);
    let opened = rig.requests("UICC_OPEN_CHANNEL");
    rig.modem().control("power-off");
    let sig = session
        .sign(&Mechanism::EcdsaSha256, key, b"after the reset")
        .expect("signs on a new channel");
    verify(b"after the reset", &sig);
    assert_eq!(rig.requests("UICC_OPEN_CHANNEL"), opened + 1);
    assert_eq!(
        rig.modem().stats()["modem"]["open_sessions"].as_u64(),
        Some(1)
    );
}

on_each_path!(a_channel_closed_underneath_is_reopened:
    reset_underneath_directly => Path3::Direct,
    reset_underneath_through_the_simulators_proxy => Path3::SimulatorProxy,
    reset_underneath_through_the_real_mbim_proxy => Path3::RealProxy);

/// The function closed behind a proxy (a CLOSE written to the device by another program, or
/// a modem that reset its function). The simulator's proxy opens it again for the next
/// command. Debian's mbim-proxy (libmbim 1.28) marks the device closed ("reports as being
/// closed", its channel destroyed), answers every client's OPEN itself and everything else
/// NotOpened ("sending request to device failed: wrong state"), even to clients that configure
/// the device anew, for as long as it tracks the device: the module can only report it
/// (`CKR_DEVICE_ERROR`, a log line) and never hangs. That proxy stays stuck on the device's
/// path, so the real-proxy row runs its own mbim-proxy in a network namespace of its own.
fn the_function_closed_behind_the_proxy(path: Path3) {
    let _private_proxy = (path == Path3::RealProxy).then(private_real_proxy);
    let rig = Rig::start("behind-proxy", path, &[], "timeout_ms = 2000");
    let p11 = rig.load();
    rig.sign_in_process(&p11, b"before").expect("signs");
    let closes = rig.requests("CLOSE");
    write_close_to_the_device(&rig.modem().link);
    let deadline = Instant::now() + TOOL_TIMEOUT;
    while rig.requests("CLOSE") == closes {
        assert!(Instant::now() < deadline, "the modem never saw the CLOSE");
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = rig.sign_in_process(&p11, b"after");
    match path {
        Path3::RealProxy => assert_eq!(after, Err(RvError::DeviceError)),
        _ => after.expect("signs once the function is open again"),
    }
}

on_each_path!(the_function_closed_behind_the_proxy:
    closed_behind_the_module_directly => Path3::Direct,
    closed_behind_the_simulators_proxy => Path3::SimulatorProxy,
    closed_behind_the_real_mbim_proxy => Path3::RealProxy);

/// Writes an MBIM CLOSE to the control device (the answer goes to whoever reads next and is
/// dropped there: nobody waits for its TransactionId).
fn write_close_to_the_device(link: &Path) {
    use std::io::Write;
    let mut close = Vec::new();
    for word in [2u32, 12, 0x7FFF_0001] {
        close.extend_from_slice(&word.to_le_bytes());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(link)
        .and_then(|mut f| f.write_all(&close))
        .expect("write CLOSE to the device");
}

/// A network namespace of this test process's own (abstract socket names are per namespace)
/// with a fresh `mbim-proxy --no-exit` on `@mbim-proxy` in it, stopped when dropped. The
/// simulator and the module, started from this thread afterwards, use it.
fn private_real_proxy() -> Proc {
    // SAFETY: unshare with a flag only; it moves this thread (and what it starts) into a new
    // network namespace.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    assert!(!iotsafe_sim::modem::abstract_socket::is_bound("mbim-proxy"));
    let proxy = Proc::spawn(Command::new(REAL_PROXY).arg("--no-exit"), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !iotsafe_sim::modem::abstract_socket::is_bound("mbim-proxy") {
        assert!(Instant::now() < deadline, "mbim-proxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy
}

// --- many processes ----------------------------------------------------------------------------

fn processes_at_once_and_killed_ones(path: Path3) {
    let rig = Rig::start("processes", path, &["--latency-apdu", "2ms"], "");
    let message = rig.message("four at once\n");
    for round in 0..2 {
        let signers: Vec<(Proc, PathBuf)> = (0..4)
            .map(|i| {
                let sig = rig.consumers.file(&format!("sig-{round}-{i}.der"));
                (
                    Proc::spawn(&mut rig.pkcs11_tool_sign(&message, &sig), None),
                    sig,
                )
            })
            .collect();
        for (proc, sig) in signers {
            proc.wait(TOOL_TIMEOUT).expect_success();
            rig.verify(&message, &sig);
        }
    }
    // A process killed in the middle of its signature (the modem is slow, so it is).
    rig.modem().control("quirk delay_ms 300");
    let before = rig.requests("UICC_APDU");
    let victim_sig = rig.consumers.file("victim.der");
    let victim = Proc::spawn(&mut rig.pkcs11_tool_sign(&message, &victim_sig), None);
    let deadline = Instant::now() + TOOL_TIMEOUT;
    while rig.requests("UICC_APDU") == before {
        assert!(
            Instant::now() < deadline,
            "the victim never reached the card"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Dropping a running Proc kills it with SIGKILL.
    drop(victim);
    rig.modem().control("quirk delay_ms 0");
    // One-shot processes after it: every one verifies, and the card never holds more than
    // the one channel every process of the module shares.
    rig.modem().control("reset-stats");
    for i in 0..10 {
        let sig = rig.consumers.file(&format!("after-{i}.der"));
        run(&mut rig.pkcs11_tool_sign(&message, &sig)).expect_success();
        rig.verify(&message, &sig);
    }
    let stats = rig.modem().stats();
    assert!(
        stats["modem"]["max_open_sessions"].as_u64() <= Some(1),
        "channels leaked: {stats}"
    );
    assert_eq!(stats["interleaved"].as_u64(), Some(0), "{stats}");
}

on_each_path!(processes_at_once_and_killed_ones:
    processes_directly => Path3::Direct,
    processes_through_the_simulators_proxy => Path3::SimulatorProxy,
    processes_through_the_real_mbim_proxy => Path3::RealProxy);

// --- APDUs per signature -----------------------------------------------------------------------

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn apdus_per_steady_state_signature() {
    let rig = Rig::start("apdu-count", Path3::Direct, &[], "");
    let p11 = rig.load();
    let (session, key) = session_with_client_key(&p11);
    session
        .sign(&Mechanism::EcdsaSha256, key, b"warm up")
        .expect("signs");
    rig.modem().control("reset-stats");
    const N: u64 = 20;
    for i in 0..N {
        session
            .sign(&Mechanism::EcdsaSha256, key, format!("{i}").as_bytes())
            .expect("signs");
    }
    let stats = rig.modem().stats();
    let apdus = stats["total"].as_u64().expect("total");
    let requests = stats["modem"]["requests"]["UICC_APDU"]
        .as_u64()
        .expect("UICC_APDU");
    println!(
        "MBIM: {} card APDUs and {} MBIM APDU requests per signature (AT+CGLA: 2)",
        apdus as f64 / N as f64,
        requests as f64 / N as f64
    );
    assert_eq!((apdus, requests), (2 * N, 2 * N), "{stats}");
}

/// The cost of one signature with the latency model (30 ms per APDU on the card) over AT+CGLA
/// and over MBIM on each path, side by side in one process (one slot each): APDUs and MBIM
/// requests per signature are asserted, the times printed for docs/benchmarks.
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn signature_cost_over_at_and_mbim_with_the_latency_model() {
    const N: u32 = 10;
    ensure_real_proxy();
    let dir = scratch("cost");
    let proxy_name = format!("iotsafe-test-mbim-{}-cost", std::process::id());
    let latency = ["--latency-apdu", "30ms"];
    let start = |name: &str, args: &[&str]| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).expect("directory");
        let mut all = latency.to_vec();
        all.extend_from_slice(args);
        SimModem::start(&sub, &all)
    };
    let rows = [
        ("AT+CGLA", start("at", &[]), "at_mode = \"cgla\""),
        (
            "MBIM direct",
            start("direct", &["--protocol", "mbim"]),
            "protocol = \"mbim\"\nproxy = false",
        ),
        (
            "MBIM, simulator's proxy",
            start(
                "sim-proxy",
                &["--protocol", "mbim", "--proxy-socket", &proxy_name],
            ),
            &*format!("protocol = \"mbim\"\nproxy_socket = \"{proxy_name}\""),
        ),
        (
            "MBIM, mbim-proxy",
            start("real-proxy", &["--protocol", "mbim"]),
            "protocol = \"mbim\"",
        ),
    ];
    let mut config = format!(
        "lock_dir = \"{d}\"\ncache_dir = \"{d}/cache\"\n[pcsc]\nenabled = false\n",
        d = dir.display()
    );
    for (_, modem, keys) in &rows {
        config.push_str(&format!(
            "[[modem]]\ndevice = \"{}\"\n{keys}\n",
            modem.link.display()
        ));
    }
    let config_file = dir.join("module.toml");
    std::fs::write(&config_file, config).expect("config");
    // SAFETY: as in Rig::load.
    unsafe { std::env::set_var("IOTSAFE_PKCS11_CONFIG", &config_file) };
    let p11 = load_module(&release_module());
    let slots = p11.get_slots_with_token().expect("C_GetSlotList");
    assert_eq!(slots.len(), rows.len(), "every modem has a token");
    for ((name, modem, _), slot) in rows.iter().zip(slots) {
        let session = p11.open_ro_session(slot).expect("C_OpenSession");
        let key = session
            .find_objects(&[
                cryptoki::object::Attribute::Class(cryptoki::object::ObjectClass::PRIVATE_KEY),
                cryptoki::object::Attribute::Id(vec![0x01]),
            ])
            .expect("C_FindObjects")[0];
        session
            .sign(&Mechanism::EcdsaSha256, key, b"warm up")
            .expect("signs");
        modem.control("reset-stats");
        let started = Instant::now();
        for i in 0..N {
            session
                .sign(&Mechanism::EcdsaSha256, key, &i.to_be_bytes())
                .expect("signs");
        }
        let per_signature = started.elapsed() / N;
        let stats = modem.stats();
        let apdus = stats["total"].as_u64().expect("total");
        println!(
            "{name:<24} {:>4.1} APDUs, {:>6.1} ms per signature",
            apdus as f64 / f64::from(N),
            per_signature.as_secs_f64() * 1000.0
        );
        assert_eq!(apdus, 2 * u64::from(N), "{name}: {stats}");
        if name.starts_with("MBIM") {
            assert_eq!(
                stats["modem"]["requests"]["UICC_APDU"].as_u64(),
                Some(2 * u64::from(N)),
                "{name}: one MBIM request per APDU: {stats}"
            );
        }
    }
}

// --- bad input ---------------------------------------------------------------------------------

/// The module configured for an MBIM device at `link` with `keys`: no token, and the call that
/// needs one answers `CKR_TOKEN_NOT_PRESENT`, within the timeout.
fn no_token_within_the_timeout(config_dir: &Path, link: &Path, keys: &str) {
    let config = config_dir.join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "lock_dir = \"{d}\"\ncache_dir = \"{d}/cache\"\n[pcsc]\nenabled = false\n[[modem]]\n\
             device = \"{}\"\nprotocol = \"mbim\"\ntimeout_ms = 1000\n{keys}\n",
            link.display(),
            d = config_dir.display()
        ),
    )
    .expect("config");
    // SAFETY: as in Rig::load.
    unsafe { std::env::set_var("IOTSAFE_PKCS11_CONFIG", &config) };
    let p11 = load_module(&release_module());
    let started = Instant::now();
    let slots = p11.get_all_slots().expect("C_GetSlotList");
    assert_eq!(slots.len(), 1, "the modem is a slot");
    let with_token = p11.get_slots_with_token().expect("C_GetSlotList");
    let opened = p11.open_ro_session(slots[0]).expect_err("no token");
    eprintln!(
        "answered {:?} after {:?}",
        pkcs11_rv(&opened),
        started.elapsed()
    );
    assert!(with_token.is_empty());
    assert_eq!(pkcs11_rv(&opened), Some(RvError::TokenNotPresent));
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_device_that_speaks_at_is_no_token() {
    let dir = scratch("not-mbim");
    let at_modem = SimModem::start(&dir, &[]);
    no_token_within_the_timeout(&dir, &at_modem.link, "proxy = false");
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_device_nobody_answers_is_no_token() {
    let dir = scratch("mute");
    let mute = SimModem::start(&dir, &["--protocol", "mbim", "--hang"]);
    no_token_within_the_timeout(&dir, &mute.link, "proxy = false");
}

/// A device that never stops talking, in lines that are not MBIM (a modem's AT port printing
/// URCs): no token, and no call waits past the timeout (the module stops at the deadline even
/// though bytes keep coming).
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_device_that_talks_garbage_is_no_token() {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let dir = scratch("garbage");
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors, which are owned by the Files below.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty");
    // SAFETY: as above.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    // SAFETY: termios of an open tty, zero-initialised.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(
            libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), &mut t),
            0
        );
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), libc::TCSANOW, &t);
    }
    let device = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&slave)
    ))
    .expect("the pty's name");
    let link = dir.join("talker");
    std::os::unix::fs::symlink(&device, &link).expect("link");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talking = stop.clone();
    let talker = std::thread::spawn(move || {
        while !talking.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = master.write_all(b"\r\nRING\r\n\r\n+CREG: 1\r\n");
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    no_token_within_the_timeout(&dir, &link, "proxy = false");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = talker.join();
    drop(slave);
}

/// Debian's mbim-proxy asked for a device that does not speak MBIM (the AT simulator's pty):
/// its own OPEN gets no answer and it drops the client; the module reports no token within its
/// timeout. On a proxy of its own (it may keep that device's path in a bad state).
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_device_the_real_proxy_cannot_open_is_no_token() {
    let _proxy = private_real_proxy();
    let dir = scratch("proxy-cannot-open");
    let at_modem = SimModem::start(&dir, &[]);
    no_token_within_the_timeout(&dir, &at_modem.link, "");
}

/// Another program holds the card's only logical channel (channels outlive mbimcli): the
/// modem answers NoLogicalChannels, `CKR_DEVICE_ERROR` (as over AT and PC/SC) until the other
/// program closes its channel; then the same process signs.
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn no_free_logical_channel_is_a_device_error_until_one_is_free() {
    let rig = Rig::start(
        "no-channel",
        Path3::Direct,
        &["--logical-channels", "1"],
        "",
    );
    let aid = hex::encode_upper(iotsafe_sim::default_profile().aid);
    let mbimcli = |arg: String| {
        let done = run(Command::new("mbimcli")
            .arg("-d")
            .arg(&rig.modem().link)
            .arg(arg));
        assert!(done.success(), "{done}");
    };
    mbimcli(format!(
        "--ms-set-uicc-open-channel=application-id={aid},selectp2arg=0,channel-group=1"
    ));
    let p11 = rig.load();
    let slot = p11.get_all_slots().expect("C_GetSlotList")[0];
    let refused = p11.open_ro_session(slot).expect_err("no channel left");
    assert_eq!(pkcs11_rv(&refused), Some(RvError::DeviceError));
    assert!(
        rig.requests("UICC_OPEN_CHANNEL") >= 2,
        "the module asked for one"
    );
    assert_eq!(
        rig.modem().stats()["modem"]["open_sessions"].as_u64(),
        Some(1)
    );
    mbimcli("--ms-set-uicc-close-channel=channel=0,channel-group=1".to_string());
    rig.sign_in_process(&p11, b"a channel again")
        .expect("signs once a channel is free");
}

/// The simulator's proxy serves its own device only: asked for another one it closes the
/// connection without a reply, as mbim-proxy does when it cannot open a device.
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_proxy_that_refuses_the_device_is_no_token() {
    let dir = scratch("refused");
    let proxy_name = format!("iotsafe-test-mbim-{}-refuses", std::process::id());
    let serving = SimModem::start(
        &dir.join("a").tap_mkdir(),
        &["--protocol", "mbim", "--proxy-socket", &proxy_name],
    );
    let other = SimModem::start(&dir.join("b").tap_mkdir(), &["--protocol", "mbim"]);
    no_token_within_the_timeout(
        &dir,
        &other.link,
        &format!("proxy_socket = \"{proxy_name}\""),
    );
    assert_eq!(
        other.stats()["modem"]["requests"]["UICC_ATR"].as_u64(),
        None,
        "a refusal is not a reason to go around the proxy"
    );
    drop(serving);
}

trait MakeDir {
    fn tap_mkdir(self) -> PathBuf;
}

impl MakeDir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).expect("directory");
        self
    }
}
