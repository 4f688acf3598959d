//! Bad surroundings of the shared-card machinery (issue #11), each with real processes on a
//! simulated modem: a port another program holds exclusively, lock and note files a dead process
//! left garbled, a cache directory the module may not use. The module must give a slot without
//! token (or work without the cache) and say why in one log line, never fail to load.

mod helpers;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use helpers::stack::{Finished, Proc, SimModem, build_first_signature, release_module, run};

const CHILD: &str = "IOTSAFE_BAD_INPUT_CHILD";
const NOBODY: u32 = 65534;
const DIALOUT: u32 = 20;

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotsafe-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// One process that signs once with the key labelled `client` through `config` (warnings on),
/// and checks the signature with OpenSSL against the card's certificate.
fn sign_in_new_process(dir: &Path, config: &Path, cache_home: &Path) -> Finished {
    let helper = dir.join("first_signature");
    if !helper.exists() {
        build_first_signature(dir);
    }
    let message = dir.join("message.txt");
    std::fs::write(&message, b"bad surroundings\n").expect("message");
    let signature = dir.join("message.sig");
    let _ = std::fs::remove_file(&signature);
    let signed = run(Command::new(&helper)
        .arg(release_module())
        .arg("client")
        .arg(&message)
        .arg(&signature)
        .env("IOTSAFE_PKCS11_CONFIG", config)
        .env("IOTSAFE_PKCS11_LOG", "warn")
        .env("XDG_CACHE_HOME", cache_home));
    assert!(signed.success(), "the process signs:\n{signed}");
    let public_key = dir.join("client-pub.pem");
    if !public_key.exists() {
        run(Command::new("openssl")
            .args(["x509", "-pubkey", "-noout", "-in"])
            .arg(dir.join("client.pem"))
            .arg("-out")
            .arg(&public_key))
        .expect_success();
    }
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&public_key)
        .arg("-signature")
        .arg(&signature)
        .arg(&message))
    .expect_success();
    signed
}

fn warnings_about(out: &str, topic: &str) -> usize {
    out.lines()
        .filter(|l| l.contains("WARN") && l.contains(topic))
        .count()
}

