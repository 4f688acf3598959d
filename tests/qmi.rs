//! The module over QMI, in-process: the simulator serves QMUX on a pseudo-terminal (and, for
//! the proxy rows, as the qmi-proxy on an abstract socket of the test's own), the module opens
//! it as a `[[modem]]` slot with `protocol = "qmi"`. Every signature is verified against the
//! card's key; failures are exact CK_RVs.

mod helpers;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use helpers::TempDir;
use helpers::inprocess::*;
use helpers::sim_reader::unplug_sim_readers;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, ModemHandle, ModemOptions, SharedCard};
use sha2::{Digest, Sha256};

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();

struct QmiRig {
    modem: ModemHandle,
    dir: TempDir,
    config: String,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl Drop for QmiRig {
    fn drop(&mut self) {
        unsafe { C_Finalize(NULL) };
    }
}

/// How the module reaches the simulated modem.
#[derive(Clone, Copy, Debug)]
enum Path {
    Direct,
    /// The simulator's proxy mode on an abstract socket of this test's own.
    Proxy,
}

fn unique_socket(tag: &str) -> String {
    format!(
        "iotsafe-qmi-test-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    )
    .replace(['(', ')'], "")
}

fn rig(path: Path, profile: iotsafe_sim::Profile, card: CardOptions, module_keys: &str) -> QmiRig {
    let guard = module_lock();
    unplug_sim_readers();
    unsafe { C_Finalize(NULL) };
    let dir = TempDir::new(&format!(
        "iotsafe-qmi-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let link = dir.path().join("cdc-wdm");
    let card = SharedCard::from_profile(profile, card);
    let socket = unique_socket("proxy");
    let (proxy_socket, proxy_keys) = match path {
        Path::Direct => (None, "proxy = false".to_string()),
        Path::Proxy => (
            Some(socket.as_str()),
            format!("proxy_socket = \"{socket}\""),
        ),
    };
    let modem = iotsafe_sim::modem::qmi::spawn(card, &link, ModemOptions::default(), proxy_socket)
        .expect("spawn the simulated QMI modem");
    let config = format!(
        "lock_dir = \"{dir}\"\ncache_dir = \"{dir}/cache\"\n[pcsc]\nenabled = false\n[[modem]]\n\
         device = \"{}\"\nlabel = \"qmi modem\"\nprotocol = \"qmi\"\n{proxy_keys}\n{module_keys}\n",
        link.display(),
        dir = dir.path().display()
    );
    initialize_with_config(&config);
    QmiRig {
        modem,
        dir,
        config,
        _guard: guard,
    }
}

fn default_rig(path: Path, module_keys: &str) -> QmiRig {
    rig(
        path,
        iotsafe_sim::default_profile(),
        CardOptions::default(),
        module_keys,
    )
}

fn sign_and_check(rig: &QmiRig, msg: &[u8]) -> Result<(), CK_RV> {
    let mut s: CK_SESSION_HANDLE = 0;
    let rv = unsafe { C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut s) };
    if rv != CKR_OK {
        return Err(rv);
    }
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let sig = sign(s, CKM_ECDSA_SHA256, key, msg);
    unsafe { C_CloseSession(s) };
    let sig = sig?;
    let point = profile_client_point(rig.modem.card());
    assert!(
        p256_verify(&point, &Sha256::digest(msg), &sig),
        "the signature verifies against the card's key"
    );
    Ok(())
}

#[test]
fn signs_directly_and_through_the_proxy_mode_with_the_channel_in_cla() {
    for path in [Path::Direct, Path::Proxy] {
        let rig = default_rig(path, "");
        for i in 0..3 {
            sign_and_check(&rig, format!("{path:?} {i}").as_bytes()).unwrap();
        }
        let stats = rig.modem.stats();
        assert!(stats.qmi_send_apdu > 0, "{path:?}: APDUs went over QMI");
        assert_eq!(
            stats.qmi_cla_rewritten, 0,
            "{path:?}: the module put the channel into CLA"
        );
        assert_eq!(stats.qmi_open_channel, 1, "{path:?}: one channel");
        assert_eq!(stats.max_client_ids, 1, "{path:?}: one UIM client id");
        assert_eq!(stats.qmi_error.len(), 0, "{path:?}: {:?}", stats.qmi_error);
    }
}

#[test]
fn channels_four_and_up_use_the_further_cla_coding() {
    let rig = default_rig(Path::Direct, "");
    unsafe { C_Finalize(NULL) };
    // Other applications hold channels 1..=4: ours is 5 (CLA 0x41).
    let card = rig.modem.card();
    for ch in 1..=4u8 {
        assert_eq!(
            card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]),
            vec![ch, 0x90, 0x00]
        );
    }
    let _ = std::fs::remove_dir_all(rig.dir.path().join("cache"));
    for f in std::fs::read_dir(rig.dir.path()).unwrap().flatten() {
        if f.file_name().to_string_lossy().ends_with(".lock") {
            let _ = std::fs::remove_file(f.path());
        }
    }
    initialize_with_config(&rig.config);
    sign_and_check(&rig, b"on channel 5").unwrap();
    assert!(
        card.open_channels().contains(&5),
        "{:?}",
        card.open_channels()
    );
    assert_eq!(rig.modem.stats().qmi_cla_rewritten, 0);
}

#[test]
fn apdus_per_steady_state_signature() {
    let rig = default_rig(Path::Direct, "");
    sign_and_check(&rig, b"warm up").unwrap();
    let mut s: CK_SESSION_HANDLE = 0;
    assert_eq!(
        unsafe { C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut s) },
        CKR_OK
    );
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    sign(s, CKM_ECDSA_SHA256, key, b"first").unwrap();
    rig.modem.reset_stats();
    let card_before = rig.modem.card().stats().total;
    const N: u64 = 10;
    for i in 0..N {
        sign(s, CKM_ECDSA_SHA256, key, format!("steady {i}").as_bytes()).unwrap();
    }
    let stats = rig.modem.stats();
    let card_apdus = rig.modem.card().stats().total - card_before;
    println!(
        "QMI: {} Send APDU messages, {} card APDUs, {} QMI messages per steady-state signature",
        stats.qmi_send_apdu as f64 / N as f64,
        card_apdus as f64 / N as f64,
        stats.commands as f64 / N as f64
    );
    assert_eq!(
        stats.qmi_send_apdu,
        2 * N,
        "2 APDUs per signature, as over AT+CGLA"
    );
    assert_eq!(
        stats.commands,
        2 * N,
        "no other QMI message in steady state"
    );
    unsafe { C_CloseSession(s) };
}

