//! The AT quirks of real modules (issue #14, docs/modems.md, AT quirks) with the real tools: on a
//! simulated modem of each quirk profile (a pseudo-terminal, no pcscd), two one-shot
//! `pkcs11-tool` processes sign and OpenSSL verifies each signature with the card's certificate;
//! where the modem manages channels, both processes use the one `AT+CCHO` session the endpoint's
//! note records. Key generation slower than the ~300 ms many modems wait is checked with
//! `pkcs11-tool --keypairgen` and a signature of the new key.

mod helpers;

use std::path::Path;

use helpers::openssl_plain;
use helpers::stack::{ModemConsumers, SimModem, run, stat};

/// Name, `iotsafe-sim modem` flags, whether the modem offers `AT+CCHO`/`AT+CGLA`.
const QUIRK_PROFILES: &[(&str, &[&str], bool)] = &[
    (
        "sierra-mc7455-hex-session-ids",
        &["--hex-session-ids", "--echo", "--urc"],
        true,
    ),
    (
        "sierra-em9191-no-cchc-text-errors",
        &["--no-cchc", "--verbose-cme", "--busy-every", "3", "--echo"],
        true,
    ),
    (
        "dell-dw5821e-csim-only",
        &["--at", "csim", "--t0", "--echo", "--split"],
        false,
    ),
    (
        "quectel-eg25-csim-basic-only",
        &["--csim-basic-only", "--echo", "--urc"],
        true,
    ),
    (
        "mediatek-sim-sleeps",
        &["--sim-sleeps", "--manufacturer", "MediaTek Inc.", "--echo"],
        true,
    ),
    (
        "slow-keygen",
        &["--slow-keygen-ms", "800", "--urc", "--split", "--echo"],
        true,
    ),
];

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("iotsafe-quirks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// `pkcs11-tool --sign` with the key of `id` over `message` (one process), DER signature.
fn sign(rig: &ModemConsumers, id: &str, message: &Path, signature: &Path) {
    run(rig
        .pkcs11_tool()
        .args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", id])
        .args(["--signature-format", "openssl", "--input-file"])
        .arg(message)
        .arg("--output-file")
        .arg(signature))
    .expect_success();
}

/// Whether OpenSSL verifies `signature` of `message` with the public key in `public_key`.
fn openssl_verifies(public_key: &Path, key_form: &str, message: &Path, signature: &Path) -> bool {
    let verified = run(openssl_plain()
        .args(["dgst", "-sha256", "-keyform", key_form, "-verify"])
        .arg(public_key)
        .arg("-signature")
        .arg(signature)
        .arg(message));
    verified.success() && verified.stdout.contains("Verified OK")
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn two_pkcs11_tool_processes_sign_and_openssl_verifies_on_every_quirk_profile() {
    for (name, flags, cgla) in QUIRK_PROFILES {
        let dir = scratch(name);
        let rig = ModemConsumers::new(SimModem::start(&dir, flags));
        let public_key = rig.file("client-pub.pem");
        run(openssl_plain()
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(rig.file("client.pem"))
            .arg("-out")
            .arg(&public_key))
        .expect_success();
        for process in 0..2 {
            let (message, signature) = (
                rig.file(&format!("message-{process}.txt")),
                rig.file(&format!("signature-{process}.der")),
            );
            std::fs::write(&message, format!("{name}, process {process}\n")).expect("message");
            sign(&rig, "01", &message, &signature);
            assert!(
                openssl_verifies(&public_key, "PEM", &message, &signature),
                "{name}: process {process}'s signature"
            );
        }
        let stats = rig.modem.control("stats");
        println!("{name}: {stats}");
        assert_eq!(stat(&stats, "interleaved"), 0, "{name}");
        if *cgla {
            assert_eq!(
                stat(&stats, "modem/ccho"),
                1,
                "{name}: the second process reused the first one's session: {stats}"
            );
            assert_eq!(stat(&stats, "modem/max_open_sessions"), 1, "{name}");
        } else {
            assert_eq!(stat(&stats, "modem/cgla"), 0, "{name}");
            assert_eq!(stat(&stats, "open_channel_count"), 1, "{name}: {stats}");
        }
    }
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn pkcs11_tool_generates_a_key_pair_slower_than_300_ms_and_its_signature_verifies() {
    let dir = scratch("keygen");
    let rig = ModemConsumers::new(SimModem::start_with_profile(
        &dir,
        &["--provisioning"],
        &["--slow-keygen-ms", "1500", "--urc", "--split", "--echo"],
    ));
    let generated = run(rig.pkcs11_tool().args([
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--id",
        "30",
        "--label",
        "slow",
    ]));
    assert!(
        generated.success() && generated.all_output().contains("Key pair generated"),
        "{generated}"
    );
    let public_key = rig.file("new-pub.der");
    run(rig
        .pkcs11_tool()
        .args([
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            "30",
            "--output-file",
        ])
        .arg(&public_key))
    .expect_success();
    let (message, signature) = (rig.file("message.txt"), rig.file("signature.der"));
    std::fs::write(&message, b"signed by a key made on the card\n").expect("message");
    sign(&rig, "30", &message, &signature);
    assert!(openssl_verifies(&public_key, "DER", &message, &signature));
    let stats = rig.modem.control("stats");
    assert!(stat(&stats, "modem/urc") > 0, "{stats}");
}
