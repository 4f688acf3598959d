//! One modem's SIM over QMI, as a card connection: a UIM client id shared by every process of
//! this module on the device (kept in a file beside the turn lock, so one-shot processes and
//! `kill -9` leak none), logical channels with Open Logical Channel / Logical Channel, APDUs
//! with Send APDU (61xx fetched with GET RESPONSE here, 6Cxx resent with the right Le), each
//! operation inside one turn on the device's lock.

use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{debug, warn};

use super::link::{Fault, QmiLink};
use super::message::{CTL, Response, UIM};
use super::uim::{
    CTL_ALLOCATE_CID, CTL_INTERNAL_PROXY_OPEN, CTL_RELEASE_CID, UIM_LOGICAL_CHANNEL,
    UIM_OPEN_LOGICAL_CHANNEL, UIM_SEND_APDU, aid_tlv, apdu_response, apdu_tlv, cla_on_channel,
    error, error_name,
};
use crate::transport::control_device::ControlStream;
use crate::transport::sources::ControlSettings;
use crate::transport::turn_lock::{HeldTurn, Presence, TurnLock};
use crate::transport::{
    CardConnection, ChannelRoute, SessionId, SessionOpen, Transmit, TransportError, Turn,
};

/// ISO 7816-4 "logical channel not supported": the SW a card gives on a channel it has not
/// open.
const CHANNEL_NOT_OPEN: [u8; 2] = [0x68, 0x81];

/// Open Logical Channel's FileControlInformation value asking for the FCI (SELECT P2 = 00).
const FCI: u8 = 2;

/// GET RESPONSE rounds after one command at most (a card that keeps answering 61xx).
const MAX_GET_RESPONSES: usize = 64;

/// One modem's SIM over QMI.
pub struct QmiConnection {
    uim: UimClient,
    lock: TurnLock,
    /// Registers this connection as a user of the device (the last one releases the client
    /// id).
    presence: Option<Presence>,
}

/// The UIM service as this module uses it: the link, the shared client id, the SIM slot.
/// The file beside the device's lock files that holds the shared UIM client id.
const CLIENT_ID_FILE: &str = "qmi-uim-cid";

struct UimClient {
    link: QmiLink,
    device: String,
    /// Holds the UIM client id every process of this module on the device uses.
    client_id_file: PathBuf,
    sim_slot: u8,
    /// Channels this connection opened or got an answer on: one of them vanishing means the SIM
    /// was reset underneath, another (a recorded channel of an earlier modem session) is only
    /// a stale note.
    used_channels: Vec<u8>,
    timeout: Duration,
    /// Why the link is unusable (the device closed, or it does not speak QMI).
    broken: Option<String>,
}

/// One operation's turn on the modem: APDUs go to `route` until it is dropped.
struct QmiTurn<'a> {
    uim: &'a mut UimClient,
    route: ChannelRoute,
    turn: HeldTurn,
}

fn lock_failed(e: std::io::Error) -> TransportError {
    TransportError::Other(format!("cannot lock the QMI control device: {e}"))
}

impl QmiConnection {
    /// Connects through the proxy when one listens on `proxy_socket`, else opens the device;
    /// makes sure of a UIM client id on a turn of its own.
    pub fn open(settings: &ControlSettings) -> Result<QmiConnection, TransportError> {
        let device = &settings.device;
        let lock = match TurnLock::for_tty(device, settings.lock_dir.as_deref()) {
            Ok(lock) => lock,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                debug!("QMI modem {device}: not present ({e})");
                return Err(TransportError::NoCard);
            }
            Err(e) => {
                warn!("QMI modem {device}: cannot set up its lock files: {e}");
                return Err(TransportError::NoCard);
            }
        };
        let link = connect(settings)?;
        let (presence, _) = lock.join(Duration::MAX);
        // Made now, with the lock files' mode and group, so that every user who may take
        // turns on the device may also record a client id in it.
        if let Err(e) = lock.open_side_file(CLIENT_ID_FILE) {
            debug!("QMI modem {device}: the client id file: {e}");
        }
        let mut uim = UimClient {
            link,
            device: device.clone(),
            client_id_file: lock.side_path(CLIENT_ID_FILE),
            sim_slot: settings.sim_slot,
            used_channels: Vec::new(),
            timeout: settings.timeout,
            broken: None,
        };
        {
            let _turn = lock.turn().map_err(lock_failed)?;
            match uim.client_id() {
                Ok(_) => {}
                Err(Fault::Timeout) => {
                    warn!(
                        "QMI modem {device}: no QMI answer within {:?}: not a QMI control device, \
                         or a modem that does not answer",
                        settings.timeout
                    );
                    return Err(TransportError::Timeout);
                }
                Err(f) => return Err(uim.fault("allocating a UIM client id", f)),
            }
        }
        Ok(QmiConnection {
            uim,
            lock,
            presence,
        })
    }
}

