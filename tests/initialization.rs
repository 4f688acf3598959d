//! Initialisation as real consumers do it, and what a bad `C_Initialize` argument or a bad
//! configuration gives: Azure IoT Edge's aziot-keyd, `pReserved` that is not a configuration
//! string, configuration errors with their log line, files that must not block or be read
//! without end, `C_Login(CKU_SO)`, and what AWS IoT Greengrass needs of a token.
//!
//! The cases that read the log or could crash run in a child process (this binary again,
//! `child_process_entry`), with their own environment and configuration file.

mod helpers;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use helpers::inprocess::*;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, SharedCard};
use sha2::{Digest, Sha256};

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

// ---- Azure IoT Edge (aziot-keyd) ----

/// Calls of the application's mutex callbacks: the module locks on its own and makes none.
static MUTEX_CALLS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn create_mutex(mutex: *mut *mut std::ffi::c_void) -> CK_RV {
    MUTEX_CALLS.fetch_add(1, Ordering::SeqCst);
    unsafe { *mutex = std::ptr::dangling_mut() };
    CKR_OK
}

unsafe extern "C" fn mutex_op(_: *mut std::ffi::c_void) -> CK_RV {
    MUTEX_CALLS.fetch_add(1, Ordering::SeqCst);
    CKR_OK
}

fn provisioning_card() -> Harness {
    Harness::with_cards(vec![SharedCard::from_profile(
        iotsafe_sim::default_profile_with_provisioning(),
        CardOptions::default(),
    )])
}

/// aziot-keyd's `find one object by class and label` (FindObjectsInit, one FindObjects of
/// one handle, FindObjectsFinal).
fn aziot_find(
    f: &CK_FUNCTION_LIST,
    session: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
    label: &str,
) -> Option<CK_OBJECT_HANDLE> {
    let mut class = class;
    let mut label = label.as_bytes().to_vec();
    let mut template = [class_attr(&mut class), attr(CKA_LABEL, &mut label)];
    unsafe {
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(session, template.as_mut_ptr(), 2),
            CKR_OK
        );
        let (mut handle, mut count) = (CK_INVALID_HANDLE, 0);
        assert_eq!(
            f.C_FindObjects.unwrap()(session, &mut handle, 1, &mut count),
            CKR_OK
        );
        assert_eq!(f.C_FindObjectsFinal.unwrap()(session), CKR_OK);
        (count == 1).then_some(handle)
    }
}

