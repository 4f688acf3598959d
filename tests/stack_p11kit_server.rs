//! The module behind `p11-kit server` on a modem slot (issue #11): clients load
//! `p11-kit-client.so` and reach the module through the server's socket (p11-kit runs one
//! `p11-kit-remote` process, with its own module instance, per client connection). Two clients
//! at once both see the token and sign; then ten one-shot connections in a row (`pkcs11-tool`,
//! which calls `C_Finalize`, and processes that exit without it) all sign. Every signature
//! verifies against the card's certificate; the card never sees two sequences interleaved; the
//! logical channels open on the card are printed after every connection.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use helpers::stack::{
    Proc, SimModem, TOOL_TIMEOUT, certificate_key, load_module, release_module, run,
    session_with_client_key, sim_control, stat,
};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

const CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
/// Set in a client process started by the test: `together <dir> <name>` or `one-shot <dir>`.
const CLIENT_ROLE: &str = "IOTSAFE_P11KIT_CLIENT_ROLE";
const TEST_NAME: &str = "two_clients_at_once_and_one_shot_connections_through_p11_kit_server";
const SIGNATURES_TOGETHER: usize = 10;
const ONE_SHOT_CONNECTIONS: usize = 10;

#[test]
#[ignore = "needs the release build of the module and simulator, p11-kit and p11-kit-modules"]
fn two_clients_at_once_and_one_shot_connections_through_p11_kit_server() {
    if let Some(role) = std::env::var_os(CLIENT_ROLE) {
        return client(&role.to_string_lossy());
    }
    assert!(
        Path::new(CLIENT_MODULE).is_file(),
        "{CLIENT_MODULE} not found: install p11-kit-modules (scripts/install-deps.sh)"
    );
    let dir = std::env::temp_dir().join(format!("iotsafe-p11kit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let modem = SimModem::start(&dir, &["--latency-apdu", "2ms", "--at", "both"]);
    let (control, config) = (
        modem.control.clone(),
        modem.module_config("", "at_mode = \"cgla\""),
    );
    let key = certificate_key(&dir.join("client.pem"));

    // The server puts its socket under $XDG_RUNTIME_DIR/p11-kit (a private directory).
    let runtime = dir.join("run");
    std::fs::create_dir_all(&runtime).expect("runtime directory");
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod runtime directory");
    let mut server = Proc::spawn(
        Command::new("p11-kit")
            .args(["server", "-f", "--provider"])
            .arg(release_module())
            .arg("pkcs11:")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("IOTSAFE_PKCS11_CONFIG", &config),
        None,
    );
    let address = server.wait_for_line(Duration::from_secs(30), |l| {
        l.strip_prefix("P11_KIT_SERVER_ADDRESS=")
            .and_then(|rest| rest.split(';').next())
            .map(str::to_string)
    });
    let server_pid: u32 = server.wait_for_line(Duration::from_secs(30), |l| {
        l.strip_prefix("P11_KIT_SERVER_PID=")
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.parse().ok())
    });
    println!("p11-kit server {server_pid} at {address}");
    sim_control(&control, "reset-stats");

    // Two clients at once: each waits (bounded) until both hold a session before signing.
    let together: Vec<Proc> = ["first", "second"]
        .iter()
        .map(|name| {
            Proc::spawn(
                &mut client_process(&address, &format!("together {} {name}", dir.display())),
                None,
            )
        })
        .collect();
    for client in together {
        let finished = client.wait(TOOL_TIMEOUT);
        assert!(finished.success(), "a client failed:\n{finished}");
        assert!(
            finished
                .all_output()
                .contains(&format!("{SIGNATURES_TOGETHER} signatures verified")),
            "{finished}"
        );
    }
    wait_for_connection_processes_to_end(server_pid);
    let stats = sim_control(&control, "stats");
    println!(
        "two clients at once: {} APDUs; logical channels open {} (at most {})",
        stat(&stats, "total"),
        stat(&stats, "open_channel_count"),
        stat(&stats, "max_open_channels")
    );
    assert!(
        stats.contains("\"interleaved\":0,"),
        "no sequence interleaved on the card: {stats}"
    );

    // One-shot connections in a row: even ones pkcs11-tool (calls C_Finalize), odd ones a
    // process that exits right after signing, without C_Finalize.
    let message = b"one-shot through p11-kit server";
    let digest = dir.join("digest");
    std::fs::write(&digest, Sha256::digest(message)).expect("write the digest");
    let mut open_after = Vec::new();
    let mut apdus = Vec::new();
    for connection in 0..ONE_SHOT_CONNECTIONS {
        let before = stat(&sim_control(&control, "stats"), "total");
        if connection % 2 == 0 {
            let signature_file = dir.join(format!("signature-{connection}"));
            run(Command::new("pkcs11-tool")
                .arg("--module")
                .arg(CLIENT_MODULE)
                .args(["--sign", "--mechanism", "ECDSA", "--id", "01"])
                .arg("--input-file")
                .arg(&digest)
                .arg("--output-file")
                .arg(&signature_file)
                .env("P11_KIT_SERVER_ADDRESS", &address))
            .expect_success();
            let raw = std::fs::read(&signature_file).expect("read the signature");
            verify(&key, message, &raw);
        } else {
            let finished = Proc::spawn(
                &mut client_process(&address, &format!("one-shot {}", dir.display())),
                None,
            )
            .wait(TOOL_TIMEOUT);
            assert!(
                finished.success() && finished.all_output().contains("1 signatures verified"),
                "a one-shot client failed:\n{finished}"
            );
        }
        // The server's per-connection process may still be finishing: wait (bounded) until it
        // has gone before reading the counters.
        wait_for_connection_processes_to_end(server_pid);
        let stats = sim_control(&control, "stats");
        apdus.push(stat(&stats, "total") - before);
        open_after.push(stat(&stats, "open_channel_count"));
    }
    let stats = sim_control(&control, "stats");
    println!(
        "one-shot connections: APDUs each {apdus:?}; logical channels open after each \
         {open_after:?}, at most {} (modem sessions open {}, at most {})",
        stat(&stats, "max_open_channels"),
        stat(&stats, "modem/open_sessions"),
        stat(&stats, "modem/max_open_sessions")
    );
    // Each connection runs a module instance of its own, and all of them use the channel the
    // endpoint's note records: no connection leaves a channel behind.
    assert_eq!(
        stat(&stats, "max_open_channels"),
        1,
        "one shared channel: {stats}"
    );
    assert!(
        stats.contains("\"interleaved\":0,"),
        "no sequence interleaved on the card: {stats}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client process: this test binary again, in the role given.
fn client_process(address: &str, role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args(["--exact", TEST_NAME, "--ignored", "--nocapture"])
        .env(CLIENT_ROLE, role)
        .env("P11_KIT_SERVER_ADDRESS", address);
    command
}

/// The client side: load `p11-kit-client.so`, find the card's key on the first slot with a
/// token and sign; `together` clients meet (both hold a session) before signing. CKM_ECDSA over
/// a SHA-256 digest: p11-kit 0.24's protocol does not pass CKM_ECDSA_SHA256 (C_SignInit through
/// p11-kit-client.so returns CKR_MECHANISM_INVALID).
fn client(role: &str) {
    let mut words = role.split(' ');
    let (kind, dir) = (words.next(), words.next().map(PathBuf::from));
    let dir = dir.expect("the test's directory");
    let key = certificate_key(&dir.join("client.pem"));
    let p11 = load_module(Path::new(CLIENT_MODULE));
    let (session, private) = session_with_client_key(&p11);
    let signatures = match kind {
        Some("together") => {
            let name = words.next().expect("a client name");
            std::fs::write(dir.join(format!("ready-{name}")), b"").expect("write ready file");
            let deadline = Instant::now() + Duration::from_secs(60);
            while ["first", "second"]
                .iter()
                .any(|n| !dir.join(format!("ready-{n}")).exists())
            {
                assert!(
                    Instant::now() < deadline,
                    "the other client never held a session"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            SIGNATURES_TOGETHER
        }
        Some("one-shot") => 1,
        other => panic!("unknown client role {other:?}"),
    };
    for number in 0..signatures {
        let message = format!("{role} signature {number}");
        let raw = session
            .sign(
                &Mechanism::Ecdsa,
                private,
                &Sha256::digest(message.as_bytes()),
            )
            .unwrap_or_else(|e| panic!("C_Sign {number}: {e}"));
        verify(&key, message.as_bytes(), &raw);
    }
    println!("{signatures} signatures verified");
    if kind == Some("together") {
        drop(session);
        p11.finalize().expect("C_Finalize");
    }
    // A one-shot client exits without C_Finalize.
}

fn verify(key: &VerifyingKey, message: &[u8], raw: &[u8]) {
    let signature = Signature::from_slice(raw).expect("r and s in range");
    key.verify(message, &signature)
        .unwrap_or_else(|e| panic!("a signature does not verify: {e}"));
}

/// p11-kit-server serves each connection in a child process of its own (`p11-kit-remote`);
/// after a client leaves, that process finalizes (or not) and exits. Waits until the server has
/// no child left, at most 30 s.
fn wait_for_connection_processes_to_end(server_pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let parent_of = |stat: &str| -> Option<u32> {
        // "pid (comm) state ppid …": comm may hold spaces, so read after its last ')'.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    loop {
        let serving = std::fs::read_dir("/proc")
            .expect("read /proc")
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .any(|stat| parent_of(&stat) == Some(server_pid));
        if !serving {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a p11-kit-remote process is still serving"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