/// The proxy when one listens (with its open handshake), else the device node.
fn connect(settings: &ControlSettings) -> Result<QmiLink, TransportError> {
    let device = &settings.device;
    if let Some(name) = &settings.proxy_socket {
        match ControlStream::connect_proxy(name) {
            Ok(stream) => {
                let mut link = QmiLink::new(stream, settings.timeout);
                proxy_open(&mut link, name, device)?;
                debug!("QMI modem {device}: through the proxy @{name}");
                return Ok(link);
            }
            Err(e) => debug!("QMI modem {device}: no proxy on @{name} ({e}); opening the device"),
        }
    }
    match ControlStream::open_device(device) {
        Ok(stream) => Ok(QmiLink::new(stream, settings.timeout)),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(TransportError::NoCard),
        Err(e) => {
            warn!("QMI modem {device}: cannot open the control device: {e}");
            Err(TransportError::permission(device, &e).unwrap_or_else(|| {
                TransportError::Other(format!("cannot open the QMI control device {device}: {e}"))
            }))
        }
    }
}

/// libqmi's internal proxy open: the proxy opens `device` for us, or hangs up.
fn proxy_open(link: &mut QmiLink, name: &str, device: &str) -> Result<(), TransportError> {
    let refused = |why: String| {
        warn!("QMI modem {device}: the proxy @{name} {why}");
        TransportError::Other(format!("qmi-proxy @{name} {why}"))
    };
    match link.exchange(
        CTL,
        0,
        CTL_INTERNAL_PROXY_OPEN,
        &[(0x01, device.as_bytes())],
    ) {
        Ok(_) => Ok(()),
        Err(Fault::Closed) => Err(refused(format!(
            "closed the connection without answering the open of {device} (it could not open \
             the device, or does not accept this user)"
        ))),
        Err(Fault::Timeout) => Err(refused(format!("did not answer the open of {device}"))),
        Err(Fault::Qmi { code, .. }) => Err(refused(format!(
            "refused to open {device}: QMI {} ({code})",
            error_name(code)
        ))),
        Err(Fault::NotQmi(bytes)) => Err(refused(format!(
            "answered with bytes that are no QMI ({})",
            hex::encode(bytes)
        ))),
        Err(Fault::Io(e)) => Err(refused(format!("failed: {e}"))),
        Err(Fault::Malformed) => Err(refused("answered without a result".into())),
    }
}

impl UimClient {
    /// The shared UIM client id: the one in the file, else a new one (recorded there).
    /// Called during a turn only.
    fn client_id(&mut self) -> Result<u8, Fault> {
        if let Some(id) = std::fs::read_to_string(&self.client_id_file)
            .ok()
            .and_then(|t| t.trim().parse::<u8>().ok())
            .filter(|id| (1..=254).contains(id))
        {
            return Ok(id);
        }
        self.allocate_client_id()
    }

