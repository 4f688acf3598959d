//! Forked children on a modem slot and on a PC/SC reader (issue #11): a server that loaded the module and signed (so it
//! holds the port, its turn lock and a logical channel) forks workers, and each worker calls
//! `C_Initialize` itself (half of them after a `C_Finalize`, as some applications do), signs and
//! leaves with `_exit`, while the parent keeps signing. The C program `tests/c/fork_sign.c` is
//! the server (a C program, so that nothing but the module runs in the process that forks).
//! Every signature verifies against the card's certificate, the card never sees two sequences
//! interleaved, and the logical channels open on the card stay bounded.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use helpers::stack::{
    Proc, SimModem, Stack, TOOL_TIMEOUT, certificate_key, compile_test_program, release_module,
    sim_control, stat,
};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

const CHILDREN: usize = 4;
const SIGNATURES_PER_CHILD: usize = 5;
/// What a forked child gets from a call before its own `C_Initialize`.
const CKR_CRYPTOKI_NOT_INITIALIZED: &str = "0x00000190";

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn forked_children_sign_on_a_modem_slot_over_cgla() {
    forked_children_sign("cgla", &["--at", "both"], "cgla");
}

#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn forked_children_sign_on_a_modem_slot_over_csim_with_t0() {
    forked_children_sign("csim", &["--at", "csim", "--t0"], "csim");
}

