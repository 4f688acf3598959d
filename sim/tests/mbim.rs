//! The simulated MBIM modem checked against the real tools: Debian's `mbimcli` (libmbim 1.28)
//! directly on the pty, through the real `/usr/libexec/mbim-proxy`, and through the
//! simulator's own proxy mode; and the protocol corners the tools do not reach (a command
//! before OPEN, unknown CIDs, fragments) with raw messages.
//!
//! Tests that need the installed tools skip (with a line on stderr) when `mbimcli` is missing.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use iotsafe_sim::modem::{ModemHandle, ModemOptions, mbim};
use iotsafe_sim::{CardOptions, SharedCard, default_profile};

const MBIMCLI_TIMEOUT: &str = "20";
const IOT_SAFE_GET_DATA: &str = "80CB000000";
const UICC: &str = "c2f6588ef0374bc98665f4d44bd09367";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iotsafe-sim-mbim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start(dir: &Path, proxy: Option<&str>) -> ModemHandle {
    let card = SharedCard::from_profile(default_profile(), CardOptions::default());
    mbim::spawn(card, &dir.join("modem"), ModemOptions::default(), proxy).expect("spawn")
}

fn have_mbimcli() -> bool {
    let found = Command::new("mbimcli").arg("--version").output().is_ok();
    if !found {
        eprintln!("mbimcli is not installed (libmbim-utils): skipped");
    }
    found
}

/// `mbimcli [-p] -d DEVICE ARGS` bounded by `timeout`.
fn mbimcli(proxy: bool, device: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg(MBIMCLI_TIMEOUT).arg("mbimcli");
    if proxy {
        cmd.arg("-p");
    }
    cmd.arg("-d").arg(device).args(args);
    cmd.output().expect("run mbimcli")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn succeeded(o: &Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "mbimcli failed: {t}");
    t
}

/// The value printed after `label:` (mbimcli pads labels with spaces and tabs).
fn field(out: &str, label: &str) -> Option<String> {
    out.lines().find_map(|l| {
        let l = l.trim();
        l.strip_prefix(label)
            .and_then(|r| r.strip_prefix(':'))
            .map(|r| r.trim().to_string())
    })
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What the card itself answers to the IoT SAFE GET DATA on a channel of its own (data
/// without SW), to compare with what the tools print.
fn card_answer_to_get_data() -> Vec<u8> {
    let profile = default_profile();
    let card = SharedCard::from_profile(profile.clone(), CardOptions::default());
    let r = card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]);
    let ch = r[0];
    let mut select = vec![ch, 0xA4, 0x04, 0x00, profile.aid.len() as u8];
    select.extend_from_slice(&profile.aid);
    card.transmit(&select);
    let mut r = card.transmit(&[0x80 | ch, 0xCB, 0x00, 0x00, 0x00]);
    assert_eq!(r[r.len() - 2..], [0x90, 0x00]);
    r.truncate(r.len() - 2);
    r
}

/// ATR, open channel with the IoT SAFE AID, GET DATA, close: what every path must print.
fn check_uicc_commands(proxy: bool, device: &Path, modem: &ModemHandle) {
    let atr = succeeded(&mbimcli(proxy, device, &["--ms-query-uicc-atr"]));
    assert_eq!(
        field(&atr, "response").as_deref(),
        Some(colon_hex(&modem.card().atr()).as_str()),
        "{atr}"
    );

    let aid = hex::encode_upper(default_profile().aid);
    let open = succeeded(&mbimcli(
        proxy,
        device,
        &[&format!(
            "--ms-set-uicc-open-channel=application-id={aid},selectp2arg=0,channel-group=7"
        )],
    ));
    assert_eq!(field(&open, "status").as_deref(), Some("144"), "{open}");
    let channel = field(&open, "channel").expect("channel printed");
    assert_eq!(modem.stats().open_sessions, 1);

    let apdu = succeeded(&mbimcli(
        proxy,
        device,
        &[&format!(
            "--ms-set-uicc-apdu=channel={channel},secure-message=none,classbyte-type=extended,command={IOT_SAFE_GET_DATA}"
        )],
    ));
    assert_eq!(field(&apdu, "status").as_deref(), Some("144"), "{apdu}");
    assert_eq!(
        field(&apdu, "response"),
        Some(colon_hex(&card_answer_to_get_data())),
        "{apdu}"
    );

    let close = succeeded(&mbimcli(
        proxy,
        device,
        &[&format!(
            "--ms-set-uicc-close-channel=channel={channel},channel-group=7"
        )],
    ));
    assert_eq!(field(&close, "status").as_deref(), Some("144"), "{close}");
    assert_eq!(modem.stats().open_sessions, 0);
}

#[test]
fn mbimcli_runs_the_uicc_commands_on_the_pty() {
    if !have_mbimcli() {
        return;
    }
    let dir = temp_dir("direct");
    let modem = start(&dir, None);
    check_uicc_commands(false, modem.link(), &modem);
    // Every mbimcli run opened and closed the function.
    let stats = modem.stats();
    assert_eq!(stats.requests.get("OPEN"), Some(&4));
    assert_eq!(stats.requests.get("CLOSE"), Some(&4));
    assert_eq!(stats.requests.get("UICC_APDU"), Some(&1));
}

