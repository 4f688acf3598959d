//! Control channel: a Unix socket, one command per line, one JSON object per answer line.
//!
//! Every answer has `"ok": true|false`; failures carry `"error"`. Commands are looked up in
//! [`COMMANDS`]; adding one is adding a row there.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::card::SharedCard;

/// A control command handler: receives the card and the argument text after the name.
pub type Handler = fn(&SharedCard, &str) -> Value;

/// The command table: name, one-line help, handler.
pub const COMMANDS: &[(&str, &str, Handler)] = &[
    ("stats", "APDU counters: total and by INS", cmd_stats),
    ("reset-stats", "clear the APDU counters", cmd_reset_stats),
    ("ping", "liveness check", cmd_ping),
    (
        "power-off",
        "drop all channel state (like a power cycle)",
        cmd_power_off,
    ),
    ("help", "list commands", cmd_help),
];

fn cmd_stats(card: &SharedCard, _args: &str) -> Value {
    let s = card.stats();
    let mut by_ins = Map::new();
    for (ins, n) in &s.by_ins {
        by_ins.insert(format!("{ins:02X}"), json!(n));
    }
    json!({"ok": true, "total": s.total, "by_ins": by_ins})
}

fn cmd_reset_stats(card: &SharedCard, _args: &str) -> Value {
    card.reset_stats();
    json!({"ok": true})
}

fn cmd_ping(_card: &SharedCard, _args: &str) -> Value {
    json!({"ok": true})
}

fn cmd_power_off(card: &SharedCard, _args: &str) -> Value {
    card.power_off();
    json!({"ok": true})
}

fn cmd_help(_card: &SharedCard, _args: &str) -> Value {
    let mut m = Map::new();
    for (name, help, _) in COMMANDS {
        m.insert((*name).to_string(), json!(help));
    }
    json!({"ok": true, "commands": m})
}

/// Executes one command line and returns the JSON answer (without newline).
pub fn handle_line(card: &SharedCard, line: &str) -> String {
    let line = line.trim();
    let (name, args) = match line.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (line, ""),
    };
    let v = match COMMANDS.iter().find(|(n, _, _)| *n == name) {
        Some((_, _, h)) => h(card, args),
        None => json!({"ok": false, "error": format!("unknown command: {name:?}")}),
    };
    v.to_string()
}

/// Serves one client connection until EOF.
pub fn serve_client(card: &SharedCard, stream: UnixStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut answer = handle_line(card, &line);
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
                    let card = card.clone();
                    let _ = std::thread::Builder::new()
                        .name("control-client".into())
                        .spawn(move || {
                            let _ = serve_client(&card, stream);
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
