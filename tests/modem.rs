//! The module over the AT path, in-process: the simulator serves AT commands on a
//! pseudo-terminal (no daemon), the module opens it as a `[[modem]]` slot.

mod helpers;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use helpers::TempDir;
use helpers::inprocess::*;
use helpers::sim_reader::unplug_sim_readers;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{AtDialect, CardOptions, ModemHandle, ModemOptions, SharedCard};
use sha2::{Digest, Sha256};

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();

struct ModemRig {
    modem: ModemHandle,
    link: PathBuf,
    dir: TempDir,
    /// The module's configuration, for a restart as a new process would make.
    config: String,
    _guard: std::sync::MutexGuard<'static, ()>,
}

impl Drop for ModemRig {
    fn drop(&mut self) {
        unsafe { C_Finalize(NULL) };
    }
}

/// A simulated modem with `options`, and the module initialised with only that modem.
fn rig(card_options: CardOptions, options: ModemOptions, module_modem: &str) -> ModemRig {
    rig_with_profile(
        iotsafe_sim::default_profile(),
        card_options,
        options,
        module_modem,
    )
}

fn rig_with_profile(
    profile: iotsafe_sim::Profile,
    card_options: CardOptions,
    options: ModemOptions,
    module_modem: &str,
) -> ModemRig {
    let guard = module_lock();
    unplug_sim_readers();
    unsafe { C_Finalize(NULL) };
    let dir = TempDir::new(&format!(
        "iotsafe-modem-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let link = dir.path().join("modem");
    let card = SharedCard::from_profile(profile, card_options);
    let modem = iotsafe_sim::modem::spawn(card, &link, options).expect("spawn the simulated modem");
    // Lock files, notes and cached content of this test's own: pty numbers are reused.
    let config = format!(
        "lock_dir = \"{dir}\"\ncache_dir = \"{dir}/cache\"\n[pcsc]\nenabled = false\n[[modem]]\ndevice = \"{}\"\nlabel = \"sim modem\"\n{module_modem}\n",
        link.display(),
        dir = dir.path().display()
    );
    initialize_with_config(&config);
    ModemRig {
        modem,
        link,
        dir,
        config,
        _guard: guard,
    }
}

fn sign_and_check(rig: &ModemRig, msg: &[u8]) -> Result<(), CK_RV> {
    let s = {
        let mut h: CK_SESSION_HANDLE = 0;
        let rv = unsafe { C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut h) };
        if rv != CKR_OK {
            return Err(rv);
        }
        h
    };
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let sig = sign(s, CKM_ECDSA_SHA256, key, msg)?;
    let point = profile_client_point(rig.modem.card());
    assert!(p256_verify(&point, &Sha256::digest(msg), &sig));
    unsafe { C_CloseSession(s) };
    Ok(())
}

fn every_quirk(at: AtDialect) -> ModemOptions {
    ModemOptions {
        at,
        echo: true,
        urc: true,
        split: true,
        delay_ms: 2,
        busy_every: 3,
        max_command_len: 300,
        garbage: true,
        ..Default::default()
    }
}

#[test]
fn logical_channel_commands_sign_with_every_quirk_on() {
    let rig = rig(
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
        every_quirk(AtDialect::Both),
        "at_mode = \"cgla\"\nmax_command_len = 300",
    );
    let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    unsafe { assert_eq!(C_GetSlotInfo(0, &mut si), CKR_OK) };
    assert!(si.slotDescription.starts_with(b"sim modem "));
    for i in 0..3 {
        sign_and_check(&rig, format!("cgla {i}").as_bytes()).unwrap();
    }
    let stats = rig.modem.stats();
    assert!(stats.ccho >= 1 && stats.cgla > 0, "{stats:?}");
    assert_eq!(stats.csim, 0, "CGLA mode never uses AT+CSIM: {stats:?}");
    assert!(
        stats.busy > 0,
        "the busy quirk fired and was retried: {stats:?}"
    );
    assert_eq!(rig.modem.card().stats().interleaved, 0);
}

#[test]
fn csim_fallback_signs_with_every_quirk_on() {
    // The modem has no AT+CCHO: "auto" falls back to AT+CSIM with our own MANAGE CHANNEL.
    let rig = rig(
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
        ModemOptions {
            bare_ccho: true,
            ..every_quirk(AtDialect::Csim)
        },
        "max_command_len = 300",
    );
    for i in 0..3 {
        sign_and_check(&rig, format!("csim {i}").as_bytes()).unwrap();
    }
    let stats = rig.modem.stats();
    assert!(stats.csim > 0 && stats.cgla == 0, "{stats:?}");
    assert_eq!(
        rig.modem.card().open_channels(),
        vec![0, 1],
        "our logical channel, opened by MANAGE CHANNEL"
    );
}

#[test]
fn csim_can_be_forced_and_bare_ccho_answers_are_understood() {
    let forced = rig(
        CardOptions::default(),
        ModemOptions::default(),
        "at_mode = \"csim\"",
    );
    sign_and_check(&forced, b"forced csim").unwrap();
    assert_eq!(forced.modem.stats().ccho, 0);
    drop(forced);
    let rig = rig(
        CardOptions::default(),
        ModemOptions {
            bare_ccho: true,
            ..Default::default()
        },
        "",
    );
    sign_and_check(&rig, b"bare ccho").unwrap();
    assert_eq!(rig.modem.stats().ccho, 1);
}

#[test]
fn a_hung_modem_times_out_and_the_next_operation_works() {
    let rig = rig(
        CardOptions::default(),
        ModemOptions::default(),
        "timeout_ms = 700",
    );
    sign_and_check(&rig, b"before").unwrap();
    rig.modem.hang();
    let start = Instant::now();
    assert_eq!(sign_and_check(&rig, b"hung"), Err(CKR_DEVICE_ERROR));
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "bounded by the timeout"
    );
    rig.modem.unhang();
    sign_and_check(&rig, b"after").unwrap();
}