/// What aziot-keyd's `pkcs11` crate does (Azure/iot-identity-service, pkcs11/pkcs11/src/
/// context.rs and session.rs): the 2.x function list (version major 2 required), C_Initialize
/// with its four mutex callbacks and `CKF_LIBRARY_CANT_CREATE_OS_THREADS` only, C_GetInfo
/// (cryptokiVersion major 2, minor ≥ 20 required), slots with a token, an R/W session, a user
/// login with the URI's PIN, and `create_key_pair_if_not_exists`: look the pair up by label,
/// destroy nothing (none there), generate an EC P-256 pair with its templates, look it up again.
#[test]
fn aziot_keyd_initialises_and_creates_a_key_pair_by_label_in_the_first_slot() {
    let h = provisioning_card();
    MUTEX_CALLS.store(0, Ordering::SeqCst);
    unsafe {
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        assert_eq!(C_GetFunctionList(&mut list), CKR_OK);
        let f = &*list;
        assert_eq!((f.version.major, f.version.minor), (2, 40));
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: Some(create_mutex),
            DestroyMutex: Some(mutex_op),
            LockMutex: Some(mutex_op),
            UnlockMutex: Some(mutex_op),
            flags: CKF_LIBRARY_CANT_CREATE_OS_THREADS,
            pReserved: NULL,
        };
        assert_eq!(
            f.C_Initialize.unwrap()(&mut args as *mut _ as *mut _),
            CKR_OK
        );
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (2, 40)
        );

        // Slots with a token; aziot-keyd asks with an empty buffer and grows it.
        let mut count: CK_ULONG = 0;
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, std::ptr::null_mut(), &mut count),
            CKR_OK
        );
        let mut slots = vec![0 as CK_SLOT_ID; count as usize];
        assert_eq!(
            f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut count),
            CKR_OK
        );
        let slot = slots[0];
        let mut token: CK_TOKEN_INFO = std::mem::zeroed();
        assert_eq!(f.C_GetTokenInfo.unwrap()(slot, &mut token), CKR_OK);
        assert_ne!(token.flags & CKF_TOKEN_INITIALIZED, 0);
        assert_eq!(token.flags & CKF_WRITE_PROTECTED, 0, "a provisioning card");

        let mut session: CK_SESSION_HANDLE = CK_INVALID_HANDLE;
        assert_eq!(
            f.C_OpenSession.unwrap()(
                slot,
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                NULL,
                None,
                &mut session
            ),
            CKR_OK
        );
        let mut si: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(f.C_GetSessionInfo.unwrap()(session, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_PUBLIC_SESSION);
        let pin = b"1234";
        assert_eq!(
            f.C_Login.unwrap()(session, CKU_USER, pin.as_ptr() as *mut _, 4),
            CKR_OK
        );

        let label = "aziot-device-id";
        assert_eq!(aziot_find(f, session, CKO_PUBLIC_KEY, label), None);
        assert_eq!(aziot_find(f, session, CKO_PRIVATE_KEY, label), None);

        let (mut tru, mut fals) = ([CK_TRUE], [CK_FALSE]);
        let mut oid = P256_OID.to_vec();
        let mut label_bytes = label.as_bytes().to_vec();
        let mut label_bytes2 = label_bytes.clone();
        let mut public = [
            attr(CKA_EC_PARAMS, &mut oid),
            attr(CKA_ENCRYPT, &mut tru),
            attr(CKA_PRIVATE, &mut fals),
            attr(CKA_TOKEN, &mut tru),
            attr(CKA_VERIFY, &mut tru),
            attr(CKA_LABEL, &mut label_bytes),
        ];
        let (mut t2, mut t3, mut t4, mut t5, mut t6) = ([1u8], [1u8], [1u8], [1u8], [1u8]);
        let mut private = [
            attr(CKA_DECRYPT, &mut t2),
            attr(CKA_PRIVATE, &mut t3),
            attr(CKA_SENSITIVE, &mut t4),
            attr(CKA_SIGN, &mut t5),
            attr(CKA_TOKEN, &mut t6),
            attr(CKA_LABEL, &mut label_bytes2),
        ];
        let mut mechanism = mech(CKM_EC_KEY_PAIR_GEN);
        let (mut public_handle, mut private_handle) = (CK_INVALID_HANDLE, CK_INVALID_HANDLE);
        assert_eq!(
            f.C_GenerateKeyPair.unwrap()(
                session,
                &mut mechanism,
                public.as_mut_ptr(),
                public.len() as CK_ULONG,
                private.as_mut_ptr(),
                private.len() as CK_ULONG,
                &mut public_handle,
                &mut private_handle,
            ),
            CKR_OK
        );
        assert_ne!(public_handle, CK_INVALID_HANDLE);
        assert_ne!(private_handle, CK_INVALID_HANDLE);

        // Found again by label, EC both.
        let public_found = aziot_find(f, session, CKO_PUBLIC_KEY, label).expect("public key");
        let private_found = aziot_find(f, session, CKO_PRIVATE_KEY, label).expect("private key");
        assert_eq!(
            (public_found, private_found),
            (public_handle, private_handle)
        );
        for key in [public_found, private_found] {
            let key_type = get_attr(session, key, CKA_KEY_TYPE).unwrap();
            assert_eq!(key_type, CKK_EC.to_ne_bytes().to_vec());
        }
        assert_eq!(
            get_attr(session, private_found, CKA_DECRYPT).unwrap(),
            vec![CK_FALSE],
            "an EC key does not decrypt, whatever the template asked"
        );

        // The new key signs (aziot's engine: CKM_ECDSA over a digest); the signature verifies
        // with the new public key's point.
        let point = get_attr(session, public_found, CKA_EC_POINT).unwrap();
        let digest = Sha256::digest(b"aziot-keyd signs a digest");
        let signature = sign(session, CKM_ECDSA, private_found, &digest).unwrap();
        assert!(p256_verify(&point[2..], &digest, &signature));
        assert!(
            h.card()
                .profile()
                .private_keys
                .iter()
                .any(|k| k.label.as_deref() == Some(label.as_bytes())),
            "a new container on the card"
        );

        assert_eq!(f.C_CloseSession.unwrap()(session), CKR_OK);
        assert_eq!(f.C_Finalize.unwrap()(NULL), CKR_OK);
    }
    assert_eq!(
        MUTEX_CALLS.load(Ordering::SeqCst),
        0,
        "the module locks on its own and never calls the application's callbacks"
    );
}

