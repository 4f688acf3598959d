//! One modem's SIM over MBIM: the control device opened directly or through the proxy, the
//! function opened only when it says it is not (other programs may share it), and one turn on
//! the device's lock per operation, as the AT transport does.

use std::path::Path;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::message::{
    self, BASIC_CONNECT, ERROR_NOT_OPENED, OPEN_DONE, PROXY_CONTROL, QUERY, Reply, ReplyReader,
    SET, Service, UICC_SERVICE,
};
use super::uicc::{self, status};
use crate::transport::control_device::ControlStream;
use crate::transport::sources::ControlSettings;
use crate::transport::turn_lock::{HeldTurn, TurnLock};
use crate::transport::{
    CardConnection, ChannelRoute, SessionId, SessionOpen, Transmit, TransportError, Turn,
};

/// The channel group this module tags its logical channels with ("IOTS").
pub(super) const CHANNEL_GROUP: u32 = 0x5354_4F49;
/// SELECT P2 of OPEN_CHANNEL: first or only occurrence, return FCI (what AT+CCHO selects with).
const SELECT_P2: u8 = 0x00;
/// How often a Busy answer is retried before giving up.
const BUSY_RETRIES: u32 = 5;

/// What the byte stream carried, as the connection sees it.
#[derive(Debug)]
enum LinkError {
    Timeout,
    /// The device or the proxy closed the stream.
    Closed,
    /// Bytes came, but not MBIM.
    NotMbim(String),
    Io(std::io::Error),
}

impl From<LinkError> for TransportError {
    fn from(e: LinkError) -> TransportError {
        match e {
            LinkError::Timeout => TransportError::Timeout,
            LinkError::Closed => TransportError::CardRemoved,
            LinkError::NotMbim(s) => TransportError::Other(s),
            LinkError::Io(e) => TransportError::Other(format!("MBIM control device: {e}")),
        }
    }
}

/// The open stream and the request state.
struct Link {
    stream: ControlStream,
    device: String,
    timeout: Duration,
    reader: ReplyReader,
    /// The next TransactionId; the process id in the high half keeps processes sharing the
    /// device (and the proxy's clients) from taking each other's answers.
    next_tid: u32,
    via_proxy: bool,
}

impl Link {
    fn tid(&mut self) -> u32 {
        let tid = self.next_tid;
        self.next_tid = (tid & 0xFFFF_0000) | ((tid.wrapping_add(1)) & 0xFFFF);
        if self.next_tid & 0xFFFF == 0 {
            self.next_tid |= 1;
        }
        tid
    }

    /// Drops whatever is waiting: nothing sent before this turn is ours.
    fn start_turn(&mut self) {
        self.stream.discard_pending();
        self.reader.clear();
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        let deadline = Instant::now() + self.timeout;
        self.stream.send(bytes, deadline).map_err(io_error)
    }

