//! The module's measured speed, as one markdown report (issue #6). In-process simulated cards
//! behind the module's real code paths; figures, not pass/fail.
//!
//! 1. APDUs per operation, from the simulator's counters.
//! 2. Card-bound throughput: one token whose card takes `IOTSAFE_BENCH_APDU_MS` (default 5) per
//!    APDU and `IOTSAFE_BENCH_SIGNATURE_MS` (default 40) per signature, signed on by 1/2/4/8
//!    threads → signatures/s and the fraction of the card's ceiling 1 / (2 × APDU + signature).
//! 3. Scaling across tokens: 1/2/4 such cards, one thread each → aggregate rate vs N × one.
//! 4. Module overhead: a zero-latency card vs SoftHSM2 (`/usr/lib/softhsm/libsofthsm2.so`,
//!    a token made with `softhsm2-util` in `target/bench/softhsm/`) signing the same data
//!    through PKCS#11 in the same run → time per `C_SignInit` + `C_Sign`.
//! 5. Mutual-TLS handshakes/s: measured over the real stack by `scripts/bench-tls.sh`, which
//!    leaves `target/bench/tls.md`; included here when present.
//!
//! Run: `cargo bench --bench performance` (prints the report);
//! `cargo bench --bench performance -- --write` also writes `docs/benchmarks.md`
//! (`scripts/benchmarks.sh --write` does the TLS part first). `IOTSAFE_BENCH_SECONDS` (default
//! 4) sets the length of each throughput measurement.

#[path = "../tests/helpers/mod.rs"]
mod helpers;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use helpers::inprocess::*;
use helpers::sim_reader::unplug_sim_readers;
use iotsafe_pkcs11::ffi::*;
use iotsafe_sim::{CardOptions, SharedCard};

const NULL: *mut std::ffi::c_void = std::ptr::null_mut();
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The report: printed as it is made, kept for `--write`.
struct Report(String);

impl Report {
    fn line(&mut self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
        let _ = writeln!(self.0, "{}", text.as_ref());
    }
}

fn card(apdu_ms: f64, signature_ms: f64) -> SharedCard {
    SharedCard::from_profile(
        iotsafe_sim::default_profile(),
        CardOptions {
            latency_per_apdu: Duration::from_secs_f64(apdu_ms / 1000.0),
            latency_per_signature: Duration::from_secs_f64(signature_ms / 1000.0),
            ..Default::default()
        },
    )
}