#[test]
#[ignore = "needs the release build of the module (scripts/test.sh builds it)"]
fn an_unusable_cache_directory_means_no_cache_and_one_warning() {
    let dir = scratch("unusable-cache");
    let modem = SimModem::start(&dir, &[]);
    // A regular file where the cache directory's parent should be: no user can create it.
    std::fs::write(dir.join("blocker"), b"not a directory").expect("blocker file");
    let config = modem.module_config(
        &format!(
            "lock_dir = \"{}\"\ncache_dir = \"{}\"",
            dir.display(),
            dir.join("blocker/cache").display()
        ),
        "",
    );
    let mut apdus = Vec::new();
    for round in 0..2 {
        let before = modem.stats()["total"].as_u64().expect("APDU total");
        let signed = sign_in_new_process(&dir, &config, &dir.join("xdg"));
        let after = modem.stats()["total"].as_u64().expect("APDU total");
        apdus.push(after - before);
        let out = signed.all_output();
        assert_eq!(
            warnings_about(&out, "content cache"),
            1,
            "round {round}: one warning about the cache:\n{out}"
        );
    }
    println!("APDUs per process without a usable cache: {apdus:?}");
    // Nothing was cached: the second process read the card again (a warm start takes ≤ 4).
    assert!(apdus[1] > 4, "the card was read again: {apdus:?}");
    assert!(!dir.join("xdg").exists(), "no cache fell back elsewhere");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs the release build of the module (scripts/test.sh builds it)"]
fn garbled_lock_and_note_files_of_a_dead_process_are_ignored() {
    let dir = scratch("garbled-lock");
    let modem = SimModem::start(&dir, &[]);
    let lock_dir = dir.join("lock");
    std::fs::create_dir_all(&lock_dir).expect("lock directory");
    let config = modem.module_config(&format!("lock_dir = \"{}\"", lock_dir.display()), "");
    let cache = dir.join("xdg");
    sign_in_new_process(&dir, &config, &cache);
    // What a process that died while writing could leave: the note torn in half, junk in
    // every turn file.
    let mut garbled = 0;
    for entry in std::fs::read_dir(&lock_dir).expect("lock files") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read a lock file");
        let torn = if bytes.is_empty() {
            b"\x00\xffjunk from a dead process".to_vec()
        } else {
            bytes[..bytes.len() / 2].to_vec()
        };
        std::fs::write(&path, torn).expect("garble a lock file");
        garbled += 1;
    }
    assert!(
        garbled >= 2,
        "the module left its turn files in {lock_dir:?}"
    );
    let signed = sign_in_new_process(&dir, &config, &cache);
    assert_eq!(
        warnings_about(&signed.all_output(), ""),
        0,
        "a garbled note is ignored quietly:\n{signed}"
    );
    let stats = modem.stats();
    assert_eq!(stats["interleaved"].as_u64(), Some(0), "{stats}");
    // The torn note no longer names the channel: a new one was opened, the old one is
    // the card's to close on the next power cycle (it cannot be proven ours).
    assert!(stats["open_channel_count"].as_u64() <= Some(2), "{stats}");
    // And a third process is back on one recorded channel and the cache.
    let before = stats["total"].as_u64().expect("APDU total");
    sign_in_new_process(&dir, &config, &cache);
    let warm = modem.stats()["total"].as_u64().expect("APDU total") - before;
    assert!(warm <= 4, "warm again after the rebuild: {warm} APDUs");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root (a process as nobody) and the release build of the module"]
fn a_port_another_program_holds_exclusively_is_a_slot_without_token() {
    if std::env::var_os(CHILD).is_some() {
        return list_slots_as_child();
    }
    assert!(
        rustix::process::geteuid().is_root(),
        "run as root: the test starts processes as nobody"
    );
    let dir = scratch("exclusive-port");
    let modem = SimModem::start(&dir, &[]);
    // The port as udev hands a modem out (group dialout, 0660); TIOCEXCL binds every user but
    // root, so the module runs as nobody in that group.
    let device = std::fs::canonicalize(&modem.link).expect("the pty behind the link");
    std::os::unix::fs::chown(&device, Some(0), Some(DIALOUT)).expect("chgrp the pty");
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let lock_dir = dir.join("lock");
    std::fs::create_dir_all(&lock_dir).expect("lock directory");
    std::fs::set_permissions(&lock_dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let config = modem.module_config(&format!("lock_dir = \"{}\"", lock_dir.display()), "");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let home = dir.join("nobody");
    std::fs::create_dir_all(&home).expect("nobody's home");
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).expect("chown");
    let as_nobody = || {
        let exe = std::env::current_exe().expect("test binary");
        Proc::spawn(
            Command::new("setpriv")
                .arg(format!("--reuid={NOBODY}"))
                .arg(format!("--regid={NOBODY}"))
                .arg(format!("--groups={DIALOUT}"))
                .arg(&exe)
                .args([
                    "--exact",
                    "a_port_another_program_holds_exclusively_is_a_slot_without_token",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD, "1")
                .env("IOTSAFE_PKCS11_CONFIG", &config)
                .env("IOTSAFE_PKCS11_LOG", "warn")
                .env("HOME", &home)
                .env_remove("XDG_CACHE_HOME"),
            None,
        )
        .wait(Duration::from_secs(60))
    };

    let holder = serialport::new(device.to_string_lossy(), 115_200)
        .exclusive(true)
        .open_native()
        .expect("hold the port exclusively (TIOCEXCL)");
    let held = as_nobody();
    assert!(held.success(), "the module loads and lists slots:\n{held}");
    let out = held.all_output();
    assert!(
        out.contains("slots=1 with_token=0"),
        "a slot without token while another program holds the port:\n{out}"
    );
    assert!(
        warnings_about(&out, "another program") >= 1,
        "a log line says why:\n{out}"
    );
    drop(holder);
    let free = as_nobody();
    let out = free.all_output();
    assert!(
        free.success() && out.contains("slots=1 with_token=1"),
        "the token once the port is free:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// In the process as nobody: C_Initialize through the release build, then the slot counts.
fn list_slots_as_child() {
    let p11 = helpers::stack::load_module(&release_module());
    let slots = p11.get_all_slots().expect("C_GetSlotList");
    let with_token = p11.get_slots_with_token().expect("C_GetSlotList(true)");
    println!("slots={} with_token={}", slots.len(), with_token.len());
}
