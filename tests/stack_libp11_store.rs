//! libp11's `PKCS11_store_certificate` as a real consumer (issue #13 item 6): libp11-based
//! clients such as Anjay's HSM engine store an enrolled certificate under the key's ID and a
//! new label, replacing the factory certificate. `tests/c/store_certificate.c` (linked with
//! libp11 and libcrypto) does exactly that on a simulated modem with a provisioning card of the
//! test's own (a pseudo-terminal, no pcscd); then new processes check the card: pkcs11-tool
//! reads the new certificate back by label and by ID, the old one is gone, and `openssl
//! s_client` through pkcs11-provider completes mutual TLS with it.
//!
//! Needs the release build of the module and the simulator (`cargo build --release --workspace`)
//! and libp11's headers (`libp11-dev`, scripts/install-deps.sh).

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::stack::{
    Finished, ModemConsumers, Proc, ServerReport, SimModem, TOOL_TIMEOUT, TlsServer,
    client_certificate_on_status_page, compile_test_program, first_pem_certificate_der,
    openssl_plain, release_module, run, sim_binary,
};

const NEW_LABEL: &str = "enrolled";
/// The card's client key pair (and its factory certificate, labelled `client`).
const KEY_ID: &str = "01";
/// What libp11 reports when the module answers `CKR_ACTION_PROHIBITED` (0x1B): the CK_RV is
/// the reason of its OpenSSL error.
const ACTION_PROHIBITED_REASON: &str = "(reason 0x1b)";

/// A provisioning card on a simulated modem, the module's and pkcs11-provider's configuration,
/// an enrolled certificate for the card's client key and the libp11 program, all in one
/// scratch directory.
struct Rig {
    consumers: ModemConsumers,
    store_certificate: PathBuf,
}

impl std::ops::Deref for Rig {
    type Target = ModemConsumers;
    fn deref(&self) -> &ModemConsumers {
        &self.consumers
    }
}