#[test]
fn an_apdu_longer_than_the_modem_accepts_is_a_clear_error() {
    // 90 characters cannot hold AT+CSIM with a 40-byte signature update.
    let rig = rig(
        CardOptions::default(),
        ModemOptions {
            at: AtDialect::Csim,
            ..Default::default()
        },
        "at_mode = \"csim\"\nmax_command_len = 90",
    );
    assert_eq!(sign_and_check(&rig, b"too long"), Err(CKR_DEVICE_ERROR));
    assert_eq!(
        rig.modem.stats().error,
        0,
        "nothing over-long was sent to the modem"
    );
}

#[test]
fn sim_removed_and_reinserted_behind_the_modem() {
    let rig = rig(CardOptions::default(), ModemOptions::default(), "");
    let s = open_session(0);
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    sign(s, CKM_ECDSA_SHA256, key, b"in").unwrap();
    rig.modem.card().remove();
    assert_eq!(
        sign(s, CKM_ECDSA_SHA256, key, b"out"),
        Err(CKR_DEVICE_REMOVED)
    );
    assert_eq!(
        sign(s, CKM_ECDSA_SHA256, key, b"out"),
        Err(CKR_SESSION_HANDLE_INVALID)
    );
    rig.modem.card().insert();
    sign_and_check(&rig, b"back in").unwrap();
}

#[test]
fn a_modem_that_goes_away_is_a_slot_without_token_until_it_returns() {
    let mut rig = rig(
        CardOptions::default(),
        ModemOptions::default(),
        "timeout_ms = 1000",
    );
    sign_and_check(&rig, b"present").unwrap();
    let card = rig.modem.card().clone();
    // Unplugged: the port closes and its device node goes away.
    let replacement = iotsafe_sim::modem::spawn(
        card.clone(),
        &rig.dir.path().join("other"),
        ModemOptions::default(),
    )
    .unwrap();
    std::mem::replace(&mut rig.modem, replacement).stop();
    let mut si: CK_SLOT_INFO = unsafe { std::mem::zeroed() };
    unsafe { assert_eq!(C_GetSlotInfo(0, &mut si), CKR_OK) };
    assert_eq!(si.flags & CKF_TOKEN_PRESENT, 0);
    let mut h: CK_SESSION_HANDLE = 0;
    assert_eq!(
        unsafe { C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut h) },
        CKR_TOKEN_NOT_PRESENT
    );
    // Plugged in again at the same path: a new session works in the same process.
    rig.modem = iotsafe_sim::modem::spawn(card, &rig.link, ModemOptions::default()).unwrap();
    sign_and_check(&rig, b"again").unwrap();
}

