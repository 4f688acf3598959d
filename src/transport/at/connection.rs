//! One modem with its SIM, as a card connection: logical channels through `AT+CCHO`/`AT+CCHC`,
//! APDUs through `AT+CGLA` or `AT+CSIM`, each operation inside one turn on the port's lock.

use std::path::Path;

use log::{debug, info, warn};

use super::port::AtPort;
use super::{
    AtError, AtMode, CME_OPERATION_NOT_ALLOWED, CME_SIM_FAILURE, CME_SIM_NOT_INSERTED,
    ModemSettings, parse_apdu_answer,
};
use crate::transport::turn_lock::{HeldTurn, TurnLock};
use crate::transport::{
    CardConnection, ChannelRoute, SessionId, SessionOpen, Transmit, TransportError, Turn,
};

/// MediaTek modules let the SIM sleep and then refuse SIM access (`+CME ERROR: 3`) until told
/// not to.
const MEDIATEK_SIM_AWAKE: &str = "AT+ECSIMSLEEP=0";

/// One modem with its SIM.
pub struct ModemConnection {
    port: AtPort,
    lock: TurnLock,
    mode: AtMode,
    /// `AT+CGMI`, read once when the port is opened.
    manufacturer: Option<String>,
    /// `AT+CCHC` answered `ERROR` (Sierra EM9191 has none): sessions are not closed.
    cchc_missing: bool,
}

/// One operation's turn on the modem: APDUs go to `route` until it is dropped.
struct ModemPipe<'a> {
    port: &'a mut AtPort,
    mode: &'a mut AtMode,
    cchc_missing: &'a mut bool,
    route: ChannelRoute,
    turn: HeldTurn,
}

