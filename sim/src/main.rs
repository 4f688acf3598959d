//! `iotsafe-sim` command-line tool. Run `iotsafe-sim help` for usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use iotsafe_sim::control::{parse_duration, parse_logical_channels};
use iotsafe_sim::profile::decode_hex;
use iotsafe_sim::{
    AppInfoTags, AtDialect, Card, CardOptions, KeyLayout, ModemOptions, ObjectListStyle, Profile,
    SharedCard, SignatureLengthStyle, bundle_from_seed, control, modem, vpcd,
};

/// The help text (`help`, `--help`, `-h`, and without arguments).
const USAGE: &str = "\
iotsafe-sim — a simulated GSMA IoT SAFE (IoT.05) card

USAGE:
  iotsafe-sim init-profile FILE [--force] [--seed TEXT] [--provisioning]
                           [--logical-channels N] [--layout NAME]
      Write the default profile TOML to FILE and, in the same directory, ca.pem,
      ca-key.pem, client.pem, server.pem and server-key.pem. Refuses to overwrite
      existing files unless --force. --seed derives different (still deterministic) keys.
      --provisioning writes `provisioning = true` (STORE DATA offered).
      --logical-channels N writes `max_channels = N`.
      --layout NAME moves the client key pair: same-id (default: private and public key
      01, certificate file 02), split-ids-one-label (private 06 and public 07 labelled
      client, certificate 08 client-cert) or split-ids-split-labels (the same IDs, labelled
      client, client-pub and client-cert).
  iotsafe-sim vpcd [--profile FILE] [--host HOST] [--port PORT] [--control PATH] [CARD OPTIONS]
      Connect to pcscd's vsmartcard-vpcd driver (default 127.0.0.1:35963), retrying and
      reconnecting every ~200 ms, until SIGTERM/SIGINT. --control PATH serves the
      line/JSON control channel on a Unix socket (commands: stats, reset-stats, ping,
      power-off, remove, insert, set-latency, logical-channels, fault, provisioning,
      remote, remote-begin, remote-replace-file, remote-replace-key, remote-delete,
      remote-add-file, remote-end, help). Faults that leave a command without an answer
      (mute, truncate=0) are refused here: they would wedge pcscd's vpcd driver.
      Without --profile the built-in default profile is used.
  iotsafe-sim modem --link PATH [--protocol at|mbim|qmi] [--proxy-socket NAME]
                    [--profile FILE] [--at csim|cgla|both] [--control PATH]
                    [CARD OPTIONS] [QUIRKS]
      Act as a cellular modem: create a pseudo-terminal, make PATH a symlink to its host
      side and answer there until SIGTERM/SIGINT (then the symlink is removed).
      --protocol at (default): AT commands (AT, ATE0/1, ATI, AT+CGMI, AT+CMEE, AT+CSIM,
      AT+CCHO, AT+CGLA, AT+CCHC); --at selects the SIM-access commands offered (default
      both). --protocol mbim: MBIM on the pty as on /dev/cdc-wdm0 (OPEN/CLOSE, MS UICC
      low-level access ATR/OPEN_CHANNEL/APDU/CLOSE_CHANNEL, DEVICE_CAPS, SUBSCRIBER_READY_
      STATUS). --protocol qmi: QMUX (CTL client ids; UIM card status, Open Logical Channel,
      Send APDU, Logical Channel). --proxy-socket NAME (mbim, qmi): also serve as
      ModemManager's mbim-proxy / qmi-proxy on the abstract socket @NAME. hang, unhang,
      delay and the card's faults apply to every protocol; the control socket also takes
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
  --logical-channels N        channels MANAGE CHANNEL may open besides the basic one,
                              1..19 (default: the profile's max_channels, 19); when none
                              is free: 6A81, and AT+CCHO answers +CME ERROR: 3
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
  --hex-session-ids           AT+CCHO ids of 16 hex digits, 00000000038aa32f (Sierra MC7455)
  --no-cchc                   AT+CCHC answers ERROR; sessions stay open (Sierra EM9191)
  --verbose-cme               +CME ERROR as text whatever AT+CMEE asked (Sierra EM9191)
  --csim-basic-only           AT+CSIM on a logical channel answers ERROR (Quectel EG25)
  --sim-sleeps                SIM access answers +CME ERROR: 3 until AT+ECSIMSLEEP=0 (MediaTek)
  --manufacturer TEXT         what AT+CGMI answers (default iotsafe-sim)
  --slow-keygen-ms N          on-card key generation answered N ms late, a URC at 300 ms
  --seed N                    seed for URC/noise placement and chunk sizes
";

#[derive(Parser)]
#[command(
    name = "iotsafe-sim",
    version,
    override_help = USAGE,
    arg_required_else_help = true,
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the default profile TOML to FILE, and the CA, client and server PEM files beside it.
    InitProfile(InitProfileArgs),
    /// Connect to pcscd's vsmartcard-vpcd driver until SIGTERM/SIGINT.
    Vpcd(VpcdArgs),
    /// Act as a cellular modem on a pseudo-terminal until SIGTERM/SIGINT.
    Modem(ModemArgs),
    /// Run APDUs in-process (one card, in order) and print each response.
    Apdu(ApduArgs),
}