    fn allocate_client_id(&mut self) -> Result<u8, Fault> {
        let r = self
            .link
            .exchange(CTL, 0, CTL_ALLOCATE_CID, &[(0x01, &[UIM])])?;
        let Some(&[UIM, id]) = r.tlv(0x01) else {
            return Err(Fault::Malformed);
        };
        debug!("QMI modem {}: allocated UIM client id {id}", self.device);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o660)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.client_id_file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes()));
        if let Err(e) = written {
            warn!(
                "QMI modem {}: cannot record the UIM client id in {}: {e}",
                self.device,
                self.client_id_file.display()
            );
        }
        Ok(id)
    }

    /// One UIM request on the shared client id; a stale id (the modem restarted, or someone
    /// released it) is replaced once.
    fn request(&mut self, message: u16, tlvs: &[(u8, &[u8])]) -> Result<Response, Fault> {
        if let Some(why) = &self.broken {
            return Err(Fault::Io(std::io::Error::other(why.clone())));
        }
        let id = self.client_id()?;
        match self.link.exchange(UIM, id, message, tlvs) {
            Err(Fault::Qmi {
                code: error::INVALID_CLIENT_ID,
                ..
            }) => {
                debug!(
                    "QMI modem {}: UIM client id {id} is no longer allocated; allocating another",
                    self.device
                );
                let id = self.allocate_client_id()?;
                self.link.exchange(UIM, id, message, tlvs)
            }
            other => other,
        }
    }

    /// The transport error for `fault` while doing `what`, with a log line.
    fn fault(&mut self, what: &str, fault: Fault) -> TransportError {
        let device = &self.device;
        match fault {
            Fault::Timeout => {
                warn!(
                    "QMI modem {device}: no answer to {what} within {:?}",
                    self.timeout
                );
                TransportError::Timeout
            }
            Fault::Closed => {
                warn!("QMI modem {device}: the control device closed during {what}");
                self.broken = Some(format!("{device}: the QMI control device closed"));
                TransportError::CardRemoved
            }
            Fault::NotQmi(bytes) => {
                warn!(
                    "QMI modem {device}: not a QMI control device: it answered {what} with {}",
                    hex::encode(&bytes)
                );
                let why = format!("{device} is not a QMI control device");
                self.broken = Some(why.clone());
                TransportError::Other(why)
            }
            Fault::Io(e) => {
                warn!("QMI modem {device}: {what}: {e}");
                TransportError::Other(format!("{device}: {what}: {e}"))
            }
            Fault::Qmi { code, sw } => {
                let sw = sw.map(|s| format!(", SW {}", hex::encode_upper(s)));
                let sw = sw.unwrap_or_default();
                match code {
                    error::DEVICE_NOT_READY | error::UIM_UNINITIALIZED => {
                        warn!(
                            "QMI modem {device}: {what}: SIM absent or not ready (QMI {} ({code}){sw})",
                            error_name(code)
                        );
                        TransportError::CardRemoved
                    }
                    _ => {
                        warn!(
                            "QMI modem {device}: {what} failed: QMI {} ({code}){sw}",
                            error_name(code)
                        );
                        TransportError::Other(format!(
                            "{what} failed: QMI {} ({code}){sw}",
                            error_name(code)
                        ))
                    }
                }
            }
            Fault::Malformed => {
                warn!("QMI modem {device}: malformed answer to {what}");
                TransportError::Other(format!("{device}: malformed QMI answer to {what}"))
            }
        }
    }

    /// Send APDU once: the card's answer (data ‖ SW1 SW2).
    fn send_apdu(
        &mut self,
        channel: Option<u8>,
        command: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        let slot = [self.sim_slot];
        let apdu = apdu_tlv(command);
        let mut tlvs: Vec<(u8, &[u8])> = vec![(0x01, &slot), (0x02, &apdu)];
        let channel_tlv = channel.map(|c| [c]);
        if let Some(c) = &channel_tlv {
            tlvs.push((0x10, c));
        }
        match self.request(UIM_SEND_APDU, &tlvs) {
            Ok(r) => {
                if let Some(c) = channel
                    && !self.used_channels.contains(&c)
                {
                    self.used_channels.push(c);
                }
                r.tlv(0x10)
                    .and_then(apdu_response)
                    .ok_or_else(|| self.fault("Send APDU", Fault::Malformed))
            }
            Err(Fault::Qmi { code, .. })
                if channel.is_some()
                    && matches!(
                        code,
                        error::INVALID_ARGUMENT | error::NO_EFFECT | error::INCOMPATIBLE_STATE
                    ) =>
            {
                // What the card itself says on a closed channel, so that the layer above
                // opens a new one (an operation's retry, a recorded channel's check).
                let ch = channel.unwrap_or(0);
                if self.used_channels.contains(&ch) {
                    warn!(
                        "QMI modem {}: logical channel {ch} is gone (Send APDU: QMI {} ({code})); \
                         the SIM was reset underneath; answering 6881",
                        self.device,
                        error_name(code)
                    );
                    self.used_channels.retain(|&c| c != ch);
                } else {
                    debug!(
                        "QMI modem {}: the recorded logical channel {ch} is not open (QMI {} \
                         ({code})); answering 6881",
                        self.device,
                        error_name(code)
                    );
                }
                Ok(CHANNEL_NOT_OPEN.to_vec())
            }
            Err(f) => Err(self.fault("Send APDU", f)),
        }
    }

    /// Gives the UIM client id back when no other connection of this module uses the device.
    fn release_client_id(&mut self) {
        let Some(id) = std::fs::read_to_string(&self.client_id_file)
            .ok()
            .and_then(|t| t.trim().parse::<u8>().ok())
        else {
            return;
        };
        let _ = std::fs::remove_file(&self.client_id_file);
        match self
            .link
            .exchange(CTL, 0, CTL_RELEASE_CID, &[(0x01, &[UIM, id])])
        {
            Ok(_) => debug!("QMI modem {}: released UIM client id {id}", self.device),
            Err(e) => debug!(
                "QMI modem {}: releasing UIM client id {id}: {e:?}",
                self.device
            ),
        }
    }
}

