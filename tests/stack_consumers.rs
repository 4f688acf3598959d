//! Consumers end to end, on the simulated card behind the real pcscd + vpcd stack (issue #5):
//! OpenSSL 3 + pkcs11-provider (`req`, `storeutl`; `pkeyutl` and `s_client` are in
//! stack_tools.rs), the p11-kit proxy module, curl 8 from bookworm-backports through the
//! provider (`--key-type PROV`), GnuTLS (`p11tool`, `gnutls-cli` client authentication with
//! `pkcs11:` URIs), and p11-kit module registration by `scripts/install.sh`.
//!
//! Needs the stack: `bash scripts/stack.sh start` (`bash scripts/test.sh` starts it and runs
//! these tests with `--run-ignored all`). The compatibility table in docs/usage.md lists the
//! commands.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::stack::{
    Finished, Proc, ServerReport, Stack, TOOL_TIMEOUT, TlsServer,
    client_certificate_on_status_page, openssl_plain, run,
};

const KEY_URI: &str = "pkcs11:object=client;type=private";
const CERT_URI: &str = "pkcs11:object=client;type=cert";
const HTTP_GET: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const P11_KIT_PROXY: &str = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The token label of the card (what `pkcs11:token=` matches), from `pkcs11-tool -L`.
fn token_label(stack: &Stack) -> String {
    let f = run(stack.pkcs11_tool().arg("-L")).expect_success();
    f.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("token label"))
        .map(|v| v.trim_start().trim_start_matches(':').trim().to_string())
        .unwrap_or_else(|| panic!("no token label in:\n{f}"))
}

fn uri_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Asserts that the one-connection server verified the card's certificate as client
/// certificate and that the page the client printed shows it.
fn assert_client_authenticated(client: &Finished, server: Finished, card_cert: &[u8]) {
    let both = format!("{client}\n===== server:\n{server}");
    let report = ServerReport::read(&server);
    assert!(client.success(), "client failed:\n{both}");
    assert!(
        report.handshake_finished && report.client_leaf_verified,
        "server did not verify a client certificate:\n{both}"
    );
    assert_eq!(
        client_certificate_on_status_page(&client.stdout).as_deref(),
        Some(card_cert),
        "the status page must show the card's certificate as the client certificate:\n{both}"
    );
}

// --- OpenSSL 3 + pkcs11-provider --------------------------------------------------------------

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn openssl_req_makes_a_csr_signed_by_the_card_key() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch("openssl_req");
    let card_pub = std::fs::read_to_string(stack.card_public_key_pem(&dir)).unwrap();
    let csr = dir.join("device.csr");
    stack.reset_stats();
    run(stack
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
        .arg(&csr))
    .expect_success();
    assert!(
        stack.stats().ins("2B") >= 1,
        "the CSR must be signed on the card"
    );
    // Plain OpenSSL (no PKCS#11) checks the self-signature and the key in it.
    let v = run(openssl_plain()
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&csr))
    .expect_success();
    assert!(v.all_output().contains("verify OK"), "{v}");
    let p = run(openssl_plain()
        .args(["req", "-pubkey", "-noout", "-in"])
        .arg(&csr))
    .expect_success();
    assert_eq!(
        p.stdout.trim(),
        card_pub.trim(),
        "the CSR must carry the card's public key"
    );
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn openssl_storeutl_finds_the_key_and_the_certificates() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let label = token_label(&stack);
    let uri = format!("pkcs11:token={}", uri_escape(&label));
    let storeutl = |args: &[&str], uri: &str| {
        run(stack
            .openssl_with_provider()
            .arg("storeutl")
            .args(args)
            .arg(uri))
        .expect_success()
    };
    // Everything on the token: the private keys (client, ecdh), the public keys and the two
    // certificates (client, CA).
    let f = storeutl(&[], &uri);
    let kinds = |kind: &str| {
        f.stdout
            .lines()
            .filter(|l| l.split_once(": ").map(|(_, k)| k) == Some(kind))
            .count()
    };
    assert!(kinds("Pkey") >= 2, "private keys missing:\n{f}");
    assert!(kinds("Public key") >= 1, "public key missing:\n{f}");
    assert_eq!(kinds("Certificate"), 2, "{f}");
    // The certificates, decoded.
    let f = storeutl(&["-certs", "-noout", "-text"], &uri);
    for subject in [
        "Subject: O=iotsafe-pkcs11 test, CN=iotsafe-device",
        "Subject: CN=iotsafe-pkcs11 Test CA",
    ] {
        assert!(f.stdout.contains(subject), "{subject}:\n{f}");
    }
    // One private key labelled client.
    let f = storeutl(&["-keys"], &format!("{uri};object=client"));
    assert!(f.stdout.contains("Total found: 1"), "{f}");
}

