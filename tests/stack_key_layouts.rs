//! The consumers on every key layout of the simulator (issue #13 item 1): field SIMs give the
//! private and the public key of one pair different IDs, and tools find a key's public half and
//! certificate by its `CKA_ID`. For each layout (`iotsafe-sim init-profile --layout`), on a
//! simulated modem of the test's own (a pseudo-terminal, no pcscd):
//!
//! - pkcs11-tool signs with the private key by its ID; the certificate read by the same ID
//!   verifies the signature (openssl);
//! - OpenSSL 3 + pkcs11-provider: `openssl req -new -key pkcs11:…` makes a CSR that
//!   `openssl req -verify` accepts and that carries the certificate's key;
//! - `openssl s_client` mutual TLS with key and certificate by `pkcs11:` URI (the certificate by
//!   the key's ID) against an `openssl s_server` that requires the client certificate;
//! - curl 7.88 with the key through the libp11 engine, against the same kind of server.
//!
//! Needs the release build of the module and the simulator (`cargo build --release --workspace`).

mod helpers;

use std::path::PathBuf;
use std::process::Command;

use helpers::stack::{
    Finished, Proc, ServerReport, SimModem, TOOL_TIMEOUT, TlsServer,
    client_certificate_on_status_page, first_pem_certificate_der, openssl_plain, release_module,
    run,
};
use iotsafe_sim::KeyLayout;

const KEY_URI: &str = "pkcs11:object=client;type=private";
const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// A simulated modem whose card has `layout`, with the module's and the provider's
/// configuration beside it (lock files and content cache of its own).
struct Rig {
    modem: SimModem,
    layout: KeyLayout,
    module_conf: PathBuf,
    provider_conf: PathBuf,
}

impl Rig {
    fn start(layout: KeyLayout, test: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!(
            "iotsafe-key-layouts-{test}-{layout}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let modem = SimModem::start_with_profile(&dir, &["--layout", layout.name()], &[]);
        let module_conf = modem.module_config(
            &format!(
                "lock_dir = \"{d}\"\ncache_dir = \"{d}/cache\"",
                d = dir.display()
            ),
            "",
        );
        let provider_conf = dir.join("provider.cnf");
        std::fs::write(
            &provider_conf,
            format!(
                "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n\
                 [provider_sect]\ndefault = default_sect\npkcs11 = pkcs11_sect\n\
                 [default_sect]\nactivate = 1\n[pkcs11_sect]\nmodule = {}\n\
                 pkcs11-module-path = {}\nactivate = 1\n",
                openssl_modules_dir().join("pkcs11.so").display(),
                release_module().display()
            ),
        )
        .expect("provider configuration");
        Rig {
            modem,
            layout,
            module_conf,
            provider_conf,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.modem.dir.join(name)
    }

    /// The private key's ID, which the pair's three objects share, as hex.
    fn pair_id(&self) -> String {
        format!("{:02x}", self.layout.client().private_id)
    }

    /// Gives `command` the module's configuration of this rig.
    fn configure(&self, command: &mut Command) {
        command
            .env("IOTSAFE_PKCS11_CONFIG", &self.module_conf)
            .env_remove("IOTSAFE_PKCS11_LOG");
    }

    fn pkcs11_tool(&self) -> Command {
        let mut c = Command::new("pkcs11-tool");
        c.arg("--module").arg(release_module());
        self.configure(&mut c);
        c
    }

    fn openssl_with_provider(&self) -> Command {
        let mut c = Command::new("openssl");
        c.env("OPENSSL_CONF", &self.provider_conf)
            .env_remove("PKCS11_PROVIDER_MODULE");
        self.configure(&mut c);
        c
    }

    /// The card's client certificate, DER (from the profile's `client.pem`).
    fn client_certificate(&self) -> Vec<u8> {
        let pem = std::fs::read_to_string(self.file("client.pem")).expect("client.pem");
        first_pem_certificate_der(&pem).expect("a certificate in client.pem")
    }

    /// The public key of the client certificate, PEM (plain OpenSSL).
    fn client_public_key_pem(&self) -> PathBuf {
        let out = self.file("client-pub.pem");
        run(openssl_plain()
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(self.file("client.pem"))
            .arg("-out")
            .arg(&out))
        .expect_success();
        out
    }

    fn signatures_on_card(&self) -> u64 {
        self.modem.stats()["by_ins"]["2B"].as_u64().unwrap_or(0)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.modem.dir);
    }
}

/// OpenSSL's provider directory (`openssl version -m`).
fn openssl_modules_dir() -> PathBuf {
    let f = run(Command::new("openssl").args(["version", "-m"])).expect_success();
    f.stdout
        .split('"')
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no MODULESDIR in:\n{f}"))
}

/// The server verified the card's certificate as client certificate, and the status page the
/// client printed shows it. A client that failed is reported at once (its server, still
/// waiting for a connection, is stopped).
fn assert_client_authenticated(client: &Finished, server: TlsServer, card_cert: &[u8]) {
    assert!(client.success(), "client failed:\n{client}");
    let server = server.finish();
    let both = format!("{client}\n===== server:\n{server}");
    let report = ServerReport::read(&server);
    assert!(
        report.handshake_finished && report.client_leaf_verified,
        "server did not verify a client certificate:\n{both}"
    );
    assert_eq!(
        client_certificate_on_status_page(&client.stdout).as_deref(),
        Some(card_cert),
        "the status page must show the card's certificate:\n{both}"
    );
}

fn pkcs11_tool_signs_and_the_certificate_of_the_same_id_verifies(layout: KeyLayout) {
    let rig = Rig::start(layout, "pkcs11-tool");
    let (message, signature, cert) = (
        rig.file("message.txt"),
        rig.file("signature.der"),
        rig.file("cert.der"),
    );
    std::fs::write(&message, b"signed by the card through pkcs11-tool\n").expect("message");
    let id = rig.pair_id();
    run(rig
        .pkcs11_tool()
        .args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", &id])
        .args(["--signature-format", "openssl", "--input-file"])
        .arg(&message)
        .arg("--output-file")
        .arg(&signature))
    .expect_success();
    run(rig
        .pkcs11_tool()
        .args([
            "--read-object",
            "--type",
            "cert",
            "--id",
            &id,
            "--output-file",
        ])
        .arg(&cert))
    .expect_success();
    assert_eq!(
        std::fs::read(&cert).expect("cert.der"),
        rig.client_certificate(),
        "{layout}: the certificate with the key's ID"
    );
    let public_key = rig.file("cert-pub.pem");
    run(openssl_plain()
        .args(["x509", "-inform", "DER", "-pubkey", "-noout", "-in"])
        .arg(&cert)
        .arg("-out")
        .arg(&public_key))
    .expect_success();
    let verified = run(openssl_plain()
        .args(["dgst", "-sha256", "-verify"])
        .arg(&public_key)
        .arg("-signature")
        .arg(&signature)
        .arg(&message));
    assert!(
        verified.success() && verified.stdout.contains("Verified OK"),
        "{layout}: {verified}"
    );
}

fn openssl_req_makes_a_csr_signed_by_the_card_key(layout: KeyLayout) {
    let rig = Rig::start(layout, "req");
    let csr = rig.file("device.csr");
    let made = run(rig
        .openssl_with_provider()
        .args([
            "req",
            "-new",
            "-key",
            KEY_URI,
            "-subj",
            "/CN=iotsafe-device-1",
        ])
        .arg("-out")
        .arg(&csr));
    assert!(made.success(), "{layout}: openssl req:\n{made}");
    assert!(
        rig.signatures_on_card() >= 1,
        "the CSR must be signed on the card"
    );
    let v = run(openssl_plain()
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr))
    .expect_success();
    assert!(v.all_output().contains("verify OK"), "{v}");
    let in_csr = run(openssl_plain()
        .args(["req", "-pubkey", "-noout", "-in"])
        .arg(&csr))
    .expect_success();
    let certified = std::fs::read_to_string(rig.client_public_key_pem()).expect("public key");
    assert_eq!(
        in_csr.stdout.trim(),
        certified.trim(),
        "{layout}: the CSR must carry the certificate's key"
    );
}