impl Transmit for QmiTurn<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        if command.len() < 4 {
            return Err(TransportError::Other(format!(
                "APDU of {} bytes",
                command.len()
            )));
        }
        let mut command = command.to_vec();
        let channel = match self.route {
            ChannelRoute::Session(id) => {
                let ch = id
                    .as_number()
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|n| (1..=19).contains(n))
                    .ok_or_else(|| {
                        TransportError::Other(format!("QMI channel {id} is not 1..19"))
                    })?;
                command[0] = cla_on_channel(command[0], ch);
                Some(ch)
            }
            // The channel is in CLA already; Send APDU without a channel id goes as it is.
            ChannelRoute::Cla(_) => None,
        };
        let mut answer = self.uim.send_apdu(channel, &command)?;
        // 6Cxx: the same command again with Le = xx (once).
        if let [.., 0x6C, le] = answer[..] {
            if command.len() == 4 {
                command.push(le);
            } else if let Some(last) = command.last_mut() {
                *last = le;
            }
            answer = self.uim.send_apdu(channel, &command)?;
        }
        // 61xx: the modem leaves the GET RESPONSE to us.
        let mut data = Vec::new();
        let mut rounds = 0;
        while let [.., 0x61, available] = answer[..] {
            rounds += 1;
            if rounds > MAX_GET_RESPONSES {
                return Err(TransportError::Other(
                    "the card keeps answering 61xx to GET RESPONSE".into(),
                ));
            }
            data.extend_from_slice(&answer[..answer.len() - 2]);
            let get_response = [command[0] & !0x10, 0xC0, 0x00, 0x00, available];
            answer = self.uim.send_apdu(channel, &get_response)?;
        }
        if data.is_empty() {
            Ok(answer)
        } else {
            data.extend_from_slice(&answer);
            Ok(data)
        }
    }
}