#[derive(Args)]
struct InitProfileArgs {
    /// The profile file to write.
    file: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
    /// Derive different (still deterministic) keys from this text.
    #[arg(long, value_name = "TEXT")]
    seed: Option<String>,
    /// Write `provisioning = true` (STORE DATA offered).
    #[arg(long)]
    provisioning: bool,
    /// Write `max_channels = N` (1..19).
    #[arg(long, value_name = "N", value_parser = parse_logical_channels)]
    logical_channels: Option<u8>,
    /// Where the client key pair and its certificate are (see sim/docs/profile.md).
    #[arg(long, value_name = "NAME", default_value_t = KeyLayout::SameId)]
    layout: KeyLayout,
}

#[derive(Args)]
struct VpcdArgs {
    /// The vpcd driver's host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The vpcd driver's port.
    #[arg(long, default_value_t = 35963)]
    port: u16,
    /// Serve the line/JSON control channel on this Unix socket.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    #[command(flatten)]
    content: ContentArgs,
    #[command(flatten)]
    card: CardArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModemProtocol {
    At,
    Mbim,
    Qmi,
}

#[derive(Args)]
struct ModemArgs {
    /// The symlink made to point at the pty's host side.
    #[arg(long, value_name = "PATH")]
    link: PathBuf,
    /// What the modem speaks on the pty: AT commands, MBIM or QMI.
    #[arg(long, value_name = "at|mbim|qmi", default_value = "at")]
    protocol: ModemProtocol,
    /// MBIM/QMI: also act as ModemManager's proxy on this abstract socket name (e.g.
    /// `mbim-proxy`), for clients that go through the proxy.
    #[arg(long, value_name = "NAME")]
    proxy_socket: Option<String>,
    /// Serve the line/JSON control channel on this Unix socket.
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    #[command(flatten)]
    content: ContentArgs,
    #[command(flatten)]
    card: CardArgs,
    #[command(flatten)]
    quirks: QuirkArgs,
}

#[derive(Args)]
struct ApduArgs {
    #[command(flatten)]
    content: ContentArgs,
    #[command(flatten)]
    card: CardArgs,
    /// Command APDUs in hex (spaces, `:` and `_` allowed inside).
    #[arg(value_name = "HEX")]
    apdus: Vec<String>,
}

/// Options about the card content rather than its behaviour.
#[derive(Args)]
struct ContentArgs {
    /// The profile TOML (default: the built-in profile); changes are written back to it.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    /// Offer the STORE DATA provisioning profile (else 6D00).
    #[arg(long)]
    provisioning: bool,
    /// Do not write changes back to the --profile file.
    #[arg(long)]
    no_persist: bool,
}

/// The card's behaviour switches; an absent option keeps the [`CardOptions`] default.
#[derive(Args)]
struct CardArgs {
    /// Answer data with 61xx + GET RESPONSE.
    #[arg(long = "t0")]
    t0: bool,
    /// Signature TLV 33 40 (one) or 33 00 40 (two).
    #[arg(long, value_name = "one|two")]
    sig_len: Option<SignatureLengthStyle>,
    /// Object-list wrappers.
    #[arg(long, value_name = "per-object|per-class|none")]
    list_style: Option<ObjectListStyle>,
    /// App-info tags 90/93 (orange) or 61/6F (qt).
    #[arg(long, value_name = "orange|qt")]
    app_info: Option<AppInfoTags>,
    /// Object-list bytes per page.
    #[arg(long, value_name = "N", value_parser = parse_page_size)]
    list_page_size: Option<usize>,
    /// Sleep per APDU, e.g. 5ms, 200us, 1s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    latency_apdu: Option<Duration>,
    /// Extra sleep per signature.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    latency_sig: Option<Duration>,
    /// Applet AID override.
    #[arg(long, value_name = "HEX")]
    aid: Option<String>,
    /// Logical channels MANAGE CHANNEL may open besides the basic one (1..19).
    #[arg(long, value_name = "N", value_parser = parse_logical_channels)]
    logical_channels: Option<u8>,
}

fn parse_page_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| "--list-page-size needs a number".to_string())?;
    if n == 0 {
        return Err("--list-page-size must be at least 1".into());
    }
    Ok(n)
}

