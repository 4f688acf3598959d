//! The module over QMI with real consumers (issue #14), each row over three paths to the
//! simulated modem (`iotsafe-sim modem --protocol qmi`): the control device directly, the
//! simulator's own proxy mode (an abstract socket of the test's own), and the real
//! `/usr/libexec/qmi-proxy` (started with `--no-exit` when `@qmi-proxy` is not bound; it is
//! shared and serves any device). Signatures are verified against the card's certificate.
//! No pcscd needed; runs side by side with other tests.

mod helpers;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use helpers::stack::{
    Finished, ModemConsumers, Proc, ServerReport, SimModem, TOOL_TIMEOUT, TlsServer,
    certificate_key, run,
};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

const KEY_URI: &str = "pkcs11:object=client;type=private";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path3 {
    Direct,
    SimProxy,
    RealProxy,
}

const PATHS: [Path3; 3] = [Path3::Direct, Path3::SimProxy, Path3::RealProxy];

/// `@qmi-proxy` bound: by ModemManager's, another test's, or one started here.
fn ensure_real_qmi_proxy() {
    iotsafe_sim::modem::abstract_socket::ensure_modemmanager_proxy("qmi-proxy")
        .unwrap_or_else(|e| panic!("{e} (libqmi-utils)"));
}

struct Rig {
    consumers: ModemConsumers,
    path: Path3,
}

impl std::ops::Deref for Rig {
    type Target = ModemConsumers;
    fn deref(&self) -> &ModemConsumers {
        &self.consumers
    }
}

fn scratch(test: &str, path: Path3) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "iotsafe-stack-qmi-{test}-{path:?}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

impl Rig {
    /// A QMI modem (with `sim_args`) reached over `path`; `module_keys` go into the module's
    /// `[[modem]]`.
    fn start(test: &str, path: Path3, sim_args: &[&str], module_keys: &str) -> Rig {
        let dir = scratch(test, path);
        let socket = format!("iotsafe-stack-qmi-{test}-{}", std::process::id());
        let mut args = vec!["--protocol", "qmi"];
        args.extend_from_slice(sim_args);
        let proxy_keys = match path {
            Path3::Direct => "proxy = false".to_string(),
            Path3::SimProxy => {
                args.extend_from_slice(&["--proxy-socket", &socket]);
                format!("proxy_socket = \"{socket}\"")
            }
            Path3::RealProxy => {
                ensure_real_qmi_proxy();
                "proxy = true".to_string()
            }
        };
        let modem = SimModem::start(&dir, &args);
        let keys = format!("protocol = \"qmi\"\n{proxy_keys}\n{module_keys}");
        Rig {
            consumers: ModemConsumers::with_modem_keys(modem, &keys),
            path,
        }
    }

    fn stats(&self) -> serde_json::Value {
        self.modem.stats()
    }

    /// `pkcs11-tool --sign` of `message` with the client key: the raw r‖s signature.
    fn sign(&self, message: &str) -> Result<Vec<u8>, Finished> {
        let f = self.sign_command(message).wait(TOOL_TIMEOUT);
        if !f.success() {
            return Err(f);
        }
        Ok(std::fs::read(self.file(&format!("{message}.sig"))).expect("the signature"))
    }

    fn sign_command(&self, message: &str) -> Proc {
        let msg = self.file(message);
        std::fs::write(&msg, message).expect("message");
        let mut cmd = self.pkcs11_tool();
        cmd.args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", "01", "-i"])
            .arg(&msg)
            .arg("-o")
            .arg(self.file(&format!("{message}.sig")));
        Proc::spawn(&mut cmd, None)
    }

    fn verify(&self, message: &str, signature: &[u8]) {
        let key = certificate_key(&self.file("client.pem"));
        let signature = Signature::from_slice(signature).expect("r and s in range");
        key.verify(message.as_bytes(), &signature)
            .unwrap_or_else(|e| {
                panic!(
                    "{:?}: the signature of {message:?} does not verify: {e}",
                    self.path
                )
            });
    }

    fn sign_and_verify(&self, message: &str) {
        let signature = self
            .sign(message)
            .unwrap_or_else(|f| panic!("{:?}: pkcs11-tool --sign failed:\n{f}", self.path));
        self.verify(message, &signature);
    }
}

