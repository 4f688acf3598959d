//! The consumers of the compatibility table (docs/usage.md) on every key layout of the
//! simulator (issue #13 item 1): field SIMs give the private and the public key of one pair
//! different IDs, and tools find a key's public half and certificate by its `CKA_ID`. For each
//! layout (`iotsafe-sim init-profile --layout`), on a simulated modem of the test's own (a
//! pseudo-terminal, no pcscd), one small function per consumer:
//!
//! - pkcs11-tool signs with the private key by its ID; the certificate read by the same ID
//!   verifies the signature (openssl);
//! - OpenSSL 3 + pkcs11-provider: `pkeyutl -sign` (verified with the certificate's key),
//!   `req -new` (a CSR that carries the certificate's key), `storeutl` (the private key, the
//!   public key and the certificate under the private key's ID), `s_client` mutual TLS with key
//!   and certificate by `pkcs11:` URI (the certificate by the key's ID);
//! - curl 7.88 with the libp11 engine, and curl 8 (backports) with pkcs11-provider, mutual TLS;
//! - GnuTLS: `p11tool --list-all` shows the three objects under one `id=`, `gnutls-cli` mutual
//!   TLS with the key and the certificate (by the key's ID) as `pkcs11:` URIs;
//! - NSS: `modutil -add` into a scratch database; `certutil -L` marks the certificate as a user
//!   certificate (NSS found a private key with its CKA_ID), `certutil -K` lists the key;
//! - PyKCS11 (`tests/pykcs11_layouts.py`), C through dlopen (`tests/c/pair_by_id.c`) and the
//!   Rust `cryptoki` crate: the private key by label, the certificate by the key's CKA_ID (what
//!   AWS IoT Greengrass requires), a signature that verifies with that certificate's key.
//!
//! Left out: the DTLS rows (`tests/stack_dtls.rs`: the same key loading as `s_client`) and the
//! p11-kit proxy row (needs `scripts/install.sh` into /usr and pcscd).
//!
//! Needs the release build of the module and the simulator (`cargo build --release --workspace`);
//! the PyKCS11 test makes a venv under `target/pykcs11-venv` (pip), the curl 8 test unpacks
//! curl from backports (`scripts/fetch-curl-backports.sh`).

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use helpers::stack::{
    Finished, ModemConsumers, Proc, ServerReport, SimModem, TOOL_TIMEOUT, TlsServer, accept_port,
    certificate_key, client_certificate_on_status_page, compile_test_program,
    first_pem_certificate_der, load_module, openssl_plain, pykcs11_python, release_module, run,
    s_server_for_one_client,
};
use iotsafe_sim::KeyLayout;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};

const KEY_URI: &str = "pkcs11:object=client;type=private";
const KEY_LABEL: &str = "client";
const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
/// Set in the child process of the `cryptoki` check (the card's directory): the module reads
/// its configuration from the environment at `C_Initialize`, so the check runs in a process
/// started with the rig's configuration.
const CRYPTOKI_CHILD: &str = "IOTSAFE_KEY_LAYOUTS_CRYPTOKI_CHILD";

/// A simulated modem whose card has `layout`, with the module's and the provider's
/// configuration beside it (lock files and content cache of its own).
struct Rig {
    consumers: ModemConsumers,
    layout: KeyLayout,
}