#[test]
fn get_info_says_2_40_through_the_function_list_and_3_0_through_the_interface() {
    let _h = Harness::default();
    unsafe {
        assert_eq!(C_Initialize(NULL), CKR_OK);
        let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        assert_eq!(C_GetFunctionList(&mut list), CKR_OK);
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!((*list).C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (2, 40)
        );
        assert_eq!(
            (*list).C_GetInfo.unwrap()(std::ptr::null_mut()),
            CKR_ARGUMENTS_BAD
        );

        let mut version = CK_VERSION { major: 3, minor: 0 };
        let mut iface: *mut CK_INTERFACE = std::ptr::null_mut();
        assert_eq!(
            C_GetInterface(c"PKCS 11".as_ptr() as *mut _, &mut version, &mut iface, 0),
            CKR_OK
        );
        let list3 = &*((*iface).pFunctionList as *const CK_FUNCTION_LIST_3_0);
        assert_eq!((list3.version.major, list3.version.minor), (3, 0));
        let mut info: CK_INFO = std::mem::zeroed();
        assert_eq!(list3.C_GetInfo.unwrap()(&mut info), CKR_OK);
        assert_eq!(
            (info.cryptokiVersion.major, info.cryptokiVersion.minor),
            (3, 0)
        );

        // The 2.40 interface of C_GetInterface is the same table as C_GetFunctionList's.
        let mut version = CK_VERSION {
            major: 2,
            minor: 40,
        };
        assert_eq!(
            C_GetInterface(std::ptr::null_mut(), &mut version, &mut iface, 0),
            CKR_OK
        );
        assert_eq!((*iface).pFunctionList as *mut CK_FUNCTION_LIST, list);
        assert_eq!(C_Finalize(NULL), CKR_OK);
        assert_eq!(
            (*list).C_GetInfo.unwrap()(&mut info),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
    }
}

// ---- child processes: pReserved and configuration errors ----

const CHILD_CASE: &str = "IOTSAFE_INIT_TEST_CASE";

/// Bytes with no NUL anywhere near them.
static NOT_TERMINATED: [u8; 16] = [0xAA; 16];

/// Runs one `C_Initialize` as the child case says and prints its return value.
#[test]
#[ignore = "the entry point of the child processes the other tests of this file start"]
fn child_process_entry() {
    let Ok(case) = std::env::var(CHILD_CASE) else {
        return;
    };
    let string_arg;
    let reserved: *mut std::ffi::c_void = match case.as_str() {
        "null" => NULL,
        // An address nothing is mapped at.
        "garbage" => 0x10 as *mut _,
        "not-terminated" => NOT_TERMINATED.as_ptr() as *mut _,
        "not-utf8" => c"log = \"\xff\"".as_ptr() as *mut _,
        _ => {
            let text = case.strip_prefix("string:").expect("a known case");
            string_arg = std::ffi::CString::new(text).expect("no NUL");
            string_arg.as_ptr() as *mut _
        }
    };
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: reserved,
    };
    let rv = unsafe { C_Initialize(&mut args as *mut _ as *mut _) };
    println!("RV=0x{rv:x}");
    if rv == CKR_OK {
        let mut n: CK_ULONG = 99;
        unsafe {
            assert_eq!(C_GetSlotList(0, std::ptr::null_mut(), &mut n), CKR_OK);
            assert_eq!(C_Finalize(NULL), CKR_OK);
        }
        println!("SLOTS={n}");
    }
}