    /// Waits for the reply with `tid`; replies to other transactions (late answers,
    /// indications) are dropped.
    fn wait_for(&mut self, tid: u32) -> Result<Reply, LinkError> {
        let deadline = Instant::now() + self.timeout;
        let mut garbage = None;
        loop {
            loop {
                match self.reader.next_reply() {
                    Ok(Some(reply)) if reply.tid() == tid => return Ok(reply),
                    Ok(Some(other)) => debug!(
                        "MBIM {}: dropped a reply to another transaction ({:#x})",
                        self.device,
                        other.tid()
                    ),
                    Ok(None) => break,
                    Err(e) => garbage = Some(e.0),
                }
            }
            // A device that never stops talking (but not to us) must not hold us past it.
            if Instant::now() >= deadline {
                return Err(expired(&self.device, garbage));
            }
            let mut bytes = Vec::new();
            match self.stream.receive(&mut bytes, deadline) {
                Ok(()) => self.reader.push(&bytes),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(expired(&self.device, garbage));
                }
                Err(e) => return Err(io_error(e)),
            }
        }
    }

    /// OPEN, answered with OPEN_DONE.
    fn open_function(&mut self) -> Result<(), TransportError> {
        let tid = self.tid();
        self.send(&message::open(tid))?;
        match self.wait_for(tid)? {
            Reply::Done {
                kind: OPEN_DONE,
                status: status::SUCCESS,
                ..
            } => {
                debug!("MBIM {}: function opened", self.device);
                Ok(())
            }
            other => Err(TransportError::Other(format!(
                "MBIM {}: OPEN answered {other:?}",
                self.device
            ))),
        }
    }

    /// One command: (status, information buffer). A function that is not open (never was, or
    /// was reset by ModemManager) is opened and the command sent again; Busy is retried.
    fn request(
        &mut self,
        service: &Service,
        cid: u32,
        kind: u32,
        info: &[u8],
    ) -> Result<(u32, Vec<u8>), TransportError> {
        let mut reopened = false;
        let mut busy = 0;
        loop {
            let tid = self.tid();
            self.send(&message::command(tid, service, cid, kind, info))
                .map_err(|e| self.log_link_error(e))?;
            match self.wait_for(tid).map_err(|e| self.log_link_error(e))? {
                Reply::FunctionError {
                    code: ERROR_NOT_OPENED,
                    ..
                } if !reopened => {
                    debug!("MBIM {}: function not open; sending OPEN", self.device);
                    reopened = true;
                    self.open_function()?;
                }
                Reply::CommandDone {
                    status: status::BUSY,
                    ..
                } if busy < BUSY_RETRIES => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(20 * u64::from(busy)));
                }
                Reply::CommandDone {
                    service: s,
                    cid: c,
                    status,
                    info,
                    ..
                } if s == *service && c == cid => return Ok((status, info)),
                Reply::FunctionError {
                    code: ERROR_NOT_OPENED,
                    ..
                } => {
                    // Seen through mbim-proxy 1.28 once a program closed the device behind it:
                    // the proxy answers OPEN itself and NotOpened to everything else until the
                    // device goes away.
                    warn!(
                        "MBIM {}: the function stays closed after OPEN{}",
                        self.device,
                        if self.via_proxy {
                            " (the proxy does not reopen the device)"
                        } else {
                            ""
                        }
                    );
                    return Err(TransportError::Other(format!(
                        "MBIM {}: the function is not open",
                        self.device
                    )));
                }
                other => {
                    warn!("MBIM {}: unexpected answer {other:?}", self.device);
                    return Err(TransportError::Other(format!(
                        "MBIM {}: unexpected answer to CID {cid}",
                        self.device
                    )));
                }
            }
        }
    }

    fn log_link_error(&self, e: LinkError) -> LinkError {
        match &e {
            LinkError::Timeout => {
                warn!("MBIM {}: no answer within {:?}", self.device, self.timeout)
            }
            LinkError::Closed => warn!("MBIM {}: the control device closed", self.device),
            LinkError::NotMbim(s) => warn!("{s}"),
            LinkError::Io(err) => warn!("MBIM {}: {err}", self.device),
        }
        e
    }

    /// The ATR query: Ok(true) with a SIM, Ok(false) without.
    fn probe_sim(&mut self) -> Result<bool, TransportError> {
        let (st, info) = self.request(&UICC_SERVICE, uicc::CID_ATR, QUERY, &[])?;
        match st {
            status::SUCCESS => {
                if let Some(atr) = uicc::parse_atr(&info) {
                    debug!("MBIM {}: ATR {}", self.device, hex::encode_upper(atr));
                }
                Ok(true)
            }
            status::SIM_NOT_INSERTED | status::BAD_SIM | status::NOT_INITIALIZED => Ok(false),
            other => Err(status_error(&self.device, "ATR", other)),
        }
    }
}

/// The deadline passed: a timeout, or a device that sent only what is not MBIM.
fn expired(device: &str, garbage: Option<String>) -> LinkError {
    match garbage {
        Some(g) => LinkError::NotMbim(format!("{device} does not speak MBIM ({g})")),
        None => LinkError::Timeout,
    }
}

fn io_error(e: std::io::Error) -> LinkError {
    match e.kind() {
        std::io::ErrorKind::TimedOut => LinkError::Timeout,
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionReset => LinkError::Closed,
        _ => LinkError::Io(e),
    }
}