#[test]
fn mbimcli_sees_the_mbim_failure_statuses() {
    if !have_mbimcli() {
        return;
    }
    let dir = temp_dir("failures");
    let modem = start(&dir, None);
    let link = modem.link().to_path_buf();
    // libmbim 1.28 has no names for the MS UICC statuses: it prints the numbers.
    let apdu = mbimcli(
        false,
        &link,
        &[
            "--ms-set-uicc-apdu=channel=2,secure-message=none,classbyte-type=extended,command=80CB000000",
        ],
    );
    assert!(!apdu.status.success());
    assert!(text(&apdu).contains("0x87430003"), "{}", text(&apdu));
    let open = mbimcli(
        false,
        &link,
        &["--ms-set-uicc-open-channel=application-id=A0000000871002,selectp2arg=0,channel-group=1"],
    );
    assert!(text(&open).contains("0x87430002"), "{}", text(&open));
    assert_eq!(
        modem.stats().open_sessions,
        0,
        "the failed SELECT closed its channel"
    );
    modem.card().remove();
    let atr = mbimcli(false, &link, &["--ms-query-uicc-atr"]);
    assert!(!atr.status.success());
    assert!(text(&atr).contains("SimNotInserted"), "{}", text(&atr));
    modem.card().insert();
    succeeded(&mbimcli(false, &link, &["--ms-query-uicc-atr"]));
    // BASIC_CONNECT DEVICE_CAPS: what mbim-proxy checks, with the manufacturer string.
    let caps = succeeded(&mbimcli(false, &link, &["--query-device-caps"]));
    assert!(caps.contains("iotsafe-sim"), "{caps}");
}

/// The real mbim-proxy on `@mbim-proxy` (started when nothing listens there); `false` (the
/// test is skipped, with a line saying why) when not root: Debian's mbim-proxy serves root only.
fn ensure_real_proxy() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("Debian's mbim-proxy serves root only: skipped");
        return false;
    }
    iotsafe_sim::modem::abstract_socket::ensure_modemmanager_proxy("mbim-proxy")
        .unwrap_or_else(|e| panic!("{e} (libmbim-utils)"));
    true
}

#[test]
fn mbimcli_runs_the_uicc_commands_through_the_real_mbim_proxy() {
    if !have_mbimcli() || !ensure_real_proxy() {
        return;
    }
    let dir = temp_dir("real-proxy");
    let modem = start(&dir, None);
    check_uicc_commands(true, modem.link(), &modem);
    let stats = modem.stats();
    // The proxy opened the device once and checked it with DEVICE_CAPS at most; the clients'
    // OPEN and CLOSE never reached it.
    assert_eq!(stats.requests.get("OPEN"), Some(&1), "{stats:?}");
    assert_eq!(stats.requests.get("CLOSE"), None, "{stats:?}");
}

