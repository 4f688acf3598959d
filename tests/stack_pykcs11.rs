//! PyKCS11 (from PyPI) as a consumer, as Python users script a token: over a simulated modem on
//! a pseudo-terminal (no pcscd), `tests/pykcs11/consumer.py` finds the key by label and signs,
//! and the signature is verified with OpenSSL against the card's certificate as PyKCS11 read it;
//! and it keeps a data object in its session (create with CKA_TOKEN false, find, read, destroy).
//!
//! PyKCS11 is installed into a venv under `target/pykcs11-venv` on first use (a binary wheel;
//! python3-venv from scripts/install-deps.sh).

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::openssl_plain;
use helpers::stack::{
    Finished, Proc, SimModem, TOOL_TIMEOUT, first_pem_certificate_der, pykcs11_python,
    release_module, run,
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotsafe-pykcs11-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Runs consumer.py against a modem of its own; the modem lives in `dir`.
fn consumer(dir: &Path, args: &[&str]) -> (SimModem, Finished) {
    let python = pykcs11_python();
    let modem = SimModem::start(dir, &[]);
    let config = modem.module_config("cache = false", "");
    let f = Proc::spawn(
        Command::new(python)
            .arg(repo().join("tests/pykcs11/consumer.py"))
            .arg(release_module())
            .args(args)
            .env("IOTSAFE_PKCS11_CONFIG", &config),
        None,
    )
    .wait(TOOL_TIMEOUT);
    (modem, f)
}

fn value<'a>(f: &'a Finished, key: &str) -> &'a str {
    f.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no line {key:?}:\n{f}"))
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn pykcs11_finds_the_key_by_label_and_signs_and_openssl_verifies_it() {
    let dir = scratch("sign");
    let message = "signed by PyKCS11 on the SIM";
    let (modem, f) = consumer(&dir, &["sign", message]);
    assert!(f.success(), "{f}");
    assert_eq!(value(&f, "private keys labelled client"), "1", "{f}");
    assert_eq!(value(&f, "certificates labelled client"), "1", "{f}");

    // The certificate PyKCS11 read is the card's.
    let cert = hex::decode(value(&f, "certificate")).expect("certificate hex");
    let pem = std::fs::read_to_string(modem.dir.join("client.pem")).expect("client.pem");
    assert_eq!(
        Some(cert.clone()),
        first_pem_certificate_der(&pem),
        "the token's certificate labelled client is the card profile's client.pem"
    );

    // OpenSSL verifies the raw r||s signature (as DER) with that certificate's key.
    let raw = hex::decode(value(&f, "signature")).expect("signature hex");
    let signature = p256::ecdsa::Signature::from_slice(&raw).expect("64-byte r||s");
    std::fs::write(dir.join("signature.der"), signature.to_der().as_bytes()).unwrap();
    std::fs::write(dir.join("message.txt"), message).unwrap();
    std::fs::write(dir.join("cert.der"), &cert).unwrap();
    let public = run(openssl_plain()
        .args(["x509", "-inform", "DER", "-pubkey", "-noout", "-in"])
        .arg(dir.join("cert.der")))
    .expect_success();
    std::fs::write(dir.join("public.pem"), &public.stdout).unwrap();
    let verify = run(openssl_plain()
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("public.pem"))
        .arg("-signature")
        .arg(dir.join("signature.der"))
        .arg(dir.join("message.txt")));
    assert!(
        verify.success() && verify.stdout.contains("Verified OK"),
        "{verify}"
    );
    // A wrong message does not verify: the check can fail.
    std::fs::write(dir.join("message.txt"), "another message").unwrap();
    let wrong = run(openssl_plain()
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("public.pem"))
        .arg("-signature")
        .arg(dir.join("signature.der"))
        .arg(dir.join("message.txt")));
    assert!(!wrong.success(), "{wrong}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Session data objects (issue #13 item 5): kept in memory with every attribute the template
/// gave (CKA_APPLICATION too, which a token data object on the card cannot keep).
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn pykcs11_keeps_a_data_object_in_its_session() {
    let dir = scratch("session-data");
    let (_modem, f) = consumer(&dir, &["session-data"]);
    assert!(f.success(), "{f}");
    assert_eq!(value(&f, "create"), "CKR_OK", "{f}");
    assert_eq!(value(&f, "found by label"), "1", "{f}");
    assert_eq!(
        value(&f, "read value"),
        hex::encode("kept for this session only"),
        "{f}"
    );
    assert_eq!(value(&f, "read token"), "False", "{f}");
    assert_eq!(value(&f, "read application"), "tests/pykcs11", "{f}");
    assert_eq!(value(&f, "destroy"), "CKR_OK", "{f}");
    assert_eq!(value(&f, "found after destroy"), "0", "{f}");
    let _ = std::fs::remove_dir_all(&dir);
}
