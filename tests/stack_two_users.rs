//! Two users on one modem port (issue #11): root and `nobody`, both allowed to open the port
//! through its group (`dialout`, mode 0660, as udev sets up a modem), sign at once. Both see the
//! token and sign, every signature verifies against the card's certificate, the card never sees
//! two sequences interleaved, and both users' processes share one logical channel: the turn
//! lock files and the note beside the port belong to the port's group. Each user keeps a content
//! cache of its own.

mod helpers;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use helpers::stack::{
    Proc, SimModem, certificate_key, load_module, release_module, session_with_client_key,
    sim_control,
};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;

const CHILD: &str = "IOTSAFE_TWO_USERS_CHILD";
const SIGNING_TIME: Duration = Duration::from_secs(5);
const NOBODY: u32 = 65534;
const DIALOUT: u32 = 20;

#[test]
#[ignore = "needs root and the release build of the module (scripts/test.sh builds it)"]
fn root_and_nobody_share_a_modem_port_through_its_group() {
    if let Some(config) = std::env::var_os(CHILD) {
        return sign_until_time_is_up(Path::new(&config));
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "run as root: the test starts a process as nobody"
    );
    let dir = std::env::temp_dir().join(format!("iotsafe-two-users-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let modem = SimModem::start(&dir, &["--latency-apdu", "1ms"]);
    let (link, control) = (modem.link.clone(), modem.control.clone());
    // The port as udev hands a modem out: group dialout, 0660.
    let device = std::fs::canonicalize(&link).expect("the pty behind the link");
    std::os::unix::fs::chown(&device, Some(0), Some(DIALOUT)).expect("chgrp the pty");
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    // Lock files and notes of this test only (pty numbers are reused), in a directory anyone
    // may create files in, like /run/lock.
    let lock_dir = dir.join("lock");
    std::fs::create_dir_all(&lock_dir).expect("lock directory");
    std::fs::set_permissions(&lock_dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let config = modem.module_config(&format!("lock_dir = \"{}\"", lock_dir.display()), "");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let nobody_home = dir.join("nobody");
    std::fs::create_dir_all(&nobody_home).expect("nobody's home");
    std::os::unix::fs::chown(&nobody_home, Some(NOBODY), Some(NOBODY)).expect("chown");
    sim_control(&control, "reset-stats");

    let exe = std::env::current_exe().expect("test binary");
    let test_args = [
        "--exact",
        "root_and_nobody_share_a_modem_port_through_its_group",
        "--ignored",
        "--nocapture",
    ];
    let as_root = Proc::spawn(
        Command::new(&exe)
            .args(test_args)
            .env(CHILD, &config)
            .env("IOTSAFE_PKCS11_CONFIG", &config)
            .env("XDG_CACHE_HOME", dir.join("root-cache")),
        None,
    );
    let as_nobody = Proc::spawn(
        Command::new("setpriv")
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg(format!("--groups={DIALOUT}"))
            .arg(&exe)
            .args(test_args)
            .env(CHILD, &config)
            .env("IOTSAFE_PKCS11_CONFIG", &config)
            .env("HOME", &nobody_home)
            .env_remove("XDG_CACHE_HOME"),
        None,
    );
    let mut counts = Vec::new();
    for (who, child) in [("root", as_root), ("nobody", as_nobody)] {
        let finished = child.wait(SIGNING_TIME + Duration::from_secs(60));
        assert!(finished.success(), "{who}'s process failed:\n{finished}");
        let out = finished.all_output();
        let count: usize = out
            .lines()
            .find_map(|l| l.strip_suffix(" signatures verified")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count in {who}'s output:\n{out}"));
        counts.push((who, count));
    }
    let stats: serde_json::Value =
        serde_json::from_str(&sim_control(&control, "stats")).expect("stats JSON");
    println!(
        "signatures verified per user {counts:?}; the card's open channels at most {}, {} \
         interleaved",
        stats["max_open_channels"], stats["interleaved"]
    );
    assert!(
        counts.iter().all(|&(_, n)| n > 0),
        "both users sign: {counts:?}"
    );
    assert_eq!(stats["interleaved"].as_u64(), Some(0), "{stats}");
    assert_eq!(
        stats["max_open_channels"].as_u64(),
        Some(1),
        "both users' processes use the one recorded channel: {stats}"
    );
    assert!(
        nobody_home.join(".cache/iotsafe-pkcs11").is_dir(),
        "nobody keeps a content cache of its own"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The child: one session, signing until the time is up, every signature checked against the
/// card's certificate.
fn sign_until_time_is_up(config: &Path) {
    let key = certificate_key(&config.with_file_name("client.pem"));
    let p11 = load_module(&release_module());
    let (session, private) = session_with_client_key(&p11);
    let start = Instant::now();
    let mut signed = 0usize;
    while start.elapsed() < SIGNING_TIME {
        let message = format!(
            "user {} signature {signed}",
            rustix::process::getuid().as_raw()
        );
        let raw = session
            .sign(&Mechanism::EcdsaSha256, private, message.as_bytes())
            .unwrap_or_else(|e| panic!("C_Sign {signed}: {e}"));
        let signature = Signature::from_slice(&raw).expect("r and s in range");
        key.verify(message.as_bytes(), &signature)
            .unwrap_or_else(|e| panic!("signature {signed}: {e}"));
        signed += 1;
    }
    println!("{signed} signatures verified");
}