/// A non-success status of `what`, as a transport error, with its log line.
fn status_error(device: &str, what: &str, st: u32) -> TransportError {
    match st {
        status::SIM_NOT_INSERTED | status::BAD_SIM => {
            warn!("MBIM {device}: {what}: SIM not inserted or not usable (status {st})");
            TransportError::CardRemoved
        }
        status::INVALID_LOGICAL_CHANNEL => {
            warn!("MBIM {device}: {what}: the logical channel is gone (InvalidLogicalChannel)");
            TransportError::CardReset
        }
        _ => {
            warn!("MBIM {device}: {what} failed with status {st:#x}");
            TransportError::Other(format!("MBIM {what} failed with status {st:#x}"))
        }
    }
}

/// One modem's SIM over MBIM.
pub struct MbimConnection {
    link: Link,
    lock: TurnLock,
    manufacturer: Option<String>,
    /// The SIM answered SimNotInserted / BadSim (or the stream closed) since the last probe.
    sim_gone: bool,
    /// Channels that worked on this connection: one of them found gone means the SIM was
    /// reset underneath (ModemManager, a power cycle); a channel another process recorded that
    /// is gone before it ever worked here is only a failed probe.
    live_channels: std::collections::BTreeSet<u32>,
}

impl MbimConnection {
    /// Opens the control device (through the proxy when configured and running), checks on a
    /// turn that the function answers and a SIM is there. `NoCard` when the device node is
    /// missing or the modem has no SIM.
    pub fn open(settings: &ControlSettings) -> Result<MbimConnection, TransportError> {
        let device = settings.device.as_str();
        let lock = match TurnLock::for_tty(device, settings.lock_dir.as_deref()) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                debug!("MBIM {device}: not present ({e})");
                return Err(TransportError::NoCard);
            }
            Err(e) => {
                warn!("MBIM {device}: cannot use the device for locking: {e}");
                return Err(TransportError::NoCard);
            }
        };
        let _turn = lock.turn().map_err(lock_failed)?;
        let stream = open_stream(settings)?;
        let via_proxy = stream.is_proxy();
        let mut link = Link {
            stream,
            device: settings.device.clone(),
            timeout: settings.timeout,
            reader: ReplyReader::default(),
            next_tid: (std::process::id() << 16) | 1,
            via_proxy,
        };
        if via_proxy {
            proxy_handshake(&mut link, settings)?;
            // Answered by the proxy itself; it keeps the device open.
            link.open_function()?;
        }
        if !link.probe_sim()? {
            debug!("MBIM {device}: no SIM");
            return Err(TransportError::NoCard);
        }
        let manufacturer = match link.request(&BASIC_CONNECT, uicc::CID_DEVICE_CAPS, QUERY, &[]) {
            Ok((status::SUCCESS, info)) => uicc::parse_hardware_info(&info),
            _ => None,
        };
        debug!(
            "MBIM {device}: connected{}",
            if via_proxy { " through the proxy" } else { "" }
        );
        Ok(MbimConnection {
            link,
            lock,
            manufacturer,
            sim_gone: false,
            live_channels: Default::default(),
        })
    }
}

fn lock_failed(e: std::io::Error) -> TransportError {
    TransportError::Other(format!("cannot lock the MBIM device: {e}"))
}

/// The proxy when it is configured and something listens on its socket, else the device.
fn open_stream(settings: &ControlSettings) -> Result<ControlStream, TransportError> {
    let device = settings.device.as_str();
    if let Some(name) = &settings.proxy_socket {
        match ControlStream::connect_proxy(name) {
            Ok(stream) => return Ok(stream),
            Err(e) => debug!("MBIM {device}: no proxy on @{name} ({e}); opening the device"),
        }
    }
    ControlStream::open_device(device).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TransportError::NoCard
        } else {
            warn!("MBIM {device}: cannot open the control device: {e}");
            TransportError::permission(device, &e)
                .unwrap_or_else(|| TransportError::Other(format!("cannot open {device}: {e}")))
        }
    })
}

