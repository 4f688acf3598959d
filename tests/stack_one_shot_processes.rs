//! 200 one-shot processes on one modem slot whose SIM has 3 logical channels (issue #11): a C
//! program that `_exit`s after signing (no C_Finalize), `openssl pkeyutl -sign` through
//! pkcs11-provider with `pkcs11-module-quirks = no-deinit`, and curl with the libp11 engine
//! (mutual TLS against a local `openssl s_server` that verifies the client certificate). Every
//! 10th process is killed with SIGKILL in the middle of its signature. Every other process
//! succeeds and its signature verifies against the card's certificate, the card never has more
//! than the one shared channel of this module open, and the process after the last works.

mod helpers;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use helpers::stack::{
    Proc, SimModem, build_first_signature, release_module, run, sim_control, write_provider_conf,
};

const PROCESSES: usize = 200;
const KEY_URI: &str = "pkcs11:object=client;type=private";

#[derive(Clone, Copy, Debug)]
enum Kind {
    CProgram,
    Pkeyutl,
    Curl,
}

struct Rig {
    dir: PathBuf,
    control: PathBuf,
    helper: PathBuf,
    provider_conf: PathBuf,
    module_conf: PathBuf,
    port: u16,
}

impl Rig {
    fn command(&self, kind: Kind, i: usize) -> Command {
        let out = self.dir.join(format!("sig-{i}.der"));
        let mut c = match kind {
            Kind::CProgram => {
                let mut c = Command::new(&self.helper);
                c.arg(release_module())
                    .arg("client")
                    .arg(self.dir.join("message.txt"))
                    .arg(&out)
                    .arg("--exit-at-once");
                c
            }
            Kind::Pkeyutl => {
                let mut c = Command::new("openssl");
                c.env("OPENSSL_CONF", &self.provider_conf)
                    .args(["pkeyutl", "-sign", "-inkey", KEY_URI, "-in"])
                    .arg(self.dir.join("digest.bin"))
                    .arg("-out")
                    .arg(&out);
                c
            }
            Kind::Curl => {
                let mut c = Command::new("curl");
                c.env_remove("OPENSSL_CONF")
                    .env("PKCS11_MODULE_PATH", release_module())
                    .args(["--silent", "--show-error", "--fail", "--resolve"])
                    .arg(format!("localhost:{}:127.0.0.1", self.port))
                    .arg("--cacert")
                    .arg(self.dir.join("ca.pem"))
                    .args(["--engine", "pkcs11", "--key-type", "ENG", "--key", KEY_URI])
                    .arg("--cert")
                    .arg(self.dir.join("client.pem"))
                    .arg(format!("https://localhost:{}/", self.port));
                c
            }
        };
        c.env("IOTSAFE_PKCS11_CONFIG", &self.module_conf)
            .env("XDG_CACHE_HOME", self.dir.join("cache"))
            .env_remove("IOTSAFE_PKCS11_LOG");
        c
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&sim_control(&self.control, "stats")).expect("stats JSON")
    }

    /// Signature updates (`2B`) the card received, answered or not.
    fn updates_sent(&self) -> u64 {
        self.stats()["by_ins"]["2B"].as_u64().unwrap_or(0)
    }

    /// The signature (or, for curl, the TLS handshake the server checked) verifies.
    fn check(&self, kind: Kind, i: usize, output: &str) {
        match kind {
            Kind::CProgram | Kind::Pkeyutl => {
                let input = match kind {
                    Kind::CProgram => ["dgst", "-sha256", "-verify"],
                    _ => ["pkeyutl", "-verify", "-pubin"],
                };
                let mut c = Command::new("openssl");
                c.args(input);
                match kind {
                    Kind::CProgram => {
                        c.arg(self.dir.join("client-pub.pem"))
                            .arg("-signature")
                            .arg(self.dir.join(format!("sig-{i}.der")))
                            .arg(self.dir.join("message.txt"));
                    }
                    _ => {
                        c.arg("-inkey")
                            .arg(self.dir.join("client-pub.pem"))
                            .arg("-in")
                            .arg(self.dir.join("digest.bin"))
                            .arg("-sigfile")
                            .arg(self.dir.join(format!("sig-{i}.der")));
                    }
                }
                let verified = run(c.env_remove("OPENSSL_CONF"));
                assert!(
                    verified.success(),
                    "process {i} ({kind:?}): its signature does not verify:\n{verified}"
                );
            }
            Kind::Curl => assert!(
                output.contains("Client certificate") && output.contains("Cipher is"),
                "process {i} (curl): the server did not verify the client:\n{output}"
            ),
        }
    }
}

