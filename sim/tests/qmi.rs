//! The simulated QMI modem: its own failure answers (raw QMUX on the pty and on the proxy
//! socket), and the real `qmicli` (libqmi 1.32) against it — directly, through the real
//! `/usr/libexec/qmi-proxy`, and through the simulator's proxy mode. libqmi 1.32 has no
//! logical-channel commands (they came in 1.36), so the real tool checks the framing, CTL and
//! Get Card Status; the channel messages are checked raw here and by the module's tests.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iotsafe_sim::{CardOptions, ModemHandle, ModemOptions, SharedCard, default_profile};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("iotsafe-sim-qmi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn modem(dir: &Path, card: CardOptions, proxy: Option<&str>) -> ModemHandle {
    let card = SharedCard::from_profile(default_profile(), card);
    iotsafe_sim::modem::qmi::spawn(card, &dir.join("cdc-wdm"), ModemOptions::default(), proxy)
        .expect("spawn the QMI modem")
}

/// A QMUX request: service, client, tid, message, TLVs.
fn request(service: u8, client: u8, tid: u16, message: u16, tlvs: &[(u8, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in tlvs {
        body.push(*t);
        body.extend_from_slice(&(v.len() as u16).to_le_bytes());
        body.extend_from_slice(v);
    }
    let mut f = vec![0x01, 0, 0, 0x00, service, client, 0x00];
    if service == 0 {
        f.push(tid as u8);
    } else {
        f.extend_from_slice(&tid.to_le_bytes());
    }
    f.extend_from_slice(&message.to_le_bytes());
    f.extend_from_slice(&(body.len() as u16).to_le_bytes());
    f.extend_from_slice(&body);
    let len = (f.len() - 1) as u16;
    f[1..3].copy_from_slice(&len.to_le_bytes());
    f
}

#[derive(Debug)]
struct Answer {
    service: u8,
    client: u8,
    tid: u16,
    message: u16,
    tlvs: Vec<(u8, Vec<u8>)>,
}

impl Answer {
    fn tlv(&self, t: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, v)| v.as_slice())
    }
    /// `None` on success, else the QMI error.
    fn error(&self) -> Option<u16> {
        match self.tlv(0x02) {
            Some([0, 0, _, _]) => None,
            Some([_, _, e0, e1]) => Some(u16::from_le_bytes([*e0, *e1])),
            other => panic!("no result TLV: {other:?}"),
        }
    }
}

/// Reads one whole QMUX frame within `timeout` (`None`: nothing came).
fn read_frame<R: Read + AsRawFd>(r: &mut R, timeout: Duration) -> Option<Answer> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        if buf.len() >= 3 {
            let total = usize::from(u16::from_le_bytes([buf[1], buf[2]])) + 1;
            if buf.len() >= total {
                assert_eq!(buf.len(), total, "one frame at a time");
                return Some(parse(&buf));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut p = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) } <= 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        match r.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
    }
}

fn parse(f: &[u8]) -> Answer {
    assert_eq!(f[0], 0x01);
    assert_eq!(f[3], 0x80, "from the modem");
    let (service, client) = (f[4], f[5]);
    let (tid, rest) = if service == 0 {
        assert_eq!(f[6], 0x01, "CTL response");
        (u16::from(f[7]), &f[8..])
    } else {
        assert_eq!(f[6], 0x02, "service response");
        (u16::from_le_bytes([f[7], f[8]]), &f[9..])
    };
    let message = u16::from_le_bytes([rest[0], rest[1]]);
    let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
    let mut body = &rest[4..];
    assert_eq!(body.len(), len);
    let mut tlvs = Vec::new();
    while !body.is_empty() {
        let l = usize::from(u16::from_le_bytes([body[1], body[2]]));
        tlvs.push((body[0], body[3..3 + l].to_vec()));
        body = &body[3 + l..];
    }
    Answer {
        service,
        client,
        tid,
        message,
        tlvs,
    }
}

struct Host<S: Read + Write + AsRawFd> {
    io: S,
    tid: u16,
}

impl<S: Read + Write + AsRawFd> Host<S> {
    fn ask(&mut self, service: u8, client: u8, message: u16, tlvs: &[(u8, &[u8])]) -> Answer {
        self.tid += 1;
        self.io
            .write_all(&request(service, client, self.tid, message, tlvs))
            .unwrap();
        let a = read_frame(&mut self.io, Duration::from_secs(5)).expect("an answer");
        assert_eq!(
            (a.service, a.client, a.tid, a.message),
            (service, client, self.tid, message)
        );
        a
    }

    fn allocate_uim(&mut self) -> u8 {
        let a = self.ask(0, 0, 0x22, &[(0x01, &[0x0B])]);
        assert_eq!(a.error(), None);
        a.tlv(0x01).expect("service and cid")[1]
    }
}