// --- curl 8 (bookworm-backports) through pkcs11-provider -----------------------------------

/// `target/curl-backports/root/usr/bin/curl` and its library dir (scripts/fetch-curl-backports.sh).
fn curl_backports() -> (PathBuf, PathBuf) {
    let f = Proc::spawn(
        Command::new("bash").arg(repo().join("scripts/fetch-curl-backports.sh")),
        None,
    )
    .wait(TOOL_TIMEOUT * 3)
    .expect_success();
    let last = f.stdout.lines().last().unwrap_or_default().to_string();
    let (bin, lib) = last
        .split_once(' ')
        .unwrap_or_else(|| panic!("unexpected output:\n{f}"));
    (PathBuf::from(bin), PathBuf::from(lib))
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn curl_from_backports_authenticates_with_the_card_key_through_pkcs11_provider() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let (curl, lib) = curl_backports();
    let dir = stack.scratch("curl_prov");
    let card_cert = stack.card_certificate_der(&dir);
    stack.reset_stats();
    let server = TlsServer::start(&stack, &[]);
    // curl loads the provider into a library context of its own, which does not see the
    // module path of the OpenSSL configuration; PKCS11_PROVIDER_MODULE names it there.
    let mut cmd = Command::new(&curl);
    cmd.env("LD_LIBRARY_PATH", &lib)
        .env("OPENSSL_CONF", &stack.provider_conf)
        .env("PKCS11_PROVIDER_MODULE", &stack.module)
        .args(["--silent", "--show-error", "--fail", "--resolve"])
        .arg(format!("localhost:{}:127.0.0.1", server.port))
        .arg("--cacert")
        .arg(stack.card_file("ca.pem"))
        .args(["--key-type", "PROV", "--key", KEY_URI, "--cert"])
        .arg(stack.card_file("client.pem"))
        .arg(format!("https://localhost:{}/", server.port));
    let client = run(&mut cmd);
    let version = run(Command::new(&curl)
        .env("LD_LIBRARY_PATH", &lib)
        .arg("--version"));
    assert!(
        version.stdout.starts_with("curl 8."),
        "backports curl expected:\n{version}"
    );
    assert_client_authenticated(&client, server.finish(), &card_cert);
    assert!(
        stack.stats().ins("2B") >= 1,
        "signature must come from the card"
    );
}

