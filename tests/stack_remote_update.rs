//! A remote update seen by one process reaches all (issue #11, the content cache): process A
//! has the module loaded and is idle while a remote-management session replaces the
//! certificate; process B then signs once and takes the card's `63CF`; process C, started
//! afterwards, never sees a `63CF` yet shows the new certificate; and A's next call shows it too.
//! Real processes on one simulated modem; the cache and the note are the module's defaults
//! (`/run/lock` for the note, a scratch `XDG_CACHE_HOME` shared by the three processes).

mod helpers;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use helpers::stack::{
    Proc, SimModem, load_module, release_module, run, session_with_client_key, sim_control,
};
use sha2::{Digest, Sha256};

const ROLE: &str = "IOTSAFE_REMOTE_UPDATE_ROLE";
const TEST: &str = "a_remote_update_one_process_took_reaches_every_process";

/// SHA-256 of the certificate labelled `client` (file 02) as the token shows it, hex.
fn certificate_digest(session: &cryptoki::session::Session) -> String {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(b"client".to_vec()),
        ])
        .expect("C_FindObjects");
    let cert = found.first().expect("a certificate with ID 01");
    let value = session
        .get_attributes(*cert, &[AttributeType::Value])
        .expect("CKA_VALUE");
    match value.first() {
        Some(Attribute::Value(v)) => hex::encode(Sha256::digest(v)),
        other => panic!("CKA_VALUE: {other:?}"),
    }
}

/// The roles: `idle` prints its view, waits for a line on stdin, then signs and prints its
/// view again; `sign` signs once; `read` prints its view. No C_Finalize, as one-shot tools.
fn child(role: &str) {
    let p11 = load_module(&release_module());
    let (session, key) = session_with_client_key(&p11);
    let sign = || {
        session
            .sign(&Mechanism::EcdsaSha256, key, b"remote update")
            .expect("C_Sign");
    };
    match role {
        "idle" => {
            println!("certificate {}", certificate_digest(&session));
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).expect("stdin");
            sign();
            println!("certificate {}", certificate_digest(&session));
        }
        "sign" => sign(),
        "read" => println!("certificate {}", certificate_digest(&session)),
        other => panic!("unknown role {other}"),
    }
    std::mem::forget(p11);
}

#[test]
#[ignore = "needs the release build of the module (scripts/test.sh builds it)"]
fn a_remote_update_one_process_took_reaches_every_process() {
    if let Ok(role) = std::env::var(ROLE) {
        return child(&role);
    }
    let dir = std::env::temp_dir().join(format!("iotsafe-remote-update-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let modem = SimModem::start(&dir, &[]);
    let control = modem.control.clone();
    let config = modem.module_config("", "");
    let process = |role: &str| {
        let mut c = Command::new(std::env::current_exe().expect("test binary"));
        c.args(["--exact", TEST, "--ignored", "--nocapture"])
            .env(ROLE, role)
            .env("IOTSAFE_PKCS11_CONFIG", &config)
            .env("XDG_CACHE_HOME", dir.join("cache"));
        c
    };
    let digest_in = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("certificate ").map(str::to_string))
            .collect()
    };

    // A: loaded, has read the card, idle.
    let mut a = process("idle")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("process A");
    let mut a_out = BufReader::new(a.stdout.take().expect("A's stdout"));
    let mut first = String::new();
    while !first.starts_with("certificate ") {
        first.clear();
        let read = a_out.read_line(&mut first).expect("A's view");
        assert!(read > 0, "A ended before printing its view");
    }
    let old = digest_in(&first);

    // The remote-management session replaces the certificate.
    let new_cert = dir.join("new-cert.der");
    run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(dir.join("server.pem"))
        .arg("-out")
        .arg(&new_cert))
    .expect_success();
    sim_control(&control, "remote-begin file 02");
    sim_control(
        &control,
        &format!("remote-replace-file 02 {}", new_cert.display()),
    );
    sim_control(&control, "remote-end");
    let new = hex::encode(Sha256::digest(
        std::fs::read(&new_cert).expect("the new certificate"),
    ));
    assert_ne!(old[0], new);

    // B takes the 63CF; C never sees one.
    let b = Proc::spawn(&mut process("sign"), None).wait(Duration::from_secs(60));
    assert!(b.success(), "process B:\n{b}");
    let stats = sim_control(&control, "stats");
    let c = Proc::spawn(&mut process("read"), None).wait(Duration::from_secs(60));
    assert!(c.success(), "process C:\n{c}");
    assert_eq!(
        digest_in(&c.stdout),
        vec![new.clone()],
        "C shows the new certificate:\n{c}"
    );

    // A's next call shows it too.
    a.stdin
        .take()
        .expect("A's stdin")
        .write_all(b"go\n")
        .expect("wake A");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut a_out, &mut rest).expect("A's output");
    let status = a.wait().expect("A");
    assert!(status.success(), "process A: {rest}");
    assert_eq!(
        digest_in(&rest),
        vec![new],
        "A, idle during the update, shows the new certificate"
    );
    println!(
        "old certificate {}, new one seen by B (63CF), C and A; card after B: {stats}",
        old[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
