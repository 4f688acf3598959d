//! Step 1: the configuration file the module reads.

use std::path::{Path, PathBuf};

use iotsafe_pkcs11::config::{Config, ENV_CONFIG, ModemProtocol};

use crate::report::Finding;

const CHECK: &str = "configuration";
const DOCS: &str = "every key: /usr/share/doc/iotsafe-pkcs11/configuration.md";

/// The configuration (`None` when it cannot be used) and what was found.
pub fn check(explicit: Option<&Path>) -> (Option<Config>, Finding) {
    let path: Option<PathBuf> = explicit
        .map(Path::to_path_buf)
        .or_else(Config::default_path);
    let Some(path) = path else {
        let config = Config::default();
        let finding = Finding::ok(
            CHECK,
            "(no file)",
            format!(
                "no configuration file (${ENV_CONFIG}, ~/.config/iotsafe-pkcs11/config.toml, \
                 /etc/iotsafe-pkcs11/config.toml): the defaults apply: {}",
                summary(&config)
            ),
        );
        return (Some(config), finding);
    };
    let subject = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            let fix = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "create it (an example: /etc/iotsafe-pkcs11/config.toml from the package), \
                     or point ${ENV_CONFIG} at the right file"
                ),
                std::io::ErrorKind::PermissionDenied => {
                    "make it readable by this user (e.g. chmod 0644; it holds no secret)".into()
                }
                _ => String::new(),
            };
            return (
                None,
                Finding::fail(CHECK, subject, format!("cannot be read: {e}"), fix),
            );
        }
    };
    match Config::parse(&text, &subject) {
        Ok(config) => {
            let detail = summary(&config);
            (Some(config), Finding::ok(CHECK, subject, detail))
        }
        Err(e) => (
            None,
            Finding::fail(
                CHECK,
                subject,
                e.to_string(),
                format!("correct the file ({DOCS}); the module refuses to load with it"),
            ),
        ),
    }
}

fn summary(config: &Config) -> String {
    let pcsc = if config.pcsc.enabled {
        "PC/SC readers on"
    } else {
        "PC/SC readers off"
    };
    let modems: Vec<String> = config
        .modem
        .iter()
        .map(|m| {
            let protocol = match m.protocol {
                ModemProtocol::At => "AT",
                ModemProtocol::Mbim => "MBIM",
                ModemProtocol::Qmi => "QMI",
            };
            format!("{} ({protocol})", m.device)
        })
        .collect();
    let modems = if modems.is_empty() {
        "no modem".to_string()
    } else {
        format!("modems: {}", modems.join(", "))
    };
    let aids: Vec<String> = config.aids().iter().map(hex::encode_upper).collect();
    let aids = if aids.is_empty() {
        "the GSMA applet AID".to_string()
    } else {
        format!("AIDs {}", aids.join(", "))
    };
    format!("{pcsc}, {modems}, {aids}")
}