fn modem_stat(stats: &serde_json::Value, name: &str) -> u64 {
    stats["modem"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no modem.{name} in {stats}"))
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn pkcs11_tool_signs_and_openssl_verifies_over_each_path() {
    for path in PATHS {
        let rig = Rig::start("sign", path, &[], "");
        let signature = rig
            .sign("over qmi")
            .unwrap_or_else(|f| panic!("{path:?}:\n{f}"));
        // OpenSSL checks it against the card's certificate (DER-encoded ECDSA signature).
        let (r, s) = signature.split_at(32);
        let der = Signature::from_scalars(
            <[u8; 32]>::try_from(r).expect("r"),
            <[u8; 32]>::try_from(s).expect("s"),
        )
        .expect("a signature")
        .to_der();
        std::fs::write(rig.file("over qmi.der"), der.as_bytes()).expect("write");
        let pubkey = run(Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(rig.file("client.pem")))
        .expect_success();
        std::fs::write(rig.file("client.pub"), pubkey.stdout).expect("write");
        let verified = run(Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(rig.file("client.pub"))
            .arg("-signature")
            .arg(rig.file("over qmi.der"))
            .arg(rig.file("over qmi")));
        assert!(
            verified.success() && verified.stdout.contains("Verified OK"),
            "{path:?}: {verified}"
        );
        let stats = rig.stats();
        assert_eq!(
            modem_stat(&stats, "qmi_cla_rewritten"),
            0,
            "{path:?}: {stats}"
        );
        assert!(modem_stat(&stats, "qmi_send_apdu") > 0);
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn mutual_tls_through_pkcs11_provider_over_each_path() {
    for path in PATHS {
        let rig = Rig::start("tls", path, &[], "");
        let server = TlsServer::start_with_card_files(&rig.modem.dir, &[]);
        let mut cmd = rig.openssl_with_provider();
        cmd.args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{}", server.port))
            .args(["-servername", "localhost", "-CAfile"])
            .arg(rig.file("ca.pem"))
            .args(["-verify_return_error", "-ign_eof", "-cert"])
            .arg(rig.file("client.pem"))
            .args(["-key", KEY_URI]);
        let client = Proc::spawn(&mut cmd, Some(b"GET / HTTP/1.0\r\n\r\n")).wait(TOOL_TIMEOUT);
        let served = server.finish();
        let report = ServerReport::read(&served);
        assert!(
            report.handshake_finished && report.client_leaf_verified,
            "{path:?}: no verified mutual TLS\n{client}\n===== server:\n{served}"
        );
        let signatures = rig.stats()["by_ins"]["2B"].as_u64().unwrap_or(0);
        assert!(signatures >= 1, "{path:?}: the card signed");
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn sim_removed_and_reinserted_over_each_path() {
    for path in PATHS {
        let rig = Rig::start("removal", path, &[], "");
        rig.sign_and_verify("before");
        rig.modem.control("remove");
        let out = rig.sign("removed").expect_err("no signature without a SIM");
        let text = out.all_output();
        assert!(
            text.contains("CKR_TOKEN_NOT_PRESENT")
                || text.contains("CKR_DEVICE_REMOVED")
                || text.contains("No slot with a token"),
            "{path:?}: {out}"
        );
        rig.modem.control("insert");
        rig.sign_and_verify("after");
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_hung_modem_is_a_clear_error_within_the_timeout_then_recovers() {
    for path in PATHS {
        let rig = Rig::start("hang", path, &[], "timeout_ms = 1500");
        rig.sign_and_verify("before");
        rig.modem.control("hang");
        let start = Instant::now();
        let out = rig
            .sign("hung")
            .expect_err("no signature from a hung modem");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{path:?}: bounded by the timeout: {:?}",
            start.elapsed()
        );
        let text = out.all_output();
        assert!(
            text.contains("CKR_DEVICE_ERROR") || text.contains("No slot with a token"),
            "{path:?}: {out}"
        );
        rig.modem.control("unhang");
        rig.sign_and_verify("after");
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_t0_card_signs_with_get_response_from_the_module() {
    for path in PATHS {
        let rig = Rig::start("t0", path, &["--t0"], "");
        rig.sign_and_verify("t0 one");
        rig.sign_and_verify("t0 two");
        let get_responses = rig.stats()["by_ins"]["C0"].as_u64().unwrap_or(0);
        assert!(get_responses >= 2, "{path:?}: GET RESPONSE {get_responses}");
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn four_signers_at_once_all_verify() {
    for path in PATHS {
        let rig = Rig::start("parallel", path, &["--latency-apdu", "2ms"], "");
        for round in 0..3 {
            let procs: Vec<(String, Proc)> = (0..4)
                .map(|i| {
                    let m = format!("p{round}-{i}");
                    let p = rig.sign_command(&m);
                    (m, p)
                })
                .collect();
            for (message, proc) in procs {
                let f = proc.wait(TOOL_TIMEOUT);
                assert!(f.success(), "{path:?} {message}: {f}");
                let sig = std::fs::read(rig.file(&format!("{message}.sig"))).expect("sig");
                rig.verify(&message, &sig);
            }
        }
        let stats = rig.stats();
        assert_eq!(stats["interleaved"].as_u64(), Some(0), "{path:?}: {stats}");
        assert_eq!(
            modem_stat(&stats, "max_open_sessions"),
            1,
            "{path:?}: one channel"
        );
        assert!(
            modem_stat(&stats, "max_client_ids") <= 1,
            "{path:?}: {stats}"
        );
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_process_killed_mid_run_leaves_the_next_one_working() {
    for path in PATHS {
        let rig = Rig::start("kill", path, &["--latency-apdu", "40ms"], "");
        rig.sign_and_verify("first");
        for i in 0..3 {
            let mut cmd = rig.pkcs11_tool();
            let msg = rig.file("victim");
            std::fs::write(&msg, "victim").expect("message");
            cmd.args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", "01", "-i"])
                .arg(&msg)
                .arg("-o")
                .arg(rig.file("victim.sig"))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = cmd.spawn().expect("pkcs11-tool");
            std::thread::sleep(Duration::from_millis(150 + 60 * i));
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            rig.sign_and_verify(&format!("after kill {i}"));
        }
        let stats = rig.stats();
        assert!(
            modem_stat(&stats, "max_client_ids") <= 1,
            "{path:?}: {stats}"
        );
        assert_eq!(
            modem_stat(&stats, "max_open_sessions"),
            1,
            "{path:?}: {stats}"
        );
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn fifty_one_shot_processes_leak_no_client_id_and_no_channel() {
    for path in PATHS {
        let rig = Rig::start("oneshot", path, &[], "");
        rig.sign_and_verify("warm");
        rig.modem.control("reset-stats");
        for i in 0..50 {
            let f = run(rig
                .pkcs11_tool()
                .args(["--list-objects", "--type", "privkey"]));
            assert!(
                f.success() && f.stdout.contains("client"),
                "{path:?} #{i}: {f}"
            );
        }
        let stats = rig.stats();
        println!("{path:?}: after 50 one-shot processes: {}", stats["modem"]);
        assert!(modem_stat(&stats, "client_ids") <= 1, "{path:?}: {stats}");
        assert!(
            modem_stat(&stats, "max_client_ids") <= 1,
            "{path:?}: {stats}"
        );
        assert_eq!(modem_stat(&stats, "open_sessions"), 1, "{path:?}: {stats}");
        assert_eq!(
            modem_stat(&stats, "max_open_sessions"),
            1,
            "{path:?}: {stats}"
        );
        assert_eq!(
            modem_stat(&stats, "qmi_open_channel"),
            0,
            "{path:?}: the channel is reused"
        );
    }
}

/// `pkcs11-tool --sign` with a module configuration naming `device` (`keys` added), and how
/// long it took.
fn sign_with(dir: &Path, device: &Path, keys: &str) -> (Finished, Duration) {
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "lock_dir = \"{d}\"\ncache_dir = \"{d}/cache\"\n[pcsc]\nenabled = false\n\
             [[modem]]\ndevice = \"{}\"\nprotocol = \"qmi\"\ntimeout_ms = 1000\n{keys}\n",
            device.display(),
            d = dir.display()
        ),
    )
    .expect("config");
    let message = dir.join("message");
    std::fs::write(&message, "message").expect("message");
    let start = Instant::now();
    let f = run(Command::new("pkcs11-tool")
        .arg("--module")
        .arg(helpers::stack::release_module())
        .args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", "01", "-i"])
        .arg(&message)
        .env("IOTSAFE_PKCS11_CONFIG", &config)
        .env("IOTSAFE_PKCS11_LOG", "warn"));
    (f, start.elapsed())
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_device_that_is_not_qmi_and_a_refusing_proxy_are_clear_errors() {
    let dir = scratch("bad", Path3::Direct);
    // The AT simulator's pty.
    let at = SimModem::start(&dir, &[]);
    let (f, took) = sign_with(&dir, &at.link, "proxy = false");
    assert!(!f.success(), "{f}");
    assert!(f.stderr.contains("not a QMI control device"), "{f}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    // A proxy that accepts and hangs up.
    let name = format!("iotsafe-stack-qmi-refuse-{}", std::process::id());
    let listener =
        UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).expect("name"))
            .expect("listen");
    std::thread::spawn(move || {
        for c in listener.incoming().flatten() {
            drop(c);
        }
    });
    let (f, took) = sign_with(&dir, &at.link, &format!("proxy_socket = \"{name}\""));
    assert!(!f.success(), "{f}");
    assert!(
        f.stderr.contains("closed the connection without answering"),
        "{f}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
