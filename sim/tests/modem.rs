//! The simulator as a modem on a pty, driven like a host program drives a modem tty.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use iotsafe_sim::hash::HashAlg;
use iotsafe_sim::modem::{self, AtDialect, ModemHandle, ModemOptions};
use iotsafe_sim::{CardOptions, SharedCard, control, default_profile};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iotsafe-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const T: Duration = Duration::from_secs(5);

/// The host side: opens the modem tty like an application and reads CR/LF-delimited lines.
struct Host {
    f: File,
    pending: Vec<u8>,
}

/// One command's answer as a tolerant host sees it.
#[derive(Debug)]
struct Resp {
    /// Lines that are neither the echo nor the final result (info lines, URCs, noise).
    lines: Vec<Vec<u8>>,
    /// The final result line.
    fin: String,
    echoed: bool,
}

impl Resp {
    /// The information line starting with `prefix`.
    fn info(&self, prefix: &str) -> Option<String> {
        self.lines
            .iter()
            .filter_map(|l| std::str::from_utf8(l).ok())
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    }
}

impl Host {
    fn open(path: &Path) -> Host {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .unwrap();
        Host {
            f,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.f.write_all(bytes).unwrap();
    }

    /// Waits until `deadline` for bytes; Ok(false) on timeout, Err on EOF/EIO (port gone).
    fn fill(&mut self, deadline: Instant) -> Result<bool, ()> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let ms = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
        let mut p = libc::pollfd {
            fd: self.f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let r = unsafe { libc::poll(&mut p, 1, ms.max(1)) };
        if r <= 0 {
            return Ok(false);
        }
        let mut buf = [0u8; 1024];
        match self.f.read(&mut buf) {
            Ok(0) | Err(_) => Err(()),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                Ok(true)
            }
        }
    }

    /// Everything that arrives until `quiet` passes without a byte.
    fn drain(&mut self, quiet: Duration) -> Vec<u8> {
        while let Ok(true) = self.fill(Instant::now() + quiet) {}
        std::mem::take(&mut self.pending)
    }

    /// Raw bytes up to and including `needle`.
    fn raw_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + T;
        loop {
            if let Some(i) = self.pending.windows(needle.len()).position(|w| w == needle) {
                let rest = self.pending.split_off(i + needle.len());
                return std::mem::replace(&mut self.pending, rest);
            }
            match self.fill(deadline) {
                Ok(true) => {}
                _ => panic!(
                    "no {:?} in {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.pending)
                ),
            }
        }
    }

    /// The next non-empty line (CR or LF terminated), or None on timeout.
    fn line(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\r' || b == b'\n') {
                let rest = self.pending.split_off(i + 1);
                let mut l = std::mem::replace(&mut self.pending, rest);
                l.pop();
                if !l.is_empty() {
                    return Some(l);
                }
                continue;
            }
            if self.fill(deadline) != Ok(true) {
                return None;
            }
        }
    }

    /// Sends a command line (CR), reads until a final result; None on timeout.
    fn try_cmd(&mut self, cmd: &str, timeout: Duration) -> Option<Resp> {
        self.send(format!("{cmd}\r").as_bytes());
        let deadline = Instant::now() + timeout;
        let mut r = Resp {
            lines: Vec::new(),
            fin: String::new(),
            echoed: false,
        };
        loop {
            let l = self.line(deadline)?;
            match std::str::from_utf8(&l) {
                Ok(s) if s == "OK" || s == "ERROR" || s.starts_with("+CME ERROR:") => {
                    r.fin = s.to_string();
                    return Some(r);
                }
                Ok(s) if s == cmd => r.echoed = true,
                _ => r.lines.push(l),
            }
        }
    }

    fn cmd(&mut self, cmd: &str) -> Resp {
        self.try_cmd(cmd, T)
            .unwrap_or_else(|| panic!("no final result for {cmd:?}"))
    }

    /// Like `cmd`, retrying while the modem says SIM busy.
    fn cmd_retry(&mut self, cmd: &str) -> Resp {
        for _ in 0..20 {
            let r = self.cmd(cmd);
            if r.fin != "+CME ERROR: 14" {
                return r;
            }
        }
        panic!("SIM busy forever for {cmd:?}");
    }

    /// `AT+CSIM`: the response APDU (data ‖ SW).
    fn csim(&mut self, apdu: &[u8]) -> Vec<u8> {
        let hex = hex::encode_upper(apdu);
        let r = self.cmd_retry(&format!("AT+CSIM={},\"{hex}\"", hex.len()));
        assert_eq!(r.fin, "OK", "{r:?}");
        parse_info(&r.info("+CSIM: ").expect("+CSIM line"), "+CSIM: ")
    }

    /// `AT+CGLA`: the response APDU (data ‖ SW).
    fn cgla(&mut self, sid: u64, apdu: &[u8]) -> Vec<u8> {
        let hex = hex::encode_upper(apdu);
        let r = self.cmd_retry(&format!("AT+CGLA={sid},{},\"{hex}\"", hex.len()));
        assert_eq!(r.fin, "OK", "{r:?}");
        parse_info(&r.info("+CGLA: ").expect("+CGLA line"), "+CGLA: ")
    }

    fn ccho(&mut self, aid: &str) -> u64 {
        let r = self.cmd_retry(&format!("AT+CCHO=\"{aid}\""));
        assert_eq!(r.fin, "OK", "{r:?}");
        r.info("+CCHO: ").unwrap()["+CCHO: ".len()..]
            .parse()
            .unwrap()
    }
}