#[test]
fn a_t0_card_answers_61xx_and_the_module_fetches_it() {
    let rig = rig(
        Path::Direct,
        iotsafe_sim::default_profile(),
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
        "",
    );
    for i in 0..3 {
        sign_and_check(&rig, format!("t0 {i}").as_bytes()).unwrap();
    }
    let get_responses = rig
        .modem
        .card()
        .stats()
        .by_ins
        .get(&0xC0)
        .copied()
        .unwrap_or(0);
    assert!(
        get_responses >= 3,
        "GET RESPONSE sent by the module: {get_responses}"
    );
}

#[test]
fn sim_removed_and_reinserted_behind_the_modem() {
    for path in [Path::Direct, Path::Proxy] {
        let rig = default_rig(path, "");
        let s = open_session(0);
        let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
        sign(s, CKM_ECDSA_SHA256, key, b"in").unwrap();
        rig.modem.card().remove();
        assert_eq!(
            sign(s, CKM_ECDSA_SHA256, key, b"out"),
            Err(CKR_DEVICE_REMOVED),
            "{path:?}"
        );
        assert_eq!(
            rig.modem.stats().qmi_error.get(&52).copied(),
            Some(1),
            "{path:?}: DeviceNotReady"
        );
        rig.modem.card().insert();
        sign_and_check(&rig, b"back in").unwrap();
    }
}

#[test]
fn a_sim_reset_underneath_closes_our_channel_and_the_module_reopens_it() {
    let rig = default_rig(Path::Direct, "");
    let s = open_session(0);
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    sign(s, CKM_ECDSA_SHA256, key, b"before").unwrap();
    // ModemManager (or the modem) resets the SIM: every logical channel is gone.
    rig.modem.card().reset();
    let sig = sign(s, CKM_ECDSA_SHA256, key, b"after reset").unwrap();
    let point = profile_client_point(rig.modem.card());
    assert!(p256_verify(&point, &Sha256::digest(b"after reset"), &sig));
    assert_eq!(rig.modem.stats().qmi_open_channel, 2, "reopened once");
    unsafe { C_CloseSession(s) };
}

