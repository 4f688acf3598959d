//! Two instances of the module in one process (issue #11), as when an application loads the
//! module itself and again through a library (Anjay and the libp11 engine): two copies of the
//! .so, each initialised, signing at once from a thread each (`tests/c/two_instances.c`), on a
//! modem slot and over pcscd. Every signature verifies against the card's certificate, no
//! sequence interleaves on the card, and both instances use the one recorded channel.

mod helpers;

use std::path::{Path, PathBuf};
use std::process::Command;

use helpers::stack::{
    Proc, SimModem, Stack, TOOL_TIMEOUT, certificate_key, compile_test_program, release_module,
    sim_control,
};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

const SIGNATURES: usize = 40;

/// The C program and two copies of the module in `dir`.
fn prepare(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let exe = compile_test_program(dir, "two_instances", &["-ldl", "-lpthread"]);
    let (first, second) = (dir.join("first.so"), dir.join("second.so"));
    for copy in [&first, &second] {
        std::fs::copy(release_module(), copy).expect("copy the module");
    }
    (exe, first, second)
}

fn check_two_instances(label: &str, command: &mut Command, certificate: &Path) {
    let key = certificate_key(certificate);
    let finished = Proc::spawn(command, None).wait(TOOL_TIMEOUT);
    assert!(
        finished.success(),
        "{label}: the process failed:\n{finished}"
    );
    let mut per_instance = std::collections::BTreeMap::<String, usize>::new();
    for line in finished.stdout.lines() {
        let rest = line
            .strip_prefix("signature ")
            .unwrap_or_else(|| panic!("{label}: unexpected line {line:?}"));
        let (message, hex_signature) = rest.split_once(' ').expect("message and signature");
        let raw = hex::decode(hex_signature).expect("hex");
        let signature = Signature::from_slice(&raw).expect("r and s in range");
        key.verify(message.as_bytes(), &signature)
            .unwrap_or_else(|e| panic!("{label}: {message:?} does not verify: {e}"));
        let who = message.split('-').next().unwrap_or_default().to_string();
        *per_instance.entry(who).or_default() += 1;
    }
    println!("{label}: verified signatures per instance {per_instance:?}");
    for who in ["first", "second"] {
        assert_eq!(per_instance.get(who), Some(&SIGNATURES), "{label}: {who}");
    }
}

fn assert_one_channel_no_interleaving(label: &str, stats: &str) {
    let v: serde_json::Value = serde_json::from_str(stats).expect("stats JSON");
    println!(
        "{label}: the card's open channels at most {}, {} interleaved",
        v["max_open_channels"], v["interleaved"]
    );
    assert_eq!(v["interleaved"].as_u64(), Some(0), "{label}: {stats}");
    assert_eq!(v["max_open_channels"].as_u64(), Some(1), "{label}: {stats}");
}

#[test]
#[ignore = "needs the release build of the module (scripts/test.sh builds it)"]
fn two_instances_in_one_process_share_a_modem_slot() {
    let dir = std::env::temp_dir().join(format!("iotsafe-two-instances-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let (exe, first, second) = prepare(&dir);
    let modem = SimModem::start(&dir, &["--latency-apdu", "1ms"]);
    let control = modem.control.clone();
    let config = modem.module_config(
        &format!(
            "lock_dir = \"{dir}\"\ncache_dir = \"{dir}/cache\"",
            dir = dir.display()
        ),
        "",
    );
    sim_control(&control, "reset-stats");
    check_two_instances(
        "modem",
        Command::new(&exe)
            .arg(&first)
            .arg(&second)
            .arg(SIGNATURES.to_string())
            .env("IOTSAFE_PKCS11_CONFIG", &config),
        &dir.join("client.pem"),
    );
    assert_one_channel_no_interleaving("modem", &sim_control(&control, "stats"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs the pcscd+vpcd stack (scripts/test.sh starts it)"]
fn two_instances_in_one_process_share_a_pcsc_reader() {
    let stack = Stack::get();
    let _lock = stack.lock();
    let dir = stack.scratch("two-instances");
    let (exe, first, second) = prepare(&dir);
    stack.reset_stats();
    check_two_instances(
        "pcscd",
        Command::new(&exe)
            .arg(&first)
            .arg(&second)
            .arg(SIGNATURES.to_string())
            .env_remove("IOTSAFE_PKCS11_CONFIG"),
        &stack.card_file("client.pem"),
    );
    assert_one_channel_no_interleaving("pcscd", &stack.sim_command("stats"));
}