/// PROXY_CONTROL CONFIGURATION with the device path; the proxy closes the connection without a
/// reply when it cannot open the device.
fn proxy_handshake(link: &mut Link, settings: &ControlSettings) -> Result<(), TransportError> {
    let device = settings.device.clone();
    let secs = settings.timeout.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
    let tid = link.tid();
    let info = uicc::proxy_configuration(&device, secs);
    let refused = |why: String| {
        warn!("MBIM {device}: the proxy refused the device: {why}");
        TransportError::Other(format!("MBIM proxy refused {device}: {why}"))
    };
    link.send(&message::command(tid, &PROXY_CONTROL, 1, SET, &info))
        .map_err(|e| refused(format!("{e:?}")))?;
    match link.wait_for(tid) {
        Ok(Reply::CommandDone {
            status: status::SUCCESS,
            ..
        }) => Ok(()),
        Ok(Reply::CommandDone { status, .. }) => Err(refused(format!("status {status:#x}"))),
        Ok(other) => Err(refused(format!("answered {other:?}"))),
        Err(LinkError::Closed) => Err(refused("it closed the connection".into())),
        Err(LinkError::Timeout) => Err(refused(format!(
            "no answer within {:?} (the proxy could not open it: not MBIM, or not answering)",
            link.timeout
        ))),
        Err(e) => Err(refused(format!("{e:?}"))),
    }
}

/// One operation's turn: APDUs go to the route's channel until it is dropped.
struct MbimTurn<'a> {
    conn: &'a mut MbimConnection,
    route: ChannelRoute,
    turn: HeldTurn,
}

impl MbimTurn<'_> {
    fn request(
        &mut self,
        what: &str,
        cid: u32,
        info: &[u8],
    ) -> Result<(u32, Vec<u8>), TransportError> {
        let result = self.conn.link.request(&UICC_SERVICE, cid, SET, info);
        match &result {
            Ok((status::SIM_NOT_INSERTED | status::BAD_SIM, _))
            | Err(TransportError::CardRemoved) => {
                self.conn.sim_gone = true;
            }
            Err(TransportError::Timeout) => {
                debug!("MBIM {}: {what} timed out", self.conn.link.device);
            }
            _ => {}
        }
        result
    }

    /// One APDU on `channel`: (data, SW).
    fn exchange(
        &mut self,
        channel: u32,
        command: &[u8],
    ) -> Result<(Vec<u8>, [u8; 2]), TransportError> {
        let (st, info) = self.request("APDU", uicc::CID_APDU, &uicc::apdu(channel, command))?;
        if st == status::INVALID_LOGICAL_CHANNEL && !self.conn.live_channels.contains(&channel) {
            debug!(
                "MBIM {}: channel {channel} is not open (InvalidLogicalChannel)",
                self.conn.link.device
            );
            return Err(TransportError::Other(format!(
                "MBIM: logical channel {channel} is not open"
            )));
        }
        if st != status::SUCCESS {
            self.conn.live_channels.remove(&channel);
            return Err(status_error(&self.conn.link.device, "APDU", st));
        }
        self.conn.live_channels.insert(channel);
        let (sw, data) = uicc::parse_apdu(&info).ok_or_else(|| {
            TransportError::Other(format!(
                "MBIM {}: malformed APDU answer {}",
                self.conn.link.device,
                hex::encode(&info)
            ))
        })?;
        Ok((data, sw))
    }
}

impl Transmit for MbimTurn<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let ChannelRoute::Session(id) = self.route else {
            // MBIM has no APDU access to the basic channel.
            return Err(TransportError::UnsupportedRoute);
        };
        let channel = id
            .as_number()
            .filter(|c| (1..=19).contains(c))
            .ok_or(TransportError::UnsupportedRoute)?;
        let mut apdu = command.to_vec();
        if let Some(cla) = apdu.first_mut() {
            *cla = uicc::cla_on_channel(*cla, channel);
        }
        let (mut data, mut sw) = self.exchange(channel, &apdu)?;
        // The modem should fetch 61xx itself; fetch what it left.
        while sw[0] == 0x61 {
            let get_response = [apdu[0] & 0xDF, 0xC0, 0x00, 0x00, sw[1]];
            let (more, next_sw) = self.exchange(channel, &get_response)?;
            data.extend_from_slice(&more);
            sw = next_sw;
        }
        data.extend_from_slice(&sw);
        Ok(data)
    }
}