#[test]
fn a_missing_modem_is_a_slot_without_token_not_a_failed_initialize() {
    let _guard = module_lock();
    unplug_sim_readers();
    unsafe { C_Finalize(NULL) };
    initialize_with_config(
        "[pcsc]\nenabled = false\n[[modem]]\ndevice = \"/nonexistent/ttyACM9\"\n",
    );
    let mut n: CK_ULONG = 0;
    unsafe {
        assert_eq!(C_GetSlotList(0, std::ptr::null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 1);
        assert_eq!(C_GetSlotList(1, std::ptr::null_mut(), &mut n), CKR_OK);
        assert_eq!(n, 0);
        assert_eq!(C_Finalize(NULL), CKR_OK);
    }
}

#[test]
fn long_writes_are_split_to_fit_the_modems_command_line() {
    let rig = rig_with_profile(
        iotsafe_sim::default_profile_with_provisioning(),
        CardOptions::default(),
        ModemOptions {
            at: AtDialect::Csim,
            max_command_len: 120,
            ..Default::default()
        },
        "at_mode = \"csim\"\nmax_command_len = 120",
    );
    let h = open_rw_session(0);
    let content: Vec<u8> = (0..600u32).map(|i| (i % 253) as u8).collect();
    let mut class = CKO_DATA;
    let mut tru = [1u8];
    let mut value = content.clone();
    let mut label = b"long".to_vec();
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut class as *mut _ as *mut _,
            ulValueLen: 8,
        },
        attr(CKA_TOKEN, &mut tru),
        attr(CKA_VALUE, &mut value),
        attr(CKA_LABEL, &mut label),
    ];
    let mut object = 0;
    assert_eq!(
        unsafe { C_CreateObject(h, template.as_mut_ptr(), 4, &mut object) },
        CKR_OK
    );
    assert_eq!(get_attr(h, object, CKA_VALUE).unwrap(), content);
    let stats = rig.modem.stats();
    assert_eq!(
        stats.error, 0,
        "no command line was too long for the modem: {stats:?}"
    );
    assert!(
        rig.modem
            .card()
            .stats()
            .by_ins
            .get(&0xE2)
            .copied()
            .unwrap_or(0)
            >= 15,
        "many small blocks"
    );
}

#[test]
fn a_psk_derivation_over_the_modem_with_every_quirk_on() {
    use iotsafe_sim::kdf::{psk_premaster_plain, tls12_prf};
    let rig = rig(
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
        every_quirk(AtDialect::Both),
        "at_mode = \"csim\"\nmax_command_len = 300",
    );
    let s = open_session(0);
    let psk = object_by_label(s, CKO_SECRET_KEY, "device-psk");
    // CK_IOTSAFE_TLS12_PSK_KDF_PARAMS: hash, label, seed, other secret (none).
    #[repr(C)]
    struct Params(
        CK_MECHANISM_TYPE,
        *mut u8,
        CK_ULONG,
        *mut u8,
        CK_ULONG,
        *mut u8,
        CK_ULONG,
    );
    let mut label = b"master secret".to_vec();
    let mut seed = [0x42u8; 64];
    let mut p = Params(
        CKM_SHA256,
        label.as_mut_ptr(),
        label.len() as CK_ULONG,
        seed.as_mut_ptr(),
        64,
        std::ptr::null_mut(),
        0,
    );
    let mut m = CK_MECHANISM {
        mechanism: CKM_VENDOR_DEFINED | 0x4953_0001,
        pParameter: &mut p as *mut Params as *mut _,
        ulParameterLen: std::mem::size_of::<Params>() as CK_ULONG,
    };
    let (mut fals, mut tru) = ([0u8], [1u8]);
    let mut t = [
        attr(CKA_SENSITIVE, &mut fals),
        attr(CKA_EXTRACTABLE, &mut tru),
    ];
    let mut key = 0;
    let rv = unsafe { C_DeriveKey(s, &mut m, psk, t.as_mut_ptr(), 2, &mut key) };
    assert_eq!(rv, CKR_OK);
    let value = get_attr(s, key, CKA_VALUE).unwrap();
    let stored = rig
        .modem
        .card()
        .profile()
        .secret_key(&[0x10])
        .and_then(|k| k.value.clone())
        .unwrap();
    let want = tls12_prf(
        iotsafe_sim::hash::HashAlg::Sha256,
        &psk_premaster_plain(&stored),
        &[&label[..], &seed].concat(),
        48,
    );
    assert_eq!(value, want);
}