impl CardArgs {
    fn options(&self) -> Result<CardOptions, String> {
        let mut o = CardOptions {
            t0_style: self.t0,
            ..CardOptions::default()
        };
        if let Some(v) = self.sig_len {
            o.signature_length_style = v;
        }
        if let Some(v) = self.list_style {
            o.object_list_style = v;
        }
        if let Some(v) = self.app_info {
            o.app_info_tags = v;
        }
        if let Some(v) = self.list_page_size {
            o.object_list_page_size = v;
        }
        if let Some(v) = self.latency_apdu {
            o.latency_per_apdu = v;
        }
        if let Some(v) = self.latency_sig {
            o.latency_per_signature = v;
        }
        if let Some(hex) = &self.aid {
            o.aid = Some(decode_hex(hex)?);
        }
        o.max_channels = self.logical_channels;
        Ok(o)
    }
}

/// Modem quirks (also `quirk NAME VALUE` on the control socket); an absent option keeps
/// the [`ModemOptions`] default.
#[derive(Args)]
struct QuirkArgs {
    /// SIM-access commands offered.
    #[arg(long, value_name = "csim|cgla|both")]
    at: Option<AtDialect>,
    /// Start with command echo on (as after ATE1).
    #[arg(long)]
    echo: bool,
    /// Interleave unsolicited result codes (+CREG: 1, RING, ...).
    #[arg(long)]
    urc: bool,
    /// Write answers in small chunks with short pauses.
    #[arg(long)]
    split: bool,
    /// Interleave noise lines.
    #[arg(long)]
    garbage: bool,
    /// Wait N ms before each answer.
    #[arg(long, value_name = "N")]
    delay_ms: Option<u64>,
    /// Every Nth CSIM/CGLA answers +CME ERROR: 14 (SIM busy).
    #[arg(long, value_name = "N")]
    busy_every: Option<u32>,
    /// Longer command lines answer ERROR.
    #[arg(long, value_name = "N")]
    max_command_len: Option<usize>,
    /// Start hung (no answers until `unhang`).
    #[arg(long)]
    hang: bool,
    /// Answer N command lines, then hang.
    #[arg(long, value_name = "N")]
    hang_after: Option<u32>,
    /// Answer AT+CCHO with the bare session id.
    #[arg(long)]
    bare_ccho: bool,
    /// AT+CCHO session ids of 16 hex digits (Sierra MC7455/EM7590).
    #[arg(long)]
    hex_session_ids: bool,
    /// AT+CCHC answers ERROR (Sierra EM9191).
    #[arg(long)]
    no_cchc: bool,
    /// +CME ERROR as verbose text whatever AT+CMEE asked for (Sierra EM9191).
    #[arg(long)]
    verbose_cme: bool,
    /// AT+CSIM on a logical channel answers ERROR (Quectel EG25).
    #[arg(long)]
    csim_basic_only: bool,
    /// SIM access answers +CME ERROR: 3 until AT+ECSIMSLEEP=0 (MediaTek).
    #[arg(long)]
    sim_sleeps: bool,
    /// What AT+CGMI answers.
    #[arg(long, value_name = "TEXT")]
    manufacturer: Option<String>,
    /// GENERATE KEY PAIR answered N ms late, with a URC at 300 ms.
    #[arg(long, value_name = "N")]
    slow_keygen_ms: Option<u64>,
    /// Seed for URC/noise placement and chunk sizes.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

impl QuirkArgs {
    fn options(&self) -> ModemOptions {
        let d = ModemOptions::default();
        ModemOptions {
            at: self.at.unwrap_or(d.at),
            echo: self.echo || d.echo,
            urc: self.urc || d.urc,
            split: self.split || d.split,
            delay_ms: self.delay_ms.unwrap_or(d.delay_ms),
            busy_every: self.busy_every.unwrap_or(d.busy_every),
            max_command_len: self.max_command_len.unwrap_or(d.max_command_len),
            hang: self.hang || d.hang,
            hang_after: self.hang_after.unwrap_or(d.hang_after),
            garbage: self.garbage || d.garbage,
            no_echo: d.no_echo,
            bare_ccho: self.bare_ccho || d.bare_ccho,
            hex_session_ids: self.hex_session_ids || d.hex_session_ids,
            no_cchc: self.no_cchc || d.no_cchc,
            verbose_cme: self.verbose_cme || d.verbose_cme,
            csim_basic_only: self.csim_basic_only || d.csim_basic_only,
            sim_sleeps: self.sim_sleeps || d.sim_sleeps,
            manufacturer: self.manufacturer.clone().unwrap_or(d.manufacturer),
            slow_keygen_ms: self.slow_keygen_ms.unwrap_or(d.slow_keygen_ms),
            seed: self.seed.unwrap_or(d.seed),
        }
    }
}

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

impl ContentArgs {
    /// Loads the profile and creates the card (saving changes back to the profile file).
    fn card(&self, opts: CardOptions) -> Result<Card, String> {
        let mut profile = load_profile(self.profile.as_deref())?;
        if self.provisioning {
            profile.provisioning = true;
        }
        let mut card = Card::new(profile, opts);
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

fn cmd_init_profile(args: InitProfileArgs) -> Result<(), String> {
    let InitProfileArgs {
        file,
        force,
        seed,
        provisioning,
        logical_channels,
        layout,
    } = args;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let bundle = match &seed {
        Some(s) => bundle_from_seed(s.as_bytes()).map_err(|e| e.to_string())?,
        None => iotsafe_sim::default_bundle(),
    };
    let mut profile = bundle
        .profile
        .clone()
        .with_provisioning(provisioning)
        .with_key_layout(layout);
    if let Some(n) = logical_channels {
        profile.max_channels = n;
    }
    let toml = profile.to_toml().map_err(|e| e.to_string())?;
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

fn cmd_vpcd(args: VpcdArgs) -> Result<(), String> {
    let card = SharedCard::new(args.content.card(args.card.options()?)?);
    install_signal_handlers();
    // Before the control socket can arm one.
    vpcd::refuse_unanswered_faults(&card);
    let _control = match &args.control {
        Some(p) => {
            let s = control::ControlServer::spawn(p, card.clone())
                .map_err(|e| format!("control socket {}: {e}", p.display()))?;
            eprintln!("iotsafe-sim: control socket at {}", p.display());
            Some(s)
        }
        None => None,
    };
    vpcd::run(&card, &args.host, args.port, &SHUTDOWN, &mut |m| {
        eprintln!("iotsafe-sim: {m}")
    });
    Ok(())
}

fn cmd_modem(args: ModemArgs) -> Result<(), String> {
    let link = args.link;
    let card = SharedCard::new(args.content.card(args.card.options()?)?);
    install_signal_handlers();
    let options = args.quirks.options();
    let proxy = args.proxy_socket.as_deref();
    let handle = match args.protocol {
        ModemProtocol::At if proxy.is_some() => {
            return Err("--proxy-socket is for --protocol mbim or qmi".into());
        }
        ModemProtocol::At => modem::spawn(card, &link, options),
        ModemProtocol::Mbim => modem::mbim::spawn(card, &link, options, proxy),
        ModemProtocol::Qmi => modem::qmi::spawn(card, &link, options, proxy),
    }
    .map_err(|e| format!("modem {}: {e}", link.display()))?;
    eprintln!(
        "iotsafe-sim: modem at {} -> {}",
        link.display(),
        handle.device().display()
    );
    let _control = match &args.control {
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

fn cmd_apdu(args: ApduArgs) -> Result<(), String> {
    let apdus = args
        .apdus
        .iter()
        .map(|h| decode_hex(h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut card = args.content.card(args.card.options()?)?;
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
    // Usage errors exit with 2, `help` / `--help` with 0 (clap's convention, as before).
    let cli = Cli::parse();
    let result = match cli.command {
        Command::InitProfile(a) => cmd_init_profile(a),
        Command::Vpcd(a) => cmd_vpcd(a),
        Command::Modem(a) => cmd_modem(a),
        Command::Apdu(a) => cmd_apdu(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iotsafe-sim: {e}");
            ExitCode::from(2)
        }
    }
}