impl Turn for MbimTurn<'_> {
    fn set_route(&mut self, route: ChannelRoute) -> Result<(), TransportError> {
        match route {
            // The basic channel is accepted as a route (the layer above starts a turn there)
            // but carries no APDU.
            ChannelRoute::Cla(0) | ChannelRoute::Session(_) => {
                self.route = route;
                Ok(())
            }
            ChannelRoute::Cla(_) => Err(TransportError::UnsupportedRoute),
        }
    }

    fn open_session(&mut self, aid: &[u8]) -> Result<SessionOpen, TransportError> {
        let info = uicc::open_channel(aid, SELECT_P2, CHANNEL_GROUP);
        let (st, info) = self.request("OPEN_CHANNEL", uicc::CID_OPEN_CHANNEL, &info)?;
        let device = self.conn.link.device.clone();
        let parsed = uicc::parse_open_channel(&info);
        match (st, parsed) {
            (status::SUCCESS, Some((_, channel))) if (1..=19).contains(&channel) => {
                self.conn.live_channels.insert(channel);
                debug!(
                    "MBIM {device}: channel {channel} open on {}",
                    hex::encode_upper(aid)
                );
                Ok(SessionOpen::Opened(SessionId::number(channel)))
            }
            (status::NO_LOGICAL_CHANNELS, sw) => {
                warn!(
                    "MBIM {device}: OPEN_CHANNEL refused with NoLogicalChannels (MANAGE CHANNEL: {}): \
                     the SIM has no free logical channel",
                    sw.map(|(sw, _)| hex::encode_upper(sw)).unwrap_or_default()
                );
                Ok(SessionOpen::NoChannelFree)
            }
            (status::SELECT_FAILED, sw) => {
                debug!(
                    "MBIM {device}: SELECT of {} failed ({})",
                    hex::encode_upper(aid),
                    sw.map(|(sw, _)| hex::encode_upper(sw)).unwrap_or_default()
                );
                Ok(SessionOpen::NoApplet)
            }
            (status::SUCCESS, _) => Err(TransportError::Other(format!(
                "MBIM {device}: malformed OPEN_CHANNEL answer {}",
                hex::encode(&info)
            ))),
            (st, _) => Err(status_error(&device, "OPEN_CHANNEL", st)),
        }
    }

    fn close_session(&mut self, session: SessionId) -> Result<(), TransportError> {
        let Some(channel) = session.as_number() else {
            return Ok(());
        };
        self.conn.live_channels.remove(&channel);
        let info = uicc::close_channel(channel, CHANNEL_GROUP);
        match self.request("CLOSE_CHANNEL", uicc::CID_CLOSE_CHANNEL, &info)? {
            (status::SUCCESS | status::INVALID_LOGICAL_CHANNEL, _) => Ok(()),
            (st, _) => Err(status_error(&self.conn.link.device, "CLOSE_CHANNEL", st)),
        }
    }

    fn read_note(&mut self) -> Option<Vec<u8>> {
        Some(self.turn.read_note())
    }

    fn write_note(&mut self, note: &[u8]) {
        self.turn.write_note(note);
    }
}

impl CardConnection for MbimConnection {
    fn transaction(&mut self, route: ChannelRoute) -> Result<Box<dyn Turn + '_>, TransportError> {
        let turn = self.lock.turn().map_err(lock_failed)?;
        self.link.start_turn();
        Ok(Box::new(MbimTurn {
            conn: self,
            route,
            turn,
        }))
    }

    fn reconnect(&mut self) -> Result<(), TransportError> {
        let _turn = self.lock.turn().map_err(lock_failed)?;
        self.link.start_turn();
        match self.link.probe_sim() {
            Ok(true) => {
                self.sim_gone = false;
                Ok(())
            }
            Ok(false) => {
                self.sim_gone = true;
                Err(TransportError::CardRemoved)
            }
            Err(e) => Err(e),
        }
    }

    fn is_present(&mut self) -> bool {
        !self.sim_gone && Path::new(&self.link.device).exists()
    }

    fn manufacturer(&self) -> Option<String> {
        self.manufacturer.clone()
    }

    fn disconnect(self: Box<Self>) {}
}