impl std::ops::Deref for Rig {
    type Target = ModemConsumers;
    fn deref(&self) -> &ModemConsumers {
        &self.consumers
    }
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
        Rig {
            consumers: ModemConsumers::new(modem),
            layout,
        }
    }

    /// The private key's ID, which the pair's three objects share, as hex.
    fn pair_id(&self) -> String {
        format!("{:02x}", self.layout.client().private_id)
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

    /// The certificate by the private key's ID: what pairs them for a consumer that is given
    /// one key URI and derives the certificate's (the certificate's label differs from the
    /// key's in the split layouts, so a label would not tell).
    fn certificate_uri(&self) -> String {
        format!("pkcs11:id=%{};type=cert", self.pair_id())
    }

    /// Whether plain OpenSSL verifies the raw `r||s` ECDSA-SHA256 `signature` of `message` with
    /// the key of the certificate `certificate_der`.
    fn openssl_verifies(&self, certificate_der: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let signature = p256::ecdsa::Signature::from_slice(signature).expect("64-byte r||s");
        let (cert, public, sig, msg) = (
            self.file("verify-cert.der"),
            self.file("verify-pub.pem"),
            self.file("verify-sig.der"),
            self.file("verify-msg.bin"),
        );
        std::fs::write(&cert, certificate_der).expect("certificate");
        std::fs::write(&sig, signature.to_der().as_bytes()).expect("signature");
        std::fs::write(&msg, message).expect("message");
        run(openssl_plain()
            .args(["x509", "-inform", "DER", "-pubkey", "-noout", "-in"])
            .arg(&cert)
            .arg("-out")
            .arg(&public))
        .expect_success();
        let verified = run(openssl_plain()
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig)
            .arg(&msg));
        verified.success() && verified.stdout.contains("Verified OK")
    }
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

/// DTLS 1.2 as an LwM2M client authenticates (the `tests/stack_dtls.rs` row), key and
/// certificate by `pkcs11:` URI. The server only prints what the client sends after a handshake
/// in which it verified the client's certificate (`-Verify 1 -verify_return_error`), and
/// pkcs11-provider only signs with a key whose public half it can match to that certificate.
fn dtls_client_authentication_with_key_and_certificate_by_uri(layout: KeyLayout) {
    const CIPHER: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";
    const MESSAGE: &str = "LwM2M register over DTLS on a field-SIM layout";
    let rig = Rig::start(layout, "dtls");
    let mut server = s_server_for_one_client(&rig.modem.dir, &["-dtls1_2"]);
    server.args(["-cipher", CIPHER]);
    let (mut server, server_stdin) = Proc::spawn_with_open_stdin(&mut server);
    let port = accept_port(&mut server);
    let cert_uri = format!("pkcs11:id=%{};type=cert", rig.pair_id());
    let mut cmd = rig.openssl_with_provider();
    cmd.args(["s_client", "-dtls1_2", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cipher", CIPHER, "-CAfile"])
        .arg(rig.file("ca.pem"))
        .args(["-verify_return_error", "-cert", &cert_uri, "-key", KEY_URI]);
    let client = Proc::spawn(&mut cmd, Some(MESSAGE.as_bytes())).wait(TOOL_TIMEOUT);
    // The server exits after its one connection; its stdin is closed only then (EOF would make
    // it quit before reading the client's data).
    let server = server.wait(TOOL_TIMEOUT);
    drop(server_stdin);
    assert!(client.success(), "DTLS client failed:\n{client}\n{server}");
    assert!(
        server.stdout.contains(MESSAGE),
        "the server received the client's data after verifying its certificate:\n{server}"
    );
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

fn openssl_pkeyutl_signs_a_digest(layout: KeyLayout) {
    let rig = Rig::start(layout, "pkeyutl");
    let (digest, signature) = (rig.file("digest.bin"), rig.file("digest.sig"));
    std::fs::write(&digest, Sha256::digest(b"signed through pkeyutl")).expect("digest");
    // pkcs11-provider reads the key's public half (CKA_EC_POINT) when it loads a private key:
    // on an unpaired private key it fails ("Failed to get public key attributes").
    let signed = run(rig
        .openssl_with_provider()
        .args(["pkeyutl", "-sign", "-inkey", KEY_URI, "-in"])
        .arg(&digest)
        .arg("-out")
        .arg(&signature));
    assert!(signed.success(), "{layout}: pkeyutl -sign:\n{signed}");
    let public = rig.client_public_key_pem();
    let verify = |input: &Path| {
        run(openssl_plain()
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(&public)
            .arg("-in")
            .arg(input)
            .arg("-sigfile")
            .arg(&signature))
    };
    let good = verify(&digest);
    assert!(
        good.success() && good.stdout.contains("Signature Verified Successfully"),
        "{layout}: {good}"
    );
    let other = rig.file("other.bin");
    std::fs::write(&other, Sha256::digest(b"another message")).expect("digest");
    assert!(!verify(&other).success(), "another digest must not verify");
}

fn openssl_storeutl_finds_the_three_objects_under_the_key_id(layout: KeyLayout) {
    let rig = Rig::start(layout, "storeutl");
    let by_id = format!("pkcs11:id=%{}", rig.pair_id());
    let f = run(rig
        .openssl_with_provider()
        .args(["storeutl", "-text"])
        .arg(&by_id))
    .expect_success();
    let kinds: Vec<&str> = f
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": ").filter(|(n, _)| n.parse::<u32>().is_ok()))
        .map(|(_, kind)| kind)
        .collect();
    assert_eq!(
        kinds,
        ["Pkey", "Public key", "Certificate"],
        "{layout}: {by_id} must find the pair and its certificate:\n{f}"
    );
    let private_uri = format!("id=%{};object={KEY_LABEL};type=private", rig.pair_id());
    assert!(
        f.stdout.contains(&private_uri),
        "{layout}: the private key's URI {private_uri}:\n{f}"
    );
    let certified = std::fs::read_to_string(rig.client_public_key_pem()).expect("public key");
    assert!(
        f.stdout.contains(certified.trim()),
        "{layout}: the public key under the key's ID is the certificate's:\n{f}"
    );
    assert!(
        f.stdout
            .contains("Subject: O=iotsafe-pkcs11 test, CN=iotsafe-device"),
        "{layout}: the client certificate:\n{f}"
    );
}

/// `target/curl-backports/root/usr/bin/curl` and its library dir
/// (`scripts/fetch-curl-backports.sh`, which reuses what it unpacked before).
fn curl_backports() -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-curl-backports.sh");
    let f = Proc::spawn(Command::new("bash").arg(script), None)
        .wait(TOOL_TIMEOUT * 3)
        .expect_success();
    let last = f.stdout.lines().last().unwrap_or_default().to_string();
    let (bin, lib) = last
        .split_once(' ')
        .unwrap_or_else(|| panic!("unexpected output:\n{f}"));
    (PathBuf::from(bin), PathBuf::from(lib))
}