struct ChildRun {
    rv: Option<CK_RV>,
    slots: Option<u64>,
    stdout: String,
    stderr: String,
}

/// A directory of its own in the temporary directory.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("iotsafe-init-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Runs `child_process_entry` with `case`, the configuration file `config_file` and `env`.
/// A child still running after a minute is killed and reported as blocked (a hang guard, not
/// a timing measurement).
fn run_child(case: &str, config_file: &Path, env: &[(&str, &str)]) -> ChildRun {
    let home = config_file.parent().expect("a directory");
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([
            "--exact",
            "child_process_entry",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_CASE, case)
        .env("IOTSAFE_PKCS11_CONFIG", config_file)
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("IOTSAFE_PKCS11_LOG")
        .env_remove("IOTSAFE_PKCS11_INIT_RESERVED")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start the child");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("C_Initialize ({case}) blocked for a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "child ({case}) did not end normally ({status}):\n{stdout}\n{stderr}"
    );
    let value = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
    };
    ChildRun {
        rv: value("RV=0x").map(|v| CK_RV::from_str_radix(&v, 16).expect("hex CK_RV")),
        slots: value("SLOTS=").map(|v| v.parse().expect("a count")),
        stdout,
        stderr,
    }
}

/// Warnings of the module in the child's stderr.
fn warnings(run: &ChildRun) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("iotsafe_pkcs11"))
        .collect()
}

const NO_READERS: &str = "[pcsc]\nenabled = false\n";

#[test]
fn a_preserved_that_is_not_expected_is_arguments_bad_and_never_read() {
    let dir = scratch_dir("reserved-off");
    let config = dir.join("config.toml");
    std::fs::write(&config, NO_READERS).unwrap();
    for case in [
        "garbage",
        "not-terminated",
        "string:[applet]\ntoken_label = \"x\"",
    ] {
        let run = run_child(case, &config, &[]);
        assert_eq!(run.rv, Some(CKR_ARGUMENTS_BAD), "{case}: {}", run.stderr);
        let warned = warnings(&run);
        assert!(
            warned.len() == 1 && warned[0].contains("init_reserved = true"),
            "{case}: one warning that says how to pass a configuration: {warned:?}"
        );
    }
    // Without pReserved the same configuration initialises.
    let run = run_child("null", &config, &[]);
    assert_eq!(run.rv, Some(CKR_OK), "{}", run.stderr);
    assert_eq!(run.slots, Some(0));
    assert!(
        !warnings(&run).iter().any(|w| w.contains("configuration")),
        "{}",
        run.stderr
    );
}

#[test]
fn an_expected_preserved_is_read_as_the_configuration() {
    let dir = scratch_dir("reserved-on");
    let expecting = dir.join("config.toml");
    std::fs::write(&expecting, format!("init_reserved = true\n{NO_READERS}")).unwrap();
    let plain = dir.join("plain.toml");
    std::fs::write(&plain, NO_READERS).unwrap();
    let modem = "string:[pcsc]\nenabled = false\n[[modem]]\ndevice = \"/nonexistent/tty\"\n";
    // The string wins over the file: its one modem slot (no modem there: a slot without a
    // token) shows it was read. Enabled by the file, or by the environment.
    let run = run_child(modem, &expecting, &[]);
    assert_eq!(run.rv, Some(CKR_OK), "{}", run.stderr);
    assert_eq!(run.slots, Some(1), "{}", run.stdout);
    let run = run_child(modem, &plain, &[("IOTSAFE_PKCS11_INIT_RESERVED", "1")]);
    assert_eq!(run.rv, Some(CKR_OK), "{}", run.stderr);
    assert_eq!(run.slots, Some(1), "{}", run.stdout);
    // An empty string: the file's configuration.
    let run = run_child("string:", &expecting, &[]);
    assert_eq!(
        (run.rv, run.slots),
        (Some(CKR_OK), Some(0)),
        "{}",
        run.stderr
    );

    // A bad string: CKR_GENERAL_ERROR (as a bad file), and a warning with line and key.
    let run = run_child("string:[applet]\ncolour = \"blue\"", &expecting, &[]);
    assert_eq!(run.rv, Some(CKR_GENERAL_ERROR), "{}", run.stderr);
    let warned = warnings(&run);
    assert!(
        warned.len() == 1
            && warned[0].contains("pReserved")
            && warned[0].contains("line 2")
            && warned[0].contains("key `applet.colour`"),
        "{warned:?}"
    );
    // Bytes that are not a string: CKR_ARGUMENTS_BAD, with a warning.
    for case in ["not-terminated", "not-utf8"] {
        let run = run_child(case, &expecting, &[]);
        assert_eq!(run.rv, Some(CKR_ARGUMENTS_BAD), "{case}: {}", run.stderr);
        assert_eq!(warnings(&run).len(), 1, "{case}: {}", run.stderr);
    }
}