/// The module as the next one-shot process sees it: C_Finalize, then C_Initialize with the same
/// configuration (the endpoint's note and the content cache outlive the first).
fn restart(rig: &ModemRig) {
    unsafe { C_Finalize(NULL) };
    initialize_with_config(&rig.config);
}

/// APDUs the card saw from a new C_Initialize up to and including the first signature.
fn apdus_to_first_signature(rig: &ModemRig) -> u64 {
    unsafe { C_Finalize(NULL) };
    rig.modem.card().reset_stats();
    initialize_with_config(&rig.config);
    sign_and_check(rig, b"first").unwrap();
    rig.modem.card().stats().total
}

fn warm_start(
    card_options: CardOptions,
    at: AtDialect,
    module_modem: &str,
    limit: u64,
    power_cycle_limit: u64,
) {
    let rig = rig(
        card_options,
        ModemOptions {
            at,
            ..Default::default()
        },
        module_modem,
    );
    let cold = apdus_to_first_signature(&rig);
    let warm: Vec<u64> = (0..3).map(|_| apdus_to_first_signature(&rig)).collect();
    println!("APDUs to the first signature: cold {cold}, warm {warm:?}");
    assert!(
        warm.iter().all(|&w| w <= limit),
        "warm start within {limit} APDUs: {warm:?}"
    );
    assert!(cold > limit, "the cold start read the card ({cold} APDUs)");
    let card = rig.modem.card().stats();
    assert_eq!(card.open_channel_count, 1, "one shared channel: {card:?}");
    assert_eq!(card.interleaved, 0);
    // The SIM was power-cycled (every channel closed) between two processes: the recorded
    // channel fails once, a new one is opened and the card's identity proven again.
    unsafe { C_Finalize(NULL) };
    rig.modem.card().reset();
    let after_power_cycle = apdus_to_first_signature(&rig);
    println!("APDUs to the first signature after a power cycle: {after_power_cycle}");
    assert!(
        after_power_cycle <= power_cycle_limit,
        "after a power cycle within {power_cycle_limit}: {after_power_cycle}"
    );
    assert_eq!(rig.modem.card().stats().open_channel_count, 1);
}

#[test]
fn a_new_process_reaches_its_first_signature_in_four_apdus_over_cgla() {
    warm_start(
        CardOptions::default(),
        AtDialect::Both,
        "at_mode = \"cgla\"",
        4,
        5,
    );
}

#[test]
fn a_new_process_reaches_its_first_signature_in_six_apdus_over_csim_with_t0() {
    warm_start(
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
        AtDialect::Csim,
        "at_mode = \"csim\"",
        6,
        9,
    );
}

/// The certificate file (ID 02) as the token shows it.
fn certificate_value() -> Vec<u8> {
    let s = open_session(0);
    let cert = object_by_label(s, CKO_CERTIFICATE, "client");
    let value = get_attr(s, cert, CKA_VALUE).unwrap();
    unsafe { C_CloseSession(s) };
    value
}

#[test]
fn a_remote_update_seen_by_one_process_reaches_the_next_one() {
    let rig = rig(CardOptions::default(), ModemOptions::default(), "");
    sign_and_check(&rig, b"a").unwrap();
    let old = certificate_value();
    // A remote-management session replaces the certificate while nobody uses the card.
    let mut new_cert = old.clone();
    let last = new_cert.len() - 1;
    new_cert[last] ^= 0x55;
    let card = rig.modem.card();
    card.remote_begin(iotsafe_sim::ObjectClass::File, &[0x02])
        .unwrap();
    card.remote_replace_file(&[0x02], new_cert.clone()).unwrap();
    card.remote_end().unwrap();
    // Process B: its first command takes the 63CF.
    restart(&rig);
    sign_and_check(&rig, b"b").unwrap();
    assert_eq!(certificate_value(), new_cert, "B re-read after the 63CF");
    // Process C never sees a 63CF, yet serves the new certificate.
    restart(&rig);
    assert_eq!(certificate_value(), new_cert, "C");
    sign_and_check(&rig, b"c").unwrap();
}

