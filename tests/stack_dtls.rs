//! DTLS 1.2 mutual authentication with the SIM's ECDSA key, as an LwM2M client runs it (issue #7
//! item 4), on the simulated card behind the real pcscd + vpcd stack:
//!
//! - OpenSSL 3 + pkcs11-provider: `openssl s_client -dtls1_2 -cert pkcs11:… -key pkcs11:…`;
//! - OpenSSL 3 + the libp11 engine (what LwM2M SDKs use for HSM keys):
//!   `openssl s_client -dtls1_2 -engine pkcs11 -keyform engine -key pkcs11:… -cert card.pem`;
//!
//! each against `openssl s_server -dtls1_2 -Verify 1 -verify_return_error` over UDP on
//! 127.0.0.1, with an ECDHE-ECDSA cipher suite pinned on both sides: AES128-GCM-SHA256, and
//! AES128-CCM8 (`TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8`, the suite LwM2M and RFC 7925 mandate for
//! certificate mode). Each test checks that the handshake completed as DTLS 1.2 with that suite,
//! that the server verified and printed exactly the card's certificate, that the client's message
//! arrived, and that the card computed the CertificateVerify signature (COMPUTE SIGNATURE APDUs
//! counted by the simulator). A client without certificate is the negative control.
//!
//! Needs the stack: `bash scripts/stack.sh start` (`bash scripts/test.sh` starts it and runs
//! these tests with `--run-ignored all`).

mod helpers;

use std::path::{Path, PathBuf};
use std::process::ChildStdin;

use helpers::stack::{
    Finished, Proc, ServerReport, SimStats, Stack, TOOL_TIMEOUT, accept_port,
    client_certificate_on_status_page, openssl_plain, run, s_server_for_one_client,
};

const KEY_URI: &str = "pkcs11:object=client;type=private";
const CERT_URI: &str = "pkcs11:object=client;type=cert";
/// What the client sends once the handshake is done; the server prints it.
const MESSAGE: &str = "LwM2M register from the SIM-authenticated DTLS client\n";
const ECDHE_ECDSA_AES128_GCM: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";
const ECDHE_ECDSA_AES128_CCM8: &str = "ECDHE-ECDSA-AES128-CCM8";

/// `openssl s_server -dtls1_2` on a free UDP port of 127.0.0.1, with the card profile's server
/// certificate, requiring and verifying a client certificate issued by the card profile's CA,
/// for exactly one connection. Without `-www` (which DTLS does not allow) s_server prints what
/// the client sends and stops at EOF on its stdin, so its stdin stays open until it has exited.
struct DtlsServer {
    port: u16,
    proc: Proc,
    stdin: ChildStdin,
}

impl DtlsServer {
    fn start(stack: &Stack, cipher: &str) -> DtlsServer {
        let mut cmd = s_server_for_one_client(&stack.card_dir, &["-dtls1_2"]);
        cmd.args(["-cipher", cipher]);
        let (mut proc, stdin) = Proc::spawn_with_open_stdin(&mut cmd);
        let port = accept_port(&mut proc);
        DtlsServer { port, proc, stdin }
    }

    /// Waits (bounded) for the server to finish its one connection — it exits on the client's
    /// close_notify or after a failed handshake — and returns what it printed. Its stdin is
    /// closed only afterwards: EOF on stdin would make it quit before reading the client's data.
    fn finish(self) -> Finished {
        let DtlsServer { proc, stdin, .. } = self;
        let finished = proc.wait(TOOL_TIMEOUT);
        drop(stdin);
        finished
    }
}

/// How the client gets its key and certificate.
enum ClientKey<'a> {
    /// pkcs11-provider: `-cert pkcs11:…;type=cert -key pkcs11:…;type=private`.
    Provider,
    /// libp11 engine: `-engine pkcs11 -keyform engine -key pkcs11:…`, certificate from a file.
    Engine { cert_pem: &'a Path },
    /// No client certificate at all (same provider configuration).
    Without,
}

