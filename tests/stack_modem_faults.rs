//! The fault rows of `tests/stack_faults.rs` (a card that answers `6F00`, truncates, loops on
//! `61xx`, answers garbage or a bad TLV, is pulled mid-signature, stops answering) with the card
//! behind a simulated modem instead of pcscd: over AT, MBIM and QMI, and for MBIM and QMI also
//! through the simulator's proxy mode. Each row: the exact `CK_RV`, a time bounded by the
//! module's `timeout_ms`, and the next signature working (recovery) in the same process.
//!
//! Each row runs the simulator (`iotsafe-sim modem --protocol …`) as its own process and the
//! module in the test's process (nextest gives every row a process of its own).

mod helpers;

use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::session::Session;
use helpers::TempDir;
// Signs with the key pair 01 and verifies against the card's public key.
use helpers::cryptoki_calls::{
    check_session_after_fault, sign_and_verify_with_key_01 as sign, sign_under_fault,
};
use helpers::stack::{SimModem, release_module};

/// The module's deadline for one modem request in these rows.
const TIMEOUT_MS: u64 = 1500;

/// A session on the modem's token, once it shows one (the card may just have been put back).
fn session_within(p11: &Pkcs11, limit: Duration) -> Result<Session, String> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match p11.get_slots_with_token() {
            Err(e) => format!("C_GetSlotList: {e}"),
            Ok(slots) => match slots.first() {
                None => "no slot with a token".to_string(),
                Some(slot) => match p11.open_ro_session(*slot) {
                    Ok(s) => return Ok(s),
                    Err(e) => format!("C_OpenSession: {e}"),
                },
            },
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// How the module reaches the simulated modem.
#[derive(Clone, Copy, Debug)]
enum Path {
    At,
    MbimDirect,
    MbimSimProxy,
    QmiDirect,
    QmiSimProxy,
}

impl Path {
    /// The simulator's arguments and the module's `[[modem]]` lines.
    fn setup(self, dir: &std::path::Path) -> (Vec<String>, String) {
        let proxy_name = format!(
            "iotsafe-test-{}-{}",
            std::process::id(),
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        );
        let args = |protocol: &str, proxy: bool| {
            let mut v = vec!["--protocol".to_string(), protocol.to_string()];
            if proxy {
                v.extend(["--proxy-socket".to_string(), proxy_name.clone()]);
            }
            v
        };
        let lines = |protocol: &str, proxy: bool| {
            if proxy {
                format!("protocol = \"{protocol}\"\nproxy_socket = \"{proxy_name}\"")
            } else {
                format!("protocol = \"{protocol}\"\nproxy = false")
            }
        };
        match self {
            Path::At => (Vec::new(), String::new()),
            Path::MbimDirect => (args("mbim", false), lines("mbim", false)),
            Path::MbimSimProxy => (args("mbim", true), lines("mbim", true)),
            Path::QmiDirect => (args("qmi", false), lines("qmi", false)),
            Path::QmiSimProxy => (args("qmi", true), lines("qmi", true)),
        }
    }
}

/// One fault row over `path`: signs, arms `fault` on the simulated card, signs again (expecting
/// `expect` within the module's timeout), clears it, and checks the recovery.
fn fault_row(path: Path, fault: &str, expect: RvError, session_survives: bool) {
    let name: String = fault
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = TempDir::new(&format!("modem-fault-{path:?}-{name}"));
    let (sim_args, modem_lines) = path.setup(dir.path());
    let sim_args: Vec<&str> = sim_args.iter().map(String::as_str).collect();
    let modem = SimModem::start(dir.path(), &sim_args);
    let config = modem.module_config(
        &format!(
            "lock_dir = \"{d}\"\ncache_dir = \"{d}/cache\"",
            d = dir.path().display()
        ),
        &format!("{modem_lines}\ntimeout_ms = {TIMEOUT_MS}"),
    );
    // SAFETY: set before the module is loaded, while this test's process has no other thread
    // reading the environment.
    unsafe { std::env::set_var("IOTSAFE_PKCS11_CONFIG", &config) };
    let p11 = Pkcs11::new(release_module()).expect("load module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let s = session_within(&p11, Duration::from_secs(10)).expect("a token on the modem");
    sign(&s, b"before the fault").expect("signs before the fault");
    let (got, took) = sign_under_fault(&s, &format!("{path:?}"), fault, |c| modem.control(c));
    // A few requests may each wait for the timeout (the APDU and the resynchronisation).
    assert!(
        took < Duration::from_millis(4 * TIMEOUT_MS + 2000),
        "bounded: {took:?}"
    );
    assert_eq!(
        got,
        Err(expect),
        "C_Sign under `fault {fault}` over {path:?}"
    );
    check_session_after_fault(&s, session_survives);
    modem.control("insert");
    let s2 = session_within(&p11, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("no token after `fault {fault}` over {path:?}: {e}"));
    sign(&s2, b"new session after the fault").expect("a new session signs");
    p11.finalize().expect("C_Finalize");
}

/// A row per fault for one path.
macro_rules! fault_rows {
    ($module:ident, $path:expr) => {
        mod $module {
            use super::*;

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn signature_update_answers_6f00() {
                fault_row($path, "sw=6F00 ins=2B", RvError::DeviceError, true);
            }

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn signature_response_truncated_to_one_byte() {
                fault_row($path, "truncate=1 ins=2B", RvError::DeviceError, true);
            }

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn signature_response_truncated_inside_the_data() {
                fault_row($path, "truncate=20 ins=2B", RvError::DeviceError, true);
            }

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn signature_update_endless_61xx() {
                fault_row($path, "endless-61xx ins=2B", RvError::DeviceError, true);
            }

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn signature_update_garbage() {
                fault_row($path, "garbage ins=2B", RvError::DeviceError, true);
            }

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn signature_update_bad_tlv() {
                fault_row($path, "bad-tlv ins=2B", RvError::DeviceError, true);
            }

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn card_pulled_between_signature_init_and_update() {
                fault_row($path, "remove ins=2A", RvError::DeviceRemoved, false);
            }

            #[test]
            #[ignore = "runs the simulator and the release module (scripts/test.sh)"]
            fn card_stops_answering_mid_signature() {
                fault_row($path, "mute ins=2B", RvError::DeviceError, true);
            }
        }
    };
}

fault_rows!(at, Path::At);
fault_rows!(mbim_direct, Path::MbimDirect);
fault_rows!(mbim_through_the_simulated_proxy, Path::MbimSimProxy);
fault_rows!(qmi_direct, Path::QmiDirect);
fault_rows!(qmi_through_the_simulated_proxy, Path::QmiSimProxy);
