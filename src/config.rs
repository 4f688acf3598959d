//! Configuration: a TOML file from `IOTSAFE_PKCS11_CONFIG`, else
//! `$XDG_CONFIG_HOME/iotsafe-pkcs11/config.toml` (or `~/.config/…`), else
//! `/etc/iotsafe-pkcs11/config.toml`, else defaults. When the file says `init_reserved = true`
//! (or `IOTSAFE_PKCS11_INIT_RESERVED=1`), a string passed in `C_Initialize`'s `pReserved` (as
//! p11-kit's `x-init-reserved` does) is read as TOML too and wins.
//!
//! Plain data: it imports no layer of the module; the layers read what they need from it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const ENV_CONFIG: &str = "IOTSAFE_PKCS11_CONFIG";
pub const ENV_LOG: &str = "IOTSAFE_PKCS11_LOG";
/// `1` or `true`: `C_Initialize`'s `pReserved` may carry a configuration string.
pub const ENV_INIT_RESERVED: &str = "IOTSAFE_PKCS11_INIT_RESERVED";
/// The largest configuration (file or `pReserved` string) read.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A configuration that cannot be read or used; the message names where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T> = std::result::Result<T, ConfigError>;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// env_logger filter used when `IOTSAFE_PKCS11_LOG` is not set (default `warn`).
    pub log: Option<String>,
    #[serde(default)]
    pub pcsc: PcscConfig,
    #[serde(default)]
    pub applet: AppletConfig,
    /// Modems, each a slot.
    #[serde(default)]
    pub modem: Vec<ModemConfig>,
    /// Keep what cards said (objects, public keys, certificates) on disk for the next process
    /// (see docs/design.md, "How processes share a card").
    #[serde(default = "default_cache")]
    pub cache: bool,
    /// Where; default `$XDG_CACHE_HOME/iotsafe-pkcs11`, `~/.cache/iotsafe-pkcs11`, or
    /// `/var/cache/iotsafe-pkcs11` for root.
    pub cache_dir: Option<PathBuf>,
    /// Where the lock files (and the notes beside them) that processes share a card by live;
    /// default `/run/lock`. Every process using the card must use the same.
    pub lock_dir: Option<PathBuf>,
    /// `C_Initialize`'s `pReserved` may point to a configuration string (p11-kit's
    /// `x-init-reserved`); otherwise a non-NULL `pReserved` is `CKR_ARGUMENTS_BAD`.
    #[serde(default)]
    pub init_reserved: bool,
}

fn default_cache() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log: None,
            pcsc: PcscConfig::default(),
            applet: AppletConfig::default(),
            modem: Vec::new(),
            cache: true,
            cache_dir: None,
            lock_dir: None,
            init_reserved: false,
        }
    }
}

/// How APDUs reach the SIM through a modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AtMode {
    /// `AT+CCHO`/`AT+CGLA` when the modem has them, else `AT+CSIM`.
    #[default]
    Auto,
    /// Only the logical-channel commands.
    Cgla,
    /// Only `AT+CSIM`, with MANAGE CHANNEL sent by the module.
    Csim,
}

/// The CLA class of IoT SAFE commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum CommandClass {
    /// CLA `0x`/`4x`.
    #[default]
    #[serde(rename = "inter-industry")]
    InterIndustry,
    /// CLA `8x`/`Cx`.
    #[serde(rename = "proprietary")]
    Proprietary,
}

/// Whether the token takes writes through the STORE DATA provisioning profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provisioning {
    /// Probe the card once at connection.
    #[default]
    Auto,
    On,
    /// The token stays write-protected.
    Off,
}