impl Rig {
    /// `factory_objects` is the profile's rule for changing factory objects
    /// (sim/docs/profile.md): "writable" lets the device replace the factory certificate.
    fn start(test: &str, factory_objects: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!(
            "iotsafe-libp11-store-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let profile = dir.join("profile.toml");
        run(Command::new(sim_binary())
            .args(["init-profile", "--provisioning", "--seed", test])
            .arg(&profile))
        .expect_success();
        let text = std::fs::read_to_string(&profile).expect("profile.toml");
        let text = text.replacen(
            "provisioning = true\n",
            &format!("provisioning = true\nfactory_objects = \"{factory_objects}\"\n"),
            1,
        );
        assert!(text.contains("factory_objects"), "{text}");
        std::fs::write(&profile, text).expect("write profile.toml");
        let modem = SimModem::start_on_profile(&dir, &[]);
        let store_certificate =
            compile_test_program(&dir, "store_certificate", &["-lp11", "-lcrypto"]);
        Rig {
            consumers: ModemConsumers::new(modem),
            store_certificate,
        }
    }

    /// A certificate for the card's client key (the public key of its factory certificate)
    /// issued by the profile's CA with subject `CN=enrolled`: PEM path and DER bytes.
    fn enrolled_certificate(&self) -> (PathBuf, Vec<u8>) {
        let public_key = self.file("client-pub.pem");
        run(openssl_plain()
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(self.file("client.pem"))
            .arg("-out")
            .arg(&public_key))
        .expect_success();
        let pem = self.file("enrolled.pem");
        run(openssl_plain()
            .args(["x509", "-new", "-force_pubkey"])
            .arg(&public_key)
            .arg("-CA")
            .arg(self.file("ca.pem"))
            .arg("-CAkey")
            .arg(self.file("ca-key.pem"))
            .args([
                "-subj",
                "/CN=enrolled",
                "-days",
                "30",
                "-set_serial",
                "4242",
            ])
            .arg("-out")
            .arg(&pem))
        .expect_success();
        let text = std::fs::read_to_string(&pem).expect("enrolled.pem");
        let der = first_pem_certificate_der(&text).expect("a certificate in enrolled.pem");
        (pem, der)
    }

    /// `store_certificate MODULE CERT LABEL ID` (tests/c/store_certificate.c).
    fn store(&self, certificate: &Path, label: &str, id: &str) -> Finished {
        let mut c = Command::new(&self.store_certificate);
        c.arg(release_module()).arg(certificate).args([label, id]);
        self.configure(&mut c);
        run(&mut c)
    }

    /// The certificate pkcs11-tool reads with `selector` (e.g. `--label x`), DER; panics with
    /// pkcs11-tool's output when there is none.
    fn certificate(&self, selector: &[&str]) -> Vec<u8> {
        self.read_certificate(selector)
            .unwrap_or_else(|f| panic!("no certificate {selector:?}:\n{f}"))
    }

    /// The same, or pkcs11-tool's failed run.
    fn read_certificate(&self, selector: &[&str]) -> Result<Vec<u8>, Finished> {
        let out = self.file("read-back.der");
        let _ = std::fs::remove_file(&out);
        let f = run(self
            .pkcs11_tool()
            .args(["--read-object", "--type", "cert"])
            .args(selector)
            .arg("-o")
            .arg(&out));
        if f.success() {
            Ok(std::fs::read(&out).expect("the certificate pkcs11-tool wrote"))
        } else {
            Err(f)
        }
    }

    /// Every certificate object pkcs11-tool lists: (label, ID) as it prints them.
    fn listed_certificates(&self) -> Vec<(String, String)> {
        let f = run(self
            .pkcs11_tool()
            .args(["--list-objects", "--type", "cert"]))
        .expect_success();
        let mut certificates = Vec::new();
        let mut label = None;
        for line in f.stdout.lines().map(str::trim) {
            if line.starts_with("Certificate Object") {
                label = Some(String::new());
            } else if let Some(l) = line.strip_prefix("label:") {
                label = Some(l.trim().to_string());
            } else if let Some(id) = line.strip_prefix("ID:") {
                certificates.push((label.take().unwrap_or_default(), id.trim().to_string()));
            }
        }
        certificates
    }

    fn signatures_on_card(&self) -> u64 {
        self.modem.stats()["by_ins"]["2B"].as_u64().unwrap_or(0)
    }
}

/// The lines of the program's output that start with `prefix`.
fn lines_with<'a>(f: &'a Finished, prefix: &str) -> Vec<&'a str> {
    f.stdout.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn libp11_stores_an_enrolled_certificate_that_replaces_the_factory_one_for_mutual_tls() {
    let rig = Rig::start("replace", "writable");
    let (pem, der) = rig.enrolled_certificate();

    let stored = rig.store(&pem, NEW_LABEL, KEY_ID);
    println!("{stored}");
    assert!(
        stored.success(),
        "PKCS11_store_certificate failed:\n{stored}"
    );
    assert!(
        lines_with(&stored, "before cert ").contains(
            &"before cert label=client id=01 subject=/O=iotsafe-pkcs11 test/CN=iotsafe-device"
        ),
        "the factory certificate is there first:\n{stored}"
    );
    // libp11 hands back the certificate it stored (it caches objects by handle: a replacement
    // that kept the old certificate's handle came back as the old certificate).
    assert!(
        lines_with(&stored, "stored ")
            .contains(&"stored label=enrolled id=01 subject=/CN=enrolled"),
        "PKCS11_store_certificate returns the new certificate:\n{stored}"
    );
    // A fresh libp11 context in the same process sees the new certificate only.
    let after = lines_with(&stored, "after cert ");
    assert!(
        after.contains(&"after cert label=enrolled id=01 subject=/CN=enrolled"),
        "{stored}"
    );
    assert_eq!(
        after.iter().filter(|l| l.contains(" id=01 ")).count(),
        1,
        "one certificate for the key:\n{stored}"
    );

    // New processes: the certificate by its new label and by the key's ID, the old one gone.
    assert_eq!(rig.certificate(&["--label", NEW_LABEL]), der);
    assert_eq!(rig.certificate(&["--id", KEY_ID]), der);
    let old = rig.read_certificate(&["--label", "client"]);
    assert!(old.is_err(), "the factory certificate is gone: {old:?}");
    let listed = rig.listed_certificates();
    assert_eq!(
        listed
            .iter()
            .filter(|(_, id)| id == KEY_ID)
            .collect::<Vec<_>>(),
        [&(NEW_LABEL.to_string(), KEY_ID.to_string())],
        "{listed:?}"
    );

    // Mutual TLS with the stored certificate (by label) and the key (by ID).
    let server = TlsServer::start_with_card_files(&rig.modem.dir, &[]);
    let mut client = rig.openssl_with_provider();
    client
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(rig.file("ca.pem"))
        .args(["-verify_return_error", "-ign_eof"])
        .args(["-cert", &format!("pkcs11:object={NEW_LABEL};type=cert")])
        .args(["-key", &format!("pkcs11:id=%{KEY_ID};type=private")]);
    let client = Proc::spawn(&mut client, Some(b"GET / HTTP/1.0\r\n\r\n")).wait(TOOL_TIMEOUT);
    assert!(client.success(), "client failed:\n{client}");
    let server = server.finish();
    let report = ServerReport::read(&server);
    assert!(
        report.handshake_finished && report.client_leaf_verified,
        "server did not verify a client certificate:\n{client}\n===== server:\n{server}"
    );
    assert!(
        server.stderr.contains("depth=0 CN = enrolled"),
        "the server verified the enrolled certificate:\n{server}"
    );
    assert_eq!(
        client_certificate_on_status_page(&client.stdout),
        Some(der),
        "the server saw the stored certificate"
    );
    assert!(rig.signatures_on_card() >= 1, "the card must sign");
}

/// On a card whose factory certificate the device may not change (the profile's default rule:
/// only objects whose access conditions include update), libp11 gets `CKR_ACTION_PROHIBITED`
/// and the factory certificate stays.
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn libp11_cannot_replace_a_protected_factory_certificate() {
    let rig = Rig::start("protected", "update-access");
    let factory = rig.certificate(&["--label", "client"]);
    let (pem, _) = rig.enrolled_certificate();

    let refused = rig.store(&pem, NEW_LABEL, KEY_ID);
    println!("{refused}");
    assert!(!refused.success(), "{refused}");
    assert!(
        refused.stderr.contains("PKCS11_store_certificate failed")
            && refused.stderr.contains(ACTION_PROHIBITED_REASON),
        "{refused}"
    );
    assert_eq!(rig.certificate(&["--id", KEY_ID]), factory);
    assert!(rig.read_certificate(&["--label", NEW_LABEL]).is_err());
}
