//! The built module (`.so`) loaded by real tools over the PC/SC stack that `scripts/stack.sh`
//! starts (a private pcscd with the vsmartcard-vpcd driver, and `iotsafe-sim` as the card
//! behind it): paths, the lock, the simulator's control socket, child processes, the tools.
//!
//! Where things are: `IOTSAFE_STACK_DIR` (default `<repo>/target/stack`) holds the card files
//! written by `iotsafe-sim init-profile` under `card/`, the simulator's control socket `sim.sock`
//! and the OpenSSL configuration for pkcs11-provider; `IOTSAFE_MODULE` (default
//! `<repo>/target/release/libiotsafe_pkcs11.so`) is the module under test.
//!
//! Every stack test holds [`StackLock`] for its whole run: the card and its APDU counters are
//! shared, so tests that count APDUs must not see another test's traffic.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use super::openssl_plain;

/// Upper bound for one tool run (a hang guard, never an assertion on speed).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The paths of a running stack.
#[derive(Debug, Clone)]
pub struct Stack {
    pub dir: PathBuf,
    pub module: PathBuf,
    pub card_dir: PathBuf,
    pub control: PathBuf,
    pub provider_conf: PathBuf,
}

impl Stack {
    /// The stack described by the environment, checked to exist; panics with what to run if not.
    pub fn get() -> Stack {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::var_os("IOTSAFE_STACK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/stack"));
        let module = std::env::var_os("IOTSAFE_MODULE")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/libiotsafe_pkcs11.so"));
        let stack = Stack {
            card_dir: dir.join("card"),
            control: dir.join("sim.sock"),
            provider_conf: dir.join("openssl-pkcs11-provider.cnf"),
            dir,
            module,
        };
        assert!(
            stack.module.is_file(),
            "PKCS#11 module {} not found: build it with `cargo build --release` \
             (or set IOTSAFE_MODULE); `bash scripts/test.sh` does everything",
            stack.module.display()
        );
        for needed in [
            stack.card_dir.join("ca.pem"),
            stack.card_dir.join("client.pem"),
            stack.card_dir.join("server.pem"),
            stack.card_dir.join("server-key.pem"),
            stack.provider_conf.clone(),
        ] {
            assert!(
                needed.is_file(),
                "{} not found: the pcscd+vpcd stack is not running in {} \
                 (start it with `bash scripts/stack.sh start`, or set IOTSAFE_STACK_DIR; \
                 `bash scripts/test.sh` does everything)",
                needed.display(),
                stack.dir.display()
            );
        }
        assert!(
            stack.control.exists(),
            "simulator control socket {} not found: is `bash scripts/stack.sh start` running?",
            stack.control.display()
        );
        stack
    }

    pub fn card_file(&self, name: &str) -> PathBuf {
        self.card_dir.join(name)
    }

    /// A fresh scratch directory for one test (under the stack dir, removed first).
    pub fn scratch(&self, test: &str) -> PathBuf {
        let d = self.dir.join("test-scratch").join(test);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        d
    }

    /// Takes the exclusive lock that serialises all stack tests (across processes).
    pub fn lock(&self) -> StackLock {
        let path = self.dir.join("tests.lock");
        let file =
            File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        file.lock()
            .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
        StackLock { _file: file }
    }

    /// Sends one command to the stack's simulator (its control socket) and returns the reply.
    pub fn sim_command(&self, command: &str) -> String {
        sim_control(&self.control, command)
    }

    pub fn reset_stats(&self) {
        self.sim_command("reset-stats");
    }

    pub fn stats(&self) -> SimStats {
        let line = self.sim_command("stats");
        SimStats::parse(&line).unwrap_or_else(|| panic!("cannot parse stats reply {line:?}"))
    }
}

/// Sends one command to a simulator's control socket and returns its one-line JSON reply,
/// which must say `"ok": true`.
pub fn sim_control(socket: &Path, command: &str) -> String {
    let mut s = UnixStream::connect(socket).unwrap_or_else(|e| {
        panic!(
            "cannot connect to simulator control {}: {e}",
            socket.display()
        )
    });
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("{command}\n").as_bytes())
        .expect("write to control socket");
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("no reply from simulator control to {command:?}: {e}"));
    let line = line.trim().to_string();
    assert!(
        line.contains("\"ok\":true") || line.contains("\"ok\": true"),
        "simulator control {command:?} failed: {line:?}"
    );
    line
}

