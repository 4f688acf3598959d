mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use iotsafe_sim::{
    CardOptions, ObjectState, Profile, SharedCard, control, default_bundle, default_profile, vpcd,
};

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

#[test]
fn vpcd_framing_and_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let card = SharedCard::from_profile(default_profile(), CardOptions::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let th = {
        let (card, shutdown, log) = (card.clone(), shutdown.clone(), log.clone());
        std::thread::spawn(move || {
            vpcd::run(&card, "127.0.0.1", port, &shutdown, &mut |m| {
                log.lock().unwrap().push(m.to_string())
            })
        })
    };
    let mut s = accept_within(&listener, Duration::from_secs(5));
    send(&mut s, &[0x04]);
    assert_eq!(recv(&mut s), card.atr());
    send(&mut s, &[0x01]);
    send(&mut s, &[0x04]);
    assert_eq!(recv(&mut s), card.atr());
    send(&mut s, &h("0070000001"));
    assert_eq!(recv(&mut s), h("019000"));
    send(&mut s, &h("01A4040007A0000005590010"));
    assert_eq!(recv(&mut s), h("9000"));
    send(&mut s, &h("81CB000000"));
    let r = recv(&mut s);
    assert_eq!(r.len(), 70);
    // Power off drops channel state (no answer to 0x00).
    send(&mut s, &[0x00]);
    send(&mut s, &h("81CB000000"));
    assert_eq!(recv(&mut s), h("6881"));
    // Reset (0x02) too.
    send(&mut s, &h("0070000001"));
    assert_eq!(recv(&mut s), h("019000"));
    send(&mut s, &[0x02]);
    send(&mut s, &h("0070800100"));
    assert_eq!(recv(&mut s), h("6A86"));
    // Frame split over several writes.
    s.write_all(&[0x00]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&[0x05, 0x00, 0x84]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&[0x00, 0x00, 0x08]).unwrap();
    assert_eq!(recv(&mut s), h("6D00"));
    // Drop the connection: the card reconnects.
    drop(s);
    let mut s = accept_within(&listener, Duration::from_secs(5));
    send(&mut s, &[0x04]);
    assert_eq!(recv(&mut s), card.atr());
    shutdown.store(true, Ordering::SeqCst);
    th.join().unwrap();
    let log = log.lock().unwrap();
    assert!(
        log.iter().filter(|m| m.starts_with("connected")).count() >= 2,
        "{log:?}"
    );
    assert_eq!(card.stats().by_ins.get(&0xCB), Some(&2));
}

#[test]
fn vpcd_retries_until_listener_appears() {
    // Reserve a port, release it, start the client, then listen.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let card = SharedCard::from_profile(default_profile(), CardOptions::default());
    let shutdown = Arc::new(AtomicBool::new(false));
    let th = {
        let (card, shutdown) = (card.clone(), shutdown.clone());
        std::thread::spawn(move || vpcd::run(&card, "127.0.0.1", port, &shutdown, &mut |_| {}))
    };
    std::thread::sleep(Duration::from_millis(500));
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut s = accept_within(&listener, Duration::from_secs(5));
    send(&mut s, &[0x04]);
    assert_eq!(recv(&mut s), card.atr());
    shutdown.store(true, Ordering::SeqCst);
    th.join().unwrap();
}

fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> serde_json::Value {
    w.write_all(line.as_bytes()).unwrap();
    w.write_all(b"\n").unwrap();
    let mut ans = String::new();
    r.read_line(&mut ans).unwrap();
    serde_json::from_str(&ans).unwrap()
}