#[test]
fn configuration_errors_are_general_error_with_a_warning_naming_file_line_and_key() {
    let dir = scratch_dir("config-errors");
    for (name, text, expected) in [
        (
            "unknown-key.toml",
            "[pcsc]\nenabled = false\n[applet]\ncolour = \"blue\"\n",
            vec!["line 4", "key `applet.colour`", "unknown field"],
        ),
        (
            "bad-value.toml",
            "cache = 3\n",
            vec!["line 1", "key `cache`", "invalid type"],
        ),
        (
            "bad-aid.toml",
            "[applet]\naids = [\"zz\"]\n",
            vec!["applet.aids"],
        ),
        ("not-toml.toml", "[pcsc\n", vec!["line 1"]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let run = run_child("null", &path, &[]);
        assert_eq!(run.rv, Some(CKR_GENERAL_ERROR), "{name}: {}", run.stderr);
        let warned = warnings(&run);
        assert_eq!(warned.len(), 1, "{name}: one warning: {}", run.stderr);
        for part in expected.iter().chain([&path.to_str().unwrap()]) {
            assert!(warned[0].contains(part), "{name}: {part:?} in {warned:?}");
        }
    }
}

#[test]
fn a_fifo_or_a_device_as_configuration_file_does_not_block_and_is_refused() {
    let dir = scratch_dir("config-files");
    let fifo = dir.join("fifo.toml");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // A file one byte over the limit (sparse: nothing is written).
    let large = dir.join("large.toml");
    std::fs::File::create(&large)
        .unwrap()
        .set_len(iotsafe_pkcs11::config::MAX_CONFIG_BYTES as u64 + 1)
        .unwrap();
    for (path, reason) in [
        (fifo.as_path(), "not a regular file"),
        (Path::new("/dev/zero"), "not a regular file"),
        (large.as_path(), "larger than 1048576 bytes"),
        (dir.join("missing.toml").as_path(), "No such file"),
    ] {
        let run = run_child("null", path, &[]);
        assert_eq!(run.rv, Some(CKR_GENERAL_ERROR), "{path:?}: {}", run.stderr);
        let warned = warnings(&run);
        assert!(
            warned.len() == 1 && warned[0].contains(reason),
            "{path:?}: {warned:?}"
        );
    }
    // The null device is the usual "no configuration file": the defaults, no warning.
    let run = run_child("null", Path::new("/dev/null"), &[]);
    assert_eq!(run.rv, Some(CKR_OK), "/dev/null: {}", run.stderr);
    assert!(
        !warnings(&run).iter().any(|w| w.contains("configuration")),
        "{}",
        run.stderr
    );
}

// ---- login ----

/// IoT.05 has no PIN and the token needs no login (CKF_LOGIN_REQUIRED clear): C_Login only
/// moves the state, for the security officer as for the user. CKU_SO is a valid user type
/// (CKR_USER_TYPE_INVALID is for other values), so the §5.6 rules apply.
#[test]
fn the_security_officer_logs_in_as_the_specification_says_for_a_token_without_login() {
    let _h = Harness::default();
    unsafe {
        assert_eq!(C_Initialize(NULL), CKR_OK);
        let mut ti: CK_TOKEN_INFO = std::mem::zeroed();
        assert_eq!(C_GetTokenInfo(0, &mut ti), CKR_OK);
        assert_eq!(ti.flags & (CKF_LOGIN_REQUIRED | CKF_SO_PIN_LOCKED), 0);
        let ro = open_session(0);
        let rw = open_rw_session(0);
        assert_eq!(
            C_Login(rw, CKU_SO, b"so".as_ptr() as *mut _, 2),
            CKR_SESSION_READ_ONLY_EXISTS
        );
        assert_eq!(C_CloseSession(ro), CKR_OK);
        assert_eq!(C_Login(rw, CKU_SO, b"so".as_ptr() as *mut _, 2), CKR_OK);
        let mut si: CK_SESSION_INFO = std::mem::zeroed();
        assert_eq!(C_GetSessionInfo(rw, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_SO_FUNCTIONS);
        let mut s: CK_SESSION_HANDLE = 0;
        assert_eq!(
            C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut s),
            CKR_SESSION_READ_WRITE_SO_EXISTS
        );
        assert_eq!(
            C_Login(rw, CKU_SO, std::ptr::null_mut(), 0),
            CKR_USER_ALREADY_LOGGED_IN
        );
        assert_eq!(
            C_Login(rw, CKU_USER, std::ptr::null_mut(), 0),
            CKR_USER_ANOTHER_ALREADY_LOGGED_IN
        );
        // A second R/W session sees the SO state too.
        let rw2 = open_rw_session(0);
        assert_eq!(C_GetSessionInfo(rw2, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_SO_FUNCTIONS);
        assert_eq!(C_Logout(rw), CKR_OK);
        assert_eq!(C_Logout(rw), CKR_USER_NOT_LOGGED_IN);
        assert_eq!(C_GetSessionInfo(rw2, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RW_PUBLIC_SESSION);
        // Now the user, and the SO is the other one.
        assert_eq!(C_Login(rw, CKU_USER, std::ptr::null_mut(), 0), CKR_OK);
        assert_eq!(
            C_Login(rw2, CKU_SO, std::ptr::null_mut(), 0),
            CKR_USER_ANOTHER_ALREADY_LOGGED_IN
        );
        assert_eq!(
            C_Login(rw, 7, std::ptr::null_mut(), 0),
            CKR_USER_TYPE_INVALID
        );
        // The SO's login ends with the token's last session.
        assert_eq!(C_Logout(rw), CKR_OK);
        assert_eq!(C_Login(rw, CKU_SO, std::ptr::null_mut(), 0), CKR_OK);
        assert_eq!(C_CloseSession(rw), CKR_OK);
        assert_eq!(C_CloseSession(rw2), CKR_OK);
        let ro = open_session(0);
        assert_eq!(C_GetSessionInfo(ro, &mut si), CKR_OK);
        assert_eq!(si.state, CKS_RO_PUBLIC_SESSION);
    }
}

// ---- AWS IoT Greengrass (Java nucleus, through SunPKCS11) ----

/// The client certificate's public point (SEC1), from the certificate object on the token.
fn client_certificate_point(session: CK_SESSION_HANDLE) -> Vec<u8> {
    use der::Decode;
    let cert = object_by_label(session, CKO_CERTIFICATE, "client");
    let der = get_attr(session, cert, CKA_VALUE).unwrap();
    let cert = x509_cert::Certificate::from_der(&der).expect("an X.509 certificate");
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
        .to_vec()
}

/// Greengrass's PKCS#11 provider plugin goes through the JDK's SunPKCS11, which sizes its
/// session pool from ulMaxSessionCount and holds several sessions at once; issue #13 states
/// Greengrass needs at least 3. The token says "effectively infinite" (0) for both counts and
/// opens 4 R/W sessions, each with a signature of its own under way.
#[test]
fn greengrass_opens_several_read_write_sessions_at_once() {
    let h = Harness::default();
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    let mut ti: CK_TOKEN_INFO = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { C_GetTokenInfo(0, &mut ti) }, CKR_OK);
    assert_eq!(ti.ulMaxSessionCount, CK_EFFECTIVELY_INFINITE);
    assert_eq!(ti.ulMaxRwSessionCount, CK_EFFECTIVELY_INFINITE);
    let sessions: Vec<CK_SESSION_HANDLE> = (0..4).map(|_| open_rw_session(0)).collect();
    assert_eq!(unsafe { C_GetTokenInfo(0, &mut ti) }, CKR_OK);
    assert_eq!((ti.ulSessionCount, ti.ulRwSessionCount), (4, 4));
    // Each signs with an operation of its own, all active at once.
    let point = profile_client_point(h.card());
    let key = client_key(sessions[0]);
    for &s in &sessions {
        let mut m = mech(CKM_ECDSA_SHA256);
        assert_eq!(unsafe { C_SignInit(s, &mut m, key) }, CKR_OK);
    }
    for (i, &s) in sessions.iter().enumerate() {
        let msg = format!("session {i}");
        let mut sig = [0u8; 64];
        let mut len = sig.len() as CK_ULONG;
        let rv = unsafe {
            C_Sign(
                s,
                msg.as_ptr() as *mut u8,
                msg.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len,
            )
        };
        assert_eq!(rv, CKR_OK);
        assert!(p256_verify(&point, &Sha256::digest(msg.as_bytes()), &sig));
    }
}

/// Greengrass (through SunPKCS11) reads CKA_EXTRACTABLE of the private key (issue #13); with
/// CKA_SENSITIVE it says the key is used in place on the token: readable, and false.
#[test]
fn greengrass_reads_extractable_and_sensitive_of_the_private_key() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    assert_eq!(get_attr(s, key, CKA_EXTRACTABLE), Ok(vec![CK_FALSE]));
    assert_eq!(get_attr(s, key, CKA_SENSITIVE), Ok(vec![CK_TRUE]));
    assert_eq!(get_attr(s, key, CKA_NEVER_EXTRACTABLE), Ok(vec![CK_TRUE]));
    // Both in one call.
    let (mut a, mut b) = ([9u8], [9u8]);
    let mut template = [attr(CKA_EXTRACTABLE, &mut a), attr(CKA_SENSITIVE, &mut b)];
    assert_eq!(
        unsafe { C_GetAttributeValue(s, key, template.as_mut_ptr(), 2) },
        CKR_OK
    );
    assert_eq!((a, b), ([CK_FALSE], [CK_TRUE]));
}

/// Greengrass (through SunPKCS11) asks C_Sign for the signature's length first (NULL
/// buffer, issue #13), then signs: the query is CKR_OK with 64, sends nothing to the card and
/// keeps the operation; the signature verifies against the card's certificate.
#[test]
fn greengrass_asks_the_signature_length_first() {
    let h = Harness::default();
    let s = h.init_and_open();
    let key = client_key(s);
    let point = client_certificate_point(s);
    let msg = b"greengrass MQTT TLS handshake";
    let mut m = mech(CKM_ECDSA_SHA256);
    h.apdus();
    unsafe {
        assert_eq!(C_SignInit(s, &mut m, key), CKR_OK);
        let mut len: CK_ULONG = 0;
        assert_eq!(
            C_Sign(
                s,
                msg.as_ptr() as *mut u8,
                msg.len() as CK_ULONG,
                std::ptr::null_mut(),
                &mut len
            ),
            CKR_OK
        );
        assert_eq!(len, 64);
        assert_eq!(h.apdus(), 0, "a length query sends nothing to the card");
        let mut sig = vec![0u8; len as usize];
        assert_eq!(
            C_Sign(
                s,
                msg.as_ptr() as *mut u8,
                msg.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len
            ),
            CKR_OK
        );
        assert_eq!(len, 64);
        assert!(p256_verify(&point, &Sha256::digest(msg), &sig));
        // The operation ended with the signature.
        assert_eq!(
            C_Sign(
                s,
                msg.as_ptr() as *mut u8,
                msg.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len
            ),
            CKR_OPERATION_NOT_INITIALIZED
        );
    }
}