fn curl8_with_pkcs11_provider(layout: KeyLayout) {
    let rig = Rig::start(layout, "curl8");
    let (curl, lib) = curl_backports();
    let server = TlsServer::start_with_card_files(&rig.modem.dir, &[]);
    // OpenSSL checks that client.pem's key is the provider key's public half (the private
    // key's CKA_EC_POINT): an unpaired key fails before the handshake.
    let mut cmd = Command::new(&curl);
    cmd.env("LD_LIBRARY_PATH", &lib)
        .env("OPENSSL_CONF", &rig.provider_conf)
        .env("PKCS11_PROVIDER_MODULE", release_module())
        .args(["--silent", "--show-error", "--fail", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", server.port))
        .arg("--cacert")
        .arg(rig.file("ca.pem"))
        .args(["--key-type", "PROV", "--key", KEY_URI, "--cert"])
        .arg(rig.file("client.pem"))
        .arg(format!("https://localhost:{}/", server.port));
    rig.configure(&mut cmd);
    let client = run(&mut cmd);
    let version = run(Command::new(&curl)
        .env("LD_LIBRARY_PATH", &lib)
        .arg("--version"));
    assert!(version.stdout.starts_with("curl 8."), "{version}");
    assert_client_authenticated(&client, server, &rig.client_certificate());
    assert!(rig.signatures_on_card() >= 1, "the card must sign");
}

fn gnutls(rig: &Rig, tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.arg("--provider").arg(release_module());
    rig.configure(&mut c);
    c
}

fn p11tool_lists_the_three_objects_under_one_id(layout: KeyLayout) {
    let rig = Rig::start(layout, "p11tool");
    let f = run(gnutls(&rig, "p11tool").args(["--list-all", "pkcs11:"])).expect_success();
    let urls: Vec<&str> = f
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("URL: "))
        .collect();
    let private = urls
        .iter()
        .find(|u| u.ends_with(&format!(";object={KEY_LABEL};type=private")))
        .unwrap_or_else(|| panic!("{layout}: no private key labelled {KEY_LABEL}:\n{f}"));
    let id = format!("id=%{};", rig.pair_id());
    assert!(private.contains(&id), "{layout}: {private} must have {id}");
    for kind in ["type=public", "type=cert"] {
        let with_id: Vec<&&str> = urls
            .iter()
            .filter(|u| u.contains(&id) && u.ends_with(kind))
            .collect();
        assert_eq!(with_id.len(), 1, "{layout}: one {kind} with {id}:\n{f}");
    }
}

fn gnutls_cli_mutual_tls_with_pkcs11_uris(layout: KeyLayout) {
    let rig = Rig::start(layout, "gnutls-cli");
    let server = TlsServer::start_with_card_files(&rig.modem.dir, &[]);
    let mut cmd = gnutls(&rig, "gnutls-cli");
    cmd.args(["--x509keyfile", KEY_URI, "--x509certfile"])
        .arg(rig.certificate_uri())
        .arg("--x509cafile")
        .arg(rig.file("ca.pem"))
        .args(["--verify-hostname", "localhost", "-p"])
        .arg(server.port.to_string())
        .arg("127.0.0.1");
    let client = Proc::spawn(&mut cmd, Some(HTTP_GET)).wait(TOOL_TIMEOUT);
    assert!(
        client.all_output().contains("Handshake was completed"),
        "{layout}: {client}"
    );
    assert_client_authenticated(&client, server, &rig.client_certificate());
    assert!(rig.signatures_on_card() >= 1, "the card must sign");
}

fn nss_pairs_the_certificate_with_the_key(layout: KeyLayout) {
    let rig = Rig::start(layout, "nss");
    let db = rig.file("nssdb");
    std::fs::create_dir_all(&db).expect("NSS database directory");
    let nss = |tool: &str| {
        let mut c = Command::new(tool);
        c.arg(if tool == "modutil" { "-dbdir" } else { "-d" })
            .arg(format!("sql:{}", db.display()))
            .env("NSS_DISABLE_UNLOAD", "1");
        rig.configure(&mut c);
        c
    };
    run(nss("certutil").args(["-N", "--empty-password"])).expect_success();
    run(nss("modutil")
        .args(["-force", "-add", "iotsafe", "-libfile"])
        .arg(release_module()))
    .expect_success();
    // "IoT SAFE 696F7473:client-cert    u,u,u": `u` (a user certificate) is NSS's verdict that
    // the token has a private key with the certificate's CKA_ID; the CA certificate has none.
    let certs = run(nss("certutil").args(["-L", "-h", "all"])).expect_success();
    let suffix = format!(":{}", layout.client().certificate_label);
    let trust_of = |suffix: &str| {
        certs.stdout.lines().find_map(|l| {
            let (name, trust) = l.trim_end().rsplit_once(char::is_whitespace)?;
            name.trim().ends_with(suffix).then(|| trust.to_string())
        })
    };
    assert_eq!(
        trust_of(&suffix).as_deref(),
        Some("u,u,u"),
        "{layout}: the client certificate is a user certificate:\n{certs}"
    );
    assert_eq!(trust_of(":ca").as_deref(), Some(",,"), "{certs}");
    // "< 0> ec  06  client": the key under the pair's ID. (certutil -K prints a key's own
    // label; it prints a certificate's nickname only for a key without one.)
    let keys = run(nss("certutil").args(["-K", "-h", "all"])).expect_success();
    let listed: Vec<Vec<&str>> = keys
        .stdout
        .lines()
        .filter(|l| l.starts_with('<'))
        .map(|l| l.split_whitespace().skip(2).collect())
        .collect();
    assert!(
        listed.contains(&vec!["ec", &rig.pair_id(), KEY_LABEL]),
        "{layout}: certutil -K lists the key {} {KEY_LABEL}:\n{keys}",
        rig.pair_id()
    );
}

/// The value of the output line `key: value`.
fn line_value<'a>(f: &'a Finished, key: &str) -> &'a str {
    f.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no line {key:?}:\n{f}"))
}

