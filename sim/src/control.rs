//! Control channel: a Unix socket, one command per line, one JSON object per answer line.
//!
//! Every answer has `"ok": true|false`; failures carry `"error"`. Commands are looked up in
//! [`COMMANDS`]; adding one is adding a row there.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::faults::Fault;
use crate::modem::ModemControl;
use crate::profile::{ObjectClass, decode_hex};
use crate::shared::SharedCard;

/// What the control commands act on: the card, and the modem if this process runs one.
#[derive(Debug, Clone)]
pub struct Context {
    /// The card.
    pub card: SharedCard,
    /// The modem serving the card, if any (quirk, hang and unhang need one).
    pub modem: Option<ModemControl>,
}

impl Context {
    /// A context without a modem.
    pub fn new(card: SharedCard) -> Context {
        Context { card, modem: None }
    }

    /// A context for a modem (and its card).
    pub fn with_modem(modem: ModemControl) -> Context {
        Context {
            card: modem.card().clone(),
            modem: Some(modem),
        }
    }
}

impl From<SharedCard> for Context {
    fn from(card: SharedCard) -> Context {
        Context::new(card)
    }
}

/// A control command handler: receives the context and the argument text after the name.
pub type Handler = fn(&Context, &str) -> Value;

/// The command table: name, one-line help, handler.
pub const COMMANDS: &[(&str, &str, Handler)] = &[
    (
        "stats",
        "APDU counters (total, by INS), interleaved sessions, open channels (now and most at once), presence, modem counters",
        cmd_stats,
    ),
    (
        "reset-stats",
        "clear the APDU (and modem) counters",
        cmd_reset_stats,
    ),
    ("ping", "liveness check", cmd_ping),
    (
        "power-off",
        "drop all channel state (like a power cycle)",
        cmd_power_off,
    ),
    (
        "remove",
        "take the card out: vpcd disconnects until insert; the modem answers +CME ERROR: 10",
        cmd_remove,
    ),
    (
        "insert",
        "put the card back, freshly powered (channels closed, objects kept)",
        cmd_insert,
    ),
    (
        "set-latency",
        "set-latency apdu=<ms> signature=<ms> (either; units us/ms/s allowed)",
        cmd_set_latency,
    ),
    (
        "logical-channels",
        "`logical-channels` shows, `logical-channels N` (1..19) sets how many logical channels besides the basic one MANAGE CHANNEL may open",
        cmd_logical_channels,
    ),
    (
        "quirk",
        "modem quirks: `quirk` lists them, `quirk <name> on|off|<number>` sets one",
        cmd_quirk,
    ),
    ("hang", "modem: stop answering until unhang", cmd_hang),
    ("unhang", "modem: answer again", cmd_unhang),
    (
        "fault",
        "fault injection: `fault` lists, `fault clear`, `fault <sw=XXXX|truncate=N|endless-61xx|garbage|bad-tlv|remove|mute> [ins=XX] [skip=N] [count=N]`",
        cmd_fault,
    ),
    (
        "provisioning",
        "`provisioning` shows, `provisioning on|off` switches the STORE DATA provisioning profile",
        cmd_provisioning,
    ),
    (
        "remote",
        "the running remote management session (G4), if any",
        cmd_remote,
    ),
    (
        "remote-begin",
        "remote-begin <private|public|file|secret> <id-hex>: start a remote session updating that object (device commands on it answer 6984)",
        cmd_remote_begin,
    ),
    (
        "remote-replace-file",
        "remote-replace-file <id-hex> <path>: new content (DER, or PEM converted to DER) for a file",
        cmd_remote_replace_file,
    ),
    (
        "remote-replace-key",
        "remote-replace-key <id-hex>: new random key pair for that private key and its public key",
        cmd_remote_replace_key,
    ),
    (
        "remote-delete",
        "remote-delete <private|public|file|secret> <id-hex>: delete an object",
        cmd_remote_delete,
    ),
    (
        "remote-add-file",
        "remote-add-file <id-hex> <label|-> <usage 1|2> <path>: add a file",
        cmd_remote_add_file,
    ),
    (
        "remote-add-secret",
        "remote-add-secret <id-hex> <label|-> <kd 1|2|3> <value-hex>: add a secret key (PSK; label = PSK identity; kd 1 TLS 1.2 PRF, 2 HKDF, 3 both; 1..64 bytes)",
        cmd_remote_add_secret,
    ),
    (
        "remote-replace-secret",
        "remote-replace-secret <id-hex> <value-hex>: new value (1..64 bytes) for a secret key",
        cmd_remote_replace_secret,
    ),
    (
        "remote-end",
        "end the remote session: changes applied, next successful command per open channel answers 63CF",
        cmd_remote_end,
    ),
    ("help", "list commands", cmd_help),
];