#[test]
fn a_hung_modem_times_out_and_the_next_operation_works() {
    for path in [Path::Direct, Path::Proxy] {
        let rig = default_rig(path, "timeout_ms = 700");
        sign_and_check(&rig, b"before").unwrap();
        rig.modem.hang();
        let start = Instant::now();
        assert_eq!(
            sign_and_check(&rig, b"hung"),
            Err(CKR_DEVICE_ERROR),
            "{path:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "bounded by the timeout"
        );
        rig.modem.unhang();
        sign_and_check(&rig, b"after").unwrap();
    }
}

#[test]
fn a_sim_with_no_free_channel_is_a_device_error_until_one_is_free() {
    let mut profile = iotsafe_sim::default_profile();
    profile.max_channels = 1;
    let rig = rig(Path::Direct, profile, CardOptions::default(), "");
    unsafe { C_Finalize(NULL) };
    let card = rig.modem.card();
    assert_eq!(
        card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]),
        vec![0x01, 0x90, 0x00]
    );
    initialize_with_config(&rig.config);
    assert_eq!(sign_and_check(&rig, b"no channel"), Err(CKR_DEVICE_ERROR));
    assert_eq!(rig.modem.stats().qmi_error.get(&68).copied(), Some(1));
    assert_eq!(card.transmit(&[0x00, 0x70, 0x80, 0x01]), vec![0x90, 0x00]);
    sign_and_check(&rig, b"a channel again").unwrap();
}

#[test]
fn reinitialising_many_times_leaks_no_client_id_and_no_channel() {
    let rig = default_rig(Path::Proxy, "");
    for i in 0..20 {
        sign_and_check(&rig, format!("round {i}").as_bytes()).unwrap();
        unsafe { C_Finalize(NULL) };
        initialize_with_config(&rig.config);
    }
    let stats = rig.modem.stats();
    assert!(stats.max_client_ids <= 1, "{stats:?}");
    assert_eq!(stats.max_open_sessions, 1, "{stats:?}");
    assert_eq!(rig.modem.card().open_channels(), vec![0, 1]);
}

/// A stale client id in the shared file (the modem restarted) is replaced, not an error.
#[test]
fn a_stale_client_id_is_replaced() {
    let rig = default_rig(Path::Direct, "");
    sign_and_check(&rig, b"first").unwrap();
    let cid_file = std::fs::read_dir(rig.dir.path())
        .unwrap()
        .flatten()
        .map(|f| f.path())
        .find(|p| p.extension().is_some_and(|e| e == "qmi-uim-cid"))
        .expect("the client id file");
    // Shared like the lock files: the device's group may read and write it, whatever the umask.
    {
        use std::os::unix::fs::MetadataExt;
        let (file, device) = (
            std::fs::metadata(&cid_file).unwrap(),
            std::fs::metadata(rig.dir.path().join("cdc-wdm")).unwrap(),
        );
        assert_eq!(file.mode() & 0o777, 0o660, "{cid_file:?}");
        assert_eq!(file.gid(), device.gid(), "{cid_file:?}");
    }
    std::fs::write(&cid_file, "77\n").unwrap();
    sign_and_check(&rig, b"second").unwrap();
    assert_eq!(
        rig.modem.stats().qmi_error.get(&7).copied(),
        Some(1),
        "InvalidClientId once"
    );
    assert_ne!(std::fs::read_to_string(&cid_file).unwrap(), "77\n");
}

fn not_a_qmi_device_config(dir: &TempDir, device: &std::path::Path, keys: &str) -> String {
    format!(
        "lock_dir = \"{d}\"\ncache_dir = \"{d}/cache\"\n[pcsc]\nenabled = false\n\
         [[modem]]\ndevice = \"{}\"\nprotocol = \"qmi\"\ntimeout_ms = 800\n{keys}\n",
        device.display(),
        d = dir.path().display()
    )
}

/// The slot's token state after `C_Initialize` with `config`: `C_GetTokenInfo`'s CK_RV.
fn token_info_rv(config: &str) -> CK_RV {
    initialize_with_config(config);
    let mut info: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    let rv = unsafe { C_GetTokenInfo(0, &mut info) };
    unsafe { C_Finalize(NULL) };
    rv
}