#[test]
fn another_card_with_the_same_object_ids_gets_none_of_the_first_cards_data() {
    let rig = rig(CardOptions::default(), ModemOptions::default(), "");
    sign_and_check(&rig, b"first card").unwrap();
    let first_cert = certificate_value();
    unsafe { C_Finalize(NULL) };
    // Another SIM in the same modem: same objects and IDs, other keys and certificate.
    let other = iotsafe_sim::bundle_from_seed(b"another card")
        .unwrap()
        .profile;
    let other_point = other
        .public_keys
        .iter()
        .find(|k| k.id == [0x01])
        .and_then(|k| k.point.clone())
        .unwrap();
    rig.modem
        .card()
        .with(|card| **card = iotsafe_sim::Card::new(other, CardOptions::default()));
    initialize_with_config(&rig.config);
    assert_ne!(certificate_value(), first_cert);
    let s = open_session(0);
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let sig = sign(s, CKM_ECDSA_SHA256, key, b"second card").unwrap();
    assert!(p256_verify(
        &other_point,
        &Sha256::digest(b"second card"),
        &sig
    ));
    let public = object_by_label(s, CKO_PUBLIC_KEY, "client");
    let ec_point = get_attr(s, public, CKA_EC_POINT).unwrap();
    assert!(
        ec_point.ends_with(&other_point),
        "the second card's public key"
    );
    unsafe { C_CloseSession(s) };
}

#[test]
fn a_corrupt_truncated_or_foreign_cache_file_is_ignored() {
    let rig = rig(CardOptions::default(), ModemOptions::default(), "");
    sign_and_check(&rig, b"fill").unwrap();
    let cache_dir = rig.dir.path().join("cache");
    let file = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a cache entry");
    let whole = std::fs::read(&file).unwrap();
    let cert = certificate_value();
    let garbage = whole.iter().map(|b| b ^ 0x21).collect::<Vec<u8>>();
    for (what, bytes) in [
        ("truncated", whole[..whole.len() / 3].to_vec()),
        ("corrupt", garbage),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let apdus = apdus_to_first_signature(&rig);
        assert!(apdus > 4, "{what}: the card was read again ({apdus} APDUs)");
        assert_eq!(certificate_value(), cert, "{what}");
    }
    // Trusted again once rewritten by a whole read.
    assert!(apdus_to_first_signature(&rig) <= 4);
    // A whole entry that belongs to another user is not trusted either (root can make one).
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole).unwrap();
    std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
    let apdus = apdus_to_first_signature(&rig);
    assert!(
        apdus > 4,
        "another user's entry: the card was read ({apdus} APDUs)"
    );
    assert_eq!(certificate_value(), cert);
    assert!(
        apdus_to_first_signature(&rig) <= 4,
        "rewritten as this user's"
    );
}

#[test]
fn a_sim_with_no_free_channel_is_a_device_error_until_one_is_free() {
    let mut profile = iotsafe_sim::default_profile();
    profile.max_channels = 1;
    let rig = rig_with_profile(
        profile,
        CardOptions::default(),
        ModemOptions::default(),
        "at_mode = \"cgla\"",
    );
    unsafe { C_Finalize(NULL) };
    // Another application (an eSIM LPA, the modem's toolkit) holds the SIM's only channel.
    let card = rig.modem.card();
    assert_eq!(
        card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]),
        vec![0x01, 0x90, 0x00]
    );
    initialize_with_config(&rig.config);
    assert_eq!(sign_and_check(&rig, b"no channel"), Err(CKR_DEVICE_ERROR));
    assert_eq!(
        card.open_channels(),
        vec![0, 1],
        "the other channel is left alone"
    );
    assert_eq!(card.transmit(&[0x00, 0x70, 0x80, 0x01]), vec![0x90, 0x00]);
    sign_and_check(&rig, b"a channel again").unwrap();
}