fn pty_host(link: &Path) -> Host<std::fs::File> {
    let io = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(link)
        .unwrap();
    Host { io, tid: 0 }
}

const AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x05, 0x59, 0x00, 0x10];

fn aid_tlv(aid: &[u8]) -> Vec<u8> {
    let mut v = vec![aid.len() as u8];
    v.extend_from_slice(aid);
    v
}

fn apdu_tlv(apdu: &[u8]) -> Vec<u8> {
    let mut v = (apdu.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(apdu);
    v
}

#[test]
fn failure_answers_of_the_simulated_modem() {
    let dir = temp_dir("failures");
    let m = modem(&dir, CardOptions::default(), None);
    let mut host = pty_host(m.link());
    // A client id nobody allocated.
    let a = host.ask(0x0B, 9, 0x2F, &[]);
    assert_eq!(a.error(), Some(7), "InvalidClientId");
    let cid = host.allocate_uim();
    // Unknown messages.
    assert_eq!(host.ask(0x0B, cid, 0x0123, &[]).error(), Some(71));
    assert_eq!(host.ask(0, 0, 0x0099, &[]).error(), Some(71));
    assert_eq!(
        host.ask(0x0B, cid, 0x47, &[]).error(),
        Some(94),
        "Get Slot Status"
    );
    // An AID the card does not have.
    let a = host.ask(
        0x0B,
        cid,
        0x42,
        &[(0x01, &[1]), (0x10, &aid_tlv(&[0xA0, 1, 2, 3, 4]))],
    );
    assert_eq!(a.error(), Some(80), "SimFileNotFound");
    assert_eq!(a.tlv(0x11), Some(&[0x6A, 0x82][..]));
    // An APDU on a channel that is not open.
    let a = host.ask(
        0x0B,
        cid,
        0x3B,
        &[
            (0x01, &[1]),
            (0x02, &apdu_tlv(&[0x01, 0xCB, 0, 0, 0])),
            (0x10, &[3]),
        ],
    );
    assert_eq!(a.error(), Some(48), "InvalidArgument");
    // Open until the card has no channel left (the default card has 19 logical channels).
    let mut opened = Vec::new();
    loop {
        let a = host.ask(0x0B, cid, 0x42, &[(0x01, &[1]), (0x10, &aid_tlv(&AID))]);
        match a.error() {
            None => opened.push(a.tlv(0x10).unwrap()[0]),
            Some(e) => {
                assert_eq!(e, 68, "InsufficientResources");
                assert_eq!(a.tlv(0x11), Some(&[0x6A, 0x81][..]), "with the card's SW");
                break;
            }
        }
        assert!(opened.len() < 20);
    }
    assert_eq!(opened, (1..=19).collect::<Vec<u8>>());
    assert_eq!(m.stats().open_sessions, 19);
    for ch in opened {
        let a = host.ask(0x0B, cid, 0x3F, &[(0x01, &[1]), (0x11, &[ch])]);
        assert_eq!(a.error(), None);
        assert_eq!(a.tlv(0x11), Some(&[0x90, 0x00][..]));
    }
    assert_eq!(
        host.ask(0x0B, cid, 0x3F, &[(0x01, &[1]), (0x11, &[1])])
            .error(),
        Some(48)
    );
    // The card removed: channel messages fail, card status says absent.
    m.card().remove();
    let a = host.ask(0x0B, cid, 0x42, &[(0x01, &[1]), (0x10, &aid_tlv(&AID))]);
    assert_eq!(a.error(), Some(52), "DeviceNotReady");
    let status = host.ask(0x0B, cid, 0x2F, &[]);
    assert_eq!(status.error(), None);
    assert_eq!(status.tlv(0x10).unwrap()[8..10], [1, 0], "one card, absent");
    m.card().insert();
    // Client ids run out, and come back when released.
    let mut cids = vec![cid];
    loop {
        let a = host.ask(0, 0, 0x22, &[(0x01, &[0x0B])]);
        match a.error() {
            None => cids.push(a.tlv(0x01).unwrap()[1]),
            Some(e) => {
                assert_eq!(e, 5, "ClientIdsExhausted");
                break;
            }
        }
        assert!(cids.len() < 300);
    }
    assert_eq!(m.stats().client_ids, cids.len() as u64);
    for c in &cids {
        assert_eq!(host.ask(0, 0, 0x23, &[(0x01, &[0x0B, *c])]).error(), None);
    }
    assert_eq!(
        host.ask(0, 0, 0x23, &[(0x01, &[0x0B, cids[0]])]).error(),
        Some(7)
    );
    assert_eq!(m.stats().client_ids, 0);
}

#[test]
fn procedure_bytes_choose_who_fetches_61xx() {
    let dir = temp_dir("procedure");
    let m = modem(
        &dir,
        CardOptions {
            t0_style: true,
            ..Default::default()
        },
        None,
    );
    let mut host = pty_host(m.link());
    let cid = host.allocate_uim();
    let a = host.ask(0x0B, cid, 0x42, &[(0x01, &[1]), (0x10, &aid_tlv(&AID))]);
    assert_eq!(
        a.error(),
        None,
        "the modem fetched the SELECT's 61xx itself"
    );
    let ch = a.tlv(0x10).unwrap()[0];
    // GET DATA (application info) answers data: on a T=0 card it comes as 61xx.
    let get_data = [ch, 0xCB, 0x00, 0x00, 0x00];
    let send = |host: &mut Host<std::fs::File>, procedure: u8| {
        let a = host.ask(
            0x0B,
            cid,
            0x3B,
            &[
                (0x01, &[1]),
                (0x02, &apdu_tlv(&get_data)),
                (0x10, &[ch]),
                (0x11, &[procedure]),
            ],
        );
        assert_eq!(a.error(), None);
        a.tlv(0x10).unwrap()[2..].to_vec()
    };
    let intermediate = send(&mut host, 0);
    assert_eq!(intermediate.len(), 2, "{intermediate:02X?}");
    assert_eq!(
        intermediate[0], 0x61,
        "ProcedureBytes 0: the host sees 61xx"
    );
    let last = send(&mut host, 1);
    assert!(last.len() > 2);
    assert_eq!(
        last[last.len() - 2..],
        [0x90, 0x00],
        "ProcedureBytes 1: chained by the modem"
    );
}

fn proxy_host(name: &str, device: &Path) -> Host<UnixStream> {
    let io = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
        .unwrap();
    let mut host = Host { io, tid: 0 };
    let path = device.as_os_str().as_encoded_bytes().to_vec();
    let a = host.ask(0, 0, 0xFF00, &[(0x01, &path)]);
    assert_eq!(a.error(), None, "internal proxy open");
    assert_eq!(a.tlvs.len(), 1, "the result TLV only");
    host
}

#[test]
fn the_proxy_mode_shares_client_ids_like_qmi_proxy() {
    let dir = temp_dir("proxy");
    let name = format!("iotsafe-sim-qmi-test-{}", std::process::id());
    let m = modem(&dir, CardOptions::default(), Some(&name));
    // Symlinks are resolved: the link and the pty are the same device.
    let mut first = proxy_host(&name, m.link());
    let mut second = proxy_host(&name, m.device());
    let cid = first.allocate_uim();
    assert_ne!(second.allocate_uim(), cid);
    // The first client goes without releasing: its id stays allocated, disowned, and a later
    // client that uses it owns it.
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(m.stats().client_ids, 2);
    let mut third = proxy_host(&name, m.link());
    assert_eq!(third.ask(0x0B, cid, 0x2F, &[]).error(), None);
    assert_eq!(third.ask(0, 0, 0x23, &[(0x01, &[0x0B, cid])]).error(), None);
    // Another device's path: the proxy hangs up without answering.
    let mut stranger =
        UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
    stranger
        .write_all(&request(0, 0, 1, 0xFF00, &[(0x01, b"/dev/null")]))
        .unwrap();
    assert!(read_frame(&mut stranger, Duration::from_secs(2)).is_none());
    // While hung, requests are dropped.
    m.hang();
    second.tid += 1;
    second
        .io
        .write_all(&request(0x0B, 2, second.tid, 0x2F, &[]))
        .unwrap();
    assert!(read_frame(&mut second.io, Duration::from_millis(500)).is_none());
    m.unhang();
    assert_eq!(m.stats().dropped, 1);
}

// ---- the real qmicli ----

fn qmicli(args: &[&str]) -> (bool, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg("qmicli")
        .args(args)
        .output()
        .expect("qmicli (libqmi-utils) is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check_card_status(device: &str, proxy: bool, expect: &str) {
    let mut args = vec!["-d", device, "--device-open-qmi", "--uim-get-card-status"];
    if proxy {
        args.insert(0, "-p");
    }
    let (ok, out) = qmicli(&args);
    assert!(ok, "qmicli {args:?}:\n{out}");
    assert!(out.contains(&format!("Card state: '{expect}'")), "{out}");
    if expect == "present" {
        assert!(out.contains("Application type:  'usim (2)'"), "{out}");
        assert!(out.contains("A0:00:00:00:87:10:02"), "{out}");
        assert!(out.contains("Application state: 'ready'"), "{out}");
    }
}

fn check_the_other_commands(device: &str, proxy: bool) {
    let p: &[&str] = if proxy { &["-p"] } else { &[] };
    let run = |extra: &[&str]| {
        let mut args = p.to_vec();
        args.extend_from_slice(&["-d", device, "--device-open-qmi"]);
        args.extend_from_slice(extra);
        let (ok, out) = qmicli(&args);
        assert!(ok, "qmicli {args:?}:\n{out}");
        out
    };
    let out = run(&["--device-open-version-info", "--get-service-version-info"]);
    assert!(
        out.contains("uim (1.46)") && out.contains("ctl (1.5)"),
        "{out}"
    );
    let out = run(&["--uim-reset"]);
    assert!(
        out.contains("Successfully performed UIM service reset"),
        "{out}"
    );
    // A client id kept, then used and released by a second run.
    let out = run(&["--uim-get-card-status", "--client-no-release-cid"]);
    let cid = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("CID: '"))
        .and_then(|c| c.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no CID in:\n{out}"))
        .to_string();
    let out = run(&["--uim-get-card-status", &format!("--client-cid={cid}")]);
    assert!(out.contains("Card state: 'present'"), "{out}");
}

#[test]
fn qmicli_talks_to_the_simulated_device_directly() {
    let dir = temp_dir("qmicli-direct");
    let m = modem(&dir, CardOptions::default(), None);
    let device = m.link().to_str().unwrap().to_string();
    check_card_status(&device, false, "present");
    check_the_other_commands(&device, false);
    m.card().remove();
    check_card_status(&device, false, "absent");
    m.card().insert();
    assert_eq!(m.stats().client_ids, 0, "qmicli released what it allocated");
}

/// `@qmi-proxy` is bound: by ModemManager's, by another test's, or by one started here.
fn ensure_real_qmi_proxy() {
    iotsafe_sim::modem::abstract_socket::ensure_modemmanager_proxy("qmi-proxy")
        .unwrap_or_else(|e| panic!("{e} (libqmi-utils)"));
}

#[test]
fn qmicli_talks_to_the_simulated_device_through_the_real_qmi_proxy() {
    ensure_real_qmi_proxy();
    let dir = temp_dir("qmicli-real-proxy");
    let m = modem(&dir, CardOptions::default(), None);
    let device = m.link().to_str().unwrap().to_string();
    check_card_status(&device, true, "present");
    check_the_other_commands(&device, true);
    m.card().remove();
    check_card_status(&device, true, "absent");
}

/// The simulator's own proxy mode under the name qmicli knows (`qmi-proxy`), in a network
/// namespace of its own (abstract socket names are per namespace), so that a real proxy
/// elsewhere on the machine is neither in the way nor taken over.
#[test]
fn qmicli_talks_to_the_simulators_proxy_mode() {
    let dir = temp_dir("qmicli-sim-proxy");
    let link = dir.join("cdc-wdm");
    let profile = dir.join("profile.toml");
    let sim = env!("CARGO_BIN_EXE_iotsafe-sim");
    let status = Command::new(sim)
        .arg("init-profile")
        .arg(&profile)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let script = format!(
        "set -e\n\
         {sim} modem --protocol qmi --no-persist --link {link} --profile {profile} \
         --proxy-socket qmi-proxy 2>/dev/null &\n\
         SIM=$!\n\
         trap 'kill $SIM' EXIT\n\
         for i in $(seq 100); do [ -e {link} ] && break; sleep 0.05; done\n\
         qmicli -p -d {link} --device-open-qmi --uim-get-card-status\n\
         qmicli -p -d {link} --device-open-qmi --device-open-version-info --get-service-version-info\n",
        link = link.display(),
        profile = profile.display()
    );
    let out = Command::new("timeout")
        .args(["60", "unshare", "-n", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Card state: 'present'"), "{text}");
    assert!(text.contains("uim (1.46)"), "{text}");
}

#[test]
fn hang_after_and_delay_are_honoured() {
    let dir = temp_dir("hang-after");
    let m = modem(&dir, CardOptions::default(), None);
    m.update(|o| {
        o.hang_after = 2;
        o.delay_ms = 20;
    });
    let mut host = pty_host(m.link());
    let cid = host.allocate_uim();
    assert_eq!(host.ask(0x0B, cid, 0x00, &[]).error(), None);
    // The third request goes unanswered.
    host.tid += 1;
    host.io
        .write_all(&request(0x0B, cid, host.tid, 0x2F, &[]))
        .unwrap();
    assert!(read_frame(&mut host.io, Duration::from_millis(500)).is_none());
    assert_eq!(m.stats().dropped, 1);
    m.unhang();
    assert_eq!(host.ask(0x0B, cid, 0x2F, &[]).error(), None);
}