/// `openssl s_client -dtls1_2` to the server, verifying the server against the profile's CA;
/// sends [`MESSAGE`] after the handshake and closes (stdin EOF → close_notify).
fn dtls_client(stack: &Stack, port: u16, cipher: &str, key: &ClientKey) -> Finished {
    let mut cmd = match key {
        ClientKey::Provider | ClientKey::Without => stack.openssl_with_provider(),
        ClientKey::Engine { .. } => {
            let mut c = openssl_plain();
            c.env("PKCS11_MODULE_PATH", &stack.module);
            c
        }
    };
    cmd.args(["s_client", "-dtls1_2", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cipher", cipher, "-CAfile"])
        .arg(stack.card_file("ca.pem"))
        .arg("-verify_return_error");
    match key {
        ClientKey::Provider => {
            cmd.args(["-cert", CERT_URI, "-key", KEY_URI]);
        }
        ClientKey::Engine { cert_pem } => {
            cmd.args(["-engine", "pkcs11", "-keyform", "engine", "-key", KEY_URI])
                .arg("-cert")
                .arg(cert_pem);
        }
        ClientKey::Without => {}
    }
    Proc::spawn(&mut cmd, Some(MESSAGE.as_bytes())).wait(TOOL_TIMEOUT)
}

/// The value of a "  Name : value" line of s_client's session printout.
fn session_field<'a>(client_stdout: &'a str, name: &str) -> Option<&'a str> {
    client_stdout.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn printed_line(stdout: &str, line: &str) -> bool {
    stdout.lines().any(|l| l.trim_end() == line)
}

/// The DTLS 1.2 handshake completed with `cipher`, the server verified the client's certificate,
/// which is byte for byte `card_cert`, and the client's message arrived.
fn assert_dtls_client_authenticated(
    client: &Finished,
    server: &Finished,
    cipher: &str,
    card_cert: &[u8],
) {
    let both = format!("{client}\n===== server:\n{server}");
    let report = ServerReport::read(server);
    assert!(client.success(), "s_client failed:\n{both}");
    assert!(server.success(), "s_server failed:\n{both}");
    assert_eq!(
        session_field(&client.stdout, "Protocol"),
        Some("DTLSv1.2"),
        "DTLS 1.2 not negotiated:\n{both}"
    );
    assert_eq!(
        session_field(&client.stdout, "Cipher"),
        Some(cipher),
        "{both}"
    );
    assert!(
        printed_line(&server.stdout, &format!("CIPHER is {cipher}")),
        "{both}"
    );
    assert_eq!(
        session_field(&client.stdout, "Verify return code"),
        Some("0 (ok)"),
        "the client must have verified the server:\n{both}"
    );
    assert!(
        report.handshake_finished,
        "server did not finish a handshake:\n{both}"
    );
    assert!(
        report.client_leaf_verified,
        "server did not verify a client certificate:\n{both}"
    );
    assert_eq!(
        client_certificate_on_status_page(&server.stdout).as_deref(),
        Some(card_cert),
        "the server must have received the card's certificate as the client certificate:\n{both}"
    );
    assert!(
        printed_line(&server.stdout, MESSAGE.trim_end()),
        "the client's message did not arrive at the server:\n{both}"
    );
}

/// The card computed the handshake's signature: COMPUTE SIGNATURE init (`2A`) and update (`2B`)
/// in pairs, at least one.
fn assert_signed_on_the_card(stats: &SimStats) {
    assert!(
        stats.ins("2B") >= 1,
        "the CertificateVerify signature must have been computed on the card: {stats:?}"
    );
    assert_eq!(
        stats.ins("2A"),
        stats.ins("2B"),
        "COMPUTE SIGNATURE init and update come in pairs: {stats:?}"
    );
}

fn dtls_with_provider(cipher: &str) {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch(&format!("dtls_provider_{cipher}"));
    let card_cert = stack.card_certificate_der(&dir);
    stack.reset_stats();

    let server = DtlsServer::start(&stack, cipher);
    let client = dtls_client(&stack, server.port, cipher, &ClientKey::Provider);
    let server = server.finish();
    let stats = stack.stats();
    eprintln!("pkcs11-provider, DTLS 1.2, {cipher}: card APDUs {stats:?}");
    assert_dtls_client_authenticated(&client, &server, cipher, &card_cert);
    assert_signed_on_the_card(&stats);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn dtls12_client_authentication_with_the_sim_key_through_pkcs11_provider() {
    dtls_with_provider(ECDHE_ECDSA_AES128_GCM);
}

/// The cipher suite LwM2M (and RFC 7925's IoT profile) mandates for certificate mode.
#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn dtls12_lwm2m_ccm8_client_authentication_with_the_sim_key_through_pkcs11_provider() {
    dtls_with_provider(ECDHE_ECDSA_AES128_CCM8);
}

/// The card's certificate (read off the card with pkcs11-tool) as PEM, for `-cert` with the
/// engine, which loads only the key from the token.
fn card_certificate_pem(stack: &Stack, dir: &Path) -> (Vec<u8>, PathBuf) {
    let der = stack.card_certificate_der(dir);
    let pem = dir.join("card-cert.pem");
    run(openssl_plain()
        .args(["x509", "-inform", "DER", "-in"])
        .arg(dir.join("card-cert.der"))
        .arg("-out")
        .arg(&pem))
    .expect_success();
    (der, pem)
}

fn dtls_with_engine(cipher: &str) {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch(&format!("dtls_engine_{cipher}"));
    let (card_cert, cert_pem) = card_certificate_pem(&stack, &dir);
    stack.reset_stats();

    let server = DtlsServer::start(&stack, cipher);
    let key = ClientKey::Engine {
        cert_pem: &cert_pem,
    };
    let client = dtls_client(&stack, server.port, cipher, &key);
    let server = server.finish();
    let stats = stack.stats();
    eprintln!("libp11 engine, DTLS 1.2, {cipher}: card APDUs {stats:?}");
    assert!(
        client.stderr.contains("Engine \"pkcs11\" set."),
        "s_client must have loaded the libp11 engine:\n{client}"
    );
    assert_dtls_client_authenticated(&client, &server, cipher, &card_cert);
    assert_signed_on_the_card(&stats);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn dtls12_client_authentication_with_the_sim_key_through_the_libp11_engine() {
    dtls_with_engine(ECDHE_ECDSA_AES128_GCM);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn dtls12_lwm2m_ccm8_client_authentication_with_the_sim_key_through_the_libp11_engine() {
    dtls_with_engine(ECDHE_ECDSA_AES128_CCM8);
}

/// Negative control for the tests above: the same server rejects a DTLS client that offers no
/// certificate, so their positive checks do mean "client certificate verified"; and nothing is
/// signed on the card.
#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn dtls12_server_rejects_a_client_without_certificate() {
    let stack = Stack::get();
    let _lock = stack.lock();
    stack.reset_stats();
    let cipher = ECDHE_ECDSA_AES128_GCM;
    let server = DtlsServer::start(&stack, cipher);
    let client = dtls_client(&stack, server.port, cipher, &ClientKey::Without);
    let server = server.finish();
    let stats = stack.stats();
    eprintln!("no client certificate, DTLS 1.2, {cipher}: card APDUs {stats:?}");
    let both = format!("{client}\n===== server:\n{server}");
    let report = ServerReport::read(&server);
    assert!(!client.success(), "s_client must fail:\n{both}");
    assert!(
        report.no_client_certificate,
        "server must report the missing certificate:\n{both}"
    );
    assert!(!report.handshake_finished, "{both}");
    assert!(!report.client_leaf_verified, "{both}");
    assert_eq!(
        client_certificate_on_status_page(&server.stdout),
        None,
        "{both}"
    );
    assert!(
        !printed_line(&server.stdout, MESSAGE.trim_end()),
        "no data may pass without a client certificate:\n{both}"
    );
    assert_eq!(
        (stats.ins("2A"), stats.ins("2B")),
        (0, 0),
        "nothing to sign without the card key: {stats:?}"
    );
}

/// The s_client session printout parser (runs without the stack).
#[test]
fn session_fields_are_read_from_the_s_client_printout() {
    let text = "SSL-Session:\n    Protocol  : DTLSv1.2\n    Cipher    : ECDHE-ECDSA-AES128-CCM8\n\
                \x20   Verify return code: 0 (ok)\n";
    assert_eq!(session_field(text, "Protocol"), Some("DTLSv1.2"));
    assert_eq!(
        session_field(text, "Cipher"),
        Some("ECDHE-ECDSA-AES128-CCM8")
    );
    assert_eq!(session_field(text, "Verify return code"), Some("0 (ok)"));
    assert_eq!(session_field(text, "Session-ID"), None);
    assert!(printed_line("a\nCIPHER is X\n", "CIPHER is X"));
    assert!(!printed_line("a\nCIPHER is XY\n", "CIPHER is X"));
}