/// The number at `path` (`total`, `modem/open_sessions`) of a simulator's one-line JSON
/// `stats` reply.
pub fn stat(stats: &str, path: &str) -> u64 {
    let value: serde_json::Value =
        serde_json::from_str(stats).unwrap_or_else(|e| panic!("stats {stats:?}: {e}"));
    value
        .pointer(&format!("/{path}"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no number {path} in {stats}"))
}

/// The simulator binary for the tests that start more cards (`IOTSAFE_SIM_BIN`, default
/// `target/release/iotsafe-sim`).
pub fn sim_binary() -> PathBuf {
    std::env::var_os("IOTSAFE_SIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/iotsafe-sim"))
}

/// Held while a stack test runs; released on drop.
pub struct StackLock {
    _file: File,
}

/// APDU counters of the simulator: `{"ok":true,"total":2,"by_ins":{"2A":1,"2B":1}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimStats {
    pub total: u64,
    pub by_ins: BTreeMap<String, u64>,
}

impl SimStats {
    /// Reads `total` and the flat `by_ins` object out of the reply (no JSON crate needed).
    pub fn parse(line: &str) -> Option<SimStats> {
        let total = number_after(line, "\"total\"")?;
        let start = line.find("\"by_ins\"")? + "\"by_ins\"".len();
        let rest = line[start..].trim_start().strip_prefix(':')?.trim_start();
        let body = rest.strip_prefix('{')?;
        let body = &body[..body.find('}')?];
        let mut by_ins = BTreeMap::new();
        for pair in body.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = pair.split_once(':')?;
            let k = k.trim().trim_matches('"').to_ascii_uppercase();
            by_ins.insert(k, v.trim().parse().ok()?);
        }
        Some(SimStats { total, by_ins })
    }

    pub fn ins(&self, ins: &str) -> u64 {
        self.by_ins.get(ins).copied().unwrap_or(0)
    }
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = line[line.find(key)? + key.len()..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

// --- child processes -------------------------------------------------------------------------

/// What a finished process left behind.
#[derive(Debug)]
pub struct Finished {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless the process exited 0.
    pub fn expect_success(self) -> Finished {
        assert!(self.status.success(), "{} failed:\n{self}", self.what);
        self
    }

    /// stdout and stderr together.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n[{}]\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

/// A running child process whose output is collected by threads. Killed when dropped, so no
/// test path leaves it behind.
pub struct Proc {
    what: String,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd` with `stdin` written to it and then closed (or /dev/null when `None`).
    pub fn spawn(cmd: &mut Command, stdin: Option<&[u8]>) -> Proc {
        let mut proc = Proc::start(
            cmd,
            if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            },
        );
        if let Some(input) = stdin {
            let mut pipe = proc.child.stdin.take().unwrap();
            // The child may exit without reading; that shows up in its status, not here.
            let _ = pipe.write_all(input);
        }
        proc
    }

    /// Starts `cmd` with `stdin` as its standard input, collecting stdout and stderr.
    fn start(cmd: &mut Command, stdin: Stdio) -> Proc {
        let what = describe(cmd);
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone(), Some(tx)),
            collect(child.stderr.take().unwrap(), stderr.clone(), None),
        ];
        Proc {
            what,
            child,
            stdout,
            stderr,
            readers,
            lines,
        }
    }

    /// Waits (bounded) for a stdout line for which `pick` returns something.
    pub fn wait_for_line<T>(&mut self, timeout: Duration, pick: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        return v;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let f = self.finish_now();
                    panic!("`{}`: expected line not printed ({e:?}):\n{f}", f.what);
                }
            }
        }
    }

    /// Waits for the process to exit; kills it and panics if it takes longer than `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait().expect("try_wait") {
                Some(_) => return self.finish_now(),
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let f = self.finish_now();
                    panic!(
                        "`{}` did not finish within {timeout:?}; killed:\n{f}",
                        f.what
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn finish_now(&mut self) -> Finished {
        let status = self.child.wait().expect("wait for child");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Finished {
            what: self.what.clone(),
            status,
            stdout: std::mem::take(&mut *self.stdout.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(
    pipe: impl Read + Send + 'static,
    sink: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    sink.lock().unwrap().push_str(&line);
                    if let Some(tx) = &lines {
                        let _ = tx.send(line.trim_end().to_string());
                    }
                }
            }
        }
    })
}

fn describe(cmd: &Command) -> String {
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains([' ', ';']) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect();
    let mut parts = envs;
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(args);
    parts.join(" ")
}

/// Runs a command to completion (bounded by [`TOOL_TIMEOUT`]), stdin from /dev/null.
pub fn run(cmd: &mut Command) -> Finished {
    Proc::spawn(cmd, None).wait(TOOL_TIMEOUT)
}

// --- the tools -------------------------------------------------------------------------------

impl Stack {
    /// `pkcs11-tool --module <our module> …`
    pub fn pkcs11_tool(&self) -> Command {
        let mut c = Command::new("pkcs11-tool");
        c.arg("--module").arg(&self.module);
        c
    }

    /// `openssl …` with pkcs11-provider loaded for our module (so `pkcs11:` URIs work).
    pub fn openssl_with_provider(&self) -> Command {
        let mut c = Command::new("openssl");
        c.env("OPENSSL_CONF", &self.provider_conf);
        c.env_remove("PKCS11_PROVIDER_MODULE");
        c
    }

    /// The card's certificate for key ID 01, DER, as `pkcs11-tool --read-object` reads it
    /// (also left in `<scratch>/card-cert.der`).
    pub fn card_certificate_der(&self, scratch: &Path) -> Vec<u8> {
        let out = scratch.join("card-cert.der");
        run(self
            .pkcs11_tool()
            .args(["--read-object", "--type", "cert", "--id", "01", "-o"])
            .arg(&out))
        .expect_success();
        let der = std::fs::read(&out).expect("read certificate file");
        assert!(!der.is_empty(), "certificate read from the card is empty");
        der
    }

    /// Writes the public key of the card's certificate as PEM (via `openssl x509 -pubkey`).
    pub fn card_public_key_pem(&self, scratch: &Path) -> PathBuf {
        self.card_certificate_der(scratch);
        let pem = scratch.join("card-pub.pem");
        run(openssl_plain()
            .args(["x509", "-inform", "DER", "-noout", "-pubkey", "-in"])
            .arg(scratch.join("card-cert.der"))
            .arg("-out")
            .arg(&pem))
        .expect_success();
        pem
    }
}

/// The DER bytes of the first PEM certificate in `text`.
pub fn first_pem_certificate_der(text: &str) -> Option<Vec<u8>> {
    let begin_marker = "-----BEGIN CERTIFICATE-----";
    let body = &text[text.find(begin_marker)? + begin_marker.len()..];
    let body = &body[..body.find("-----END CERTIFICATE-----")?];
    base64_decode(body)
}

/// Standard base64 (with padding, whitespace ignored), as in PEM.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let chars: Vec<u8> = text.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    if chars.is_empty() || !chars.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    for quad in chars.chunks(4) {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// The return value of a failed `cryptoki` call (`None` for errors of the crate itself).
pub fn pkcs11_rv(e: &cryptoki::error::Error) -> Option<cryptoki::error::RvError> {
    match e {
        cryptoki::error::Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

// --- openssl s_server ------------------------------------------------------------------------

/// `openssl s_server -www` on 127.0.0.1 (a free port picked by the kernel), with the card
/// profile's server certificate, requiring and verifying a client certificate issued by the
/// card profile's CA, for exactly one connection.
pub struct TlsServer {
    pub port: u16,
    proc: Proc,
}

impl TlsServer {
    pub fn start(stack: &Stack, extra: &[&str]) -> TlsServer {
        TlsServer::start_with_card_files(&stack.card_dir, extra)
    }

    /// The same with the certificates and key of the card profile in `card_dir`.
    pub fn start_with_card_files(card_dir: &Path, extra: &[&str]) -> TlsServer {
        let mut cmd = s_server_for_one_client(card_dir, &["-www"]);
        cmd.args(extra);
        let mut proc = Proc::spawn(&mut cmd, None);
        let port = accept_port(&mut proc);
        TlsServer { port, proc }
    }

    /// Waits for the server to finish its one connection and returns what it printed.
    pub fn finish(self) -> Finished {
        self.proc.wait(TOOL_TIMEOUT)
    }
}

/// `openssl s_server <protocol> …` on 127.0.0.1 (a free port picked by the kernel), with the
/// server certificate and key in `card_dir`, requiring and verifying a client certificate
/// issued by its CA, for exactly one connection.
pub fn s_server_for_one_client(card_dir: &Path, protocol: &[&str]) -> Command {
    let mut cmd = openssl_plain();
    cmd.arg("s_server")
        .args(protocol)
        .args(["-accept", "127.0.0.1:0", "-naccept", "1"])
        .arg("-cert")
        .arg(card_dir.join("server.pem"))
        .arg("-key")
        .arg(card_dir.join("server-key.pem"))
        .arg("-CAfile")
        .arg(card_dir.join("ca.pem"))
        .args(["-Verify", "1", "-verify_return_error"]);
    cmd
}

/// The port an `openssl s_server` listens on: it prints "ACCEPT 127.0.0.1:<port>" once its
/// socket is bound.
pub fn accept_port(server: &mut Proc) -> u16 {
    server.wait_for_line(Duration::from_secs(30), |l| {
        l.strip_prefix("ACCEPT ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.trim().parse::<u16>().ok())
    })
}

/// What the server reports about one connection, read from its output.
pub struct ServerReport {
    /// "1 server accepts that finished": a complete handshake.
    pub handshake_finished: bool,
    /// The verify callback accepted the client's leaf certificate ("depth=0 …" then
    /// "verify return:1").
    pub client_leaf_verified: bool,
    /// OpenSSL's "peer did not return a certificate".
    pub no_client_certificate: bool,
}

impl ServerReport {
    pub fn read(f: &Finished) -> ServerReport {
        let handshake_finished = f
            .stdout
            .lines()
            .any(|l| l.trim() == "1 server accepts that finished");
        let err: Vec<&str> = f.stderr.lines().collect();
        let client_leaf_verified = err
            .windows(2)
            .any(|w| w[0].starts_with("depth=0 ") && w[1].trim() == "verify return:1");
        ServerReport {
            handshake_finished,
            client_leaf_verified,
            no_client_certificate: f.stderr.contains("peer did not return a certificate"),
        }
    }
}

/// The client certificate shown on an `s_server -www` status page, as DER.
pub fn client_certificate_on_status_page(page: &str) -> Option<Vec<u8>> {
    let at = page.find("Client certificate")?;
    first_pem_certificate_der(&page[at..])
}

// --- a child whose stdin stays open ----------------------------------------------------------

impl Proc {
    /// Starts `cmd` with its stdin on a pipe that nothing is written to and that stays open until
    /// the returned handle is dropped. For programs that stop at end of input, such as
    /// `openssl s_server` without `-www` (over DTLS it reads stdin from the start, and quits at
    /// EOF before any client has connected).
    pub fn spawn_with_open_stdin(cmd: &mut Command) -> (Proc, std::process::ChildStdin) {
        let mut proc = Proc::start(cmd, Stdio::piped());
        let stdin = proc.child.stdin.take().unwrap();
        (proc, stdin)
    }
}

/// The public key of the first certificate in the PEM file `pem` (a card's `client.pem`), to
/// check the card's signatures with.
pub fn certificate_key(pem: &Path) -> p256::ecdsa::VerifyingKey {
    use x509_cert::der::Decode;
    let text = std::fs::read_to_string(pem)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", pem.display()));
    let der = first_pem_certificate_der(&text).expect("a certificate in the PEM file");
    let cert = x509_cert::Certificate::from_der(&der).expect("the certificate parses");
    let point = cert
        .tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes();
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point).expect("a P-256 certificate key")
}

/// A session on the first slot that has a token, and the card's client key (ID 01) on it.
pub fn session_with_client_key(
    p11: &cryptoki::context::Pkcs11,
) -> (cryptoki::session::Session, cryptoki::object::ObjectHandle) {
    use cryptoki::object::{Attribute, ObjectClass};
    let slot = *p11
        .get_slots_with_token()
        .expect("C_GetSlotList")
        .first()
        .expect("a slot with a token");
    let session = p11.open_ro_session(slot).expect("C_OpenSession");
    let key = *session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![0x01]),
        ])
        .expect("C_FindObjects")
        .first()
        .expect("the client key");
    (session, key)
}

/// Loads the module at `module` and calls `C_Initialize` with OS locking.
pub fn load_module(module: &Path) -> cryptoki::context::Pkcs11 {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let p11 =
        Pkcs11::new(module).unwrap_or_else(|e| panic!("cannot load {}: {e}", module.display()));
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    p11
}

/// `tests/c/first_signature.c` built into `dir`: load a module, sign once with the key labelled
/// `client`, write the DER signature (see the file's header for its options).
pub fn build_first_signature(dir: &Path) -> PathBuf {
    compile_test_program(dir, "first_signature", &["-ldl"])
}

/// The release build of the module (`IOTSAFE_MODULE`, default
/// `target/release/libiotsafe_pkcs11.so`).
pub fn release_module() -> PathBuf {
    std::env::var_os("IOTSAFE_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/libiotsafe_pkcs11.so")
        })
}