/// A consumer that found the private key by label and the certificate by the key's CKA_ID
/// printed them: the key's ID is the pair's, the certificate is the card's client certificate,
/// and the card's signature verifies with it.
fn assert_paired_by_id_and_signed(rig: &Rig, f: &Finished, message: &str) {
    let layout = rig.layout;
    assert!(f.success(), "{layout}: {f}");
    assert_eq!(line_value(f, "key id"), rig.pair_id(), "{layout}: {f}");
    let certificate = hex::decode(line_value(f, "certificate")).expect("certificate hex");
    assert_eq!(
        certificate,
        rig.client_certificate(),
        "{layout}: the certificate with the key's CKA_ID is the card's client certificate"
    );
    let signature = hex::decode(line_value(f, "signature")).expect("signature hex");
    assert!(
        rig.openssl_verifies(&certificate, message.as_bytes(), &signature),
        "{layout}: the signature must verify with that certificate:\n{f}"
    );
    assert!(
        !rig.openssl_verifies(&certificate, b"another message", &signature),
        "a signature over another message must not verify"
    );
}

fn pykcs11_finds_the_certificate_by_the_key_id(layout: KeyLayout) {
    let rig = Rig::start(layout, "pykcs11");
    let message = "signed by PyKCS11 on a field-SIM layout";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pykcs11_layouts.py");
    let mut cmd = Command::new(pykcs11_python());
    cmd.arg(script)
        .arg(release_module())
        .args([KEY_LABEL, message]);
    rig.configure(&mut cmd);
    let f = Proc::spawn(&mut cmd, None).wait(TOOL_TIMEOUT);
    assert_eq!(line_value(&f, "private keys"), "1", "{f}");
    assert_eq!(line_value(&f, "certificates with the key id"), "1", "{f}");
    assert_eq!(line_value(&f, "public keys with the key id"), "1", "{f}");
    assert_paired_by_id_and_signed(&rig, &f, message);
}