fn error(msg: impl Into<String>) -> Value {
    json!({"ok": false, "error": msg.into()})
}

fn cmd_stats(ctx: &Context, _args: &str) -> Value {
    let (s, channels, present) = ctx
        .card
        .with(|c| (c.stats(), c.open_channels(), c.is_present()));
    let mut by_ins = Map::new();
    for (ins, n) in &s.by_ins {
        by_ins.insert(format!("{ins:02X}"), json!(n));
    }
    let mut by_ch = Map::new();
    for (ch, n) in &s.interleaved_by_channel {
        by_ch.insert(ch.to_string(), json!(n));
    }
    let mut v = json!({
        "ok": true,
        "total": s.total,
        "by_ins": by_ins,
        "interleaved": s.interleaved,
        "interleaved_by_channel": by_ch,
        "open_channels": channels,
        "open_channel_count": s.open_channel_count,
        "max_open_channels": s.max_open_channels,
        "present": present,
    });
    if let Some(m) = &ctx.modem {
        v["modem"] = m.stats().to_json();
    }
    v
}

fn cmd_reset_stats(ctx: &Context, _args: &str) -> Value {
    ctx.card.reset_stats();
    if let Some(m) = &ctx.modem {
        m.reset_stats();
    }
    json!({"ok": true})
}

fn cmd_ping(_ctx: &Context, _args: &str) -> Value {
    json!({"ok": true})
}

fn cmd_power_off(ctx: &Context, _args: &str) -> Value {
    ctx.card.power_off();
    json!({"ok": true})
}

fn cmd_remove(ctx: &Context, _args: &str) -> Value {
    ctx.card.remove();
    json!({"ok": true, "present": false})
}

fn cmd_insert(ctx: &Context, _args: &str) -> Value {
    ctx.card.insert();
    json!({"ok": true, "present": true})
}

/// Parses `5ms`, `200us`, `1.5s`; a bare number is milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "ms"),
    };
    let v: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let ns_per_unit = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(format!("bad duration unit in {s:?} (use us, ms or s)")),
    };
    let ns = (v * ns_per_unit).round();
    if !ns.is_finite() || !(0.0..=86_400e9).contains(&ns) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_nanos(ns as u64))
}

fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

fn cmd_set_latency(ctx: &Context, args: &str) -> Value {
    let mut apdu = None;
    let mut sig = None;
    for item in args.split_whitespace() {
        let Some((k, v)) = item.split_once('=') else {
            return error(format!("expected key=value, got {item:?}"));
        };
        let d = match parse_duration(v) {
            Ok(d) => d,
            Err(e) => return error(e),
        };
        match k {
            "apdu" => apdu = Some(d),
            "signature" | "sig" => sig = Some(d),
            _ => return error(format!("unknown latency {k:?} (apdu, signature)")),
        }
    }
    if apdu.is_none() && sig.is_none() {
        return error("usage: set-latency apdu=<ms> signature=<ms>");
    }
    ctx.card.set_latency(apdu, sig);
    let o = ctx.card.options();
    json!({
        "ok": true,
        "apdu_ms": ms(o.latency_per_apdu),
        "signature_ms": ms(o.latency_per_signature),
    })
}