fn by_ins(card: &SharedCard) -> String {
    card.stats()
        .by_ins
        .iter()
        .map(|(ins, n)| format!("{ins:02X}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1. APDUs per operation.
fn apdu_counts(r: &mut Report) {
    let h = Harness::default();
    let card = h.card().clone();
    r.line("## APDUs per operation");
    r.line("");
    r.line("Zero-latency in-process card; counts from the simulator.");
    r.line("");
    r.line("| operation | APDUs | target | by INS |");
    r.line("|---|---|---|---|");
    let mut row = |op: &str, n: u64, target: &str, detail: String| {
        r.line(format!("| {op} | {n} | {target} | {detail} |"));
    };
    h.apdus();
    let start = Instant::now();
    let s = h.init_and_open();
    let detail = format!(
        "{} in {:.1} ms",
        by_ins(&card),
        start.elapsed().as_secs_f64() * 1e3
    );
    row(
        "first session after C_Initialize (connect, read objects)",
        h.apdus(),
        "one-off",
        detail,
    );
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    let public = object_by_label(s, CKO_PUBLIC_KEY, "client");
    h.apdus();
    let all = find(s, &mut []);
    row(
        "C_FindObjectsInit + C_FindObjects + C_FindObjectsFinal (all)",
        h.apdus(),
        "0",
        format!("{} objects", all.len()),
    );
    for t in [CKA_EC_POINT, CKA_EC_PARAMS, CKA_LABEL, CKA_ID] {
        get_attr(s, public, t).expect("attribute");
    }
    row(
        "C_GetAttributeValue (4 attributes, size query + value)",
        h.apdus(),
        "0",
        String::new(),
    );
    for (name, m) in [
        ("CKM_ECDSA", CKM_ECDSA),
        ("CKM_ECDSA_SHA256", CKM_ECDSA_SHA256),
        ("CKM_ECDSA_SHA384", CKM_ECDSA_SHA384),
        ("CKM_ECDSA_SHA512", CKM_ECDSA_SHA512),
    ] {
        sign(s, m, key, &[0x5A; 32]).expect("warm-up");
        h.apdus();
        const N: u64 = 100;
        for _ in 0..N {
            sign(s, m, key, &[0x5A; 32]).expect("C_Sign");
        }
        let detail = format!("{} over {N}", by_ins(&card));
        let per = h.apdus() as f64 / N as f64;
        row(
            &format!("steady-state C_SignInit + C_Sign ({name}), per signature"),
            per.round() as u64,
            "2",
            detail,
        );
    }
    unsafe {
        let mut mm = mech(CKM_ECDSA_SHA256);
        assert_eq!(C_SignInit(s, &mut mm, key), CKR_OK);
        let mut len: CK_ULONG = 0;
        h.apdus();
        assert_eq!(
            C_Sign(
                s,
                b"x".as_ptr() as *mut _,
                1,
                std::ptr::null_mut(),
                &mut len
            ),
            CKR_OK
        );
        row(
            "C_Sign size query (NULL buffer)",
            h.apdus(),
            "0",
            String::new(),
        );
        let mut sig = vec![0u8; len as usize];
        assert_eq!(
            C_Sign(s, b"x".as_ptr() as *mut _, 1, sig.as_mut_ptr(), &mut len),
            CKR_OK
        );
        h.apdus();
        assert_eq!(C_VerifyInit(s, &mut mm, public), CKR_OK);
        assert_eq!(
            C_Verify(s, b"x".as_ptr() as *mut _, 1, sig.as_mut_ptr(), len),
            CKR_OK
        );
        row(
            "C_VerifyInit + C_Verify (on the host, cached public key)",
            h.apdus(),
            "0",
            String::new(),
        );
        let mut buf = vec![0u8; 1024];
        assert_eq!(C_GenerateRandom(s, buf.as_mut_ptr(), 1024), CKR_OK);
        let detail = by_ins(&card);
        row("C_GenerateRandom, per 1 KiB", h.apdus(), "4", detail);
    }
    // Key generation in the volatile container 04 and ECDH with it.
    let rw = open_rw_session(0);
    let mut oid = P256_OID.to_vec();
    let mut id = [0x04u8];
    let mut tru = [1u8];
    let mut public_t = [attr(CKA_EC_PARAMS, &mut oid), attr(CKA_TOKEN, &mut tru)];
    let mut private_t = [attr(CKA_ID, &mut id)];
    let mut m = mech(CKM_EC_KEY_PAIR_GEN);
    let (mut pubh, mut privh) = (0, 0);
    h.apdus();
    let rv = unsafe {
        C_GenerateKeyPair(
            rw,
            &mut m,
            public_t.as_mut_ptr(),
            public_t.len() as CK_ULONG,
            private_t.as_mut_ptr(),
            private_t.len() as CK_ULONG,
            &mut pubh,
            &mut privh,
        )
    };
    if rv == CKR_OK {
        let detail = by_ins(&card);
        row(
            "C_GenerateKeyPair (P-256, on the card)",
            h.apdus(),
            "1–2",
            detail,
        );
    } else {
        row(
            "C_GenerateKeyPair (P-256, on the card)",
            0,
            "1–2",
            format!("not yet implemented ({rv:#x})"),
        );
    }
    let base = object_by_label(rw, CKO_PRIVATE_KEY, "ecdh");
    let peer = p256::SecretKey::from_slice(&[0x42u8; 32]).expect("scalar");
    let peer_point = peer.public_key().to_sec1_bytes().to_vec();
    let mut params = CK_ECDH1_DERIVE_PARAMS {
        kdf: CKD_NULL,
        ulSharedDataLen: 0,
        pSharedData: std::ptr::null_mut(),
        ulPublicDataLen: peer_point.len() as CK_ULONG,
        pPublicData: peer_point.as_ptr() as *mut _,
    };
    let mut m = CK_MECHANISM {
        mechanism: CKM_ECDH1_DERIVE,
        pParameter: &mut params as *mut _ as *mut _,
        ulParameterLen: std::mem::size_of::<CK_ECDH1_DERIVE_PARAMS>() as CK_ULONG,
    };
    let mut derived = 0;
    h.apdus();
    let rv = unsafe { C_DeriveKey(rw, &mut m, base, std::ptr::null_mut(), 0, &mut derived) };
    if rv == CKR_OK {
        let detail = by_ins(&card);
        row(
            "C_DeriveKey (CKM_ECDH1_DERIVE, CKD_NULL)",
            h.apdus(),
            "3: PUT PUBLIC KEY (24 + D8) of the peer, COMPUTE DH",
            detail,
        );
    } else {
        row(
            "C_DeriveKey (CKM_ECDH1_DERIVE, CKD_NULL)",
            0,
            "3",
            format!("not yet implemented ({rv:#x})"),
        );
    }
    r.line("");
}

/// Signs `count` times on `slot` in a fresh session.
fn sign_n(slot: CK_SLOT_ID, count: usize, start: &Barrier) {
    let s = open_session(slot);
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    sign(s, CKM_ECDSA_SHA256, key, b"warm-up").expect("C_Sign");
    start.wait();
    for i in 0..count {
        sign(s, CKM_ECDSA_SHA256, key, format!("rate {i}").as_bytes()).expect("C_Sign");
    }
    unsafe { C_CloseSession(s) };
}

/// Signatures per second when each of `threads` signs `per_thread` times on its slot.
fn rate(threads: &[CK_SLOT_ID], per_thread: usize) -> f64 {
    let start = Arc::new(Barrier::new(threads.len() + 1));
    let t0 = std::thread::scope(|scope| {
        for slot in threads {
            let start = start.clone();
            scope.spawn(move || sign_n(*slot, per_thread, &start));
        }
        start.wait();
        Instant::now()
    });
    (threads.len() * per_thread) as f64 / t0.elapsed().as_secs_f64()
}

/// 2. and 3. Card-bound throughput on one token, and across tokens.
fn card_bound(r: &mut Report) {
    let apdu_ms = env_f64("IOTSAFE_BENCH_APDU_MS", 5.0);
    let signature_ms = env_f64("IOTSAFE_BENCH_SIGNATURE_MS", 40.0);
    let seconds = env_f64("IOTSAFE_BENCH_SECONDS", 4.0);
    let ceiling = 1000.0 / (2.0 * apdu_ms + signature_ms);
    let total = ((ceiling * seconds).round() as usize).max(8);

    let h = Harness::with_cards((0..4).map(|_| card(apdu_ms, signature_ms)).collect());
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    r.line("## Card-bound throughput, one token");
    r.line("");
    r.line(format!(
        "Latency model: {apdu_ms} ms per APDU + {signature_ms} ms per signature, so the card allows \
         at most 1 / (2 × {apdu_ms} + {signature_ms}) ms = {ceiling:.2} signatures/s. \
         C_SignInit + C_Sign (CKM_ECDSA_SHA256), each thread in its own session, about {seconds} s per row."
    ));
    r.line("");
    r.line("| threads on one token | signatures/s | fraction of the card's ceiling | target |");
    r.line("|---|---|---|---|");
    for threads in [1usize, 2, 4, 8] {
        h.readers[0].card.reset_stats();
        let per_thread = total.div_ceil(threads);
        let got = rate(&vec![0; threads], per_thread);
        let stats = h.readers[0].card.stats();
        assert_eq!(stats.interleaved, 0, "no interleaved sequences");
        let target = if threads == 8 { "≥ 0.95" } else { "" };
        r.line(format!(
            "| {threads} | {got:.2} | {:.3} | {target} |",
            got / ceiling
        ));
    }
    drop(h);
    let mut per_protocol = Vec::new();
    for protocol in ModemProtocol::ALL {
        let m = modem_rate(protocol, apdu_ms, signature_ms, total.min(60));
        r.line(format!(
            "| 1, the card behind a simulated modem ({}) | {:.2} | {:.3} | \
             (module adds {:.1} ms per signature) |",
            protocol.wire(),
            m.rate,
            m.rate / ceiling,
            1000.0 / m.rate - 1000.0 / ceiling
        ));
        per_protocol.push((protocol, m));
    }
    r.line("");
    r.line("## One signature over each modem protocol");
    r.line("");
    r.line(
        "The same card and latency model behind the simulated modem on a pseudo-terminal, \
         the module configured with that modem only (MBIM and QMI: the control device directly). \
         APDUs the card received per steady-state signature, modem messages (AT command lines, \
         MBIM or QMI requests) the modem received per signature, and the time of one.",
    );
    r.line("");
    r.line("| protocol | APDUs per signature | modem requests per signature | ms per signature |");
    r.line("|---|---|---|---|");
    for (protocol, m) in &per_protocol {
        r.line(format!(
            "| {} | {:.2} | {:.2} | {:.1} |",
            protocol.wire(),
            m.apdus_per_signature,
            m.requests_per_signature,
            1000.0 / m.rate
        ));
    }
    r.line("");
    let h = Harness::with_cards((0..4).map(|_| card(apdu_ms, signature_ms)).collect());
    unsafe { assert_eq!(C_Initialize(NULL), CKR_OK) };
    r.line("## Scaling across tokens");
    r.line("");
    r.line(
        "The same latency model on every card; one thread per token; aggregate signatures/s vs \
         N × the rate of one token alone (target ≥ 0.9 × N).",
    );
    r.line("");
    r.line("| tokens | aggregate signatures/s | vs N × one token |");
    r.line("|---|---|---|");
    let one = rate(&[0], total);
    for n in [1usize, 2, 4] {
        let slots: Vec<CK_SLOT_ID> = (0..n as CK_SLOT_ID).collect();
        let got = if n == 1 { one } else { rate(&slots, total) };
        r.line(format!(
            "| {n} | {got:.2} | {:.3} × N |",
            got / (one * n as f64)
        ));
    }
    r.line("");
    drop(h);
}

/// How the simulated modem of a benchmark row talks.
#[derive(Clone, Copy)]
enum ModemProtocol {
    At,
    Mbim,
    Qmi,
}

impl ModemProtocol {
    const ALL: [ModemProtocol; 3] = [ModemProtocol::At, ModemProtocol::Mbim, ModemProtocol::Qmi];

    fn name(self) -> &'static str {
        match self {
            ModemProtocol::At => "at",
            ModemProtocol::Mbim => "mbim",
            ModemProtocol::Qmi => "qmi",
        }
    }

    /// What goes over the wire, for the report.
    fn wire(self) -> &'static str {
        match self {
            ModemProtocol::At => "AT+CGLA on a pty",
            ModemProtocol::Mbim => "MBIM on a pty",
            ModemProtocol::Qmi => "QMI on a pty",
        }
    }
}

/// One modem row: signatures/s, and per steady-state signature the APDUs the card received and
/// the requests the modem received.
struct ModemFigures {
    rate: f64,
    apdus_per_signature: f64,
    requests_per_signature: f64,
}

/// Signatures per second on one card behind the simulator's modem on a pseudo-terminal, the
/// module configured with only that modem.
fn modem_rate(
    protocol: ModemProtocol,
    apdu_ms: f64,
    signature_ms: f64,
    total: usize,
) -> ModemFigures {
    let _guard = module_lock();
    unplug_sim_readers();
    let dir = root().join("target/bench/modem");
    std::fs::create_dir_all(&dir).expect("target/bench/modem");
    let link = dir.join(format!("{}-device", protocol.name()));
    let card = card(apdu_ms, signature_ms);
    let modem = match protocol {
        ModemProtocol::At => iotsafe_sim::modem::spawn(card.clone(), &link, Default::default()),
        ModemProtocol::Mbim => {
            iotsafe_sim::modem::mbim::spawn(card.clone(), &link, Default::default(), None)
        }
        ModemProtocol::Qmi => {
            iotsafe_sim::modem::qmi::spawn(card.clone(), &link, Default::default(), None)
        }
    }
    .expect("spawn the simulated modem");
    initialize_with_config(&format!(
        "cache = false\n[pcsc]\nenabled = false\n[[modem]]\nprotocol = \"{}\"\ndevice = \"{}\"\n{}",
        protocol.name(),
        link.display(),
        match protocol {
            ModemProtocol::At => "",
            _ => "proxy = false\n",
        }
    ));
    // Warm up (connection, channel, key lookup) before counting.
    rate(&[0], 2);
    card.reset_stats();
    modem.reset_stats();
    let got = rate(&[0], total);
    let apdus = card.stats().total as f64;
    let requests = modem.stats().commands as f64;
    unsafe { C_Finalize(NULL) };
    drop(modem);
    ModemFigures {
        rate: got,
        apdus_per_signature: apdus / total as f64,
        requests_per_signature: requests / total as f64,
    }
}

/// Raw PKCS#11 calls into SoftHSM2 through its function list (the same C ABI our module is
/// called through).
struct SoftHsm {
    f: &'static CK_FUNCTION_LIST,
    session: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
}

fn softhsm() -> Result<SoftHsm, String> {
    let module = Path::new("/usr/lib/softhsm/libsofthsm2.so");
    if !module.exists() {
        return Err(format!(
            "{} not found (apt-get install softhsm2)",
            module.display()
        ));
    }
    let dir = root().join("target/bench/softhsm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tokens")).map_err(|e| e.to_string())?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    // SAFETY: set before SoftHSM2 is loaded; this benchmark is single-threaded here.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let init = std::process::Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "12345678",
            "--pin",
            "1234",
        ])
        .output()
        .map_err(|e| format!("softhsm2-util: {e}"))?;
    if !init.status.success() {
        return Err(format!(
            "softhsm2-util failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    unsafe {
        let path = std::ffi::CString::new(module.as_os_str().as_encoded_bytes()).unwrap();
        let lib = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            return Err("dlopen libsofthsm2.so failed".into());
        }
        let sym = libc::dlsym(lib, c"C_GetFunctionList".as_ptr());
        if sym.is_null() {
            return Err("no C_GetFunctionList".into());
        }
        let get: unsafe extern "C" fn(CK_FUNCTION_LIST_PTR_PTR) -> CK_RV = std::mem::transmute(sym);
        let mut list: CK_FUNCTION_LIST_PTR = std::ptr::null_mut();
        check(get(&mut list), "C_GetFunctionList")?;
        let f: &'static CK_FUNCTION_LIST = &*list;
        check(f.C_Initialize.unwrap()(NULL), "C_Initialize")?;
        let mut slots = [0 as CK_SLOT_ID; 8];
        let mut n: CK_ULONG = 8;
        check(
            f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut n),
            "C_GetSlotList",
        )?;
        if n == 0 {
            return Err("no SoftHSM2 token".into());
        }
        let mut session = 0;
        check(
            f.C_OpenSession.unwrap()(
                slots[0],
                CKF_SERIAL_SESSION | CKF_RW_SESSION,
                NULL,
                None,
                &mut session,
            ),
            "C_OpenSession",
        )?;
        check(
            f.C_Login.unwrap()(session, CKU_USER, b"1234".as_ptr() as *mut _, 4),
            "C_Login",
        )?;
        let mut oid = P256_OID.to_vec();
        let (mut fals, mut tru) = ([CK_FALSE], [CK_TRUE]);
        let mut public_t = [
            attr(CKA_EC_PARAMS, &mut oid),
            attr(CKA_TOKEN, &mut fals),
            attr(CKA_VERIFY, &mut tru),
        ];
        let (mut fals2, mut tru2, mut tru3) = ([CK_FALSE], [CK_TRUE], [CK_TRUE]);
        let mut private_t = [
            attr(CKA_TOKEN, &mut fals2),
            attr(CKA_SIGN, &mut tru2),
            attr(CKA_SENSITIVE, &mut tru3),
        ];
        let mut m = mech(CKM_EC_KEY_PAIR_GEN);
        let (mut pubh, mut key) = (0, 0);
        check(
            f.C_GenerateKeyPair.unwrap()(
                session,
                &mut m,
                public_t.as_mut_ptr(),
                public_t.len() as CK_ULONG,
                private_t.as_mut_ptr(),
                private_t.len() as CK_ULONG,
                &mut pubh,
                &mut key,
            ),
            "C_GenerateKeyPair",
        )?;
        Ok(SoftHsm { f, session, key })
    }
}

