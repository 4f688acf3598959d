//! The built module used by real tools, on the simulated IoT SAFE card behind the real
//! pcscd + vsmartcard-vpcd stack: OpenSC's pkcs11-tool, OpenSSL 3 with pkcs11-provider
//! (pkeyutl, s_client against s_server for TLS 1.3 and 1.2 client authentication) and curl 7.88
//! through the libp11 engine.
//!
//! Needs the stack: `bash scripts/stack.sh start` (`bash scripts/test.sh` starts it and runs
//! these tests with `--run-ignored all`).

mod helpers;

use std::collections::BTreeMap;
use std::process::Command;

use helpers::stack::{
    Finished, Proc, ServerReport, Stack, TOOL_TIMEOUT, TlsServer, base64_decode,
    client_certificate_on_status_page, openssl_plain, run,
};
use sha2::{Digest, Sha256};

const MESSAGE: &[u8] = b"IoT SAFE: signed on the SIM, checked by OpenSSL\n";
const KEY_URI: &str = "pkcs11:object=client;type=private";
const CERT_URI: &str = "pkcs11:object=client;type=cert";
const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// One object of `pkcs11-tool -O`: its heading line and its "  name: value" lines.
#[derive(Debug)]
struct Listed {
    heading: String,
    fields: BTreeMap<String, String>,
}