/// How the module talks to a modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModemProtocol {
    /// AT commands on a serial port (3GPP TS 27.007).
    #[default]
    At,
    /// MBIM on the control device (MS UICC low-level access service).
    Mbim,
    /// QMI on the control device (UIM service).
    Qmi,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModemConfig {
    /// `at` (default), `mbim` or `qmi`.
    #[serde(default)]
    pub protocol: ModemProtocol,
    /// AT: the modem's AT port, e.g. `/dev/ttyACM0` (or a stable `/dev/serial/by-id/…` link).
    /// MBIM/QMI: the control device, e.g. `/dev/cdc-wdm0` or `/dev/wwan0mbim0`.
    pub device: String,
    /// MBIM/QMI: go through ModemManager's `mbim-proxy` / `qmi-proxy` when it runs (default
    /// true), else open the device directly.
    pub proxy: Option<bool>,
    /// MBIM/QMI: the proxy's abstract socket name (default `mbim-proxy` / `qmi-proxy`).
    pub proxy_socket: Option<String>,
    /// QMI: the SIM slot, 1-based (default 1).
    #[serde(default = "default_sim_slot")]
    pub sim_slot: u8,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub at_mode: AtMode,
    /// Longest AT command line the modem accepts (characters).
    #[serde(default = "default_max_command_len")]
    pub max_command_len: usize,
    /// Deadline for one AT command, in milliseconds (key generation on a SIM takes seconds).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Slot description; default "Modem <device>".
    pub label: Option<String>,
    /// AT: command lines sent once when the port is opened, e.g. `["AT+ECSIMSLEEP=0"]` for a
    /// MediaTek module whose `AT+CGMI` does not say MediaTek.
    #[serde(default)]
    pub setup_commands: Vec<String>,
}

fn default_sim_slot() -> u8 {
    1
}

fn default_baud() -> u32 {
    115_200
}