#[test]
fn control_socket_round_trip() {
    let dir = temp_dir("control");
    let path = dir.join("ctl.sock");
    // A stale socket file is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let card = SharedCard::from_profile(default_profile(), CardOptions::default());
    let server = control::ControlServer::spawn(&path, card.clone()).unwrap();
    let mut w = UnixStream::connect(&path).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    card.transmit(&h("00A4040007A0000005590010"));
    card.transmit(&h("80CB000000"));
    card.transmit(&h("80CB000000"));
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(v["ok"], true);
    assert_eq!(v["total"], 3);
    assert_eq!(v["by_ins"]["CB"], 2);
    assert_eq!(v["by_ins"]["A4"], 1);
    assert_eq!(
        ask(&mut w, &mut r, "reset-stats"),
        serde_json::json!({"ok": true})
    );
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(v["total"], 0);
    assert_eq!(v["by_ins"], serde_json::json!({}));
    let v = ask(&mut w, &mut r, "bogus thing");
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("bogus"));
    assert_eq!(ask(&mut w, &mut r, "ping")["ok"], true);
    assert!(ask(&mut w, &mut r, "help")["commands"]["stats"].is_string());
    assert_eq!(card.transmit(&h("80CB000000")).len(), 70);
    assert_eq!(ask(&mut w, &mut r, "power-off")["ok"], true);
    assert_eq!(card.transmit(&h("80CB000000")), h("6D00"));
    // A second client at the same time.
    let mut w2 = UnixStream::connect(&path).unwrap();
    let mut r2 = BufReader::new(w2.try_clone().unwrap());
    assert_eq!(ask(&mut w2, &mut r2, "stats")["ok"], true);
    drop(server);
    assert!(!path.exists());
    // A non-socket file at the path is not removed.
    std::fs::write(&path, b"x").unwrap();
    assert!(control::ControlServer::spawn(&path, card).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn profile_save_load_round_trip() {
    let dir = temp_dir("profile");
    let p = default_profile();
    let path = dir.join("p.toml");
    p.save(&path).unwrap();
    let q = Profile::load(&path).unwrap();
    assert_eq!(p, q);
    // Mutated profile (as after key generation) round-trips too.
    let mut m = p.clone();
    m.public_keys[1].point = m.public_keys[0].point.clone();
    m.public_keys[1].state = ObjectState::Activated;
    m.private_keys[1].label = Some(vec![0xFF, 0x00]);
    m.save(&path).unwrap();
    assert_eq!(Profile::load(&path).unwrap(), m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn profile_hand_written() {
    let text = r#"
aid = "A0 00 00 05 59 00 10"
max_sessions = 1

[app_info]
hash_algos = 1

[[private_key]]
id = "0002"
label = { hex = "3131" }
key_type = 0x13
crypto_functions = "0x01"

[[file]]
id = "0001"
label = "01"
usage = 2
content_hex = "30 03 02 01 05"

[[file]]
id = "0003"
content_base64 = "AAEC"

[[secret_key]]
id = "0004"
label = "33"
"#;
    let p = Profile::from_toml(text).unwrap();
    assert_eq!(p.max_sessions, 1);
    assert_eq!(p.max_channels, 19);
    assert_eq!(p.app_info.hash_algos, 1);
    assert_eq!(p.app_info.signature_algos, 4);
    assert_eq!(p.private_keys[0].label, Some(b"11".to_vec()));
    assert_eq!(p.private_keys[0].state, ObjectState::Activated);
    assert_eq!(p.private_keys[0].private, None);
    assert_eq!(p.files[0].content, h("3003020105"));
    assert_eq!(p.files[1].content, vec![0, 1, 2]);
    assert_eq!(p.files[1].usage, 1);
    assert_eq!(p.secret_keys[0].key_type, 0xA0);
    // An empty container answers 6985 on use, and is listed.
    let mut c = card_profile(p, CardOptions::default());
    assert_eq!(sw(&mut c, "00A4040007A0000005590010"), 0x9000);
    assert_eq!(sw(&mut c, "802A00000D84020002A10103910101920104"), 0x6985);
    assert_eq!(sw(&mut c, "80CB010000"), 0x9000);

    for bad in [
        "[[private_key]]\nid = \"01\"\nprivate = \"00\"\n",
        "[[private_key]]\nid = \"01\"\n[[private_key]]\nid = \"01\"\n",
        "[[file]]\nid = \"01\"\ncontent_hex = \"00\"\ncontent_base64 = \"AA==\"\n",
        "[[public_key]]\nid = \"01\"\npoint = \"0411\"\n",
        "[[public_key]]\nid = \"\"\n",
        "aid = \"A0\"\n",
        "max_channels = 20\n",
        "unknown_field = 1\n",
        "[[private_key]]\nid = \"01\"\nkey_type = 300\n",
        "[[private_key]]\nid = \"zz\"\n",
    ] {
        assert!(Profile::from_toml(bad).is_err(), "{bad}");
    }
}

fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn openssl(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn certificates_verify_with_openssl() {
    if !openssl_available() {
        eprintln!("openssl not installed; skipping");
        return;
    }
    let dir = temp_dir("openssl");
    let b = default_bundle();
    std::fs::write(dir.join("ca.pem"), &b.ca_cert_pem).unwrap();
    std::fs::write(dir.join("client.pem"), &b.client_cert_pem).unwrap();
    std::fs::write(dir.join("server.pem"), &b.server_cert_pem).unwrap();
    std::fs::write(dir.join("server-key.pem"), &b.server_key_pem).unwrap();
    std::fs::write(dir.join("client-key.pem"), &b.client_key_pem).unwrap();
    std::fs::write(dir.join("ca-key.pem"), &b.ca_key_pem).unwrap();
    // The card's file 02 is the DER of client.pem.
    std::fs::write(
        dir.join("file02.der"),
        &b.profile.file(&[2]).unwrap().content,
    )
    .unwrap();
    std::fs::write(
        dir.join("file03.der"),
        &b.profile.file(&[3]).unwrap().content,
    )
    .unwrap();
    for args in [
        &["verify", "-CAfile", "ca.pem", "client.pem"][..],
        &["verify", "-CAfile", "ca.pem", "server.pem"],
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "sslclient",
            "client.pem",
        ],
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "sslserver",
            "server.pem",
        ],
    ] {
        assert!(openssl(args, &dir).contains(": OK"), "{args:?}");
    }
    let der_pem = openssl(&["x509", "-inform", "DER", "-in", "file02.der"], &dir);
    assert_eq!(der_pem.trim(), b.client_cert_pem.trim());
    let der_ca = openssl(&["x509", "-inform", "DER", "-in", "file03.der"], &dir);
    assert_eq!(der_ca.trim(), b.ca_cert_pem.trim());
    let client = openssl(&["x509", "-in", "client.pem", "-noout", "-text"], &dir);
    for want in [
        "CN = iotsafe-device",
        "O = iotsafe-pkcs11 test",
        "Issuer: CN = iotsafe-pkcs11 Test CA",
        "TLS Web Client Authentication",
        "Digital Signature",
        "ecdsa-with-SHA256",
        "Not Before: Jan  1 00:00:00 2020 GMT",
        "Not After : Dec 31 23:59:59 2049 GMT",
    ] {
        assert!(client.contains(want), "client cert lacks {want}");
    }
    let server = openssl(&["x509", "-in", "server.pem", "-noout", "-text"], &dir);
    for want in [
        "CN = localhost",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "TLS Web Server Authentication",
    ] {
        assert!(server.contains(want), "server cert lacks {want}");
    }
    let ca = openssl(&["x509", "-in", "ca.pem", "-noout", "-text"], &dir);
    assert!(ca.contains("CA:TRUE"));
    assert!(ca.contains("Certificate Sign, CRL Sign"));
    // Keys match certificates; client key matches the card's public key 01.
    for (cert, key) in [
        ("server.pem", "server-key.pem"),
        ("client.pem", "client-key.pem"),
        ("ca.pem", "ca-key.pem"),
    ] {
        let a = openssl(&["x509", "-in", cert, "-noout", "-pubkey"], &dir);
        let k = openssl(&["pkey", "-in", key, "-pubout"], &dir);
        assert_eq!(a, k, "{cert}");
    }
    let pubhex = openssl(&["x509", "-in", "client.pem", "-noout", "-pubkey"], &dir);
    std::fs::write(dir.join("pub.pem"), pubhex).unwrap();
    let pubder = Command::new("openssl")
        .args(["pkey", "-pubin", "-in", "pub.pem", "-outform", "DER"])
        .current_dir(&dir)
        .output()
        .unwrap()
        .stdout;
    let point = b.profile.public_key(&[1]).unwrap().point.clone().unwrap();
    assert!(pubder.ends_with(&point));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn card_signature_verifies_with_openssl() {
    if !openssl_available() {
        return;
    }
    let dir = temp_dir("opensslsig");
    let b = default_bundle();
    std::fs::write(dir.join("client.pem"), &b.client_cert_pem).unwrap();
    let msg = b"data signed by the simulated card";
    std::fs::write(dir.join("msg"), msg).unwrap();
    let mut c = card();
    let ch = open_select(&mut c);
    let cl = cla(ch, true);
    let init = h("840101 A10101 91020001 920104");
    let _ = tx(&mut c, &apdu(cl, 0x2A, 0, 1, &init, None));
    let mut upd = vec![0x9B, msg.len() as u8];
    upd.extend_from_slice(msg);
    let (r, s) = tx(&mut c, &apdu(cl, 0x2B, 0x80, 1, &upd, None));
    assert_eq!(s, 0x9000);
    let sig = p256::ecdsa::Signature::from_slice(&r[2..]).unwrap();
    std::fs::write(dir.join("sig.der"), sig.to_der().as_bytes()).unwrap();
    openssl(
        &[
            "x509",
            "-in",
            "client.pem",
            "-noout",
            "-pubkey",
            "-out",
            "pub.pem",
        ],
        &dir,
    );
    let out = openssl(
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.der",
            "msg",
        ],
        &dir,
    );
    assert!(out.contains("Verified OK"));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ------------------------------------------------------------------ the binary

/// Kills the child process if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotsafe-sim"))
}

#[test]
fn cli_init_profile_and_apdu() {
    let dir = temp_dir("cli");
    let file = dir.join("card.toml");
    let st = bin().arg("init-profile").arg(&file).status().unwrap();
    assert!(st.success());
    for f in [
        "card.toml",
        "ca.pem",
        "ca-key.pem",
        "client.pem",
        "server.pem",
        "server-key.pem",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert_eq!(Profile::load(&file).unwrap(), default_profile());
    let out = bin().arg("init-profile").arg(&file).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert!(
        bin()
            .args(["init-profile", "--force"])
            .arg(&file)
            .status()
            .unwrap()
            .success()
    );
    let out = bin()
        .args(["init-profile", "--force", "--seed", "other"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_ne!(Profile::load(&file).unwrap(), default_profile());
    let out = bin()
        .args(["apdu", "--profile"])
        .arg(&file)
        .args([
            "--sig-len",
            "two",
            "--app-info",
            "qt",
            "00A4040007A0000005590010",
            "80CB000000",
            "8048010009 860110 D20141 D30120 00",
            "804A00000D D108 0102030405060708 D501 AA 00",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("< 9000"));
    assert!(text.contains("61010F"), "{text}");
    // COMPUTE PRF / HKDF: data and derived keys are not traced.
    assert!(
        text.contains("> 8048010009 <9 bytes redacted> 00"),
        "{text}"
    );
    assert!(text.contains("< <32 bytes redacted> 9000"), "{text}");
    assert!(
        text.contains("> 804A00000D <13 bytes redacted> 00"),
        "{text}"
    );
    assert!(!text.contains("0102030405060708"), "{text}");
    assert!(!bin().args(["apdu", "--bogus"]).status().unwrap().success());
    assert!(
        !bin()
            .args(["vpcd", "--sig-len", "three"])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        bin()
            .arg("help")
            .output()
            .unwrap()
            .stdout
            .starts_with(b"iotsafe-sim")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_vpcd_with_control_and_sigterm() {
    let dir = temp_dir("clivpcd");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sock = dir.join("ctl.sock");
    let mut guard = KillOnDrop(
        bin()
            .args([
                "vpcd",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--control",
            ])
            .arg(&sock)
            .args([
                "--t0",
                "--list-style",
                "none",
                "--latency-apdu",
                "1ms",
                "--list-page-size",
                "20",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let mut s = accept_within(&listener, Duration::from_secs(10));
    send(&mut s, &[0x04]);
    assert_eq!(recv(&mut s)[0], 0x3B);
    send(&mut s, &h("00A4040007A0000005590010"));
    assert_eq!(recv(&mut s), h("9000"));
    send(&mut s, &h("80CB000000"));
    assert_eq!(recv(&mut s), h("6144"));
    let t = Instant::now();
    while !sock.exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut w = UnixStream::connect(&sock).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    let v = ask(&mut w, &mut r, "stats");
    assert_eq!(v["total"], 2);
    assert_eq!(v["by_ins"]["CB"], 1);
    // SIGTERM -> exit 0, socket removed.
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
    assert!(!sock.exists());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("connected to vpcd"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
