//! `iotsafe-sim` command-line tool. Run `iotsafe-sim help` for usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use iotsafe_sim::control::parse_duration;
use iotsafe_sim::{
    CardOptions, ModemOptions, Profile, SharedCard, bundle_from_seed, control, modem, vpcd,
};

const USAGE: &str = "\
iotsafe-sim — a simulated GSMA IoT SAFE (IoT.05) card

USAGE:
  iotsafe-sim init-profile FILE [--force] [--seed TEXT] [--provisioning]
      Write the default profile TOML to FILE and, in the same directory, ca.pem,
      ca-key.pem, client.pem, server.pem and server-key.pem. Refuses to overwrite
      existing files unless --force. --seed derives different (still deterministic) keys.
      --provisioning writes `provisioning = true` (STORE DATA offered).
  iotsafe-sim vpcd [--profile FILE] [--host HOST] [--port PORT] [--control PATH] [CARD OPTIONS]
      Connect to pcscd's vsmartcard-vpcd driver (default 127.0.0.1:35963), retrying and
      reconnecting every ~200 ms, until SIGTERM/SIGINT. --control PATH serves the
      line/JSON control channel on a Unix socket (commands: stats, reset-stats, ping,
      power-off, remove, insert, set-latency, fault, provisioning, remote, remote-begin,
      remote-replace-file, remote-replace-key, remote-delete, remote-add-file, remote-end,
      help). Without --profile the built-in default profile is used.
  iotsafe-sim modem --link PATH [--profile FILE] [--at csim|cgla|both] [--control PATH]
                    [CARD OPTIONS] [QUIRKS]
      Act as a cellular modem: create a pseudo-terminal, make PATH a symlink to its host
      side and answer AT commands there (AT, ATE0/1, ATI, AT+CMEE, AT+CSIM, AT+CCHO,
      AT+CGLA, AT+CCHC) until SIGTERM/SIGINT (then the symlink is removed). --at selects
      the SIM-access commands offered (default both). The control socket also takes
      quirk, hang and unhang.
  iotsafe-sim apdu [--profile FILE] [CARD OPTIONS] HEX...
      Run APDUs in-process (one card, in order) and print each response.

  With --profile FILE, vpcd, modem and apdu write content changes (STORE DATA, GENERATE
  KEY PAIR of a persistent key, PUT PUBLIC KEY into a persistent container, the end of a
  remote management session) back to FILE atomically, unless --no-persist.
  iotsafe-sim help

CARD OPTIONS:
  --t0                        answer data with 61xx + GET RESPONSE
  --sig-len one|two           signature TLV 33 40 (default) or 33 00 40
  --list-style per-object|per-class|none   object-list wrappers (default per-object)
  --app-info orange|qt        app-info tags 90/93 (default) or 61/6F
  --list-page-size N          object-list bytes per page (default 255)
  --latency-apdu DURATION     sleep per APDU, e.g. 5ms, 200us, 1s (default 0)
  --latency-sig DURATION      extra sleep per signature (default 0)
  --aid HEX                   applet AID override
  --provisioning              offer the STORE DATA provisioning profile (else 6D00)
  --no-persist                do not write changes back to the --profile file

QUIRKS (modem; also `quirk NAME VALUE` on the control socket):
  --echo                      start with command echo on (as after ATE1)
  --urc                       interleave unsolicited result codes (+CREG: 1, RING, ...)
  --split                     write answers in small chunks with short pauses
  --garbage                   interleave noise lines (+XYZ: noise, bytes FF FE, ...)
  --delay-ms N                wait N ms before each answer
  --busy-every N              every Nth CSIM/CGLA answers +CME ERROR: 14 (SIM busy)
  --max-command-len N         longer command lines answer ERROR
  --hang                      start hung (no answers until `unhang`)
  --hang-after N              answer N command lines, then hang
  --bare-ccho                 answer AT+CCHO with the bare session id
  --seed N                    seed for URC/noise placement and chunk sizes
";

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

struct Args {
    items: Vec<String>,
    pos: usize,
}

impl Args {
    fn next(&mut self) -> Option<String> {
        let v = self.items.get(self.pos).cloned();
        self.pos += 1;
        v
    }
    fn value(&mut self, flag: &str) -> Result<String, String> {
        self.next().ok_or_else(|| format!("{flag} needs a value"))
    }
}