impl Turn for QmiTurn<'_> {
    fn set_route(&mut self, route: ChannelRoute) -> Result<(), TransportError> {
        self.route = route;
        Ok(())
    }

    fn open_session(&mut self, aid: &[u8]) -> Result<SessionOpen, TransportError> {
        let slot = [self.uim.sim_slot];
        let aid_value = aid_tlv(aid);
        // FileControlInformation 2 (FCI): the modem selects with P2 = 00, the SELECT this module
        // sends itself on other transports (modems default to FCP, P2 = 04).
        let opened = self.uim.request(
            UIM_OPEN_LOGICAL_CHANNEL,
            &[(0x01, &slot), (0x10, &aid_value), (0x11, &[FCI])],
        );
        let device = self.uim.device.clone();
        match opened {
            Ok(r) => match r.tlv(0x10) {
                Some(&[ch]) if (1..=19).contains(&ch) => {
                    debug!(
                        "QMI modem {device}: channel {ch} open on {}",
                        hex::encode_upper(aid)
                    );
                    if !self.uim.used_channels.contains(&ch) {
                        self.uim.used_channels.push(ch);
                    }
                    Ok(SessionOpen::Opened(SessionId::number(u32::from(ch))))
                }
                _ => Err(self.uim.fault("Open Logical Channel", Fault::Malformed)),
            },
            Err(Fault::Qmi { code, sw })
                if matches!(code, error::SIM_FILE_NOT_FOUND | error::ACCESS_DENIED)
                    || sw == Some([0x6A, 0x82]) =>
            {
                debug!(
                    "QMI modem {device}: no applet {} (QMI {} ({code}), SW {})",
                    hex::encode_upper(aid),
                    error_name(code),
                    sw.map(hex::encode_upper).unwrap_or_default()
                );
                Ok(SessionOpen::NoApplet)
            }
            Err(Fault::Qmi {
                code: error::INSUFFICIENT_RESOURCES,
                sw,
            }) => {
                warn!(
                    "QMI modem {device}: Open Logical Channel refused with InsufficientResources \
                     (SW {}): the SIM has no free logical channel",
                    sw.map(hex::encode_upper).unwrap_or_default()
                );
                Ok(SessionOpen::NoChannelFree)
            }
            Err(Fault::Qmi {
                code: error::NOT_SUPPORTED | error::INVALID_QMI_COMMAND,
                ..
            }) => {
                warn!(
                    "QMI modem {device}: the modem has no Open Logical Channel; using MANAGE \
                     CHANNEL on the basic channel"
                );
                Ok(SessionOpen::NotManaged)
            }
            Err(f) => Err(self.uim.fault("Open Logical Channel", f)),
        }
    }

    fn close_session(&mut self, session: SessionId) -> Result<(), TransportError> {
        let Some(ch) = session.as_number().and_then(|n| u8::try_from(n).ok()) else {
            return Ok(());
        };
        let slot = [self.uim.sim_slot];
        match self
            .uim
            .request(UIM_LOGICAL_CHANNEL, &[(0x01, &slot), (0x11, &[ch])])
        {
            Ok(_) => Ok(()),
            Err(Fault::Qmi {
                code: error::INVALID_ARGUMENT | error::NO_EFFECT,
                ..
            }) => {
                debug!(
                    "QMI modem {}: channel {ch} was closed already",
                    self.uim.device
                );
                Ok(())
            }
            Err(f) => Err(self.uim.fault("Logical Channel (close)", f)),
        }
    }

    fn read_note(&mut self) -> Option<Vec<u8>> {
        Some(self.turn.read_note())
    }

    fn write_note(&mut self, note: &[u8]) {
        self.turn.write_note(note);
    }
}

impl CardConnection for QmiConnection {
    fn transaction(&mut self, route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        let turn = self.lock.turn().map_err(lock_failed)?;
        Ok(Box::new(QmiTurn {
            uim: &mut self.uim,
            route,
            turn,
        }))
    }

    fn reconnect(&mut self) -> Result<(), TransportError> {
        // The modem keeps its own link to the SIM; channels are re-opened by the caller.
        match self.uim.broken {
            Some(_) => Err(TransportError::CardRemoved),
            None => Ok(()),
        }
    }

    fn is_present(&mut self) -> bool {
        self.uim.broken.is_none() && Path::new(&self.uim.device).exists()
    }

    fn disconnect(mut self: Box<Self>) {
        if self.uim.broken.is_some() {
            return;
        }
        let Ok(_turn) = self.lock.turn() else {
            return;
        };
        drop(self.presence.take());
        if self.lock.nobody_joined() {
            self.uim.release_client_id();
        }
    }
}