/// Parses a logical-channel limit: 1..=19 (channels besides the basic one).
pub fn parse_logical_channels(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(n @ 1..=19) => Ok(n),
        _ => Err(format!(
            "logical channels: a number 1..19 (besides the basic channel), got {s:?}"
        )),
    }
}

fn cmd_logical_channels(ctx: &Context, args: &str) -> Value {
    if !args.is_empty() {
        match parse_logical_channels(args) {
            Ok(n) => ctx.card.set_max_channels(Some(n)),
            Err(e) => return error(e),
        }
    }
    let (max, open) = ctx.card.with(|c| (c.max_channels(), c.open_channels()));
    json!({"ok": true, "logical_channels": max, "open_channels": open})
}

fn no_modem() -> Value {
    error("no modem in this process")
}

fn cmd_quirk(ctx: &Context, args: &str) -> Value {
    let Some(m) = &ctx.modem else {
        return no_modem();
    };
    let mut words = args.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (None, _, _) => json!({"ok": true, "quirks": m.options().to_json()}),
        (Some(name), Some(value), None) => match m.set_quirk(name, value) {
            Ok(()) => json!({"ok": true, "quirks": m.options().to_json()}),
            Err(e) => error(e),
        },
        _ => error("usage: quirk <name> on|off|<number>"),
    }
}

fn cmd_hang(ctx: &Context, _args: &str) -> Value {
    match &ctx.modem {
        Some(m) => {
            m.hang();
            json!({"ok": true, "hang": true})
        }
        None => no_modem(),
    }
}

fn cmd_unhang(ctx: &Context, _args: &str) -> Value {
    match &ctx.modem {
        Some(m) => {
            m.unhang();
            json!({"ok": true, "hang": false})
        }
        None => no_modem(),
    }
}

/// The `fault` control command: `fault` lists, `fault clear` disarms, anything else arms
/// (see [`Fault::parse`]).
pub fn cmd_fault(ctx: &Context, args: &str) -> Value {
    let faults = ctx.card.faults();
    match args.trim() {
        "" => {}
        "clear" => faults.clear(),
        text => match Fault::parse(text).and_then(|f| faults.try_arm(f)) {
            Ok(()) => {}
            Err(e) => return json!({"ok": false, "error": e}),
        },
    }
    let mut v = faults.to_json();
    v["ok"] = json!(true);
    v
}

fn cmd_provisioning(ctx: &Context, args: &str) -> Value {
    match args {
        "" => {}
        "on" | "true" | "1" => ctx.card.set_provisioning(true),
        "off" | "false" | "0" => ctx.card.set_provisioning(false),
        _ => return error("usage: provisioning [on|off]"),
    }
    json!({"ok": true, "provisioning": ctx.card.with(|c| c.profile().provisioning)})
}

fn targets_json(targets: &[(ObjectClass, Vec<u8>)]) -> Value {
    Value::Array(
        targets
            .iter()
            .map(|(c, id)| json!({"class": c.name(), "id": hex::encode_upper(id)}))
            .collect(),
    )
}

fn result(r: Result<Value, String>) -> Value {
    match r {
        Ok(v) => v,
        Err(e) => error(e),
    }
}

fn parse_id(s: &str) -> Result<Vec<u8>, String> {
    let id = decode_hex(s)?;
    if id.is_empty() {
        return Err("empty id".into());
    }
    Ok(id)
}

/// Reads a file for the card: DER as is, PEM (`-----BEGIN`) converted to DER.
pub fn read_der_or_pem(path: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let text_start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if bytes[text_start..].starts_with(b"-----BEGIN") {
        let (_label, der) =
            der::pem::decode_vec(&bytes[text_start..]).map_err(|e| format!("{path}: PEM: {e}"))?;
        return Ok(der);
    }
    Ok(bytes)
}