/// `+CSIM: <len>,"<hex>"` → bytes, checking the length.
fn parse_info(line: &str, prefix: &str) -> Vec<u8> {
    let rest = line.strip_prefix(prefix).unwrap();
    let (len, hex) = rest.split_once(',').unwrap();
    let hex = hex.trim_matches('"');
    assert_eq!(len.parse::<usize>().unwrap(), hex.len(), "{line}");
    h(hex)
}

fn start(name: &str, card_opts: CardOptions, opts: ModemOptions) -> (PathBuf, ModemHandle, Host) {
    let dir = temp_dir(name);
    let link = dir.join("ttyIOTSAFE");
    let card = SharedCard::from_profile(default_profile(), card_opts);
    let m = modem::spawn(card, &link, opts).unwrap();
    let host = Host::open(&link);
    (dir, m, host)
}

fn client_vk(card: &SharedCard) -> VerifyingKey {
    let p = card
        .profile()
        .public_key(&[1])
        .unwrap()
        .point
        .clone()
        .unwrap();
    VerifyingKey::from_sec1_bytes(&p).unwrap()
}

/// INIT + UPDATE (mode 03, SHA-256) through `tx` with a proprietary CLA on the channel
/// (`cla`), following 61xx with GET RESPONSE; returns r‖s.
fn sign(tx: &mut dyn FnMut(&[u8]) -> Vec<u8>, cla: u8, digest: &[u8]) -> Vec<u8> {
    let init = h("840101 A10103 91020001 920104");
    assert_eq!(tx(&apdu(cla, 0x2A, 0x00, 0x01, &init, None)), h("9000"));
    let mut upd = vec![0x9E, 0x20];
    upd.extend_from_slice(digest);
    let mut r = tx(&apdu(cla, 0x2B, 0x80, 0x01, &upd, None));
    if r.len() == 2 && r[0] == 0x61 {
        r = tx(&[cla, 0xC0, 0x00, 0x00, r[1]]);
    }
    assert_eq!(r.len(), 68, "{}", hex::encode_upper(&r));
    assert_eq!(&r[..2], &[0x33, 0x40]);
    assert_eq!(&r[66..], &[0x90, 0x00]);
    r[2..66].to_vec()
}

fn check_sig(card: &SharedCard, digest: &[u8], rs: &[u8]) {
    let sig = Signature::from_slice(rs).unwrap();
    client_vk(card).verify_prehash(digest, &sig).unwrap();
}

/// MANAGE CHANNEL + SELECT + sign + close through CSIM, then CCHO + CGLA sign + CCHC.
fn sign_both_ways(host: &mut Host, card: &SharedCard) {
    let digest = HashAlg::Sha256.digest(b"through the modem");
    // CSIM: the host manages the channel itself.
    let r = host.csim(&h("0070000001"));
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(&r[1..], &[0x90, 0x00]);
    let ch = r[0];
    let mut sel = vec![cla(ch, false), 0xA4, 0x04, 0x00, 0x07];
    sel.extend_from_slice(&h(AID));
    assert_eq!(host.csim(&sel), h("9000"));
    let rs = sign(&mut |a| host.csim(a), cla(ch, true), &digest);
    check_sig(card, &digest, &rs);
    assert_eq!(host.csim(&[0x00, 0x70, 0x80, ch, 0x00]), h("9000"));
    // CCHO/CGLA: the modem manages it; the host's CLA has channel bits 0.
    let sid = host.ccho(AID);
    let open = card.with(|c| c.open_channels());
    assert_eq!(open.len(), 2, "{open:?}");
    let rs = sign(&mut |a| host.cgla(sid, a), 0x80, &digest);
    check_sig(card, &digest, &rs);
    assert_eq!(host.cmd(&format!("AT+CCHC={sid}")).fin, "OK");
    assert_eq!(card.with(|c| c.open_channels()), vec![0]);
    assert_eq!(
        host.cmd(&format!("AT+CGLA={sid},10,\"80CB000000\"")).fin,
        "+CME ERROR: 21"
    );
}