/// A simulated modem of one test's own: a fresh card profile (and its PEM files) in `dir`,
/// `iotsafe-sim modem --no-persist` on a pseudo-terminal linked at `dir/modem`, its control
/// socket at `dir/modem.sock`. Stopped when dropped.
pub struct SimModem {
    pub dir: PathBuf,
    pub link: PathBuf,
    pub control: PathBuf,
    _process: Proc,
}

impl SimModem {
    /// Starts the modem with `args` added to its command line (dialect, latency, …).
    pub fn start(dir: &Path, args: &[&str]) -> SimModem {
        SimModem::start_with_profile(dir, &[], args)
    }

    /// The same with `profile_args` added to `iotsafe-sim init-profile` (e.g. `--layout`).
    pub fn start_with_profile(dir: &Path, profile_args: &[&str], args: &[&str]) -> SimModem {
        run(Command::new(sim_binary())
            .arg("init-profile")
            .arg(dir.join("profile.toml"))
            .args(profile_args))
        .expect_success();
        SimModem::start_on_profile(dir, args)
    }

    /// The same on the profile already in `dir/profile.toml` (e.g. one a test edited).
    pub fn start_on_profile(dir: &Path, args: &[&str]) -> SimModem {
        let (link, control) = (dir.join("modem"), dir.join("modem.sock"));
        let process = Proc::spawn(
            Command::new(sim_binary())
                .args(["modem", "--no-persist", "--link"])
                .arg(&link)
                .arg("--profile")
                .arg(dir.join("profile.toml"))
                .arg("--control")
                .arg(&control)
                .args(args),
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(link.exists() && control.exists()) {
            assert!(
                Instant::now() < deadline,
                "the simulated modem did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        SimModem {
            dir: dir.to_path_buf(),
            link,
            control,
            _process: process,
        }
    }

    /// Writes `dir/module.toml`: `top` (top-level keys), PC/SC off, this modem with `modem`
    /// (its keys, e.g. `at_mode = "cgla"`); returns the file.
    pub fn module_config(&self, top: &str, modem: &str) -> PathBuf {
        let config = self.dir.join("module.toml");
        std::fs::write(
            &config,
            format!(
                "{top}\n[pcsc]\nenabled = false\n[[modem]]\ndevice = \"{}\"\n{modem}\n",
                self.link.display()
            ),
        )
        .expect("write the module's configuration");
        config
    }

    /// A command on the control socket; its one-line JSON reply.
    pub fn control(&self, command: &str) -> String {
        sim_control(&self.control, command)
    }

    /// The card's (and the modem's) counters.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.control("stats")).expect("stats JSON")
    }
}

/// PyKCS11 from PyPI, pinned (a prebuilt wheel: no swig needed).
pub const PYKCS11: &str = "pykcs11==1.5.20";

/// The python of `target/pykcs11-venv`, with PyKCS11 importable; the venv is made on first use,
/// under a lock, so tests starting at once neither build it twice nor see half of it.
pub fn pykcs11_python() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("pykcs11-venv");
    let python = venv.join("bin/python");
    let importable = |p: &Path| {
        Command::new(p)
            .args(["-c", "import PyKCS11"])
            .status()
            .is_ok_and(|s| s.success())
    };
    let lock = File::create(target.join("pykcs11-venv.lock")).expect("the venv's lock file");
    lock.lock().expect("lock the venv");
    if !importable(&python) {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).expect_success();
        Proc::spawn(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", PYKCS11]),
            None,
        )
        .wait(TOOL_TIMEOUT * 10)
        .expect_success();
    }
    assert!(
        importable(&python),
        "PyKCS11 is not importable from {}",
        python.display()
    );
    python
}