fn c_finds_the_certificate_by_the_key_id(layout: KeyLayout) {
    let rig = Rig::start(layout, "c");
    let exe = compile_test_program(&rig.modem.dir, "pair_by_id", &["-ldl"]);
    let message = "signed from C on a field-SIM layout";
    let mut cmd = Command::new(&exe);
    cmd.arg(release_module()).args([KEY_LABEL, message]);
    rig.configure(&mut cmd);
    let f = run(&mut cmd);
    // pair_by_id exits 1 unless exactly one public key and one certificate have the key's ID.
    assert_paired_by_id_and_signed(&rig, &f, message);
    assert_eq!(
        line_value(&f, "key point"),
        line_value(&f, "public key point"),
        "{layout}: the private key carries its public half's point"
    );
}

fn cryptoki_finds_the_certificate_by_the_key_id(layout: KeyLayout) {
    if let Some(dir) = std::env::var_os(CRYPTOKI_CHILD) {
        return cryptoki_child(Path::new(&dir));
    }
    let rig = Rig::start(layout, "cryptoki");
    let test = std::thread::current()
        .name()
        .expect("libtest names the test's thread")
        .to_string();
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", &test, "--ignored", "--nocapture"])
        .env(CRYPTOKI_CHILD, &rig.modem.dir);
    rig.configure(&mut cmd);
    let f = Proc::spawn(&mut cmd, None).wait(TOOL_TIMEOUT);
    assert!(
        f.success() && f.all_output().contains("cryptoki: verified"),
        "{layout}: {f}"
    );
    assert_eq!(line_value(&f, "key id"), rig.pair_id(), "{layout}: {f}");
}

fn find_one(session: &Session, what: &str, template: &[Attribute]) -> ObjectHandle {
    let found = session.find_objects(template).expect("C_FindObjects");
    assert_eq!(found.len(), 1, "exactly one {what}: {found:?}");
    found[0]
}

