//! Card removal/insertion over vpcd, and the interleaved-session counter.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use iotsafe_sim::{CardOptions, SharedCard, control, default_profile, vpcd};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iotsafe-sim-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn send(s: &mut TcpStream, payload: &[u8]) {
    vpcd::write_frame(s, payload).unwrap();
}

fn recv(s: &mut TcpStream) -> Vec<u8> {
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr).unwrap();
    let mut p = vec![0u8; u16::from_be_bytes(hdr) as usize];
    s.read_exact(&mut p).unwrap();
    p
}

/// Accepts a connection within `limit`, or None.
fn accept_within(l: &TcpListener, limit: Duration) -> Option<TcpStream> {
    l.set_nonblocking(true).unwrap();
    let t = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return Some(s);
            }
            Err(_) if t.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return None,
        }
    }
}

fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> serde_json::Value {
    w.write_all(line.as_bytes()).unwrap();
    w.write_all(b"\n").unwrap();
    let mut ans = String::new();
    r.read_line(&mut ans).unwrap();
    serde_json::from_str(&ans).unwrap()
}

#[test]
fn vpcd_remove_and_insert_through_the_control_socket() {
    let dir = temp_dir("vpcdpresence");
    let sock = dir.join("ctl.sock");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let card = SharedCard::from_profile(default_profile(), CardOptions::default());
    let _server = control::ControlServer::spawn(&sock, card.clone()).unwrap();
    let mut w = UnixStream::connect(&sock).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let shutdown = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let th = {
        let (card, shutdown, log) = (card.clone(), shutdown.clone(), log.clone());
        std::thread::spawn(move || {
            vpcd::run(&card, "127.0.0.1", port, &shutdown, &mut |m| {
                log.lock().unwrap().push(m.to_string())
            })
        })
    };
    let mut s = accept_within(&listener, Duration::from_secs(5)).expect("connect");
    send(&mut s, &[0x04]);
    assert_eq!(recv(&mut s), card.atr());
    send(&mut s, &h("0070000001"));
    assert_eq!(recv(&mut s), h("019000"));
    // remove: the connection is closed (pcscd then reports no card) ...
    assert_eq!(ask(&mut w, &mut r, "remove")["present"], false);
    let t = Instant::now();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0, "connection not closed");
    assert!(t.elapsed() < Duration::from_secs(2));
    // ... and not reopened until insert.
    assert!(accept_within(&listener, Duration::from_millis(700)).is_none());
    assert_eq!(ask(&mut w, &mut r, "stats")["present"], false);
    assert_eq!(ask(&mut w, &mut r, "insert")["present"], true);
    let mut s = accept_within(&listener, Duration::from_secs(5)).expect("reconnect");
    send(&mut s, &[0x04]);
    assert_eq!(recv(&mut s), card.atr());
    // Freshly powered: channel 1 is free again.
    send(&mut s, &h("0070000001"));
    assert_eq!(recv(&mut s), h("019000"));
    // A quick remove + insert (faster than the poll interval) still drops the connection.
    assert_eq!(ask(&mut w, &mut r, "remove")["ok"], true);
    assert_eq!(ask(&mut w, &mut r, "insert")["ok"], true);
    assert_eq!(s.read(&mut b).unwrap(), 0, "connection not closed");
    let mut s = accept_within(&listener, Duration::from_secs(5)).expect("reconnect");
    send(&mut s, &h("0070000001"));
    assert_eq!(recv(&mut s), h("019000"));
    // quirk / hang need a modem.
    assert_eq!(ask(&mut w, &mut r, "quirk echo on")["ok"], false);
    assert_eq!(ask(&mut w, &mut r, "hang")["ok"], false);
    shutdown.store(true, Ordering::SeqCst);
    th.join().unwrap();
    let log = log.lock().unwrap();
    assert!(log.iter().any(|m| m.contains("card removed")), "{log:?}");
    assert!(log.iter().any(|m| m.contains("card inserted")), "{log:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn init(key: u8) -> Vec<u8> {
    let mut d = vec![0x84, 0x01, key];
    d.extend_from_slice(&h("A10103 91020001 920104"));
    d
}

fn update() -> Vec<u8> {
    let mut d = vec![0x9E, 0x20];
    d.extend_from_slice(&[0x5A; 32]);
    d
}

#[test]
fn interleaved_sessions_are_counted() {
    let mut c = card();
    let ch1 = open_select(&mut c);
    let ch2 = open_select(&mut c);
    let (p1, p2) = (cla(ch1, true), cla(ch2, true));
    let sign = |c: &mut iotsafe_sim::Card, cl: u8, s: u8| {
        let (d, sw) = tx(c, &apdu(cl, 0x2B, 0x80, s, &update(), None));
        assert_eq!((d.len(), sw), (66, 0x9000));
    };
    // One leased channel per sequence, sequences overlapping in time on different
    // channels: nothing counted.
    for _ in 0..3 {
        assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
        assert_eq!(tx(&mut c, &apdu(p2, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
        sign(&mut c, p1, 1);
        sign(&mut c, p2, 1);
    }
    // Closing (P1=01) or re-selecting ends a sequence: not interleaved either.
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 1, 1, &[], None)).1, 0x9000);
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
    let sel = apdu(cla(ch1, false), 0xA4, 0x04, 0x00, &h(AID), None);
    assert_eq!(tx(&mut c, &sel).1, 0x9000);
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
    sign(&mut c, p1, 1);
    assert_eq!(c.stats().interleaved, 0);
    // On purpose: a second INIT on the same channel before the first sequence's last
    // UPDATE (another session number) ...
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 2, &init(1), None)).1, 0x9000);
    sign(&mut c, p1, 1);
    sign(&mut c, p1, 2);
    assert_eq!(c.stats().interleaved, 1);
    // ... or the same session re-opened by someone else (its UPDATE then runs on the
    // other host's session).
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
    assert_eq!(tx(&mut c, &apdu(p1, 0x2A, 0, 1, &init(1), None)).1, 0x9000);
    sign(&mut c, p1, 1);
    assert_eq!(
        tx(&mut c, &apdu(p1, 0x2B, 0x80, 1, &update(), None)).1,
        0x6985
    );
    // A verify INIT interleaved with a sign sequence counts too.
    assert_eq!(tx(&mut c, &apdu(p2, 0x2A, 0, 3, &init(1), None)).1, 0x9000);
    let mut v = vec![0x85, 0x01, 0x01];
    v.extend_from_slice(&h("A10103 91020001 920104"));
    assert_eq!(tx(&mut c, &apdu(p2, 0x2C, 0, 4, &v, None)).1, 0x9000);
    let s = c.stats();
    assert_eq!(s.interleaved, 3);
    assert_eq!(s.interleaved_by_channel.get(&ch1), Some(&2));
    assert_eq!(s.interleaved_by_channel.get(&ch2), Some(&1));
    // The control socket's stats report it, with the open channels.
    let shared = SharedCard::new(c);
    let v: serde_json::Value =
        serde_json::from_str(&control::handle_line(&shared, "stats")).unwrap();
    assert_eq!(v["interleaved"], 3);
    assert_eq!(v["interleaved_by_channel"][ch1.to_string()], 2);
    assert_eq!(v["open_channels"], serde_json::json!([0, ch1, ch2]));
    shared.reset_stats();
    assert_eq!(shared.stats().interleaved, 0);
}