/// OpenSSL's provider directory (`openssl version -m`).
pub fn openssl_modules_dir() -> PathBuf {
    let f = run(Command::new("openssl").args(["version", "-m"])).expect_success();
    f.stdout
        .split('"')
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no MODULESDIR in:\n{f}"))
}

/// Writes `path`: an OpenSSL configuration that loads pkcs11-provider with the release module
/// only (`quirks`: its `pkcs11-module-quirks`, e.g. `no-deinit`).
pub fn write_provider_conf(path: &Path, quirks: Option<&str>) {
    let quirks = quirks
        .map(|q| format!("pkcs11-module-quirks = {q}\n"))
        .unwrap_or_default();
    std::fs::write(
        path,
        format!(
            "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n\
             [provider_sect]\ndefault = default_sect\npkcs11 = pkcs11_sect\n\
             [default_sect]\nactivate = 1\n[pkcs11_sect]\nmodule = {}\n\
             pkcs11-module-path = {}\n{quirks}activate = 1\n",
            openssl_modules_dir().join("pkcs11.so").display(),
            release_module().display()
        ),
    )
    .expect("provider configuration");
}

/// `tests/c/<name>.c` compiled into `dir/<name>`: C11, warnings as errors, the shipped headers,
/// linked with `libs` (e.g. `-ldl`).
pub fn compile_test_program(dir: &Path, name: &str, libs: &[&str]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join(name);
    run(Command::new("cc")
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
        ])
        .arg(root.join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(root.join(format!("tests/c/{name}.c")))
        .args(libs))
    .expect_success();
    exe
}