/// Tries to consume a card option; returns Ok(true) if `flag` was one.
fn card_option(flag: &str, args: &mut Args, o: &mut CardOptions) -> Result<bool, String> {
    match flag {
        "--t0" => o.t0_style = true,
        "--sig-len" => o.signature_length_style = args.value(flag)?.parse()?,
        "--list-style" => o.object_list_style = args.value(flag)?.parse()?,
        "--app-info" => o.app_info_tags = args.value(flag)?.parse()?,
        "--list-page-size" => {
            let n: usize = args
                .value(flag)?
                .parse()
                .map_err(|_| "--list-page-size needs a number".to_string())?;
            if n == 0 {
                return Err("--list-page-size must be at least 1".into());
            }
            o.object_list_page_size = n;
        }
        "--latency-apdu" => o.latency_per_apdu = parse_duration(&args.value(flag)?)?,
        "--latency-sig" => o.latency_per_signature = parse_duration(&args.value(flag)?)?,
        "--aid" => o.aid = Some(iotsafe_sim::profile::decode_hex(&args.value(flag)?)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Options about the card content rather than its behaviour.
#[derive(Default)]
struct ContentOptions {
    profile: Option<PathBuf>,
    provisioning: bool,
    no_persist: bool,
}

impl ContentOptions {
    /// Tries to consume a content option; returns Ok(true) if `flag` was one.
    fn parse(&mut self, flag: &str, args: &mut Args) -> Result<bool, String> {
        match flag {
            "--profile" => self.profile = Some(PathBuf::from(args.value(flag)?)),
            "--provisioning" => self.provisioning = true,
            "--no-persist" => self.no_persist = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Loads the profile and creates the card (saving changes back to the profile file).
    fn card(&self, opts: CardOptions) -> Result<iotsafe_sim::Card, String> {
        let mut profile = load_profile(self.profile.as_deref())?;
        if self.provisioning {
            profile.provisioning = true;
        }
        let mut card = iotsafe_sim::Card::new(profile, opts);
        if !self.no_persist {
            card.set_persist_path(self.profile.clone());
        }
        Ok(card)
    }
}

fn load_profile(path: Option<&Path>) -> Result<Profile, String> {
    match path {
        Some(p) => Profile::load(p).map_err(|e| format!("{}: {e}", p.display())),
        None => Ok(iotsafe_sim::default_profile()),
    }
}

fn cmd_init_profile(mut args: Args) -> Result<(), String> {
    let mut file: Option<PathBuf> = None;
    let mut force = false;
    let mut seed: Option<String> = None;
    let mut provisioning = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--force" => force = true,
            "--provisioning" => provisioning = true,
            "--seed" => seed = Some(args.value("--seed")?),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if file.is_none() => file = Some(PathBuf::from(a)),
            _ => return Err("init-profile takes one FILE".into()),
        }
    }
    let file = file.ok_or("init-profile needs a FILE")?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let bundle = match &seed {
        Some(s) => bundle_from_seed(s.as_bytes()).map_err(|e| e.to_string())?,
        None => iotsafe_sim::default_bundle(),
    };
    let toml = bundle
        .profile
        .clone()
        .with_provisioning(provisioning)
        .to_toml()
        .map_err(|e| e.to_string())?;
    let outputs: Vec<(PathBuf, &str)> = vec![
        (file.clone(), toml.as_str()),
        (dir.join("ca.pem"), bundle.ca_cert_pem.as_str()),
        (dir.join("ca-key.pem"), bundle.ca_key_pem.as_str()),
        (dir.join("client.pem"), bundle.client_cert_pem.as_str()),
        (dir.join("server.pem"), bundle.server_cert_pem.as_str()),
        (dir.join("server-key.pem"), bundle.server_key_pem.as_str()),
    ];
    if !force {
        for (p, _) in &outputs {
            if p.exists() {
                return Err(format!("{} exists (use --force to overwrite)", p.display()));
            }
        }
    }
    for (p, content) in &outputs {
        std::fs::write(p, content).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn cmd_vpcd(mut args: Args) -> Result<(), String> {
    let mut content = ContentOptions::default();
    let mut host = "127.0.0.1".to_string();
    let mut port: u16 = 35963;
    let mut control_path: Option<PathBuf> = None;
    let mut opts = CardOptions::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--host" => host = args.value("--host")?,
            "--port" => {
                port = args
                    .value("--port")?
                    .parse()
                    .map_err(|_| "--port needs a number 0..65535".to_string())?
            }
            "--control" => control_path = Some(PathBuf::from(args.value("--control")?)),
            f => {
                if !content.parse(f, &mut args)? && !card_option(f, &mut args, &mut opts)? {
                    return Err(format!("unknown argument {f}"));
                }
            }
        }
    }
    let card = SharedCard::new(content.card(opts)?);
    install_signal_handlers();
    let _control = match &control_path {
        Some(p) => {
            let s = control::ControlServer::spawn(p, card.clone())
                .map_err(|e| format!("control socket {}: {e}", p.display()))?;
            eprintln!("iotsafe-sim: control socket at {}", p.display());
            Some(s)
        }
        None => None,
    };
    vpcd::run(&card, &host, port, &SHUTDOWN, &mut |m| {
        eprintln!("iotsafe-sim: {m}")
    });
    Ok(())
}

/// Tries to consume a modem option; returns Ok(true) if `flag` was one.
fn modem_option(flag: &str, args: &mut Args, o: &mut ModemOptions) -> Result<bool, String> {
    let (name, value) = match flag {
        "--at" => ("at", args.value(flag)?),
        "--echo" | "--urc" | "--split" | "--garbage" | "--hang" | "--bare-ccho" => {
            (&flag[2..], "on".to_string())
        }
        "--delay-ms" | "--busy-every" | "--max-command-len" | "--hang-after" | "--seed" => {
            (&flag[2..], args.value(flag)?)
        }
        _ => return Ok(false),
    };
    o.set(name, &value).map_err(|e| format!("{flag}: {e}"))?;
    Ok(true)
}

fn cmd_modem(mut args: Args) -> Result<(), String> {
    let mut content = ContentOptions::default();
    let mut link: Option<PathBuf> = None;
    let mut control_path: Option<PathBuf> = None;
    let mut opts = CardOptions::default();
    let mut mopts = ModemOptions::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--link" => link = Some(PathBuf::from(args.value("--link")?)),
            "--control" => control_path = Some(PathBuf::from(args.value("--control")?)),
            f => {
                if !content.parse(f, &mut args)?
                    && !card_option(f, &mut args, &mut opts)?
                    && !modem_option(f, &mut args, &mut mopts)?
                {
                    return Err(format!("unknown argument {f}"));
                }
            }
        }
    }
    let link = link.ok_or("modem needs --link PATH")?;
    let card = SharedCard::new(content.card(opts)?);
    install_signal_handlers();
    let handle =
        modem::spawn(card, &link, mopts).map_err(|e| format!("modem {}: {e}", link.display()))?;
    eprintln!(
        "iotsafe-sim: modem at {} -> {}",
        link.display(),
        handle.device().display()
    );
    let _control = match &control_path {
        Some(p) => {
            let ctx = control::Context::with_modem(handle.control());
            let s = control::ControlServer::spawn_with(p, ctx)
                .map_err(|e| format!("control socket {}: {e}", p.display()))?;
            eprintln!("iotsafe-sim: control socket at {}", p.display());
            Some(s)
        }
        None => None,
    };
    while !SHUTDOWN.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(handle);
    eprintln!("iotsafe-sim: modem stopped");
    Ok(())
}

fn cmd_apdu(mut args: Args) -> Result<(), String> {
    let mut content = ContentOptions::default();
    let mut opts = CardOptions::default();
    let mut apdus: Vec<Vec<u8>> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            f if f.starts_with("--") => {
                if !content.parse(f, &mut args)? && !card_option(f, &mut args, &mut opts)? {
                    return Err(format!("unknown argument {f}"));
                }
            }
            h => apdus.push(iotsafe_sim::profile::decode_hex(h)?),
        }
    }
    let mut card = content.card(opts)?;
    // COMPUTE PRF / HKDF data and answers are not printed (secrets, derived keys).
    let mut tracer = iotsafe_sim::trace::Tracer::new();
    for apdu in apdus {
        let r = card.transmit(&apdu);
        println!("> {}", tracer.command(&apdu));
        println!("< {}", tracer.response(&r));
    }
    Ok(())
}

fn main() -> ExitCode {
    let items: Vec<String> = std::env::args().skip(1).collect();
    let mut args = Args { items, pos: 0 };
    let result = match args.next().as_deref() {
        Some("init-profile") => cmd_init_profile(args),
        Some("vpcd") => cmd_vpcd(args),
        Some("apdu") => cmd_apdu(args),
        Some("modem") => cmd_modem(args),
        Some("help" | "--help" | "-h") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}\n\n{USAGE}")),
        None => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iotsafe-sim: {e}");
            ExitCode::from(2)
        }
    }
}