/// The modems of the field whose AT quirks public bug reports describe (docs/modems.md, AT quirks), as
/// the simulator models them, and what the module is configured with for each: nothing but the
/// command-line limit of the test modem, except where detection is impossible.
fn quirk_profiles() -> Vec<(&'static str, ModemOptions, &'static str)> {
    let base = "max_command_len = 300";
    vec![
        (
            "Sierra MC7455/EM7590: hex session ids",
            ModemOptions {
                hex_session_ids: true,
                ..every_quirk(AtDialect::Both)
            },
            base,
        ),
        (
            "Sierra EM9191: no AT+CCHC, text error codes",
            ModemOptions {
                no_cchc: true,
                verbose_cme: true,
                ..every_quirk(AtDialect::Both)
            },
            base,
        ),
        (
            "Dell DW5821e: AT+CSIM only",
            every_quirk(AtDialect::Csim),
            base,
        ),
        (
            "Quectel EG25: AT+CSIM on the basic channel only",
            ModemOptions {
                csim_basic_only: true,
                ..every_quirk(AtDialect::Both)
            },
            base,
        ),
        (
            "MediaTek: the SIM sleeps until AT+ECSIMSLEEP=0",
            ModemOptions {
                sim_sleeps: true,
                manufacturer: "MediaTek Inc.".into(),
                ..every_quirk(AtDialect::Both)
            },
            base,
        ),
        (
            "a sleeping SIM the module cannot recognise: setup_commands",
            ModemOptions {
                sim_sleeps: true,
                ..every_quirk(AtDialect::Both)
            },
            "max_command_len = 300\nsetup_commands = [\"AT+ECSIMSLEEP=0\"]",
        ),
        (
            "slow key generation (answer after a URC at 300 ms)",
            ModemOptions {
                slow_keygen_ms: 800,
                ..every_quirk(AtDialect::Both)
            },
            base,
        ),
    ]
}

#[test]
fn every_quirk_profile_signs_and_the_next_process_reuses_the_channel() {
    for (name, options, module) in quirk_profiles() {
        let cgla = options.at != AtDialect::Csim;
        let rig = rig(
            CardOptions {
                t0_style: true,
                ..Default::default()
            },
            options,
            module,
        );
        for i in 0..2 {
            sign_and_check(&rig, format!("{name} {i}").as_bytes())
                .unwrap_or_else(|rv| panic!("{name}: signature {i}: {rv:#x}"));
        }
        restart(&rig);
        sign_and_check(&rig, b"the next process").unwrap_or_else(|rv| panic!("{name}: {rv:#x}"));
        let (modem, card) = (rig.modem.stats(), rig.modem.card().stats());
        println!("{name}: {modem:?}");
        assert_eq!(card.interleaved, 0, "{name}");
        assert_eq!(
            card.open_channel_count, 1,
            "{name}: one shared channel: {card:?}"
        );
        if cgla {
            assert_eq!(modem.ccho, 1, "{name}: one AT+CCHO for both processes");
            assert_eq!(modem.max_open_sessions, 1, "{name}: {modem:?}");
        } else {
            assert_eq!(modem.cgla, 0, "{name}: {modem:?}");
        }
    }
}

#[test]
fn sierra_hex_session_ids_go_back_unchanged_across_processes() {
    let rig = rig(
        CardOptions::default(),
        ModemOptions {
            hex_session_ids: true,
            echo: true,
            ..Default::default()
        },
        "",
    );
    for i in 0..3 {
        sign_and_check(&rig, format!("process {i}").as_bytes()).unwrap();
        restart(&rig);
    }
    let stats = rig.modem.stats();
    // A decimal or zero-stripped id answers +CME ERROR: 50 (or 21) and no signature is made.
    assert!(stats.cme_error.is_empty(), "{stats:?}");
    assert_eq!((stats.ccho, stats.csim), (1, 0), "{stats:?}");
    assert!(stats.cgla >= 6, "{stats:?}");
    // The note keeps the id as the modem wrote it.
    let notes: Vec<u8> = std::fs::read_dir(rig.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "lock"))
        .filter_map(|p| std::fs::read(p).ok())
        .flatten()
        .collect();
    assert!(
        notes
            .windows(16)
            .any(|w| w.eq_ignore_ascii_case(b"00000000038aa330")),
        "the hex session id in the endpoint's note"
    );
}

