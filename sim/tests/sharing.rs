//! One card, many hosts: the logical-channel limit, the open-channel counts in the stats,
//! a control socket that answers while a transmit waits for a mute card, and vpcd mode
//! refusing faults that leave a command without an answer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::*;
use iotsafe_sim::{
    Card, CardOptions, Fault, FaultKind, Profile, SharedCard, control, default_profile, vpcd,
};
use serde_json::{Value, json};

const OPEN: &str = "0070000001";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iotsafe-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn limited(max: u8) -> Card {
    card_with(CardOptions {
        max_channels: Some(max),
        ..CardOptions::default()
    })
}

fn close(ch: u8) -> Vec<u8> {
    vec![0x00, 0x70, 0x80, ch]
}

#[test]
fn the_limit_comes_from_the_options_else_the_profile() {
    let mut c = limited(3);
    assert_eq!(c.max_channels(), 3);
    for ch in 1..=3u8 {
        assert_eq!(txh(&mut c, OPEN), (vec![ch], 0x9000));
    }
    // No channel free: 6A81, as many times as asked.
    assert_eq!(sw(&mut c, OPEN), 0x6A81);
    assert_eq!(sw(&mut c, OPEN), 0x6A81);
    // A specific channel above the limit: 6A86 (as without a limit above 19).
    assert_eq!(sw(&mut c, "0070000400"), 0x6A86);
    assert_eq!(sw(&mut c, "0070800400"), 0x6A86);
    // A closed channel is handed out again.
    assert_eq!(tx(&mut c, &close(2)).1, 0x9000);
    assert_eq!(txh(&mut c, OPEN), (vec![2], 0x9000));
    assert_eq!(c.open_channels(), vec![0, 1, 2, 3]);

    let mut profile = default_profile();
    profile.max_channels = 4;
    let mut c = card_profile(profile.clone(), CardOptions::default());
    assert_eq!(c.max_channels(), 4);
    for _ in 0..4 {
        assert_eq!(txh(&mut c, OPEN).1, 0x9000);
    }
    assert_eq!(sw(&mut c, OPEN), 0x6A81);
    // The option wins over the profile; values above 19 count as 19.
    let c = card_profile(
        profile,
        CardOptions {
            max_channels: Some(1),
            ..CardOptions::default()
        },
    );
    assert_eq!(c.max_channels(), 1);
    assert_eq!(limited(200).max_channels(), 19);
    assert_eq!(card().max_channels(), 19);
}

#[test]
fn stats_count_open_channels_now_and_at_most() {
    let mut c = limited(3);
    let s = c.stats();
    assert_eq!((s.open_channel_count, s.max_open_channels), (0, 0));
    open_select(&mut c);
    open_select(&mut c);
    assert_eq!(c.stats().open_channel_count, 2);
    assert_eq!(tx(&mut c, &close(1)).1, 0x9000);
    open_select(&mut c);
    open_select(&mut c);
    assert_eq!(sw(&mut c, OPEN), 0x6A81);
    let s = c.stats();
    assert_eq!((s.open_channel_count, s.max_open_channels), (3, 3));
    // Many hosts coming and going never pass the bound.
    for round in 0..200u8 {
        let ch = 1 + round % 3;
        assert_eq!(tx(&mut c, &close(ch)).1, 0x9000);
        assert_eq!(txh(&mut c, OPEN), (vec![ch], 0x9000));
        assert_eq!(sw(&mut c, OPEN), 0x6A81);
    }
    assert_eq!(c.stats().max_open_channels, 3);
    // A power cycle closes them; the maximum stays until the stats are reset, and then
    // starts from what is open.
    c.power_off();
    let s = c.stats();
    assert_eq!((s.open_channel_count, s.max_open_channels), (0, 3));
    open_select(&mut c);
    c.reset_stats();
    let s = c.stats();
    assert_eq!(
        (s.open_channel_count, s.max_open_channels, s.total),
        (1, 1, 0)
    );
}

#[test]
fn lowering_the_limit_closes_nothing() {
    let card = SharedCard::new(card());
    for ch in 1..=3u8 {
        assert_eq!(card.transmit(&h(OPEN)), vec![ch, 0x90, 0x00]);
    }
    card.set_max_channels(Some(1));
    assert_eq!(card.max_channels(), 1);
    assert_eq!(card.transmit(&h(OPEN)), h("6A81"));
    // Channel 3, above the new limit, still works and can be closed.
    assert_eq!(card.transmit(&h("03A4040007A0000005590010")), h("9000"));
    assert_eq!(card.transmit(&close(3)), h("9000"));
    assert_eq!(card.transmit(&close(3)), h("6A86"));
    assert_eq!(card.open_channels(), vec![0, 1, 2]);
    card.set_max_channels(None);
    assert_eq!(card.transmit(&h(OPEN)), h("039000"));
    // Through the control channel.
    let v: Value =
        serde_json::from_str(&control::handle_line(&card, "logical-channels 3")).unwrap();
    assert_eq!(
        v,
        json!({"ok": true, "logical_channels": 3, "open_channels": [0, 1, 2, 3]})
    );
    assert_eq!(card.transmit(&h(OPEN)), h("6A81"));
    for bad in [
        "logical-channels 0",
        "logical-channels 20",
        "logical-channels x",
    ] {
        let v: Value = serde_json::from_str(&control::handle_line(&card, bad)).unwrap();
        assert_eq!(v["ok"], false, "{bad}");
    }
    let v: Value = serde_json::from_str(&control::handle_line(&card, "logical-channels")).unwrap();
    assert_eq!(v["logical_channels"], 3);
}

fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> Value {
    w.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut ans = String::new();
    r.read_line(&mut ans).unwrap();
    serde_json::from_str(&ans).unwrap()
}

fn connect(sock: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let w = UnixStream::connect(sock).unwrap();
    let r = BufReader::new(w.try_clone().unwrap());
    (w, r)
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Well under the default mute limit (30 s), which must not be what ends the wait.
const AT_ONCE: Duration = Duration::from_secs(3);

#[test]
fn the_control_socket_answers_while_a_transmit_is_mute() {
    let dir = temp_dir("mutectl");
    let sock = dir.join("ctl.sock");
    let card = SharedCard::new(card());
    let _server = control::ControlServer::spawn(&sock, card.clone()).unwrap();
    let (mut w, mut r) = connect(&sock);
    assert_eq!(ask(&mut w, &mut r, "fault mute")["ok"], true);
    let blocked = {
        let card = card.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            (card.transmit(&h(OPEN)), t.elapsed())
        })
    };
    wait_until("the card is mute", || card.faults().is_muted());
    // A second host queues behind the mute exchange, as on one card interface.
    let queued = {
        let card = card.clone();
        std::thread::spawn(move || card.transmit(&h(OPEN)))
    };
    for cmd in ["stats", "fault", "ping", "logical-channels"] {
        let t = Instant::now();
        let v = ask(&mut w, &mut r, cmd);
        assert_eq!(v["ok"], true, "{cmd}: {v}");
        assert!(t.elapsed() < AT_ONCE, "{cmd} took {:?}", t.elapsed());
    }
    assert_eq!(ask(&mut w, &mut r, "fault")["muted"], true);
    let t = Instant::now();
    let v = ask(&mut w, &mut r, "fault clear");
    assert_eq!(
        (v["ok"].clone(), v["muted"].clone()),
        (json!(true), json!(false))
    );
    let (answer, waited) = blocked.join().unwrap();
    assert_eq!(answer, h("019000"));
    assert!(
        t.elapsed() < AT_ONCE && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(queued.join().unwrap(), h("029000"));
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(
        (
            v["open_channel_count"].clone(),
            v["max_open_channels"].clone()
        ),
        (json!(2), json!(2))
    );

    // Removing the card ends the wait at once without an answer; the card stays mute.
    ask(&mut w, &mut r, "fault mute");
    let blocked = {
        let card = card.clone();
        std::thread::spawn(move || card.transmit(&h(OPEN)))
    };
    wait_until("the card is mute", || card.faults().is_muted());
    let t = Instant::now();
    assert_eq!(ask(&mut w, &mut r, "remove")["present"], false);
    assert_eq!(blocked.join().unwrap(), Vec::<u8>::new());
    assert!(t.elapsed() < AT_ONCE);
    assert_eq!(ask(&mut w, &mut r, "insert")["present"], true);
    assert_eq!(ask(&mut w, &mut r, "fault")["muted"], true);
    ask(&mut w, &mut r, "fault clear");
    assert_eq!(card.transmit(&h(OPEN)), h("019000"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_mute_card_in_process_still_waits_for_the_limit() {
    let card = SharedCard::new(card());
    let faults = card.faults();
    faults.set_mute_limit(Duration::from_millis(100));
    faults.arm(Fault::new(FaultKind::Mute));
    let t = Instant::now();
    assert_eq!(card.transmit(&h(OPEN)), Vec::<u8>::new());
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(faults.is_muted());
    faults.clear();
    assert_eq!(card.transmit(&h(OPEN)), h("019000"));
}

fn handle(card: &SharedCard, line: &str) -> Value {
    serde_json::from_str(&control::handle_line(card, line)).unwrap()
}

#[test]
fn vpcd_mode_refuses_faults_that_leave_a_command_unanswered() {
    let card = SharedCard::new(card());
    // Not in vpcd mode: accepted.
    assert_eq!(handle(&card, "fault mute")["ok"], true);
    card.faults().clear();
    // Serving a vpcd connection switches the refusal on.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut driver = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let server = {
        let (card, shutdown) = (card.clone(), shutdown.clone());
        std::thread::spawn(move || vpcd::serve_connection(stream, &card, &shutdown))
    };
    vpcd::write_frame(&mut driver, &[vpcd::CTRL_ATR]).unwrap();
    let mut hdr = [0u8; 2];
    driver.read_exact(&mut hdr).unwrap();
    let mut atr = vec![0u8; u16::from_be_bytes(hdr) as usize];
    driver.read_exact(&mut atr).unwrap();
    for refused in ["fault mute", "fault truncate=0", "fault mute ins=2B skip=3"] {
        let v = handle(&card, refused);
        assert_eq!(v["ok"], false, "{refused}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("vpcd") && e.contains("without an answer"), "{e}");
    }
    for accepted in ["fault truncate=1", "fault sw=6F00", "fault remove count=0"] {
        assert_eq!(handle(&card, accepted)["ok"], true, "{accepted}");
    }
    // The library's infallible `arm` does not arm a refused fault either.
    let faults = card.faults();
    faults.arm(Fault::new(FaultKind::Mute));
    assert!(faults.try_arm(Fault::new(FaultKind::Truncate(0))).is_err());
    assert_eq!(faults.armed().len(), 3);
    assert!(faults.armed().iter().all(|f| !f.leaves_unanswered()));
    faults.clear();
    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    server.join().unwrap().unwrap();
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotsafe-sim"))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn apdu_outputs(args: &[&str], profile: Option<&Path>) -> Vec<String> {
    let mut cmd = bin();
    cmd.arg("apdu");
    if let Some(p) = profile {
        cmd.arg("--profile").arg(p).arg("--no-persist");
    }
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("< ").map(str::to_string))
        .collect()
}

#[test]
fn cli_logical_channels_flag() {
    let opens = [OPEN; 4];
    let mut args = vec!["--logical-channels", "3"];
    args.extend(opens);
    assert_eq!(
        apdu_outputs(&args, None),
        ["019000", "029000", "039000", "6A81"]
    );
    // Default unchanged: 19.
    assert_eq!(apdu_outputs(&opens, None)[3], "049000");
    // init-profile writes the limit into the profile; the flag still overrides it.
    let dir = temp_dir("clichannels");
    let file = dir.join("card.toml");
    let st = bin()
        .args(["init-profile", "--logical-channels", "2"])
        .arg(&file)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(Profile::load(&file).unwrap().max_channels, 2);
    assert_eq!(
        apdu_outputs(&opens, Some(&file)),
        ["019000", "029000", "6A81", "6A81"]
    );
    let mut args = vec!["--logical-channels", "4"];
    args.extend(opens);
    assert_eq!(apdu_outputs(&args, Some(&file))[3], "049000");
    for bad in ["0", "20", "x", "-1"] {
        for sub in [
            &["apdu"][..],
            &["vpcd"],
            &["modem", "--link", "/nonexistent/l"],
        ] {
            let st = bin()
                .args(sub)
                .args(["--logical-channels", bad])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert_eq!(st.code(), Some(2), "{sub:?} {bad}");
        }
    }
    let st = bin()
        .args(["init-profile", "--force", "--logical-channels", "20"])
        .arg(&file)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2));
    let help = bin().arg("help").output().unwrap().stdout;
    assert!(String::from_utf8_lossy(&help).contains("--logical-channels N"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn accept_within(l: &TcpListener, limit: Duration) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let t = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return s;
            }
            Err(_) if t.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("no connection: {e}"),
        }
    }
}

