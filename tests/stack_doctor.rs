//! `iotsafe-pkcs11 doctor` against the simulated modem (AT, MBIM, QMI; no pcscd), healthy and
//! with each failure staged: what a field engineer meets when a gateway shows "no token". Each
//! row asserts the verdict of the step that explains the failure, that it names the fix, and
//! the exit status; the JSON form is what fleet tooling reads. (A user without the modem's
//! group, and pcscd over the real daemon, are checked by `scripts/test-packages.sh` with the
//! installed package.)

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::stack::{SimModem, run};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotsafe-doctor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// The doctor's findings (`--json`) and its exit status.
struct Diagnosis {
    json: Value,
    status: i32,
    text: String,
}

impl Diagnosis {
    fn findings(&self, check: &str) -> Vec<&Value> {
        self.json["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .filter(|f| f["check"] == check)
            .collect()
    }

    /// The one finding of `check` (the first, when a card has several keys).
    fn finding(&self, check: &str) -> &Value {
        self.findings(check)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no finding {check} in {}", self.text))
    }

    fn verdict(&self, check: &str) -> &str {
        self.finding(check)["verdict"].as_str().expect("verdict")
    }

    fn assert_verdict(&self, check: &str, verdict: &str, detail_has: &str, fix_has: &str) {
        let f = self.finding(check);
        assert_eq!(self.verdict(check), verdict, "{check}: {}", self.text);
        let detail = f["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(detail_has),
            "{check} detail {detail:?} lacks {detail_has:?}"
        );
        let fix = f["fix"].as_str().unwrap_or_default();
        assert!(
            fix.contains(fix_has),
            "{check} fix {fix:?} lacks {fix_has:?}"
        );
    }
}

fn doctor(config: &Path, env: &[(&str, &str)]) -> Diagnosis {
    let mut command = Command::new(env!("CARGO_BIN_EXE_iotsafe-pkcs11"));
    command
        .args(["doctor", "--config"])
        .arg(config)
        .envs(env.iter().copied());
    let text = run(Command::new(env!("CARGO_BIN_EXE_iotsafe-pkcs11"))
        .args(["doctor", "--config"])
        .arg(config)
        .envs(env.iter().copied()))
    .stdout;
    let json_run = run(command.arg("--json"));
    let json: Value = serde_json::from_str(&json_run.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}",
            json_run.all_output()
        )
    });
    let status = json_run.status.code().expect("exit status");
    let d = Diagnosis { json, status, text };
    println!("{}", d.text);
    let failed = d.json["verdict"] == "fail";
    assert_eq!(
        d.status,
        i32::from(failed),
        "exit status 1 exactly when a step failed"
    );
    d
}