fn cmd_remote(ctx: &Context, _args: &str) -> Value {
    match ctx.card.remote_session() {
        Some(t) => json!({"ok": true, "session": targets_json(&t)}),
        None => json!({"ok": true, "session": null}),
    }
}

fn cmd_remote_begin(ctx: &Context, args: &str) -> Value {
    result((|| {
        let mut w = args.split_whitespace();
        let (Some(class), Some(id), None) = (w.next(), w.next(), w.next()) else {
            return Err("usage: remote-begin <private|public|file|secret> <id-hex>".into());
        };
        let class: ObjectClass = class.parse()?;
        let id = parse_id(id)?;
        ctx.card.remote_begin(class, &id)?;
        Ok(json!({"ok": true, "session": targets_json(&[(class, id)])}))
    })())
}

fn cmd_remote_replace_file(ctx: &Context, args: &str) -> Value {
    result((|| {
        let Some((id, path)) = args.split_once(char::is_whitespace) else {
            return Err("usage: remote-replace-file <id-hex> <path>".into());
        };
        let id = parse_id(id)?;
        let content = read_der_or_pem(path.trim())?;
        let size = content.len();
        ctx.card.remote_replace_file(&id, content)?;
        Ok(json!({"ok": true, "size": size}))
    })())
}

fn cmd_remote_replace_key(ctx: &Context, args: &str) -> Value {
    result((|| {
        let id = parse_id(args)?;
        let point = ctx.card.remote_replace_key(&id)?;
        Ok(json!({"ok": true, "point": hex::encode_upper(&point)}))
    })())
}

fn cmd_remote_delete(ctx: &Context, args: &str) -> Value {
    result((|| {
        let mut w = args.split_whitespace();
        let (Some(class), Some(id), None) = (w.next(), w.next(), w.next()) else {
            return Err("usage: remote-delete <private|public|file|secret> <id-hex>".into());
        };
        let class: ObjectClass = class.parse()?;
        ctx.card.remote_delete(class, &parse_id(id)?)?;
        Ok(json!({"ok": true}))
    })())
}

fn cmd_remote_add_file(ctx: &Context, args: &str) -> Value {
    result((|| {
        let usage = "usage: remote-add-file <id-hex> <label|-> <usage 1|2> <path>";
        let mut w = args.splitn(4, char::is_whitespace);
        let (Some(id), Some(label), Some(kind), Some(path)) =
            (w.next(), w.next(), w.next(), w.next())
        else {
            return Err(usage.into());
        };
        let id = parse_id(id)?;
        let label = (label != "-").then(|| label.as_bytes().to_vec());
        let kind: u8 = match kind {
            "1" | "01" | "general" => 1,
            "2" | "02" | "certificate" | "cert" => 2,
            _ => return Err(usage.into()),
        };
        let content = read_der_or_pem(path.trim())?;
        let size = content.len();
        ctx.card.remote_add_file(&id, label, kind, content)?;
        Ok(json!({"ok": true, "size": size}))
    })())
}

/// A secret value in hex; errors never repeat the input.
fn parse_secret(s: &str) -> Result<Vec<u8>, String> {
    decode_hex(s).map_err(|_| "secret value: invalid hex".to_string())
}

fn cmd_remote_add_secret(ctx: &Context, args: &str) -> Value {
    result((|| {
        let usage = "usage: remote-add-secret <id-hex> <label|-> <kd 1|2|3> <value-hex>";
        let mut w = args.split_whitespace();
        let (Some(id), Some(label), Some(kd), Some(value), None) =
            (w.next(), w.next(), w.next(), w.next(), w.next())
        else {
            return Err(usage.into());
        };
        let id = parse_id(id)?;
        let label = (label != "-").then(|| label.as_bytes().to_vec());
        let kd: u8 = match kd {
            "1" | "01" => 1,
            "2" | "02" => 2,
            "3" | "03" => 3,
            _ => return Err(usage.into()),
        };
        let value = parse_secret(value)?;
        let size = value.len();
        ctx.card.remote_add_secret(&id, label, kd, value)?;
        Ok(json!({"ok": true, "size": size}))
    })())
}