#[test]
fn an_at_modem_or_a_silent_pty_is_not_a_qmi_device() {
    let _guard = module_lock();
    unplug_sim_readers();
    unsafe { C_Finalize(NULL) };
    let dir = TempDir::new(&format!("iotsafe-qmi-notqmi-{}", std::process::id()));
    // The AT simulator answers QMUX with ERROR lines.
    let at_link = dir.path().join("at-modem");
    let card = SharedCard::from_profile(iotsafe_sim::default_profile(), CardOptions::default());
    let at = iotsafe_sim::modem::spawn(card.clone(), &at_link, ModemOptions::default())
        .expect("AT modem");
    let start = Instant::now();
    let rv = token_info_rv(&not_a_qmi_device_config(&dir, &at_link, "proxy = false"));
    assert!(rv == CKR_TOKEN_NOT_PRESENT, "AT modem: {rv:#x}");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(at);
    // A hung modem answers nothing at all.
    let silent_link = dir.path().join("silent");
    let silent =
        iotsafe_sim::modem::spawn(card, &silent_link, ModemOptions::default()).expect("AT modem");
    silent.hang();
    let start = Instant::now();
    let rv = token_info_rv(&not_a_qmi_device_config(
        &dir,
        &silent_link,
        "proxy = false",
    ));
    assert!(rv == CKR_TOKEN_NOT_PRESENT, "silent pty: {rv:#x}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "within the timeout: {:?}",
        start.elapsed()
    );
}

#[test]
fn a_proxy_that_hangs_up_is_a_clear_error_not_a_hang() {
    let _guard = module_lock();
    unplug_sim_readers();
    unsafe { C_Finalize(NULL) };
    let dir = TempDir::new(&format!("iotsafe-qmi-refuse-{}", std::process::id()));
    let link: PathBuf = dir.path().join("cdc-wdm");
    let card = SharedCard::from_profile(iotsafe_sim::default_profile(), CardOptions::default());
    let modem = iotsafe_sim::modem::qmi::spawn(card, &link, ModemOptions::default(), None)
        .expect("QMI modem");
    let name = unique_socket("refuse");
    let listener = UnixListener::bind_addr(
        &SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name"),
    )
    .expect("listen");
    // Like qmi-proxy refusing a device (or a user): accept, read the open, hang up.
    let refuser = std::thread::spawn(move || {
        for _ in 0..4 {
            if let Ok((mut c, _)) = listener.accept() {
                let mut buf = [0u8; 256];
                let _ = std::io::Read::read(&mut c, &mut buf);
            }
        }
    });
    let start = Instant::now();
    let rv = token_info_rv(&not_a_qmi_device_config(
        &dir,
        &link,
        &format!("proxy_socket = \"{name}\""),
    ));
    assert!(rv == CKR_TOKEN_NOT_PRESENT, "refusing proxy: {rv:#x}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(modem.stats().commands, 0, "nothing reached the device");
    drop(refuser);
}

/// A pseudo-terminal whose other side answers every write with an AT `ERROR` line, as an AT
/// port does to a line it cannot parse, linked at `link`; returns the answering thread.
fn pty_answering_error_lines(link: &std::path::Path) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc pty calls on a descriptor owned here; ptsname_r writes at most 128.
    let (mut master, path) = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0 && libc::grantpt(fd) == 0 && libc::unlockpt(fd) == 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        (std::fs::File::from_raw_fd(fd), path)
    };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("the pty's slave");
    // SAFETY: termios calls on an open tty with a zero-initialised struct.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(
            libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), &mut t),
            0
        );
        libc::cfmakeraw(&mut t);
        assert_eq!(
            libc::tcsetattr(std::os::fd::AsRawFd::as_raw_fd(&slave), libc::TCSANOW, &t),
            0
        );
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&path, link).expect("symlink");
    std::thread::spawn(move || {
        let _slave = slave;
        let mut buf = [0u8; 512];
        // Until the test ends (the module's read side closes or the process exits).
        for _ in 0..8 {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = master.write_all(b"\r\nERROR\r\n");
                }
                _ => return,
            }
        }
    })
}

#[test]
fn a_port_that_answers_at_error_lines_is_not_a_qmi_device() {
    let _guard = module_lock();
    unplug_sim_readers();
    unsafe { C_Finalize(NULL) };
    let dir = TempDir::new(&format!("iotsafe-qmi-at-port-{}", std::process::id()));
    let link = dir.path().join("ttyUSB2");
    let _answering = pty_answering_error_lines(&link);
    let start = Instant::now();
    // A minute's timeout: the answer, not the deadline, tells it apart.
    let config = not_a_qmi_device_config(&dir, &link, "proxy = false")
        .replace("timeout_ms = 800", "timeout_ms = 60000");
    let rv = token_info_rv(&config);
    assert_eq!(rv, CKR_TOKEN_NOT_PRESENT, "{rv:#x}");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "told apart by the answer, not by the timeout: {:?}",
        start.elapsed()
    );
}