// --- GnuTLS ---------------------------------------------------------------------------------

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn gnutls_p11tool_lists_all_objects() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let label = token_label(&stack);
    let f = run(Command::new("p11tool")
        .arg("--provider")
        .arg(&stack.module)
        .arg("--list-all")
        .arg(format!("pkcs11:token={}", uri_escape(&label))))
    .expect_success();
    for want in [
        "id=%01;object=client;type=private",
        "id=%01;object=client;type=public",
        "id=%01;object=client;type=cert",
        "id=%03;object=ca;type=cert",
    ] {
        assert!(f.stdout.contains(want), "p11tool must list {want}:\n{f}");
    }
    assert!(f.stdout.contains("Private key (EC/ECDSA-SECP256R1)"), "{f}");
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn gnutls_cli_client_authentication_with_pkcs11_uris() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch("gnutls_cli");
    let card_cert = stack.card_certificate_der(&dir);
    stack.reset_stats();
    let server = TlsServer::start(&stack, &[]);
    let mut cmd = Command::new("gnutls-cli");
    cmd.arg("--provider")
        .arg(&stack.module)
        .args(["--x509keyfile", KEY_URI, "--x509certfile", CERT_URI])
        .arg("--x509cafile")
        .arg(stack.card_file("ca.pem"))
        .args(["--verify-hostname", "localhost", "-p"])
        .arg(server.port.to_string())
        .arg("127.0.0.1");
    let client = Proc::spawn(&mut cmd, Some(HTTP_GET)).wait(TOOL_TIMEOUT);
    assert!(
        client.all_output().contains("Handshake was completed"),
        "{client}"
    );
    assert_client_authenticated(&client, server.finish(), &card_cert);
    assert!(
        stack.stats().ins("2B") >= 1,
        "signature must come from the card"
    );
}

// --- p11-kit: registration by scripts/install.sh, the proxy module --------------------------

/// Runs `scripts/install.sh` for the module under test; uninstalls when dropped (every path).
struct Installed {
    module: PathBuf,
}

fn install_script(args: &[&str], module: &Path) -> Finished {
    Proc::spawn(
        Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .args(args)
            .arg("--module")
            .arg(module),
        None,
    )
    .wait(TOOL_TIMEOUT)
}

impl Installed {
    fn new(stack: &Stack) -> Installed {
        install_script(&[], &stack.module).expect_success();
        Installed {
            module: stack.module.clone(),
        }
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let f = install_script(&["--uninstall"], &self.module);
        if !f.success() {
            eprintln!("uninstall failed:\n{f}");
        }
    }
}

fn p11_kit_list_modules() -> Finished {
    run(Command::new("p11-kit").arg("list-modules")).expect_success()
}