fn parse_object_listing(text: &str) -> Vec<Listed> {
    let mut objects: Vec<Listed> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            objects.push(Listed {
                heading: line.trim().to_string(),
                fields: BTreeMap::new(),
            });
        } else if let (Some(obj), Some((k, v))) = (objects.last_mut(), line.split_once(':')) {
            obj.fields
                .entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    objects
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn pkcs11_tool_lists_the_token() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let f = run(stack.pkcs11_tool().arg("-L")).expect_success();
    let tokens = f.stdout.matches("token label").count();
    assert_eq!(tokens, 1, "exactly one slot with a token expected:\n{f}");
    let flags = f
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("token flags"))
        .unwrap_or_else(|| panic!("no token flags line:\n{f}"));
    assert!(flags.contains("token initialized"), "{flags}");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn pkcs11_tool_lists_private_key_public_key_and_certificate_under_id_01() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let f = run(stack.pkcs11_tool().arg("-O")).expect_success();
    let objects = parse_object_listing(&f.stdout);
    for kind in [
        "Private Key Object",
        "Public Key Object",
        "Certificate Object",
    ] {
        let with_id_01: Vec<&Listed> = objects
            .iter()
            .filter(|o| o.heading.starts_with(kind))
            .filter(|o| o.fields.get("ID").map(String::as_str) == Some("01"))
            .collect();
        assert_eq!(with_id_01.len(), 1, "one {kind} with ID 01 expected:\n{f}");
        assert!(
            with_id_01[0].heading.contains("EC") || kind == "Certificate Object",
            "{kind} should be EC: {:?}",
            with_id_01[0].heading
        );
    }
    let key = objects
        .iter()
        .find(|o| o.heading.starts_with("Private Key Object"))
        .unwrap();
    assert_eq!(
        key.fields.get("label").map(String::as_str),
        Some("client"),
        "{key:?}"
    );
    assert!(
        key.fields.get("Usage").is_some_and(|u| u.contains("sign")),
        "private key usage must include sign: {key:?}"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn pkcs11_tool_signs_and_verifies_ecdsa_sha256() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch("pkcs11_tool_sign");
    let msg = dir.join("message.txt");
    let sig = dir.join("message.sig");
    std::fs::write(&msg, MESSAGE).unwrap();
    run(stack
        .pkcs11_tool()
        .args(["--sign", "--mechanism", "ECDSA-SHA256", "--id", "01", "-i"])
        .arg(&msg)
        .arg("-o")
        .arg(&sig))
    .expect_success();
    assert_eq!(
        std::fs::read(&sig).unwrap().len(),
        64,
        "raw r||s signature expected"
    );

    let verify = |input: &std::path::Path| {
        run(stack
            .pkcs11_tool()
            .args([
                "--verify",
                "--mechanism",
                "ECDSA-SHA256",
                "--id",
                "01",
                "-i",
            ])
            .arg(input)
            .arg("--signature-file")
            .arg(&sig))
    };
    let good = verify(&msg);
    assert!(
        good.success() && good.stdout.contains("Signature is valid"),
        "{good}"
    );
    // The same signature over another message: CKR_SIGNATURE_INVALID ("Invalid signature").
    let other = dir.join("other.txt");
    std::fs::write(&other, b"a different message\n").unwrap();
    let bad = verify(&other);
    assert!(
        bad.stdout.contains("Invalid signature") && !bad.stdout.contains("Signature is valid"),
        "{bad}"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn pkcs11_tool_self_test_passes() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let f = Proc::spawn(stack.pkcs11_tool().arg("--test"), None).wait(TOOL_TIMEOUT * 3);
    assert!(f.success(), "pkcs11-tool --test exited non-zero:\n{f}");
    assert!(f.stdout.contains("No errors"), "{f}");
    // --test opens a R/W session; a module that answered it with a read-only one would make
    // pkcs11-tool skip its signature tests.
    assert!(!f.stdout.contains("not a R/W session"), "{f}");
    let all = f.all_output();
    // pkcs11-tool prints "ERR: …" or "… failed" for each check that goes wrong, and may still
    // exit 0, so read its output.
    let bad: Vec<&str> = all
        .lines()
        .filter(|l| {
            let l = l.trim().to_ascii_lowercase();
            l.starts_with("err") || l.contains("failed") || l.contains("error:")
        })
        .collect();
    assert!(bad.is_empty(), "pkcs11-tool --test reported {bad:?}:\n{f}");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn openssl_pkeyutl_signs_a_sha256_digest_through_pkcs11_provider() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch("openssl_pkeyutl");
    let public = stack.card_public_key_pem(&dir);
    let digest = dir.join("digest.bin");
    let sig = dir.join("digest.sig");
    std::fs::write(&digest, Sha256::digest(MESSAGE)).unwrap();

    run(stack
        .openssl_with_provider()
        .args(["pkeyutl", "-sign", "-inkey", KEY_URI, "-in"])
        .arg(&digest)
        .arg("-out")
        .arg(&sig))
    .expect_success();

    let verify = |input: &std::path::Path| {
        run(openssl_plain()
            .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
            .arg(&public)
            .arg("-in")
            .arg(input)
            .arg("-sigfile")
            .arg(&sig))
    };
    let good = verify(&digest);
    assert!(
        good.success() && good.stdout.contains("Signature Verified Successfully"),
        "{good}"
    );
    let other = dir.join("other-digest.bin");
    std::fs::write(&other, Sha256::digest(b"another message")).unwrap();
    let bad = verify(&other);
    assert!(
        !bad.success() && !bad.stdout.contains("Signature Verified Successfully"),
        "a signature over another digest must not verify:\n{bad}"
    );
}

/// `openssl s_client` (pkcs11-provider; key and certificate from the card) against
/// `openssl s_server -www -Verify 1 -verify_return_error` for one connection.
fn s_client_handshake(stack: &Stack, version: &str, with_card_key: bool) -> (Finished, Finished) {
    let server = TlsServer::start(stack, &[version]);
    let mut cmd = stack.openssl_with_provider();
    cmd.args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", server.port))
        .args(["-servername", "localhost", version])
        .arg("-CAfile")
        .arg(stack.card_file("ca.pem"))
        .args(["-verify_return_error", "-ign_eof"]);
    if with_card_key {
        cmd.args(["-cert", CERT_URI, "-key", KEY_URI]);
    }
    let client = Proc::spawn(&mut cmd, Some(HTTP_GET)).wait(TOOL_TIMEOUT);
    (client, server.finish())
}

fn mutual_tls_with_card_key(version: &str, protocol: &str) {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch(&format!("s_client{version}"));
    let card_cert = stack.card_certificate_der(&dir);
    stack.reset_stats();

    let (client, server) = s_client_handshake(&stack, version, true);
    let both = format!("{client}\n===== server:\n{server}");
    let report = ServerReport::read(&server);
    assert!(client.success(), "s_client failed:\n{both}");
    assert!(server.success(), "s_server failed:\n{both}");
    assert!(
        report.handshake_finished,
        "server did not finish a handshake:\n{both}"
    );
    assert!(
        report.client_leaf_verified,
        "server did not verify a client certificate:\n{both}"
    );
    assert!(
        client
            .stdout
            .contains(&format!("New, {protocol}, Cipher is")),
        "{protocol} not negotiated:\n{both}"
    );
    assert_eq!(
        client_certificate_on_status_page(&client.stdout).as_deref(),
        Some(card_cert.as_slice()),
        "the server's status page must show the card's certificate as the client certificate:\n{both}"
    );
    let stats = stack.stats();
    assert!(
        stats.ins("2B") >= 1,
        "the handshake signature must have been computed on the card: {stats:?}"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn tls13_client_authentication_with_the_sim_key_through_pkcs11_provider() {
    mutual_tls_with_card_key("-tls1_3", "TLSv1.3");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn tls12_client_authentication_with_the_sim_key_through_pkcs11_provider() {
    mutual_tls_with_card_key("-tls1_2", "TLSv1.2");
}

/// Negative control for the two tests above: the same server rejects a client that offers no
/// certificate, so their positive checks do mean "client certificate verified".
#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn tls_server_rejects_a_client_without_certificate() {
    let stack = Stack::get();
    let _lock = stack.lock();
    for version in ["-tls1_3", "-tls1_2"] {
        let (client, server) = s_client_handshake(&stack, version, false);
        let both = format!("{client}\n===== server:\n{server}");
        let report = ServerReport::read(&server);
        assert!(!client.success(), "{version}: s_client must fail:\n{both}");
        assert!(
            report.no_client_certificate,
            "{version}: server must report the missing certificate:\n{both}"
        );
        assert!(!report.handshake_finished, "{version}: {both}");
        assert!(!report.client_leaf_verified, "{version}: {both}");
        assert_eq!(
            client_certificate_on_status_page(&client.stdout),
            None,
            "{both}"
        );
    }
}

/// curl 7.88 with the key through the libp11 engine (`--engine pkcs11 --key-type ENG`).
fn curl(stack: &Stack, port: u16, with_card_key: bool) -> Finished {
    let mut cmd = Command::new("curl");
    cmd.env("PKCS11_MODULE_PATH", &stack.module)
        .env_remove("OPENSSL_CONF")
        .args(["--silent", "--show-error", "--fail"])
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(stack.card_file("ca.pem"));
    if with_card_key {
        cmd.args(["--engine", "pkcs11", "--key-type", "ENG", "--key", KEY_URI])
            .arg("--cert")
            .arg(stack.card_file("client.pem"));
    }
    cmd.arg(format!("https://localhost:{port}/"));
    run(&mut cmd)
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn curl_client_authentication_with_the_sim_key_through_the_libp11_engine() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch("curl");
    let card_cert = stack.card_certificate_der(&dir);
    stack.reset_stats();

    let server = TlsServer::start(&stack, &[]);
    let client = curl(&stack, server.port, true);
    let server = server.finish();
    let both = format!("{client}\n===== server:\n{server}");
    let report = ServerReport::read(&server);
    assert!(client.success(), "curl failed:\n{both}");
    assert!(
        report.handshake_finished && report.client_leaf_verified,
        "{both}"
    );
    assert!(
        client.stdout.contains("Cipher is"),
        "no cipher on the page:\n{both}"
    );
    assert_eq!(
        client_certificate_on_status_page(&client.stdout).as_deref(),
        Some(card_cert.as_slice()),
        "the page must show the card's certificate as the client certificate:\n{both}"
    );
    let stats = stack.stats();
    assert!(
        stats.ins("2B") >= 1,
        "the handshake signature must have been computed on the card: {stats:?}"
    );
}

/// Negative control for the curl test: without the card key the server refuses curl.
#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn curl_without_client_certificate_is_rejected() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let server = TlsServer::start(&stack, &[]);
    let client = curl(&stack, server.port, false);
    let server = server.finish();
    let both = format!("{client}\n===== server:\n{server}");
    let report = ServerReport::read(&server);
    assert!(!client.success(), "curl must fail:\n{both}");
    assert!(report.no_client_certificate, "{both}");
    assert!(!report.handshake_finished, "{both}");
}

/// The PEM decoding the TLS tests rely on (runs without the stack).
#[test]
fn base64_decoding_matches_known_vectors() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("aGVs\nbG8h").as_deref(), Some(&b"hello!"[..]));
    assert_eq!(base64_decode("aGk=").as_deref(), Some(&b"hi"[..]));
    assert_eq!(base64_decode("aA==").as_deref(), Some(&b"h"[..]));
    assert_eq!(base64_decode("aGk"), None);
    assert_eq!(base64_decode("a*k="), None);
}

/// The object listing parser against pkcs11-tool 0.23's layout (runs without the stack).
#[test]
fn object_listing_parser_reads_headings_and_fields() {
    let text = "Private Key Object; EC\n  label:      client\n  ID:         01\n  Usage:      sign\n\
                Certificate Object; type = X.509 cert\n  label:      client\n  subject:    DN: CN=x\n  ID:         01\n";
    let objects = parse_object_listing(text);
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0].heading, "Private Key Object; EC");
    assert_eq!(objects[0].fields["ID"], "01");
    assert_eq!(objects[1].fields["subject"], "DN: CN=x");
}