fn attribute(session: &Session, object: ObjectHandle, ty: AttributeType) -> Vec<u8> {
    match session
        .get_attributes(object, &[ty])
        .expect("C_GetAttributeValue")[..]
    {
        [Attribute::Id(ref v) | Attribute::Value(ref v) | Attribute::EcPoint(ref v)] => v.clone(),
        ref other => panic!("{ty}: {other:?}"),
    }
}

/// In the child process: the key by label, the public key and the certificate by its CKA_ID
/// (what AWS IoT Greengrass asks of a token), a signature verified with the certificate.
fn cryptoki_child(card: &Path) {
    let p11 = load_module(&release_module());
    let slot = p11.get_slots_with_token().expect("C_GetSlotList")[0];
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    let key = find_one(
        &session,
        "private key labelled client",
        &[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(KEY_LABEL.into()),
        ],
    );
    let id = attribute(&session, key, AttributeType::Id);
    println!("key id: {}", hex::encode(&id));
    let certificate = find_one(
        &session,
        "certificate with the key's CKA_ID",
        &[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Id(id.clone()),
        ],
    );
    let public = find_one(
        &session,
        "public key with the key's CKA_ID",
        &[Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Id(id)],
    );
    let pem = std::fs::read_to_string(card.join("client.pem")).expect("client.pem");
    assert_eq!(
        Some(attribute(&session, certificate, AttributeType::Value)),
        first_pem_certificate_der(&pem),
        "the certificate with the key's CKA_ID is the card's client certificate"
    );
    assert_eq!(
        attribute(&session, key, AttributeType::EcPoint),
        attribute(&session, public, AttributeType::EcPoint),
        "the private key carries its public half's point"
    );
    let message = b"signed through cryptoki on a field-SIM layout";
    let raw = session
        .sign(&Mechanism::EcdsaSha256, key, message)
        .expect("C_Sign");
    let signature = p256::ecdsa::Signature::from_slice(&raw).expect("64-byte r||s");
    let verifying = certificate_key(&card.join("client.pem"));
    verifying
        .verify(message, &signature)
        .expect("the signature verifies with the certificate's key");
    assert!(verifying.verify(b"another message", &signature).is_err());
    println!("cryptoki: verified");
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
    dtls_client_authentication_with_key_and_certificate_by_uri:
        dtls_same_id, dtls_split_ids_one_label, dtls_split_ids_split_labels;
    curl_with_the_libp11_engine:
        curl_libp11_same_id, curl_libp11_split_ids_one_label, curl_libp11_split_ids_split_labels;
    openssl_pkeyutl_signs_a_digest:
        pkeyutl_same_id, pkeyutl_split_ids_one_label, pkeyutl_split_ids_split_labels;
    openssl_storeutl_finds_the_three_objects_under_the_key_id:
        storeutl_same_id, storeutl_split_ids_one_label, storeutl_split_ids_split_labels;
    curl8_with_pkcs11_provider:
        curl8_provider_same_id, curl8_provider_split_ids_one_label,
        curl8_provider_split_ids_split_labels;
    p11tool_lists_the_three_objects_under_one_id:
        p11tool_same_id, p11tool_split_ids_one_label, p11tool_split_ids_split_labels;
    gnutls_cli_mutual_tls_with_pkcs11_uris:
        gnutls_cli_same_id, gnutls_cli_split_ids_one_label, gnutls_cli_split_ids_split_labels;
    nss_pairs_the_certificate_with_the_key:
        nss_same_id, nss_split_ids_one_label, nss_split_ids_split_labels;
    pykcs11_finds_the_certificate_by_the_key_id:
        pykcs11_same_id, pykcs11_split_ids_one_label, pykcs11_split_ids_split_labels;
    c_finds_the_certificate_by_the_key_id:
        c_abi_same_id, c_abi_split_ids_one_label, c_abi_split_ids_split_labels;
    cryptoki_finds_the_certificate_by_the_key_id:
        cryptoki_same_id, cryptoki_split_ids_one_label, cryptoki_split_ids_split_labels;
}