fn check(rv: CK_RV, what: &str) -> Result<(), String> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(format!("SoftHSM2 {what}: {rv:#x}"))
    }
}

impl SoftHsm {
    fn sign(&self, data: &[u8]) -> CK_RV {
        unsafe {
            let mut m = mech(CKM_ECDSA);
            let rv = self.f.C_SignInit.unwrap()(self.session, &mut m, self.key);
            if rv != CKR_OK {
                return rv;
            }
            let mut sig = [0u8; 64];
            let mut len: CK_ULONG = 64;
            self.f.C_Sign.unwrap()(
                self.session,
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len,
            )
        }
    }
}

/// Our C_SignInit + C_Sign, the same shape as `SoftHsm::sign`.
fn our_sign(s: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE, data: &[u8]) -> CK_RV {
    unsafe {
        let mut m = mech(CKM_ECDSA);
        let rv = C_SignInit(s, &mut m, key);
        if rv != CKR_OK {
            return rv;
        }
        let mut sig = [0u8; 64];
        let mut len: CK_ULONG = 64;
        C_Sign(
            s,
            data.as_ptr() as *mut _,
            data.len() as CK_ULONG,
            sig.as_mut_ptr(),
            &mut len,
        )
    }
}

/// 4. Module overhead vs SoftHSM2.
fn overhead(r: &mut Report) {
    const N: u32 = 2000;
    let data = [0xA5u8; 32];
    r.line("## Module overhead vs SoftHSM2");
    r.line("");
    r.line(format!(
        "C_SignInit + C_Sign (CKM_ECDSA on a 32-byte digest: SoftHSM2 2.6 has no CKM_ECDSA_SHA256), {N} times, single thread, same run. \
         Our module signs on a zero-latency in-process simulated card, whose own time (APDU \
         decoding and a software P-256 signature in the simulator) is measured inside the reader \
         and shown separately; SoftHSM2 signs in software with OpenSSL."
    ));
    r.line("");
    let h = Harness::default();
    let s = h.init_and_open();
    let key = object_by_label(s, CKO_PRIVATE_KEY, "client");
    for _ in 0..50 {
        assert_eq!(our_sign(s, key, &data), CKR_OK);
    }
    let card_nanos = &h.readers[0].card_nanos;
    let card0 = card_nanos.load(Ordering::Relaxed);
    let t = Instant::now();
    for _ in 0..N {
        assert_eq!(our_sign(s, key, &data), CKR_OK);
    }
    let ours = t.elapsed().as_secs_f64() / N as f64 * 1e6;
    let card = (card_nanos.load(Ordering::Relaxed) - card0) as f64 / N as f64 / 1e3;
    let module = ours - card;
    drop(h);
    r.line("| | µs per C_SignInit + C_Sign | ratio to SoftHSM2 | target |");
    r.line("|---|---|---|---|");
    match softhsm() {
        Ok(hsm) => {
            for _ in 0..50 {
                assert_eq!(hsm.sign(&data), CKR_OK);
            }
            let t = Instant::now();
            for _ in 0..N {
                assert_eq!(hsm.sign(&data), CKR_OK);
            }
            let soft = t.elapsed().as_secs_f64() / N as f64 * 1e6;
            r.line(format!("| SoftHSM2 (software key) | {soft:.1} | 1.00 | |"));
            r.line(format!(
                "| this module + simulated card, total | {ours:.1} | {:.2} | |",
                ours / soft
            ));
            r.line(format!("| of which the simulated card (APDU handling + software P-256 in the simulator) | {card:.1} | {:.2} | |", card / soft));
            r.line(format!(
                "| of which this module (total − card) | {module:.1} | {:.2} | ≤ 1.5 |",
                module / soft
            ));
            unsafe {
                hsm.f.C_Finalize.unwrap()(NULL);
            }
        }
        Err(e) => {
            r.line(format!(
                "| this module + simulated card, total | {ours:.1} | SoftHSM2 unavailable: {e} | |"
            ));
            r.line(format!(
                "| of which this module (total − card) | {module:.1} | | |"
            ));
        }
    }
    r.line("");
}

/// 5. The TLS figure from `scripts/bench-tls.sh`, if it ran.
fn tls(r: &mut Report) {
    let file = root().join("target/bench/tls.md");
    r.line("## Mutual-TLS handshakes");
    r.line("");
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            for line in text.lines() {
                r.line(line);
            }
        }
        Err(_) => r.line(
            "Not measured in this run: `scripts/bench-tls.sh` runs it over the pcscd+vpcd stack \
             (`scripts/benchmarks.sh` starts it, `scripts/test.sh` runs it).",
        ),
    }
    r.line("");
}

fn main() {
    let write = std::env::args().any(|a| a == "--write");
    let mut r = Report(String::new());
    r.line("# Benchmarks");
    r.line("");
    r.line(format!(
        "Made by `cargo bench --bench performance` ({}; {} CPU cores).",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    ));
    r.line("");
    apdu_counts(&mut r);
    card_bound(&mut r);
    overhead(&mut r);
    tls(&mut r);
    if write {
        let path = root().join("docs/benchmarks.md");
        std::fs::create_dir_all(path.parent().unwrap()).expect("docs/");
        std::fs::write(&path, &r.0).expect("write docs/benchmarks.md");
        eprintln!("wrote {}", path.display());
    }
}