/// mbimcli only knows `@mbim-proxy`: the simulator takes that name in a network namespace of
/// its own (abstract names are per namespace), where mbimcli then finds it.
#[test]
fn mbimcli_runs_the_uicc_commands_through_the_simulators_proxy_mode() {
    if !have_mbimcli() {
        return;
    }
    let dir = temp_dir("sim-proxy");
    let link = dir.join("modem");
    let aid = hex::encode_upper(default_profile().aid);
    let script = format!(
        "{sim} init-profile {dir}/profile.toml >/dev/null && \
         ({sim} modem --protocol mbim --no-persist --profile {dir}/profile.toml --link {link} \
            --proxy-socket mbim-proxy 2>{dir}/sim.log & echo $! > {dir}/sim.pid) && \
         for i in $(seq 100); do [ -e {link} ] && break; sleep 0.05; done; \
         m() {{ timeout {t} mbimcli -p -d {link} \"$@\"; }}; \
         m --ms-set-uicc-open-channel=application-id={aid},selectp2arg=0,channel-group=3 && \
         m --ms-set-uicc-apdu=channel=1,secure-message=none,classbyte-type=extended,command={IOT_SAFE_GET_DATA} && \
         m --ms-set-uicc-close-channel=channel=0,channel-group=3; rc=$?; \
         kill $(cat {dir}/sim.pid); exit $rc",
        sim = env!("CARGO_BIN_EXE_iotsafe-sim"),
        dir = dir.display(),
        link = link.display(),
        t = MBIMCLI_TIMEOUT,
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let t = text(&out);
    if t.contains("unshare failed") {
        eprintln!("no network namespaces here (not root?): skipped: {t}");
        return;
    }
    assert!(out.status.success(), "{t}");
    assert_eq!(t.matches("status: 144").count(), 3, "{t}");
    assert!(
        t.contains(&colon_hex(&card_answer_to_get_data())),
        "the APDU's answer: {t}"
    );
}

/// Channels outlive mbimcli: opening until the card has none left ends in NoLogicalChannels
/// (which libmbim 1.28 prints as a number); closing by channel group frees them all.
#[test]
fn no_logical_channels_and_close_by_group() {
    if !have_mbimcli() {
        return;
    }
    let dir = temp_dir("exhausted");
    let modem = start(&dir, None);
    let link = modem.link().to_path_buf();
    let aid = hex::encode_upper(default_profile().aid);
    let open =
        format!("--ms-set-uicc-open-channel=application-id={aid},selectp2arg=0,channel-group=9");
    let max = default_profile().max_channels as u64;
    for _ in 0..max {
        succeeded(&mbimcli(false, &link, &[&open]));
    }
    assert_eq!(modem.stats().open_sessions, max);
    let refused = mbimcli(false, &link, &[&open]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("0x87430001"), "{}", text(&refused));
    let close = succeeded(&mbimcli(
        false,
        &link,
        &["--ms-set-uicc-close-channel=channel=0,channel-group=9"],
    ));
    assert_eq!(field(&close, "status").as_deref(), Some("144"), "{close}");
    assert_eq!(modem.stats().open_sessions, 0);
    assert_eq!(modem.card().stats().open_channel_count, 0);
}

// --- raw messages ------------------------------------------------------------------------------

struct RawHost {
    f: std::fs::File,
    buf: Vec<u8>,
}

impl RawHost {
    fn open(path: &Path) -> RawHost {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .unwrap();
        RawHost { f, buf: Vec::new() }
    }

    fn send(&mut self, words: &[u32], tail: &[u8]) {
        let mut m: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        m.extend_from_slice(tail);
        let len = m.len() as u32;
        m[4..8].copy_from_slice(&len.to_le_bytes());
        self.f.write_all(&m).unwrap();
    }

    /// The next whole message (bounded wait through a reader thread would be overkill: the
    /// simulator answers every message of these tests).
    fn receive(&mut self) -> Vec<u8> {
        loop {
            if self.buf.len() >= 8 {
                let len = u32::from_le_bytes(self.buf[4..8].try_into().unwrap()) as usize;
                if self.buf.len() >= len {
                    return self.buf.drain(..len).collect();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.f.read(&mut chunk).unwrap();
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn word(m: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(m[at..at + 4].try_into().unwrap())
}

fn uicc_atr_query(tid: u32) -> (Vec<u32>, Vec<u8>) {
    let uuid = hex::decode(UICC).unwrap();
    let mut tail = uuid;
    for w in [1u32, 0, 0] {
        tail.extend_from_slice(&w.to_le_bytes());
    }
    (vec![3, 0, tid, 1, 0], tail)
}

#[test]
fn a_command_before_open_gets_not_opened_and_unknown_cids_no_device_support() {
    let dir = temp_dir("raw");
    let modem = start(&dir, None);
    let mut host = RawHost::open(modem.link());
    let (words, tail) = uicc_atr_query(5);
    host.send(&words, &tail);
    let m = host.receive();
    assert_eq!(
        (word(&m, 0), word(&m, 8), word(&m, 12)),
        (0x8000_0004, 5, 5)
    );

    host.send(&[1, 0, 6, 4096], &[]);
    let m = host.receive();
    assert_eq!(
        (word(&m, 0), word(&m, 8), word(&m, 12)),
        (0x8000_0001, 6, 0)
    );

    // UICC CID 9 (READ_BINARY) is not offered.
    let mut tail = hex::decode(UICC).unwrap();
    for w in [9u32, 0, 0] {
        tail.extend_from_slice(&w.to_le_bytes());
    }
    host.send(&[3, 0, 7, 1, 0], &tail);
    let m = host.receive();
    assert_eq!((word(&m, 0), word(&m, 8)), (0x8000_0003, 7));
    assert_eq!(
        (word(&m, 36), word(&m, 40)),
        (9, 9),
        "CID 9, NoDeviceSupport"
    );
}

/// With a MaxControlTransfer of 64 from OPEN, the ATR answer (8 + 23 bytes of buffer) comes
/// in fragments no longer than 64 bytes that join to the whole answer.
#[test]
fn replies_longer_than_the_hosts_max_transfer_are_fragmented() {
    let dir = temp_dir("fragments");
    let modem = start(&dir, None);
    let mut host = RawHost::open(modem.link());
    host.send(&[1, 0, 1, 64], &[]);
    host.receive();
    let (words, tail) = uicc_atr_query(2);
    host.send(&words, &tail);
    let first = host.receive();
    let total = word(&first, 12);
    assert!(total >= 2, "fragments: {total}");
    let mut body = first[20..].to_vec();
    assert!(first.len() <= 64);
    for i in 1..total {
        let m = host.receive();
        assert!(m.len() <= 64);
        assert_eq!(
            (word(&m, 0), word(&m, 8), word(&m, 16)),
            (0x8000_0003, 2, i)
        );
        body.extend_from_slice(&m[20..]);
    }
    let atr = modem.card().atr();
    // service, CID, status, length, then AtrSize, AtrOffset, ATR.
    assert_eq!(word(&body, 20), 0);
    assert_eq!(word(&body, 28), atr.len() as u32);
    assert_eq!(&body[36..36 + atr.len()], atr.as_slice());
}