#[test]
#[ignore = "needs the release build of the module (scripts/test.sh builds it)"]
fn two_hundred_one_shot_processes_on_a_sim_with_three_channels() {
    let dir = std::env::temp_dir().join(format!("iotsafe-one-shot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cache")).expect("scratch directory");
    let modem = SimModem::start(&dir, &["--logical-channels", "3"]);
    run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(dir.join("client.pem"))
        .arg("-out")
        .arg(dir.join("client-pub.pem")))
    .expect_success();
    std::fs::write(dir.join("message.txt"), b"one-shot process\n").expect("message");
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-out"])
        .arg(dir.join("digest.bin"))
        .arg(dir.join("message.txt")))
    .expect_success();
    let helper = build_first_signature(&dir);

    let control = modem.control.clone();
    let module_conf = modem.module_config("", "");
    let provider_conf = dir.join("provider.cnf");
    write_provider_conf(&provider_conf, Some("no-deinit"));
    let mut server = Proc::spawn(
        Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-www", "-cert"])
            .arg(dir.join("server.pem"))
            .arg("-key")
            .arg(dir.join("server-key.pem"))
            .arg("-CAfile")
            .arg(dir.join("ca.pem"))
            .args(["-Verify", "1", "-verify_return_error"]),
        None,
    );
    let port = server.wait_for_line(Duration::from_secs(10), |line| {
        line.strip_prefix("ACCEPT ")?
            .rsplit(':')
            .next()?
            .parse()
            .ok()
    });
    let rig = Rig {
        dir: dir.clone(),
        control,
        helper,
        provider_conf,
        module_conf,
        port,
    };

    let (mut succeeded, mut killed) = (0, 0u64);
    for i in 0..PROCESSES {
        let kind = [Kind::CProgram, Kind::Pkeyutl, Kind::Curl][i % 3];
        let mut command = rig.command(kind, i);
        if i % 10 == 9 {
            // Killed with SIGKILL inside its signature: the card keeps the signature's update
            // unanswered until the process is dead.
            sim_control(&rig.control, "fault mute ins=2B count=1");
            let before = rig.updates_sent();
            let mut child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn");
            let deadline = Instant::now() + Duration::from_secs(30);
            while rig.updates_sent() == before {
                assert!(Instant::now() < deadline, "process {i} never began to sign");
                std::thread::sleep(Duration::from_millis(2));
            }
            child.kill().expect("SIGKILL");
            let status = child.wait().expect("wait");
            sim_control(&rig.control, "fault clear");
            assert_eq!(status.signal(), Some(9), "process {i} was killed");
            killed += 1;
        } else {
            let finished = run(&mut command);
            assert!(
                finished.success(),
                "process {i} ({kind:?}) failed:\n{finished}"
            );
            rig.check(kind, i, &finished.all_output());
            succeeded += 1;
        }
        let stats = rig.stats();
        assert!(
            stats["max_open_channels"].as_u64().unwrap_or(99) <= 1,
            "after process {i}: more than the one shared channel was open: {stats}"
        );
    }
    // The next process works.
    let finished = run(&mut rig.command(Kind::CProgram, PROCESSES));
    assert!(
        finished.success(),
        "the process after the last:\n{finished}"
    );
    rig.check(Kind::CProgram, PROCESSES, "");
    let stats = rig.stats();
    println!(
        "{succeeded} processes signed, {killed} killed mid-signature; the card's open channels \
         at most {} (3 available); {} APDUs, {} interleaved",
        stats["max_open_channels"], stats["total"], stats["interleaved"]
    );
    // A process killed between its signature's two APDUs leaves an unfinished sequence that the
    // next process's commands follow: the simulator counts that as interleaved. Two living
    // processes never interleave (tests/stack_shared_modem.rs).
    assert!(
        stats["interleaved"].as_u64().unwrap_or(u64::MAX) <= killed,
        "{stats}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