fn exchange(s: &mut TcpStream, payload: &[u8]) -> Vec<u8> {
    vpcd::write_frame(s, payload).unwrap();
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).unwrap();
    let mut p = vec![0u8; u16::from_be_bytes(hdr) as usize];
    s.read_exact(&mut p).unwrap();
    p
}

#[test]
fn cli_vpcd_limits_channels_and_refuses_mute() {
    let dir = temp_dir("clivpcdmute");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let sock = dir.join("ctl.sock");
    let _guard = KillOnDrop(
        bin()
            .args(["vpcd", "--host", "127.0.0.1", "--port", &port])
            .args(["--logical-channels", "2", "--control"])
            .arg(&sock)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut s = accept_within(&listener, Duration::from_secs(10));
    wait_until("the control socket", || sock.exists());
    let (mut w, mut r) = connect(&sock);
    let v = ask(&mut w, &mut r, "fault mute");
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["error"].as_str().unwrap().contains("vpcd"), "{v}");
    assert_eq!(ask(&mut w, &mut r, "fault")["armed"], json!([]));
    assert_eq!(exchange(&mut s, &h(OPEN)), h("019000"));
    assert_eq!(exchange(&mut s, &h(OPEN)), h("029000"));
    assert_eq!(exchange(&mut s, &h(OPEN)), h("6A81"));
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(v["open_channels"], json!([0, 1, 2]));
    assert_eq!(
        (
            v["open_channel_count"].clone(),
            v["max_open_channels"].clone()
        ),
        (json!(2), json!(2))
    );
    assert_eq!(
        ask(&mut w, &mut r, "logical-channels")["logical_channels"],
        2
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