fn default_max_command_len() -> usize {
    1024
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl ModemConfig {
    /// The slot's name (its `slotDescription`).
    pub fn slot_name(&self) -> String {
        match &self.label {
            Some(l) => l.clone(),
            None => format!("Modem {}", self.device),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PcscConfig {
    /// Use PC/SC readers at all.
    pub enabled: bool,
    /// Only readers whose name contains one of these strings (empty: all readers).
    pub readers: Vec<String>,
    /// Never readers whose name contains one of these strings.
    pub exclude_readers: Vec<String>,
}

impl Default for PcscConfig {
    fn default() -> Self {
        PcscConfig {
            enabled: true,
            readers: Vec::new(),
            exclude_readers: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppletConfig {
    /// AIDs to try, in order (hex). The GSMA AID is tried first unless listed otherwise.
    pub aids: Vec<String>,
    /// `"inter-industry"` (CLA 0x) or `"proprietary"` (CLA 8x) for IoT SAFE commands.
    pub cla: CommandClass,
    /// Use a logical channel (MANAGE CHANNEL); `false` forces the basic channel.
    pub logical_channel: bool,
    /// Accepted for configurations written for earlier versions and ignored (with a warning
    /// when above 1): a process uses one logical channel per card.
    pub max_channels: usize,
    /// Token label; default derived from the applet identifier.
    pub token_label: Option<String>,
    /// Writes through the STORE DATA provisioning profile: `"auto"` (probe the card once at
    /// connection), `"on"`, `"off"` (the token stays write-protected).
    pub provisioning: Provisioning,
}

impl Default for AppletConfig {
    fn default() -> Self {
        AppletConfig {
            aids: Vec::new(),
            cla: CommandClass::InterIndustry,
            logical_channel: true,
            max_channels: 1,
            token_label: None,
            provisioning: Provisioning::Auto,
        }
    }
}

/// Reads a configuration file without ever blocking or reading without end: opened
/// non-blocking (a FIFO opens at once), only a regular file is read, at most
/// [`MAX_CONFIG_BYTES`].
fn read_config_file(path: &Path, origin: &str) -> Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let error = |what: String| ConfigError(format!("configuration {origin}: {what}"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| error(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| error(e.to_string()))?;
    if is_the_null_device(&metadata) {
        // `IOTSAFE_PKCS11_CONFIG=/dev/null`: the usual way to say "no configuration file".
        return Ok(String::new());
    }
    if !metadata.is_file() {
        return Err(error("not a regular file".to_owned()));
    }
    if metadata.len() > MAX_CONFIG_BYTES as u64 {
        return Err(error(format!(
            "larger than {MAX_CONFIG_BYTES} bytes ({} bytes)",
            metadata.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error(e.to_string()))?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(error(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| error("not UTF-8 text".to_owned()))
}

/// Whether `metadata` is that of the null device (whatever the path that led to it).
fn is_the_null_device(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    metadata.file_type().is_char_device()
        && std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == metadata.rdev())
}

/// A TOML error as one line: where it came from, the line, the key (with its table) and what
/// is wrong.
fn syntax_error(e: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let message = e.message().trim();
    let Some(span) = e.span() else {
        return ConfigError(format!("configuration {origin}: {message}"));
    };
    let start = span.start.min(text.len());
    let line_index = text[..start].matches('\n').count();
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_index).copied().unwrap_or("").trim();
    let table = lines[..line_index.min(lines.len())]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"'))
        .filter(|k| !k.is_empty());
    let place = match (table, key) {
        (Some(t), Some(k)) => format!(", key `{t}.{k}`"),
        (None, Some(k)) => format!(", key `{k}`"),
        _ => String::new(),
    };
    ConfigError(format!(
        "configuration {origin}, line {}{place}: {message}",
        line_index + 1
    ))
}

/// An AID as written in the file: hex, with optional spaces or colons between the bytes.
fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(digits).ok().filter(|b| !b.is_empty())
}

impl Config {
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| syntax_error(&e, text, origin))?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        for aid in &self.applet.aids {
            match parse_hex(aid) {
                Some(b) if (5..=16).contains(&b.len()) => {}
                _ => {
                    return Err(ConfigError(format!(
                        "configuration {origin}: applet.aids entry {aid:?} is not a 5..16-byte hex AID"
                    )));
                }
            }
        }
        if !(1..=19).contains(&self.applet.max_channels) {
            return Err(ConfigError(format!(
                "configuration {origin}: applet.max_channels must be 1..19"
            )));
        }
        for m in &self.modem {
            if m.max_command_len < 40 || m.timeout_ms == 0 || m.baud == 0 {
                return Err(ConfigError(format!(
                    "configuration {origin}: modem {}: max_command_len must be >= 40, timeout_ms and baud > 0",
                    m.device
                )));
            }
            if m.protocol == ModemProtocol::At && (m.proxy.is_some() || m.proxy_socket.is_some()) {
                return Err(ConfigError(format!(
                    "configuration {origin}: modem {}: proxy and proxy_socket are for protocol \"mbim\" or \"qmi\"",
                    m.device
                )));
            }
            if m.protocol != ModemProtocol::At && !m.setup_commands.is_empty() {
                return Err(ConfigError(format!(
                    "configuration {origin}: modem {}: setup_commands are for protocol \"at\"",
                    m.device
                )));
            }
            if let Some(bad) = m.setup_commands.iter().find(|c| {
                !c.get(..2).is_some_and(|at| at.eq_ignore_ascii_case("AT"))
                    || c.chars().any(|ch| ch.is_control())
            }) {
                return Err(ConfigError(format!(
                    "configuration {origin}: modem {}: setup_commands entry {bad:?} is not one AT command line",
                    m.device
                )));
            }
            if !(1..=5).contains(&m.sim_slot) {
                return Err(ConfigError(format!(
                    "configuration {origin}: modem {}: sim_slot must be 1..5",
                    m.device
                )));
            }
            if let Some(name) = &m.proxy_socket
                && (name.is_empty() || name.len() > 100 || name.contains('\0'))
            {
                return Err(ConfigError(format!(
                    "configuration {origin}: modem {}: proxy_socket must be 1..100 bytes without NUL",
                    m.device
                )));
            }
        }
        if let Some(label) = &self.applet.token_label
            && label.len() > 32
        {
            return Err(ConfigError(format!(
                "configuration {origin}: applet.token_label is longer than 32 bytes"
            )));
        }
        Ok(())
    }

    /// The file to read, if any.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(ENV_CONFIG) {
            return Some(PathBuf::from(p));
        }
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")));
        if let Some(dir) = xdg {
            let p = dir.join("iotsafe-pkcs11/config.toml");
            if p.exists() {
                return Some(p);
            }
        }
        let etc = PathBuf::from("/etc/iotsafe-pkcs11/config.toml");
        etc.exists().then_some(etc)
    }

    /// The configuration file (see [`Config::default_path`]), or the defaults when there is none.
    pub fn load_file() -> Result<Config> {
        match Config::default_path() {
            Some(path) => {
                let origin = path.display().to_string();
                Config::parse(&read_config_file(&path, &origin)?, &origin)
            }
            None => Ok(Config::default()),
        }
    }

    /// Whether `pReserved` may carry a configuration string: the file's `init_reserved`, or
    /// `IOTSAFE_PKCS11_INIT_RESERVED=1`.
    pub fn accepts_init_reserved(&self) -> bool {
        self.init_reserved
            || std::env::var(ENV_INIT_RESERVED)
                .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
    }

    /// The configured AIDs, in order (empty: none configured).
    pub fn aids(&self) -> Vec<Vec<u8>> {
        self.applet
            .aids
            .iter()
            .filter_map(|a| parse_hex(a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            r#"
log = "debug"
[pcsc]
enabled = true
readers = ["Virtual PCD"]
exclude_readers = ["01"]
[applet]
aids = ["A0000005590010", "A000000030 53F124 01770101 495341"]
cla = "proprietary"
logical_channel = false
token_label = "my SIM"
[[modem]]
device = "/dev/ttyACM0"
at_mode = "csim"
max_command_len = 300
[[modem]]
device = "/tmp/modem"
label = "gateway modem 2"
[[modem]]
protocol = "qmi"
device = "/dev/cdc-wdm0"
proxy = false
sim_slot = 2
"#,
            "test",
        )
        .unwrap();
        assert_eq!(c.aids().len(), 2);
        assert_eq!(c.applet.cla, CommandClass::Proprietary);
        assert_eq!(c.pcsc.readers, ["Virtual PCD"]);
        assert_eq!(c.pcsc.exclude_readers, ["01"]);
        assert_eq!(c.modem.len(), 3);
        assert_eq!(c.modem[0].at_mode, AtMode::Csim);
        assert_eq!(c.modem[0].baud, 115_200);
        assert_eq!(c.modem[0].slot_name(), "Modem /dev/ttyACM0");
        assert_eq!(c.modem[1].slot_name(), "gateway modem 2");
        assert_eq!(c.modem[1].at_mode, AtMode::Auto);
        assert_eq!(c.modem[1].protocol, ModemProtocol::At);
        assert_eq!(c.modem[1].proxy, None);
        assert_eq!(c.modem[2].protocol, ModemProtocol::Qmi);
        assert_eq!(c.modem[2].proxy, Some(false));
        assert_eq!(c.modem[2].sim_slot, 2);
    }

    #[test]
    fn bad_config_is_a_clear_error() {
        for text in [
            "unknown = 1",
            "[applet]\naids = [\"zz\"]",
            "[applet]\ncla = \"x\"",
            "[applet]\ntoken_label = \"0123456789012345678901234567890123\"",
            "[[modem]]\ndevice = \"/dev/x\"\nat_mode = \"serial\"",
            "[[modem]]\ndevice = \"/dev/x\"\nmax_command_len = 10",
            "[[modem]]\ndevice = \"/dev/x\"\nprotocol = \"serial\"",
            "[[modem]]\ndevice = \"/dev/x\"\nproxy = true",
            "[[modem]]\ndevice = \"/dev/x\"\nprotocol = \"qmi\"\nsim_slot = 0",
            "[[modem]]\ndevice = \"/dev/x\"\nprotocol = \"mbim\"\nproxy_socket = \"\"",
            "[[modem]]\ndevice = \"/dev/x\"\nsetup_commands = [\"ECSIMSLEEP=0\"]",
            "[[modem]]\ndevice = \"/dev/x\"\nsetup_commands = [\"AT\\rATZ\"]",
            "[[modem]]\ndevice = \"/dev/x\"\nprotocol = \"qmi\"\nsetup_commands = [\"AT\"]",
        ] {
            let e = Config::parse(text, "t").unwrap_err();
            assert!(e.0.contains("configuration t"), "{text}: {e}");
        }
        assert!(Config::parse("", "t").unwrap().aids().is_empty());
    }

    #[test]
    fn syntax_errors_name_the_line_and_the_key_on_one_line() {
        for (text, expected) in [
            (
                "cache = 3",
                "configuration t, line 1, key `cache`: invalid type",
            ),
            (
                "log = \"info\"\n\n[pcsc]\nenabled = true\nreader = []",
                "configuration t, line 5, key `pcsc.reader`: unknown field `reader`",
            ),
            ("[applet\n", "configuration t, line 1: "),
        ] {
            let e = Config::parse(text, "t").unwrap_err();
            assert!(e.0.starts_with(expected), "{text:?}: {e}");
            assert!(!e.0.contains('\n'), "{text:?}: one line: {e}");
        }
    }
}