#[test]
fn em9191_text_errors_are_understood_and_no_cchc_leaks_no_channel() {
    let mut profile = iotsafe_sim::default_profile();
    profile.max_channels = 2;
    let rig = rig_with_profile(
        profile,
        CardOptions::default(),
        ModemOptions {
            no_cchc: true,
            verbose_cme: true,
            busy_every: 2,
            echo: true,
            ..Default::default()
        },
        "",
    );
    // "+CME ERROR: SIM busy" is retried.
    sign_and_check(&rig, b"busy").unwrap();
    assert!(rig.modem.stats().busy > 0);
    // Ten processes, one channel: the module never needs AT+CCHC.
    for i in 0..10 {
        restart(&rig);
        sign_and_check(&rig, format!("process {i}").as_bytes()).unwrap();
    }
    let stats = rig.modem.stats();
    assert_eq!((stats.ccho, stats.max_open_sessions), (1, 1), "{stats:?}");
    // An applet error on the recorded channel (the identity proof of a new process fails, a
    // signature is refused): the channel is still the applet's, so it is kept, not replaced by
    // another session that nothing could close.
    for (ins, sw) in [(0xCD, 0x6F00), (0x2A, 0x6A88)] {
        let faults = rig.modem.card().faults();
        let fired = faults.fired();
        faults.arm(
            iotsafe_sim::Fault::new(iotsafe_sim::FaultKind::StatusWord(sw))
                .on_ins(ins)
                .times(1),
        );
        restart(&rig);
        let _ = sign_and_check(&rig, b"after an applet error");
        assert!(faults.fired() > fired, "{sw:04X} to {ins:02X} was answered");
        faults.clear();
        restart(&rig);
        sign_and_check(&rig, b"after the applet error").unwrap();
    }
    let stats = rig.modem.stats();
    println!("after applet errors: {stats:?}");
    assert_eq!(stats.max_open_sessions, 1, "{stats:?}");
    // "+CME ERROR: SIM not inserted": removal, then recovery.
    let s = open_session(0);
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    rig.modem.card().remove();
    assert_eq!(
        sign(s, CKM_ECDSA_SHA256, key, b"out"),
        Err(CKR_DEVICE_REMOVED)
    );
    rig.modem.card().insert();
    sign_and_check(&rig, b"back in").unwrap();
    // "+CME ERROR: operation not allowed" to AT+CCHO: no channel free. Another application
    // holds both channels after a power cycle.
    unsafe { C_Finalize(NULL) };
    let card = rig.modem.card();
    card.reset();
    for ch in [1, 2] {
        assert_eq!(
            card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]),
            vec![ch, 0x90, 0x00]
        );
    }
    initialize_with_config(&rig.config);
    assert_eq!(sign_and_check(&rig, b"no channel"), Err(CKR_DEVICE_ERROR));
    assert_eq!(card.open_channels(), vec![0, 1, 2], "left alone");
    let texts = rig.modem.stats().cme_error;
    assert!(
        texts.contains_key(&3) && texts.contains_key(&10) && texts.contains_key(&14),
        "answered as text: {texts:?}"
    );
}

#[test]
fn dw5821e_csim_only_opens_channels_beyond_three_with_their_cla_coding() {
    let rig = rig(
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
        every_quirk(AtDialect::Csim),
        "max_command_len = 300",
    );
    unsafe { C_Finalize(NULL) };
    // Channels 1-4 are someone else's: ours is 5, CLA 0x41 (ISO 7816-4 further interindustry).
    let card = rig.modem.card();
    for ch in 1..=4 {
        assert_eq!(
            card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]),
            vec![ch, 0x90, 0x00]
        );
    }
    initialize_with_config(&rig.config);
    for i in 0..3 {
        sign_and_check(&rig, format!("channel 5, {i}").as_bytes()).unwrap();
    }
    assert_eq!(card.open_channels(), vec![0, 1, 2, 3, 4, 5]);
    let stats = rig.modem.stats();
    assert!(
        stats.csim > 0 && stats.ccho == 0 && stats.cgla == 0,
        "{stats:?}"
    );
}