fn forked_children_sign(name: &str, modem_flags: &[&str], at_mode: &str) {
    let dir = std::env::temp_dir().join(format!("iotsafe-fork-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let exe = compile_test_program(&dir, "fork_sign", &["-ldl"]);

    let mut args = vec!["--latency-apdu", "2ms"];
    args.extend_from_slice(modem_flags);
    let modem = SimModem::start(&dir, &args);
    let (control, config) = (
        modem.control.clone(),
        modem.module_config("", &format!("at_mode = \"{at_mode}\"")),
    );
    let key = certificate_key(&dir.join("client.pem"));
    sim_control(&control, "reset-stats");
    let mut server = Command::new(&exe);
    server.env("IOTSAFE_PKCS11_CONFIG", &config);
    check_forking_server(at_mode, &mut server, &key, || {
        sim_control(&control, "stats")
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same over pcscd: the parent's PC/SC context and card handle are the parent's; each
/// worker connects on its own.
#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn forked_children_sign_on_a_pcsc_reader() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch("fork-pcsc");
    let exe = compile_test_program(&dir, "fork_sign", &["-ldl"]);
    let key = certificate_key(&stack.card_file("client.pem"));
    stack.reset_stats();
    let mut server = Command::new(&exe);
    server.env_remove("IOTSAFE_PKCS11_CONFIG");
    check_forking_server("pcscd", &mut server, &key, || stack.sim_command("stats"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the forking server (`tests/c/fork_sign.c`) and checks every signature, that every
/// child signed and first saw nothing of its parent's state, that no sequence interleaved and
/// that all processes used one channel.
fn check_forking_server(
    label: &str,
    server: &mut Command,
    key: &p256::ecdsa::VerifyingKey,
    stats: impl Fn() -> String,
) {
    let at_mode = label;
    let finished = Proc::spawn(
        server
            .arg(release_module())
            .arg(CHILDREN.to_string())
            .arg(SIGNATURES_PER_CHILD.to_string()),
        None,
    )
    .wait(TOOL_TIMEOUT);
    let stats = stats();
    for line in finished.stdout.lines() {
        if !line.starts_with("signature ") {
            println!("{at_mode}: {line}");
        }
    }
    assert!(finished.success(), "the forking server failed:\n{finished}");

    let mut per_signer = std::collections::BTreeMap::<String, usize>::new();
    for line in finished.stdout.lines() {
        let Some(rest) = line.strip_prefix("signature ") else {
            continue;
        };
        let (message, signature_hex) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        let raw = hex::decode(signature_hex).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let signature = Signature::from_slice(&raw).expect("r and s in range");
        key.verify(message.as_bytes(), &signature)
            .unwrap_or_else(|e| panic!("signature of {message:?} does not verify: {e}"));
        let signer = message.split('-').next().unwrap_or_default().to_string();
        *per_signer.entry(signer).or_default() += 1;
    }
    println!("{at_mode}: verified signatures per process {per_signer:?}");
    for child in 0..CHILDREN {
        assert_eq!(
            per_signer.get(&format!("child{child}")).copied(),
            Some(SIGNATURES_PER_CHILD),
            "child {child} signs every time:\n{finished}"
        );
        if child % 2 == 0 {
            let line = format!(
                "child {child} C_GetSlotList before C_Initialize: {CKR_CRYPTOKI_NOT_INITIALIZED}"
            );
            assert!(
                finished.stdout.lines().any(|l| l == line),
                "a forked child does not use the parent's state before its own C_Initialize:\n{finished}"
            );
        }
    }
    assert!(
        per_signer.get("parent").copied().unwrap_or(0) >= 2,
        "the parent signs before and after forking:\n{finished}"
    );
    assert!(
        stats.contains("\"interleaved\":0,"),
        "no sequence interleaved on the card: {stats}"
    );
    let open_now = stat(&stats, "open_channel_count");
    let most_open = stat(&stats, "max_open_channels");
    println!(
        "{at_mode}: logical channels open on the card after the run {open_now}, at most {most_open}"
    );
    // Every process of the module uses the channel the endpoint's note records.
    assert_eq!(most_open, 1, "one shared channel: {stats}");
}

/// A worker forked by a process that is then killed (`kill -9`) inside an operation, with the
/// port's turn held: once the card answers again the worker still signs, because nothing the
/// dead parent held stays held through what the worker inherited from it.
#[test]
#[ignore = "needs the release build of the module and simulator (cargo build --release --workspace)"]
fn a_worker_signs_after_its_parent_is_killed_inside_an_operation() {
    let dir = std::env::temp_dir().join(format!("iotsafe-fork-worker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let exe = compile_test_program(&dir, "fork_worker", &["-ldl"]);
    let modem = SimModem::start(&dir, &["--latency-apdu", "2ms", "--at", "both"]);
    let (control, config) = (
        modem.control.clone(),
        modem.module_config("", "at_mode = \"cgla\""),
    );
    let key = certificate_key(&dir.join("client.pem"));

    let mut server = Proc::spawn(
        Command::new(&exe)
            .arg(release_module())
            .arg(&dir)
            .env("IOTSAFE_PKCS11_CONFIG", &config),
        None,
    );
    let parent: i32 = server.wait_for_line(Duration::from_secs(60), |l| {
        l.strip_prefix("parent pid ")?.trim().parse().ok()
    });
    let worker_out = dir.join("worker.out");
    let worker = Worker(
        wait_for_worker_line(&worker_out, |l| {
            l.strip_prefix("worker pid ")?.trim().parse().ok()
        }),
        exe.clone(),
    );
    wait_for_worker_line(&worker_out, |l| (l == "worker ready").then_some(()));

    // The parent's next signature hangs on a mute card, inside its turn on the port.
    sim_control(&control, "fault mute ins=2B");
    std::fs::write(dir.join("parent-go"), b"").expect("write parent-go");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sim_control(&control, "fault").contains("\"muted\":true") {
        assert!(
            Instant::now() < deadline,
            "the parent never reached the card"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the process this test started (its pid as it printed it).
    assert_eq!(
        unsafe { libc::kill(parent, libc::SIGKILL) },
        0,
        "kill the parent"
    );
    let parent_output = server.wait(TOOL_TIMEOUT);
    sim_control(&control, "fault clear");

    std::fs::write(dir.join("worker-go"), b"").expect("write worker-go");
    let line = wait_for_worker_line(&worker_out, |l| {
        l.starts_with("signature worker-")
            .then_some(l)
            .filter(|l| l.contains("-signature1 "))
            .map(str::to_string)
    });
    let (message, signature_hex) = line["signature ".len()..]
        .split_once(' ')
        .expect("message and signature");
    let raw = hex::decode(signature_hex).expect("hex signature");
    key.verify(
        message.as_bytes(),
        &Signature::from_slice(&raw).expect("r and s in range"),
    )
    .unwrap_or_else(|e| panic!("the worker's signature does not verify: {e}\n{parent_output}"));
    drop(worker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (at most 60 s) for a line of the worker's output file for which `pick` says something.
fn wait_for_worker_line<T>(path: &Path, pick: impl Fn(&str) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(found) = text.lines().find_map(&pick) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not print the line awaited; it printed:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The forked worker (its pid and program): killed (SIGKILL) when dropped if it is still there.
/// Its parent is dead, so it is nobody's child, and it must not outlive a failed test.
struct Worker(i32, PathBuf);

impl Drop for Worker {
    fn drop(&mut self) {
        // Only if the pid still names our program (not a process that reused the number).
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        let program = self.1.as_os_str().as_encoded_bytes();
        if cmdline.starts_with(program) {
            // SAFETY: kill(2) on the worker this test's program forked.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
}