/// Every step passes on a healthy simulated modem, and the signature step says it verified.
fn assert_healthy(d: &Diagnosis) {
    for check in [
        "configuration",
        "connection",
        "applet",
        "objects",
        "key-pairing",
        "signature",
        "tokens",
    ] {
        assert_eq!(d.verdict(check), "ok", "{check}: {}", d.text);
    }
    assert_eq!(d.status, 0);
    assert!(
        d.finding("logical-channels")["detail"]
            .as_str()
            .is_some_and(|s| s.contains("free logical channel"))
    );
    let signed = d.finding("signature")["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        signed.contains("verified on this host with its certificate's public key"),
        "{signed}"
    );
    assert!(
        d.finding("key-pairing")["detail"]
            .as_str()
            .is_some_and(|s| s.contains("CN=iotsafe-device"))
    );
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn a_healthy_modem_passes_every_step_over_at_mbim_and_qmi() {
    for (protocol, extra) in [
        ("at", ""),
        ("mbim", "proxy = false"),
        ("qmi", "proxy = false"),
    ] {
        let dir = scratch(&format!("healthy-{protocol}"));
        let modem = SimModem::start(&dir, &["--protocol", protocol]);
        let config = modem.module_config("", &format!("protocol = \"{protocol}\"\n{extra}"));
        let d = doctor(&config, &[]);
        assert_healthy(&d);
        assert_eq!(d.verdict("modem-port"), "ok", "{}", d.text);
        if protocol == "at" {
            for check in ["modem-holders", "modem-at", "modem-sim-access"] {
                assert_eq!(d.verdict(check), "ok", "{check}: {}", d.text);
            }
            assert!(
                d.finding("modem-holders")["detail"]
                    .as_str()
                    .is_some_and(|s| s.contains("a simulated modem"))
            );
        }
        assert_eq!(d.json["verdict"], "ok", "{protocol}: {}", d.text);
    }
}

#[test]
fn a_configuration_that_does_not_parse_fails_the_first_step() {
    let dir = scratch("config-syntax");
    let config = dir.join("config.toml");
    std::fs::write(&config, "[pcsc]\nenabled = maybe\n").expect("write");
    let d = doctor(&config, &[]);
    d.assert_verdict("configuration", "fail", "line 2", "correct the file");
    assert_eq!(d.verdict("pcscd"), "skip");
    let missing = doctor(&dir.join("absent.toml"), &[]);
    missing.assert_verdict("configuration", "fail", "cannot be read", "create it");
}

#[cfg(feature = "pcsc")]
#[test]
fn pcscd_that_does_not_run_is_named_with_its_fix() {
    let dir = scratch("no-pcscd");
    let config = dir.join("config.toml");
    std::fs::write(&config, "[pcsc]\nenabled = true\n").expect("write");
    let socket = dir.join("no-pcscd.comm");
    let diagnose = || {
        doctor(
            &config,
            &[("PCSCLITE_CSOCK_NAME", socket.to_str().expect("path"))],
        )
    };
    let fix = "systemctl enable --now pcscd.socket";
    diagnose().assert_verdict("pcscd", "fail", "pcscd does not run", fix);
    // A socket that exists but where nothing accepts: not running either (a stale socket).
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    diagnose().assert_verdict(
        "pcscd",
        "fail",
        "does not answer",
        "systemctl restart pcscd",
    );
    // A daemon that accepts the connection and hangs up at once: what a pcscd built with
    // polkit does to a client polkit refuses ("Rejected unauthorized PC/SC client").
    let _ = std::fs::remove_file(&socket);
    let refusing = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    std::thread::spawn(move || {
        for client in refusing.incoming() {
            drop(client);
        }
    });
    diagnose().assert_verdict("pcscd", "fail", "refused this user", "usermod -aG iotsafe");
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn a_missing_modem_port_stops_that_modems_checks() {
    let dir = scratch("no-port");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[pcsc]\nenabled = false\n[[modem]]\ndevice = \"/dev/serial/by-id/usb-Absent-if03\"\n",
    )
    .expect("write");
    let d = doctor(&config, &[]);
    d.assert_verdict("modem-port", "fail", "no such device", "/dev/serial/by-id/");
    assert!(
        d.findings("connection").is_empty(),
        "no card step after a missing port"
    );
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn modemmanager_holding_the_at_port_is_named_with_the_udev_rule() {
    let dir = scratch("modemmanager");
    let modem = SimModem::start(&dir, &[]);
    let config = modem.module_config("", "");
    // A process called ModemManager with the port open, as the real one has it.
    let impostor = dir.join("ModemManager");
    std::fs::copy("/bin/sleep", &impostor).expect("copy sleep");
    let port = std::fs::File::open(dir.join("modem")).expect("open the port");
    let mut holder = Command::new(&impostor)
        .arg("60")
        .stdin(port)
        .spawn()
        .expect("start the stand-in");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let d = doctor(&config, &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    d.assert_verdict(
        "modem-holders",
        "fail",
        "ModemManager (pid",
        "ID_MM_PORT_IGNORE",
    );
    // Holding the port open is not the same as using it: the card steps still run.
    assert_eq!(d.verdict("signature"), "ok", "{}", d.text);
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn a_modem_that_does_not_answer_at_fails_without_hanging() {
    let dir = scratch("hung");
    let modem = SimModem::start(&dir, &["--hang"]);
    let config = modem.module_config("", "timeout_ms = 1000");
    let d = doctor(&config, &[]);
    d.assert_verdict("modem-at", "fail", "no answer to AT", "mmcli -m 0");
    assert_eq!(d.verdict("modem-sim-access"), "skip");
    assert!(d.findings("connection").is_empty());
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn sim_access_commands_against_the_configured_at_mode() {
    // A modem with AT+CSIM only: a warning, and everything still works.
    let dir = scratch("csim-only");
    let modem = SimModem::start(&dir, &["--at", "csim"]);
    let d = doctor(&modem.module_config("", ""), &[]);
    d.assert_verdict(
        "modem-sim-access",
        "warn",
        "AT+CSIM only",
        "logical_channel = false",
    );
    assert!(
        d.finding("logical-channels")["detail"]
            .as_str()
            .is_some_and(|s| s.contains("MANAGE CHANNEL"))
    );
    assert_eq!(d.verdict("signature"), "ok", "{}", d.text);
    assert_eq!(d.status, 0);
    // Told to use AT+CGLA, which this modem lacks: the reason for the missing token.
    let d = doctor(&modem.module_config("", "at_mode = \"cgla\""), &[]);
    d.assert_verdict(
        "modem-sim-access",
        "fail",
        "lacks AT+CCHO/AT+CGLA",
        "at_mode = \"auto\"",
    );
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn no_free_logical_channel_and_a_wrong_aid_fail_the_applet_step() {
    let dir = scratch("channels");
    let modem = SimModem::start(&dir, &["--logical-channels", "1"]);
    // Another program takes the SIM's only logical channel and keeps it.
    take_a_channel(&dir.join("modem"));
    let d = doctor(&modem.module_config("", ""), &[]);
    d.assert_verdict(
        "logical-channels",
        "warn",
        "no free logical channel",
        "logical_channel = false",
    );
    d.assert_verdict(
        "applet",
        "fail",
        "no logical channel left",
        "logical_channel = false",
    );

    let dir = scratch("aid");
    let modem = SimModem::start(&dir, &[]);
    let d = doctor(
        &modem.module_config("[applet]\naids = [\"A000000559001099\"]", ""),
        &[],
    );
    d.assert_verdict(
        "applet",
        "fail",
        "AIDs tried: A000000559001099",
        "[applet] aids",
    );
    assert_eq!(d.verdict("signature"), "skip");
}

/// `AT+CCHO` on the port, as another program would: the session stays open in the modem.
fn take_a_channel(port: &Path) {
    use std::io::{Read, Write};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(port)
        .expect("open the port");
    tty.write_all(b"AT+CCHO=\"A0000005590010\"\r")
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&answer).contains("OK") {
        let n = tty.read(&mut buf).expect("read");
        assert!(n > 0, "the modem closed");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).contains("+CCHO:"));
}

/// Writes the simulator's default profile into `dir/profile.toml` and returns its text.
fn default_profile(dir: &Path) -> String {
    run(Command::new(helpers::stack::sim_binary())
        .arg("init-profile")
        .arg(dir.join("profile.toml")))
    .expect_success();
    std::fs::read_to_string(dir.join("profile.toml")).expect("profile")
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn a_card_without_keys_and_a_key_whose_certificate_is_not_its_own() {
    // The client key's private half replaced by the ECDH key's: the card signs, the signature
    // does not verify with the certificate stored under the key's ID.
    let dir = scratch("wrong-key");
    let profile = default_profile(&dir);
    let private = |id: &str| -> String {
        let block = profile
            .split("[[private_key]]")
            .find(|b| b.contains(&format!("id = \"{id}\"")))
            .expect("private key block");
        let line = block
            .lines()
            .find(|l| l.starts_with("private = "))
            .expect("private");
        line.to_string()
    };
    let swapped = profile.replacen(&private("01"), &private("04"), 1);
    std::fs::write(dir.join("profile.toml"), swapped).expect("write");
    let modem = SimModem::start_on_profile(&dir, &[]);
    let d = doctor(&modem.module_config("", ""), &[]);
    d.assert_verdict(
        "signature",
        "fail",
        "does not verify",
        "re-provision the certificate",
    );

    // No private key at all.
    let dir = scratch("no-keys");
    let profile = default_profile(&dir);
    let without: String = profile
        .split("\n\n")
        .filter(|block| !block.trim_start().starts_with("[[private_key]]"))
        .collect::<Vec<_>>()
        .join("\n\n");
    std::fs::write(dir.join("profile.toml"), without).expect("write");
    let modem = SimModem::start_on_profile(&dir, &[]);
    let d = doctor(&modem.module_config("", ""), &[]);
    d.assert_verdict("objects", "fail", "0 private key(s)", "--keypairgen");
    assert_eq!(d.verdict("signature"), "skip");
}

#[test]
#[ignore = "needs the release build of the simulator (cargo build --release --workspace)"]
fn a_garbled_signature_fails_the_signature_step() {
    let dir = scratch("garbled");
    let modem = SimModem::start(&dir, &[]);
    let armed = modem.control("fault garbage ins=2B count=0");
    assert!(armed.contains("\"ok\":true"), "{armed}");
    let d = doctor(&modem.module_config("", ""), &[]);
    d.assert_verdict(
        "signature",
        "fail",
        "the card did not sign",
        "IOTSAFE_PKCS11_LOG=debug",
    );
}

#[cfg(feature = "pcsc")]
#[test]
#[ignore = "needs the pcscd+vpcd stack (bash scripts/stack.sh start)"]
fn pcscd_and_the_card_in_its_reader_pass_every_step() {
    let stack = helpers::stack::Stack::get();
    let _lock = stack.lock();
    let reader = std::env::var("IOTSAFE_READER").unwrap_or_else(|_| "IoT SAFE sim".into());
    let dir = stack.scratch("doctor");
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("[pcsc]\nreaders = [\"{reader}\"]\n")).expect("write");
    let d = doctor(&config, &[]);
    d.assert_verdict("pcscd", "ok", "pcscd serves this user", "");
    assert!(
        d.finding("pcscd")["detail"]
            .as_str()
            .is_some_and(|s| s.contains(&reader))
    );
    assert!(
        d.finding("applet")["subject"]
            .as_str()
            .is_some_and(|s| s.contains(&reader))
    );
    assert_healthy(&d);
    assert!(
        d.finding("logical-channels")["detail"]
            .as_str()
            .is_some_and(|s| s.contains("MANAGE CHANNEL"))
    );
}