/// The part of `p11-kit list-modules` that describes our module.
fn our_module_entry(listing: &str) -> Option<String> {
    let mut lines = listing
        .lines()
        .skip_while(|l| !l.starts_with("iotsafe-pkcs11:"));
    let mut entry = vec![lines.next()?];
    entry.extend(lines.take_while(|l| l.starts_with([' ', '\t']) || l.is_empty()));
    Some(entry.join("\n"))
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it); installs into /usr (root)"]
fn install_registers_the_module_with_p11_kit_and_uninstall_removes_it() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let label = token_label(&stack);
    let dir = stack.scratch("p11_kit");
    let card_cert = stack.card_certificate_der(&dir);
    {
        let _installed = Installed::new(&stack);

        // 1. p11-kit list-modules shows the module and the card's token.
        let f = p11_kit_list_modules();
        let entry = our_module_entry(&f.stdout)
            .unwrap_or_else(|| panic!("iotsafe-pkcs11 not registered:\n{f}"));
        assert!(
            entry.contains("libiotsafe_pkcs11.so"),
            "module path: {entry}"
        );
        assert!(
            entry.contains(&format!("token: {label}")),
            "token missing: {entry}"
        );

        // 2. GnuTLS finds the key through p11-kit's registration (no --provider).
        let uri = format!("pkcs11:token={}", uri_escape(&label));
        let f = run(Command::new("p11tool").args(["--list-all", &uri])).expect_success();
        assert!(
            f.stdout.contains("id=%01;object=client;type=private"),
            "{f}"
        );

        // 3. OpenSSL through the p11-kit proxy module: TLS 1.3 client authentication.
        let conf = dir.join("openssl-p11-kit-proxy.cnf");
        let text = std::fs::read_to_string(&stack.provider_conf)
            .unwrap()
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("pkcs11-module-path") {
                    // The proxy also loads every other registered module, here SoftHSM2 (the
                    // differential's reference), whose C++ teardown crashes at exit under
                    // OpenSSL 3 (SoftHSMv2 #729): skip C_Finalize as pkcs11-provider
                    // recommends for it.
                    format!(
                        "pkcs11-module-path = {P11_KIT_PROXY}\npkcs11-module-quirks = no-deinit"
                    )
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&conf, text + "\n").unwrap();
        let key = format!(
            "pkcs11:token={};object=client;type=private",
            uri_escape(&label)
        );
        let cert = format!(
            "pkcs11:token={};object=client;type=cert",
            uri_escape(&label)
        );
        stack.reset_stats();
        let server = TlsServer::start(&stack, &["-tls1_3"]);
        let mut cmd = Command::new("openssl");
        cmd.env("OPENSSL_CONF", &conf)
            .env_remove("PKCS11_PROVIDER_MODULE")
            .args(["s_client", "-connect"])
            .arg(format!("127.0.0.1:{}", server.port))
            .args(["-servername", "localhost", "-tls1_3", "-CAfile"])
            .arg(stack.card_file("ca.pem"))
            .args([
                "-verify_return_error",
                "-ign_eof",
                "-cert",
                &cert,
                "-key",
                &key,
            ]);
        let client = Proc::spawn(&mut cmd, Some(HTTP_GET)).wait(TOOL_TIMEOUT);
        assert_client_authenticated(&client, server.finish(), &card_cert);
        assert!(
            stack.stats().ins("2B") >= 1,
            "signature must come from the card"
        );
    }
    // 4. Uninstalled (by the guard above): p11-kit no longer lists it.
    let f = p11_kit_list_modules();
    assert!(
        our_module_entry(&f.stdout).is_none(),
        "still registered after uninstall:\n{f}"
    );
    assert!(!Path::new("/usr/share/p11-kit/modules/iotsafe-pkcs11.module").exists());
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn install_with_destdir_stages_exactly_three_files() {
    let stack = Stack::get();
    let dir = stack.scratch("install_destdir");
    let dest = dir.join("root");
    let d = dest.to_str().unwrap();
    let f = install_script(&["--destdir", d], &stack.module).expect_success();
    let mut files: Vec<String> = walk(&dest)
        .into_iter()
        .map(|p| p.strip_prefix(&dest).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "usr/include/iotsafe_pkcs11.h",
            "usr/lib/x86_64-linux-gnu/pkcs11/libiotsafe_pkcs11.so",
            "usr/share/p11-kit/modules/iotsafe-pkcs11.module",
        ],
        "{f}"
    );
    let module_file =
        std::fs::read_to_string(dest.join("usr/share/p11-kit/modules/iotsafe-pkcs11.module"))
            .unwrap();
    assert!(module_file.contains("module: libiotsafe_pkcs11.so"));
    install_script(&["--destdir", d, "--uninstall"], &stack.module).expect_success();
    assert!(walk(&dest).is_empty(), "uninstall must remove every file");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The listing parser against p11-kit 0.24's layout (runs without the stack).
#[test]
fn p11_kit_listing_parser_finds_only_our_entry() {
    let listing = "p11-kit-trust: p11-kit-trust.so\n    token: System Trust\n\
                   iotsafe-pkcs11: libiotsafe_pkcs11.so\n    library-version: 0.1\n    \
                   token: IoT SAFE 696F7473\n        flags:\n               rng\n\
                   opensc-pkcs11: opensc-pkcs11.so\n    library-version: 0.23\n";
    let e = our_module_entry(listing).unwrap();
    assert!(e.starts_with("iotsafe-pkcs11: libiotsafe_pkcs11.so"));
    assert!(e.contains("token: IoT SAFE 696F7473"));
    assert!(!e.contains("opensc"), "{e}");
    assert_eq!(our_module_entry("opensc-pkcs11: x\n"), None);
    assert_eq!(uri_escape("IoT SAFE 1"), "IoT%20SAFE%201");
}