fn s_client_mutual_tls_with_key_and_certificate_by_uri(layout: KeyLayout) {
    let rig = Rig::start(layout, "s_client");
    let server = TlsServer::start_with_card_files(&rig.modem.dir, &[]);
    let cert_uri = format!("pkcs11:id=%{};type=cert", rig.pair_id());
    let mut cmd = rig.openssl_with_provider();
    cmd.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(rig.file("ca.pem"))
        .args(["-verify_return_error", "-ign_eof", "-cert", &cert_uri])
        .args(["-key", KEY_URI]);
    let client = Proc::spawn(&mut cmd, Some(HTTP_GET)).wait(TOOL_TIMEOUT);
    assert_client_authenticated(&client, server, &rig.client_certificate());
    assert!(rig.signatures_on_card() >= 1, "the card must sign");
}

fn curl_with_the_libp11_engine(layout: KeyLayout) {
    let rig = Rig::start(layout, "curl");
    let server = TlsServer::start_with_card_files(&rig.modem.dir, &[]);
    let mut cmd = Command::new("curl");
    cmd.env("PKCS11_MODULE_PATH", release_module())
        .env_remove("OPENSSL_CONF")
        .args(["--silent", "--show-error", "--fail", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", server.port))
        .arg("--cacert")
        .arg(rig.file("ca.pem"))
        .args(["--engine", "pkcs11", "--key-type", "ENG", "--key", KEY_URI])
        .arg("--cert")
        .arg(rig.file("client.pem"))
        .arg(format!("https://localhost:{}/", server.port));
    rig.configure(&mut cmd);
    let client = run(&mut cmd);
    assert_client_authenticated(&client, server, &rig.client_certificate());
    assert!(rig.signatures_on_card() >= 1, "the card must sign");
}

macro_rules! on_every_layout {
    ($($check:ident: $same_id:ident, $one_label:ident, $split_labels:ident;)*) => {$(
        #[test]
        #[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
        fn $same_id() {
            $check(KeyLayout::SameId);
        }

        #[test]
        #[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
        fn $one_label() {
            $check(KeyLayout::SplitIdsOneLabel);
        }

        #[test]
        #[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
        fn $split_labels() {
            $check(KeyLayout::SplitIdsSplitLabels);
        }
    )*};
}

on_every_layout! {
    pkcs11_tool_signs_and_the_certificate_of_the_same_id_verifies:
        pkcs11_tool_sign_same_id, pkcs11_tool_sign_split_ids_one_label,
        pkcs11_tool_sign_split_ids_split_labels;
    openssl_req_makes_a_csr_signed_by_the_card_key:
        openssl_req_same_id, openssl_req_split_ids_one_label, openssl_req_split_ids_split_labels;
    s_client_mutual_tls_with_key_and_certificate_by_uri:
        s_client_same_id, s_client_split_ids_one_label, s_client_split_ids_split_labels;
    curl_with_the_libp11_engine:
        curl_libp11_same_id, curl_libp11_split_ids_one_label, curl_libp11_split_ids_split_labels;
}