fn cmd_remote_replace_secret(ctx: &Context, args: &str) -> Value {
    result((|| {
        let mut w = args.split_whitespace();
        let (Some(id), Some(value), None) = (w.next(), w.next(), w.next()) else {
            return Err("usage: remote-replace-secret <id-hex> <value-hex>".into());
        };
        let id = parse_id(id)?;
        let value = parse_secret(value)?;
        let size = value.len();
        ctx.card.remote_replace_secret(&id, value)?;
        Ok(json!({"ok": true, "size": size}))
    })())
}

fn cmd_remote_end(ctx: &Context, _args: &str) -> Value {
    result(
        ctx.card
            .remote_end()
            .map(|t| json!({"ok": true, "changed": targets_json(&t)})),
    )
}

fn cmd_help(_ctx: &Context, _args: &str) -> Value {
    let mut m = Map::new();
    for (name, help, _) in COMMANDS {
        m.insert((*name).to_string(), json!(help));
    }
    json!({"ok": true, "commands": m})
}

/// Executes one command line against a card without a modem (see [`handle`]).
pub fn handle_line(card: &SharedCard, line: &str) -> String {
    handle(&Context::new(card.clone()), line)
}

/// Executes one command line and returns the JSON answer (without newline).
pub fn handle(ctx: &Context, line: &str) -> String {
    let line = line.trim();
    let (name, args) = match line.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (line, ""),
    };
    let v = match COMMANDS.iter().find(|(n, _, _)| *n == name) {
        Some((_, _, h)) => h(ctx, args),
        None => json!({"ok": false, "error": format!("unknown command: {name:?}")}),
    };
    v.to_string()
}

/// Serves one client connection until EOF.
pub fn serve_client(ctx: &Context, stream: UnixStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut answer = handle(ctx, &line);
        answer.push('\n');
        writer.write_all(answer.as_bytes())?;
        writer.flush()?;
    }
    Ok(())
}

/// A running control server; dropping it removes the socket file (the accept thread ends
/// with the process).
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (removing a stale socket there first) and serves clients in threads.
    pub fn spawn(path: &Path, card: SharedCard) -> io::Result<ControlServer> {
        ControlServer::spawn_with(path, Context::new(card))
    }

    /// Like [`ControlServer::spawn`], with a modem attached (or any [`Context`]).
    pub fn spawn_with(path: &Path, ctx: Context) -> io::Result<ControlServer> {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path)?;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
        }
        let listener = UnixListener::bind(path)?;
        std::thread::Builder::new()
            .name("control-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(stream) = conn else { continue };
                    let ctx = ctx.clone();
                    let _ = std::thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || {
                            let _ = serve_client(&ctx, stream);
                        });
                }
            })?;
        Ok(ControlServer {
            path: path.to_path_buf(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardOptions;

    #[test]
    fn control_command() {
        let card = SharedCard::from_profile(crate::default_profile(), CardOptions::default());
        let ctx = Context::new(card.clone());
        let v = cmd_fault(&ctx, "sw=6985 ins=2B count=2");
        assert_eq!(v["ok"], true);
        assert_eq!(v["armed"][0]["kind"], "sw=6985");
        assert_eq!(v["armed"][0]["ins"], "2B");
        assert_eq!(cmd_fault(&ctx, "bogus")["ok"], false);
        assert_eq!(cmd_fault(&ctx, "clear")["armed"], json!([]));
        let line = handle_line(&card, "fault mute");
        assert!(line.contains("\"ok\":true"), "{line}");
        card.faults().clear();
    }
}