/// A simulated modem with what consumer tests over its slot need: the module's configuration
/// (lock files and content cache of its own, in the modem's directory) and a pkcs11-provider
/// configuration beside it. The directory goes when this is dropped.
pub struct ModemConsumers {
    pub modem: SimModem,
    pub module_conf: PathBuf,
    pub provider_conf: PathBuf,
}

impl ModemConsumers {
    pub fn new(modem: SimModem) -> ModemConsumers {
        ModemConsumers::with_modem_keys(modem, "")
    }

    /// The same with `modem_keys` in the modem's `[[modem]]` table (e.g. `protocol = "mbim"`).
    pub fn with_modem_keys(modem: SimModem, modem_keys: &str) -> ModemConsumers {
        let module_conf = modem.module_config(
            &format!(
                "lock_dir = \"{d}\"\ncache_dir = \"{d}/cache\"",
                d = modem.dir.display()
            ),
            modem_keys,
        );
        let provider_conf = modem.dir.join("provider.cnf");
        write_provider_conf(&provider_conf, None);
        ModemConsumers {
            modem,
            module_conf,
            provider_conf,
        }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.modem.dir.join(name)
    }

    /// Gives `command` the module's configuration of this modem.
    pub fn configure(&self, command: &mut Command) {
        command
            .env("IOTSAFE_PKCS11_CONFIG", &self.module_conf)
            .env_remove("IOTSAFE_PKCS11_LOG");
    }

    pub fn pkcs11_tool(&self) -> Command {
        let mut c = Command::new("pkcs11-tool");
        c.arg("--module").arg(release_module());
        self.configure(&mut c);
        c
    }

    pub fn openssl_with_provider(&self) -> Command {
        let mut c = Command::new("openssl");
        c.env("OPENSSL_CONF", &self.provider_conf)
            .env_remove("PKCS11_PROVIDER_MODULE");
        self.configure(&mut c);
        c
    }
}

impl Drop for ModemConsumers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.modem.dir);
    }
}