impl Transmit for ModemPipe<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let hex_apdu = hex::encode_upper(command);
        let (cmd, prefix) = match self.route {
            ChannelRoute::Cla(_) => (
                format!("AT+CSIM={},\"{hex_apdu}\"", hex_apdu.len()),
                "+CSIM:",
            ),
            ChannelRoute::Session(id) => (
                format!("AT+CGLA={id},{},\"{hex_apdu}\"", hex_apdu.len()),
                "+CGLA:",
            ),
        };
        let info = match self.port.command_retrying_busy(&cmd, prefix) {
            Ok(info) => info,
            Err(AtError::Error) if self.route.cla_channel() != 0 => {
                // Quectel EG25: AT+CSIM works on the basic channel only.
                warn!(
                    "modem {}: AT+CSIM on logical channel {} answered ERROR: this modem takes \
                     AT+CSIM on the basic channel only; use at_mode = \"auto\" or \"cgla\" \
                     (AT+CCHO/AT+CGLA) if it has them, else applet.logical_channel = false",
                    self.port.name,
                    self.route.cla_channel()
                );
                return Err(TransportError::Other(format!(
                    "modem refuses AT+CSIM on logical channel {}",
                    self.route.cla_channel()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(parse_apdu_answer(&info)?)
    }

    fn max_command_data(&self) -> usize {
        // `AT+CGLA=<id>,<len>,"` + `"` is at most 24 characters (+CSIM's is shorter); every
        // APDU byte takes two hex digits; 5 header bytes and 1 Le byte besides the data.
        let room = self.port.max_command_len.saturating_sub(24) / 2;
        room.saturating_sub(6).min(255)
    }
}

impl Turn for ModemPipe<'_> {
    fn set_route(&mut self, route: ChannelRoute) -> Result<(), TransportError> {
        if matches!(route, ChannelRoute::Session(_)) && *self.mode == AtMode::Csim {
            return Err(TransportError::UnsupportedRoute);
        }
        self.route = route;
        Ok(())
    }

    fn open_session(&mut self, aid: &[u8]) -> Result<SessionOpen, TransportError> {
        if *self.mode == AtMode::Csim {
            return Ok(SessionOpen::NotManaged);
        }
        match self
            .port
            .command_retrying_busy(&format!("AT+CCHO=\"{}\"", hex::encode_upper(aid)), "+CCHO:")
        {
            // Kept as written: some modems answer with an opaque hex string.
            Ok(id) => SessionId::parse(id.trim())
                .map(SessionOpen::Opened)
                .ok_or_else(|| TransportError::Other(format!("+CCHO answered {id:?}"))),
            // The modem does not know AT+CCHO: use AT+CSIM unless told to use CGLA only.
            Err(AtError::Error) if *self.mode == AtMode::Auto => {
                debug!(
                    "modem {}: no AT+CCHO; falling back to AT+CSIM",
                    self.port.name
                );
                *self.mode = AtMode::Csim;
                Ok(SessionOpen::NotManaged)
            }
            Err(AtError::Cme(CME_OPERATION_NOT_ALLOWED)) => {
                warn!(
                    "modem {}: AT+CCHO refused with +CME ERROR: {CME_OPERATION_NOT_ALLOWED}: the SIM has \
                     no free logical channel (or, on a MediaTek-based module, the SIM sleeps: \
                     setup_commands = [\"{MEDIATEK_SIM_AWAKE}\"])",
                    self.port.name
                );
                Ok(SessionOpen::NoChannelFree)
            }
            Err(AtError::Cme(n)) if n != CME_SIM_NOT_INSERTED && n != CME_SIM_FAILURE => {
                debug!(
                    "modem {}: AT+CCHO of {} refused (+CME ERROR: {n})",
                    self.port.name,
                    hex::encode_upper(aid)
                );
                Ok(SessionOpen::NoApplet)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn close_session(&mut self, session: SessionId) -> Result<(), TransportError> {
        if *self.cchc_missing {
            debug!(
                "modem {}: no AT+CCHC; session {session} stays open",
                self.port.name
            );
            return Ok(());
        }
        match self.port.command(&format!("AT+CCHC={session}"), None) {
            Ok(_) => Ok(()),
            // No AT+CCHC (Sierra EM9191): the modem offers no way to close its session (its
            // channel number is not known, so MANAGE CHANNEL cannot name it). The channel
            // stays the one the endpoint's note shares, reused by every process.
            Err(AtError::Error) => {
                info!(
                    "modem {}: no AT+CCHC; session {session} stays open (the shared channel is \
                     reused by every process)",
                    self.port.name
                );
                *self.cchc_missing = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn read_note(&mut self) -> Option<Vec<u8>> {
        Some(self.turn.read_note())
    }

    fn write_note(&mut self, note: &[u8]) {
        self.turn.write_note(note);
    }
}

impl ModemConnection {
    /// Opens the port (shared with other processes) and sets the modem up on a turn of its
    /// own.
    pub fn open(config: &ModemSettings) -> Result<ModemConnection, TransportError> {
        let lock = match TurnLock::for_tty(&config.device, config.lock_dir.as_deref()) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                debug!("modem {}: not present ({e})", config.device);
                return Err(TransportError::NoCard);
            }
            Err(e) => {
                warn!(
                    "modem {}: cannot open the port for locking: {e}",
                    config.device
                );
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    return Err(TransportError::PermissionDenied(format!(
                        "modem {}: permission denied opening its lock files (in /run/lock or \
                         the configured lock_dir, and in the temporary directory): {e}; run \
                         `iotsafe-pkcs11 doctor`",
                        config.device
                    )));
                }
                return Err(TransportError::NoCard);
            }
        };
        // Opened on a turn: opening sets the port's line settings and reads them back, and
        // another process (or module instance) opening it at the same moment would make that
        // check fail.
        let (port, manufacturer) = {
            let _turn = lock.turn().map_err(lock_failed)?;
            let mut port = AtPort::open(config)?;
            port.set_up()?;
            let manufacturer = port.identification("AT+CGMI");
            for cmd in setup_commands(config, manufacturer.as_deref()) {
                match port.command(&cmd, None) {
                    Ok(_) => debug!("modem {}: {cmd} done", config.device),
                    Err(e) => warn!("modem {}: {cmd} failed: {e:?}", config.device),
                }
            }
            (port, manufacturer)
        };
        Ok(ModemConnection {
            port,
            lock,
            mode: config.at_mode,
            manufacturer,
            cchc_missing: false,
        })
    }
}

/// Which SIM-access commands of 3GPP TS 27.007 a modem says it has (their test commands,
/// `AT+CCHO=?` and so on, answered `OK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimAccessCommands {
    pub ccho: bool,
    pub cgla: bool,
    pub cchc: bool,
    pub csim: bool,
}

impl ModemConnection {
    /// Asks the modem, on a turn of its own, which SIM-access commands it has. A modem that
    /// stops answering is an error; `ERROR` or `+CME ERROR` to a test command means "no".
    pub fn sim_access_commands(&mut self) -> Result<SimAccessCommands, TransportError> {
        let _turn = self.lock.turn().map_err(lock_failed)?;
        let mut has = |name: &str| match self.port.command(&format!("AT{name}=?"), None) {
            Ok(_) => Ok(true),
            Err(AtError::Error | AtError::Cme(_)) => Ok(false),
            Err(e) => Err(TransportError::from(e)),
        };
        Ok(SimAccessCommands {
            ccho: has("+CCHO")?,
            cgla: has("+CGLA")?,
            cchc: has("+CCHC")?,
            csim: has("+CSIM")?,
        })
    }

    /// What `AT+CGMM` says (the model), on a turn of its own.
    pub fn model(&mut self) -> Option<String> {
        let _turn = self.lock.turn().ok()?;
        self.port.identification("AT+CGMM")
    }
}

/// The configured set-up commands, and those of a maker recognised by its `AT+CGMI`.
fn setup_commands(config: &ModemSettings, manufacturer: Option<&str>) -> Vec<String> {
    let mut commands = config.setup_commands.clone();
    let mediatek = manufacturer.is_some_and(|m| m.to_ascii_lowercase().contains("mediatek"));
    if mediatek
        && !commands
            .iter()
            .any(|c| c.eq_ignore_ascii_case(MEDIATEK_SIM_AWAKE))
    {
        commands.push(MEDIATEK_SIM_AWAKE.to_string());
    }
    commands
}

fn lock_failed(e: std::io::Error) -> TransportError {
    TransportError::Other(format!("cannot lock the modem port: {e}"))
}

impl CardConnection for ModemConnection {
    fn transaction(&mut self, route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        let turn = self.lock.turn().map_err(lock_failed)?;
        Ok(Box::new(ModemPipe {
            port: &mut self.port,
            mode: &mut self.mode,
            cchc_missing: &mut self.cchc_missing,
            route,
            turn,
        }))
    }

    fn reconnect(&mut self) -> Result<(), TransportError> {
        // The modem keeps its own link to the SIM; channels are re-opened by the caller.
        match self.port.broken {
            Some(_) => Err(TransportError::CardRemoved),
            None => Ok(()),
        }
    }

    fn is_present(&mut self) -> bool {
        self.port.broken.is_none() && Path::new(&self.port.name).exists()
    }

    fn manufacturer(&self) -> Option<String> {
        self.manufacturer.clone()
    }

    fn disconnect(self: Box<Self>) {}
}