#[test]
fn eg25_auto_uses_cgla_and_forced_csim_is_a_clear_error_that_leaks_no_channel() {
    let options = ModemOptions {
        csim_basic_only: true,
        echo: true,
        ..Default::default()
    };
    let auto = rig(CardOptions::default(), options.clone(), "");
    sign_and_check(&auto, b"auto").unwrap();
    let stats = auto.modem.stats();
    assert!(stats.cgla > 0 && stats.csim == 0, "{stats:?}");
    drop(auto);
    let forced = rig(CardOptions::default(), options, "at_mode = \"csim\"");
    let card = forced.modem.card().clone();
    let mut h: CK_SESSION_HANDLE = 0;
    assert_eq!(
        unsafe { C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut h) },
        CKR_DEVICE_ERROR
    );
    assert!(
        forced.modem.stats().error > 0,
        "AT+CSIM on channel 1 refused"
    );
    assert_eq!(
        card.open_channels(),
        vec![0],
        "the channel was closed again"
    );
}

#[test]
fn mediatek_is_woken_by_its_manufacturer_and_others_need_setup_commands() {
    let sleeping = ModemOptions {
        sim_sleeps: true,
        ..Default::default()
    };
    let mediatek = rig(
        CardOptions::default(),
        ModemOptions {
            manufacturer: "MediaTek Inc.".into(),
            ..sleeping.clone()
        },
        "",
    );
    sign_and_check(&mediatek, b"awake").unwrap();
    drop(mediatek);
    let unknown = rig(CardOptions::default(), sleeping, "");
    let mut h: CK_SESSION_HANDLE = 0;
    assert_eq!(
        unsafe { C_OpenSession(0, CKF_SERIAL_SESSION, NULL, None, &mut h) },
        CKR_DEVICE_ERROR
    );
    assert!(
        unknown
            .modem
            .stats()
            .cme_error
            .get(&3)
            .copied()
            .unwrap_or(0)
            > 0,
        "the sleeping SIM refused with +CME ERROR: 3"
    );
}

/// C_GenerateKeyPair on a provisioning card: the new key's EC point, and a signature with it.
fn generate_key_pair(s: CK_SESSION_HANDLE) -> Result<(Vec<u8>, CK_OBJECT_HANDLE), CK_RV> {
    let mut oid = vec![0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    let (mut id, mut label, mut tru) = ([0x30u8], b"slow".to_vec(), [1u8]);
    let mut m = mech(CKM_EC_KEY_PAIR_GEN);
    let (mut public_key, mut private_key) = (0, 0);
    let mut public = [attr(CKA_EC_PARAMS, &mut oid), attr(CKA_TOKEN, &mut tru)];
    let mut private = [
        attr(CKA_ID, &mut id),
        attr(CKA_LABEL, &mut label),
        attr(CKA_SIGN, &mut tru),
    ];
    let rv = unsafe {
        C_GenerateKeyPair(
            s,
            &mut m,
            public.as_mut_ptr(),
            2,
            private.as_mut_ptr(),
            3,
            &mut public_key,
            &mut private_key,
        )
    };
    if rv != CKR_OK {
        return Err(rv);
    }
    let point = get_attr(s, public_key, CKA_EC_POINT).unwrap()[2..].to_vec();
    Ok((point, private_key))
}

#[test]
fn key_generation_slower_than_300_ms_waits_for_the_final_result() {
    let slow = ModemOptions {
        slow_keygen_ms: 1200,
        echo: true,
        urc: true,
        split: true,
        ..Default::default()
    };
    // A deadline shorter than the card: the module gives up, and the port is usable after.
    let short = rig_with_profile(
        iotsafe_sim::default_profile_with_provisioning(),
        CardOptions::default(),
        slow.clone(),
        "max_command_len = 300\ntimeout_ms = 600",
    );
    let s = open_rw_session(0);
    assert_eq!(generate_key_pair(s).err(), Some(CKR_DEVICE_ERROR));
    drop(short);
    let rig = rig_with_profile(
        iotsafe_sim::default_profile_with_provisioning(),
        CardOptions::default(),
        slow,
        "max_command_len = 300\ntimeout_ms = 5000",
    );
    let s = open_rw_session(0);
    let urcs_before = rig.modem.stats().urc;
    let (point, key) = generate_key_pair(s).unwrap();
    assert!(rig.modem.stats().urc > urcs_before);
    let sig = sign(s, CKM_ECDSA_SHA256, key, b"new key").unwrap();
    assert!(p256_verify(&point, &Sha256::digest(b"new key"), &sig));
}