#[test]
fn plain_dialect_exact_bytes() {
    let (dir, m, mut host) = start("plain", CardOptions::default(), ModemOptions::default());
    assert_eq!(std::fs::read_link(m.link()).unwrap(), m.device());
    host.send(b"AT\r");
    assert_eq!(host.raw_until(b"OK\r\n"), b"\r\nOK\r\n");
    // LF and CR LF terminators: one answer each.
    host.send(b"AT\n");
    assert_eq!(host.raw_until(b"OK\r\n"), b"\r\nOK\r\n");
    host.send(b"at\r\n");
    assert_eq!(host.raw_until(b"OK\r\n"), b"\r\nOK\r\n");
    // Echo: ATE1 itself is not echoed (echo was off), later lines are, with their CR.
    host.send(b"ATE1\r");
    assert_eq!(host.raw_until(b"OK\r\n"), b"\r\nOK\r\n");
    host.send(b"AT\r");
    assert_eq!(host.raw_until(b"OK\r\n"), b"AT\r\r\nOK\r\n");
    host.send(b"ATE0\r");
    assert_eq!(host.raw_until(b"OK\r\n"), b"ATE0\r\r\nOK\r\n");
    host.send(b"AT+CSIM=10,\"0070000001\"\r");
    assert_eq!(
        host.raw_until(b"OK\r\n"),
        b"\r\n+CSIM: 6,\"019000\"\r\n\r\nOK\r\n"
    );
    host.send(b"AT+CSIM=8,\"0070800100\"\r");
    assert_eq!(host.raw_until(b"50\r\n"), b"\r\n+CME ERROR: 50\r\n");
    host.send(b"AT+CSIM=10,\"0070800100\"\r");
    assert_eq!(
        host.raw_until(b"OK\r\n"),
        b"\r\n+CSIM: 4,\"9000\"\r\n\r\nOK\r\n"
    );
    assert_eq!(host.drain(Duration::from_millis(50)), b"");
    // Parameter errors.
    for bad in [
        "AT+CSIM=9,\"0070000\"",
        "AT+CSIM=10,0070000001",
        "AT+CSIM=10,\"00700000GG\"",
        "AT+CSIM=0,\"\"",
        "AT+CSIM=10",
        "AT+CSIM=10,\"0070000001\",3",
        "AT+CSIM=\"10\",\"0070000001\"",
        "AT+CCHO=A0000005590010",
        "AT+CCHO=\"A00000055900\",1",
        "AT+CGLA=1,\"80CB000000\"",
        "AT+CCHC=\"1\"",
    ] {
        assert_eq!(host.cmd(bad).fin, "+CME ERROR: 50", "{bad}");
    }
    // CMEE modes.
    assert_eq!(host.cmd("AT+CMEE?").info("+CMEE: ").unwrap(), "+CMEE: 1");
    assert_eq!(host.cmd("AT+CMEE=2").fin, "OK");
    assert_eq!(
        host.cmd("AT+CSIM=8,\"00\"").fin,
        "+CME ERROR: incorrect parameters"
    );
    assert_eq!(host.cmd("AT+CMEE=0").fin, "OK");
    assert_eq!(host.cmd("AT+CSIM=8,\"00\"").fin, "ERROR");
    assert_eq!(host.cmd("AT+CMEE=7").fin, "ERROR");
    assert_eq!(host.cmd("AT+CMEE=1").fin, "OK");
    assert_eq!(
        host.cmd("AT+CMEE=?").info("+CMEE:").unwrap(),
        "+CMEE: (0-2)"
    );
    // Identification, test commands, unknown commands, bad bytes.
    let r = host.cmd("ATI");
    assert_eq!(r.fin, "OK");
    assert_eq!(r.lines[0], b"iotsafe-sim");
    for ok in ["AT+CSIM=?", "AT+CCHO=?", "AT+CGLA=?", "AT+CCHC=?", "ATE"] {
        assert_eq!(host.cmd(ok).fin, "OK", "{ok}");
    }
    for bad in [
        "AT+COPS?", "ATZ", "hello", "A", "AT+CSIM", "AT+CSIM?", "AT+CGLA",
    ] {
        assert_eq!(host.cmd(bad).fin, "ERROR", "{bad}");
    }
    assert_eq!(host.drain(Duration::from_millis(50)), b"\n"); // the last OK's LF
    host.send(b"AT\xFF\xFE\x00\x01\r");
    assert_eq!(host.raw_until(b"\r\nERROR\r\n"), b"\r\nERROR\r\n");
    // Logical-channel errors.
    assert_eq!(host.cmd("AT+CCHO=\"A000000559FFFF\"").fin, "+CME ERROR: 22");
    assert_eq!(
        host.cmd("AT+CGLA=7,10,\"80CB000000\"").fin,
        "+CME ERROR: 21"
    );
    assert_eq!(host.cmd("AT+CCHC=7").fin, "+CME ERROR: 21");
    assert_eq!(m.card().with(|c| c.open_channels()), vec![0]);
    // No free channel: CCHO answers +CME ERROR: 3.
    let max = default_profile().max_channels as usize;
    let sids: Vec<u64> = (0..max).map(|_| host.ccho(AID)).collect();
    assert_eq!(host.cmd(&format!("AT+CCHO=\"{AID}\"")).fin, "+CME ERROR: 3");
    for s in &sids {
        assert_eq!(host.cmd(&format!("AT+CCHC={s}")).fin, "OK");
    }
    // A very long line and a signature flow.
    let long = format!("AT+CSIM=2,\"{}\"", "0".repeat(70_000));
    assert_eq!(host.cmd(&long).fin, "ERROR");
    let card = m.card().clone();
    card.reset_stats();
    m.reset_stats();
    sign_both_ways(&mut host, &card);
    let s = card.stats();
    assert_eq!(s.by_ins.get(&0x2B), Some(&2));
    assert_eq!(s.by_ins.get(&0x70), Some(&4), "{s:?}");
    assert_eq!(s.interleaved, 0);
    let ms = m.stats();
    assert_eq!((ms.ccho, ms.cchc), (1, 1));
    assert!(ms.csim >= 5 && ms.cgla >= 3, "{ms:?}");
    // Stopping: the host sees the port go away, the link is removed.
    let link = m.link().to_path_buf();
    m.stop();
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert_eq!(host.fill(Instant::now() + T), Err(()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_quirk_at_once() {
    let opts = ModemOptions {
        echo: true,
        urc: true,
        split: true,
        garbage: true,
        delay_ms: 3,
        busy_every: 3,
        max_command_len: 300,
        ..ModemOptions::default()
    };
    let (dir, m, mut host) = start("quirks", CardOptions::default(), opts);
    let r = host.cmd("AT");
    assert!(r.echoed, "{r:?}");
    assert_eq!(r.fin, "OK");
    let card = m.card().clone();
    for _ in 0..2 {
        sign_both_ways(&mut host, &card);
    }
    // Longer than max_command_len -> ERROR (exactly at the limit is fine).
    let at_limit = format!("AT+CSIM=2,\"{}\"", "0".repeat(300 - 12));
    assert_eq!(at_limit.len(), 300);
    let r = host.cmd_retry(&at_limit);
    assert_eq!(r.fin, "+CME ERROR: 50");
    let over = format!("AT+CSIM=2,\"{}\"", "0".repeat(301 - 12));
    assert_eq!(host.cmd(&over).fin, "ERROR");
    // The host saw URCs and noise, and busy answers were retried.
    let s = m.stats();
    assert!(s.urc > 0 && s.garbage > 0 && s.busy > 0, "{s:?}");
    assert_eq!(s.cme_error.get(&14), Some(&s.busy));
    // Split answers arrive in several reads: an info line is not one read.
    host.cmd("ATE0");
    m.update(|o| {
        o.urc = false;
        o.garbage = false;
        o.busy_every = 0;
    });
    host.send(b"ATI\r");
    let mut reads = 0;
    let deadline = Instant::now() + T;
    while !host.pending.ends_with(b"OK\r\n") {
        assert_eq!(host.fill(deadline), Ok(true));
        reads += 1;
    }
    assert!(reads > 5, "{reads} reads");
    host.pending.clear();
    // URCs and noise placement: before the answer and between info line and OK.
    m.update(|o| {
        o.urc = true;
        o.garbage = true;
        o.split = false;
        o.delay_ms = 0;
    });
    let mut between = false;
    for _ in 0..40 {
        host.send(b"AT+CSIM=10,\"80CA000000\"\r");
        let raw = host.raw_until(b"\r\nOK\r\n");
        let info = raw
            .windows(7)
            .position(|w| w == b"+CSIM: ")
            .expect("info line");
        let after = &raw[info..];
        let end = after.windows(2).position(|w| w == b"\r\n").unwrap();
        if after.len() > end + 2 + 6 {
            between = true;
        }
    }
    assert!(between, "never anything between the info line and OK");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn t0_card_through_csim_and_cgla() {
    let opts = CardOptions {
        t0_style: true,
        ..CardOptions::default()
    };
    let (dir, m, mut host) = start("t0", opts, ModemOptions::default());
    let card = m.card().clone();
    sign_both_ways(&mut host, &card);
    // The sign UPDATE answered 61 43 and GET RESPONSE went through the modem.
    assert_eq!(card.stats().by_ins.get(&0xC0), Some(&2));
    let sid = host.ccho(AID);
    assert_eq!(host.cgla(sid, &h("80CB000000")), h("6144"));
    let r = host.cgla(sid, &h("00C0000044"));
    assert_eq!(r.len(), 0x44 + 2);
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hang_and_unhang() {
    let (dir, m, mut host) = start("hang", CardOptions::default(), ModemOptions::default());
    assert_eq!(host.cmd("AT").fin, "OK");
    m.hang();
    assert!(host.try_cmd("AT", Duration::from_millis(300)).is_none());
    assert!(
        host.try_cmd("AT+CSIM=10,\"0070000001\"", Duration::from_millis(200))
            .is_none()
    );
    m.unhang();
    // The dropped commands never get an answer; new ones do.
    assert_eq!(host.cmd("AT").fin, "OK");
    assert_eq!(host.drain(Duration::from_millis(100)), b"\n"); // the OK's LF, nothing else
    assert_eq!(m.stats().dropped, 2);
    assert_eq!(m.card().stats().total, 0);
    // hang_after: two more answers, then silence.
    m.set_quirk("hang_after", "2").unwrap();
    assert_eq!(host.cmd("AT").fin, "OK");
    assert_eq!(host.cmd("AT").fin, "OK");
    assert!(m.options().hang);
    assert!(host.try_cmd("AT", Duration::from_millis(200)).is_none());
    m.set_quirk("hang", "off").unwrap();
    assert_eq!(host.cmd("AT").fin, "OK");
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dialects_refuse_the_other_commands() {
    let opts = ModemOptions {
        at: AtDialect::Csim,
        ..ModemOptions::default()
    };
    let (dir, m, mut host) = start("dialect", CardOptions::default(), opts);
    for c in [
        "AT+CCHO=\"A0000005590010\"",
        "AT+CGLA=1,10,\"80CB000000\"",
        "AT+CCHC=1",
        "AT+CCHO=?",
        "AT+CGLA=?",
    ] {
        assert_eq!(host.cmd(c).fin, "ERROR", "{c}");
    }
    assert_eq!(host.csim(&h("0070000001")), h("019000"));
    m.set_quirk("at", "cgla").unwrap();
    for c in ["AT+CSIM=10,\"0070800100\"", "AT+CSIM=?"] {
        assert_eq!(host.cmd(c).fin, "ERROR", "{c}");
    }
    let sid = host.ccho(AID);
    assert_eq!(host.cgla(sid, &h("80CB000000")).len(), 70);
    // bare_ccho: the session id alone.
    m.set_quirk("bare-ccho", "on").unwrap();
    let r = host.cmd(&format!("AT+CCHO=\"{AID}\""));
    assert_eq!(r.fin, "OK");
    assert_eq!(r.lines.len(), 1);
    let sid2: u64 = std::str::from_utf8(&r.lines[0]).unwrap().parse().unwrap();
    assert_ne!(sid, sid2);
    assert_eq!(host.cgla(sid2, &h("80CB000000")).len(), 70);
    m.set_quirk("at", "both").unwrap();
    assert_eq!(host.csim(&h("0070800100")), h("9000"));
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> serde_json::Value {
    w.write_all(line.as_bytes()).unwrap();
    w.write_all(b"\n").unwrap();
    let mut ans = String::new();
    r.read_line(&mut ans).unwrap();
    serde_json::from_str(&ans).unwrap()
}

#[test]
fn control_socket_drives_the_modem() {
    let (dir, m, mut host) = start("modemctl", CardOptions::default(), ModemOptions::default());
    let sock = dir.join("ctl.sock");
    let _server =
        control::ControlServer::spawn_with(&sock, control::Context::with_modem(m.control()))
            .unwrap();
    let mut w = UnixStream::connect(&sock).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let sid = host.ccho(AID);
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(v["open_channels"], serde_json::json!([0, 1]));
    assert_eq!(v["present"], true);
    assert_eq!(v["interleaved"], 0);
    assert_eq!(v["modem"]["ccho"], 1);
    assert_eq!(v["total"], 2);
    // Removal: every SIM command answers +CME ERROR: 10.
    assert_eq!(ask(&mut w, &mut r, "remove")["ok"], true);
    assert_eq!(ask(&mut w, &mut r, "stats")["present"], false);
    for c in [
        "AT+CSIM=10,\"0070000001\"".to_string(),
        format!("AT+CCHO=\"{AID}\""),
        format!("AT+CGLA={sid},10,\"80CB000000\""),
        format!("AT+CCHC={sid}"),
    ] {
        assert_eq!(host.cmd(&c).fin, "+CME ERROR: 10", "{c}");
    }
    assert_eq!(host.cmd("AT").fin, "OK");
    assert_eq!(ask(&mut w, &mut r, "insert")["ok"], true);
    // Fresh card: the old session is gone, channel 1 is free again.
    assert_eq!(
        host.cmd(&format!("AT+CGLA={sid},10,\"80CB000000\"")).fin,
        "+CME ERROR: 21"
    );
    assert_eq!(host.csim(&h("0070000001")), h("019000"));
    // Quirks through the socket.
    let v = ask(&mut w, &mut r, "quirk busy_every 1");
    assert_eq!(v["quirks"]["busy_every"], 1);
    assert_eq!(host.cmd("AT+CSIM=10,\"0070800100\"").fin, "+CME ERROR: 14");
    ask(&mut w, &mut r, "quirk busy_every 0");
    assert_eq!(host.csim(&h("0070800100")), h("9000"));
    assert_eq!(ask(&mut w, &mut r, "quirk echo on")["quirks"]["echo"], true);
    assert!(host.cmd("AT").echoed);
    assert_eq!(ask(&mut w, &mut r, "quirk")["quirks"]["echo"], true);
    assert_eq!(ask(&mut w, &mut r, "quirk bogus on")["ok"], false);
    assert_eq!(ask(&mut w, &mut r, "quirk echo maybe")["ok"], false);
    assert_eq!(ask(&mut w, &mut r, "quirk echo")["ok"], false);
    assert_eq!(ask(&mut w, &mut r, "hang")["hang"], true);
    assert!(host.try_cmd("AT", Duration::from_millis(200)).is_none());
    assert_eq!(ask(&mut w, &mut r, "unhang")["hang"], false);
    assert!(host.cmd("AT").fin == "OK");
    // Latency.
    let v = ask(&mut w, &mut r, "set-latency apdu=30 signature=2ms");
    assert_eq!(v["apdu_ms"], 30.0);
    assert_eq!(v["signature_ms"], 2.0);
    let t = Instant::now();
    host.csim(&h("0070000001"));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(ask(&mut w, &mut r, "set-latency apdu=0")["apdu_ms"], 0.0);
    assert_eq!(ask(&mut w, &mut r, "set-latency")["ok"], false);
    assert_eq!(ask(&mut w, &mut r, "set-latency apdu=x")["ok"], false);
    assert_eq!(ask(&mut w, &mut r, "set-latency foo=1")["ok"], false);
    // Two sign sequences interleaved on one channel (as two hosts sharing a session id
    // would do) are counted.
    let sid = host.ccho(AID);
    let init = apdu(
        0x80,
        0x2A,
        0x00,
        0x01,
        &h("840101 A10103 91020001 920104"),
        None,
    );
    assert_eq!(host.cgla(sid, &init), h("9000"));
    assert_eq!(host.cgla(sid, &init), h("9000"));
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(v["interleaved"], 1);
    assert_eq!(v["interleaved_by_channel"], serde_json::json!({"2": 1}));
    assert_eq!(v["open_channels"], serde_json::json!([0, 1, 2]));
    // reset-stats clears both counters.
    ask(&mut w, &mut r, "reset-stats");
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(v["total"], 0);
    assert_eq!(v["modem"]["commands"], 0);
    assert!(ask(&mut w, &mut r, "help")["commands"]["quirk"].is_string());
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn spawn_refuses_a_regular_file_and_replaces_a_stale_link() {
    let dir = temp_dir("spawnlink");
    let card = SharedCard::from_profile(default_profile(), CardOptions::default());
    let file = dir.join("plain");
    std::fs::write(&file, b"x").unwrap();
    assert!(modem::spawn(card.clone(), &file, ModemOptions::default()).is_err());
    assert!(file.exists());
    let link = dir.join("tty");
    std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
    let m = modem::spawn(card, &link, ModemOptions::default()).unwrap();
    let mut host = Host::open(&link);
    assert_eq!(host.cmd("AT").fin, "OK");
    // Reopening the port works (the modem holds its side open).
    drop(host);
    let mut host = Host::open(&link);
    assert_eq!(host.cmd("AT").fin, "OK");
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn random_input_does_not_break_the_modem() {
    let (dir, m, mut host) = start("fuzz", CardOptions::default(), ModemOptions::default());
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = [
        "AT+CSIM=10,\"0070000001\"",
        "AT+CGLA=1,10,\"80CB000000\"",
        "AT+CCHO=\"A0000005590010\"",
        "AT+CCHC=1",
        "AT+CMEE=1",
        "ATI",
    ];
    for _ in 0..150 {
        let mut line: Vec<u8> = seeds[(next() % seeds.len() as u64) as usize].into();
        for _ in 0..(next() % 4) {
            let i = (next() % (line.len() as u64 + 1)) as usize;
            match next() % 3 {
                0 if i < line.len() => {
                    line.remove(i);
                }
                1 => line.insert(i, next() as u8),
                _ if i < line.len() => line[i] = next() as u8,
                _ => {}
            }
        }
        line.push(b'\r');
        host.send(&line);
    }
    host.drain(Duration::from_millis(300));
    m.update(|o| *o = ModemOptions::default());
    host.cmd("ATE0");
    host.cmd("AT+CMEE=1");
    host.drain(Duration::from_millis(100));
    host.send(b"AT\r");
    assert_eq!(host.raw_until(b"OK\r\n"), b"\r\nOK\r\n");
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------ the binary

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while std::fs::symlink_metadata(path).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cli_modem_with_control_and_sigterm() {
    let dir = temp_dir("climodem");
    let link = dir.join("ttyIOTSAFE");
    let sock = dir.join("ctl.sock");
    let mut guard = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_iotsafe-sim"))
            .arg("modem")
            .arg("--link")
            .arg(&link)
            .arg("--control")
            .arg(&sock)
            .args(["--at", "both", "--echo", "--busy-every", "2", "--t0"])
            .args(["--max-command-len", "600", "--delay-ms", "1", "--split"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for(&link);
    wait_for(&sock);
    let mut host = Host::open(&link);
    let r = host.cmd("AT");
    assert!(r.echoed);
    assert_eq!(host.csim(&h("0070000001")), h("019000"));
    assert_eq!(host.csim(&h("0070800100")), h("9000"));
    let mut w = UnixStream::connect(&sock).unwrap();
    let mut rd = BufReader::new(w.try_clone().unwrap());
    let v = ask(&mut w, &mut rd, "stats");
    assert_eq!(v["by_ins"]["70"], 2);
    assert!(v["modem"]["busy"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(
        ask(&mut w, &mut rd, "quirk")["quirks"]["max_command_len"],
        600
    );
    let child = &mut guard.0;
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "link left behind"
    );
    assert!(!sock.exists());
    assert_eq!(host.fill(Instant::now() + T), Err(()));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("modem at"), "{err}");
    // Bad arguments.
    let bin = || Command::new(env!("CARGO_BIN_EXE_iotsafe-sim"));
    assert!(
        !bin()
            .args(["modem"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    assert!(
        !bin()
            .args(["modem", "--link", "/tmp/x", "--at", "sms"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    assert!(
        !bin()
            .args(["modem", "--link", "/tmp/x", "--busy-every", "-1"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ccho_on_a_card_with_three_channels() {
    let limited = CardOptions {
        max_channels: Some(3),
        ..CardOptions::default()
    };
    let (dir, m, mut host) = start("ccholimit", limited, ModemOptions::default());
    let sids: Vec<u64> = (0..3).map(|_| host.ccho(AID)).collect();
    // No channel left: the card answers 6A81, the modem +CME ERROR: 3.
    assert_eq!(host.cmd(&format!("AT+CCHO=\"{AID}\"")).fin, "+CME ERROR: 3");
    assert_eq!(host.cmd("AT+CMEE=2").fin, "OK");
    assert_eq!(
        host.cmd(&format!("AT+CCHO=\"{AID}\"")).fin,
        "+CME ERROR: operation not allowed"
    );
    assert_eq!(host.cmd("AT+CMEE=1").fin, "OK");
    let card = m.card().stats();
    assert_eq!((card.open_channel_count, card.max_open_channels), (3, 3));
    let modem = m.stats();
    assert_eq!((modem.open_sessions, modem.max_open_sessions), (3, 3));
    // Hosts coming and going (one leaks its session each time another closes) stay bounded.
    let mut open = sids;
    for _ in 0..30 {
        let sid = open.remove(0);
        assert_eq!(host.cmd(&format!("AT+CCHC={sid}")).fin, "OK");
        open.push(host.ccho(AID));
        assert_eq!(host.cmd(&format!("AT+CCHO=\"{AID}\"")).fin, "+CME ERROR: 3");
    }
    assert_eq!(m.card().stats().max_open_channels, 3);
    assert_eq!(m.stats().max_open_sessions, 3);
    // Closing one frees its channel; reset-stats restarts the maxima from what is open.
    assert_eq!(host.cmd(&format!("AT+CCHC={}", open[0])).fin, "OK");
    m.card().reset_stats();
    m.reset_stats();
    assert_eq!(m.card().stats().max_open_channels, 2);
    assert_eq!(m.stats().max_open_sessions, 2);
    // A removal forgets the sessions.
    m.card().remove();
    m.card().insert();
    assert_eq!(
        host.cmd(&format!("AT+CCHC={}", open[1])).fin,
        "+CME ERROR: 21"
    );
    assert_eq!(m.stats().open_sessions, 0);
    assert_eq!(m.card().stats().open_channel_count, 0);
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_modem_with_logical_channels() {
    let dir = temp_dir("climodemch");
    let link = dir.join("ttyIOTSAFE");
    let sock = dir.join("ctl.sock");
    let _guard = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_iotsafe-sim"))
            .arg("modem")
            .arg("--link")
            .arg(&link)
            .arg("--control")
            .arg(&sock)
            .args(["--logical-channels", "3"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&link);
    wait_for(&sock);
    let mut host = Host::open(&link);
    for _ in 0..3 {
        host.ccho(AID);
    }
    assert_eq!(host.cmd(&format!("AT+CCHO=\"{AID}\"")).fin, "+CME ERROR: 3");
    let mut w = UnixStream::connect(&sock).unwrap();
    let mut rd = BufReader::new(w.try_clone().unwrap());
    let v = ask(&mut w, &mut rd, "stats");
    assert_eq!(v["open_channel_count"], 3, "{v}");
    assert_eq!(v["max_open_channels"], 3, "{v}");
    assert_eq!(v["modem"]["open_sessions"], 3, "{v}");
    assert_eq!(v["modem"]["max_open_sessions"], 3, "{v}");
    assert_eq!(v["modem"]["cme_error"]["3"], 1, "{v}");
    // The limit changes at run time.
    assert_eq!(
        ask(&mut w, &mut rd, "logical-channels 4")["logical_channels"],
        4
    );
    host.ccho(AID);
    assert_eq!(ask(&mut w, &mut rd, "stats")["max_open_channels"], 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_quirks_of_real_modules_on_the_wire() {
    // Sierra MC7455: hex session ids, accepted back only exactly as written.
    let (_d, _m, mut host) = start(
        "sierra",
        CardOptions::default(),
        ModemOptions {
            hex_session_ids: true,
            ..Default::default()
        },
    );
    let r = host.cmd("AT+CCHO=\"A0000005590010\"");
    assert_eq!(
        (r.info("+CCHO: ").as_deref(), r.fin.as_str()),
        (Some("+CCHO: 00000000038aa330"), "OK")
    );
    for wrong in ["38aa330", "59417392", "1"] {
        assert_eq!(
            host.cmd(&format!("AT+CGLA={wrong},10,\"80CB000000\"")).fin,
            "+CME ERROR: 50",
            "{wrong}"
        );
    }
    let r = host.cmd("AT+CGLA=00000000038aa330,10,\"80CB000000\"");
    assert!(r.info("+CGLA: ").is_some() && r.fin == "OK", "{r:?}");
    assert_eq!(host.cmd("AT+CCHC=00000000038AA330").fin, "OK");
    assert_eq!(host.cmd("AT+ECSIMSLEEP=0").fin, "ERROR", "not a MediaTek");

    // Sierra EM9191: no AT+CCHC, text errors under AT+CMEE=1 (plain ERROR under 0).
    let (_d, m, mut host) = start(
        "em9191",
        CardOptions::default(),
        ModemOptions {
            no_cchc: true,
            verbose_cme: true,
            ..Default::default()
        },
    );
    let sid = host.ccho("A0000005590010");
    assert_eq!(host.cmd(&format!("AT+CCHC={sid}")).fin, "ERROR");
    assert_eq!(m.stats().open_sessions, 1, "the session stays open");
    assert_eq!(
        host.cmd("AT+CSIM=8,\"0070800100\"").fin,
        "+CME ERROR: incorrect parameters"
    );
    m.card().remove();
    assert_eq!(
        host.cmd("AT+CSIM=10,\"80CB000000\"").fin,
        "+CME ERROR: SIM not inserted"
    );
    m.card().insert();
    assert_eq!(host.cmd("AT+CMEE=0").fin, "OK");
    assert_eq!(host.cmd("AT+CSIM=8,\"0070800100\"").fin, "ERROR");

    // Quectel EG25: AT+CSIM on the basic channel only.
    let (_d, _m, mut host) = start(
        "eg25",
        CardOptions::default(),
        ModemOptions {
            csim_basic_only: true,
            ..Default::default()
        },
    );
    assert_eq!(host.csim(&h("0070000001")), h("019000"));
    assert_eq!(host.cmd("AT+CSIM=10,\"81F2000000\"").fin, "ERROR");
    assert_eq!(
        host.cmd("AT+CSIM=10,\"C0F2000000\"").fin,
        "ERROR",
        "channel 4"
    );
    assert_eq!(host.csim(&h("0070800100")), h("9000"));

    // MediaTek: the SIM sleeps until AT+ECSIMSLEEP=0; AT+CGMI says who made the modem.
    let (_d, _m, mut host) = start(
        "mediatek",
        CardOptions::default(),
        ModemOptions {
            sim_sleeps: true,
            manufacturer: "MediaTek Inc.".into(),
            ..Default::default()
        },
    );
    let r = host.cmd("AT+CGMI");
    assert_eq!(r.lines, vec![b"MediaTek Inc.".to_vec()]);
    assert_eq!(host.cmd("AT+CSIM=10,\"0070000001\"").fin, "+CME ERROR: 3");
    assert_eq!(host.cmd("AT+CCHO=\"A0000005590010\"").fin, "+CME ERROR: 3");
    assert_eq!(host.cmd("AT+ECSIMSLEEP=0").fin, "OK");
    assert_eq!(host.csim(&h("0070000001")), h("019000"));

    // Slow key generation: a URC comes before the late answer.
    let (_d, _m, mut host) = start(
        "slow-keygen",
        CardOptions::default(),
        ModemOptions {
            slow_keygen_ms: 400,
            ..Default::default()
        },
    );
    host.send(b"AT+CSIM=10,\"00B9000000\"\r");
    let answer = String::from_utf8(host.raw_until(b"OK\r\n")).unwrap();
    let (urc, result) = (answer.find("+CREG: 1"), answer.find("+CSIM: "));
    assert!(urc.is_some() && urc < result, "{answer:?}");
    host.send(b"AT+CSIM=10,\"80CB000000\"\r");
    let answer = String::from_utf8(host.raw_until(b"OK\r\n")).unwrap();
    assert!(!answer.contains("+CREG"), "only key generation is slow");
}
