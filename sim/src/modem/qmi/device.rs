//! The modem's side of QMI: CTL client ids and the UIM messages, answered from the card.
//! One [`QmiDevice`] per simulated modem, shared by the pty and the proxy's clients.

use std::collections::{BTreeMap, BTreeSet};

use super::message::{CTL, Frame, UIM, error};
use crate::modem::{ModemControl, cla_on_channel};
use crate::shared::CardSlot;

/// Client ids a service hands out at most (real modems allow a few dozen).
pub(super) const MAX_CLIENTS_PER_SERVICE: usize = 16;

/// CTL messages.
pub(super) mod ctl {
    pub const GET_VERSION_INFO: u16 = 0x0021;
    pub const ALLOCATE_CID: u16 = 0x0022;
    pub const RELEASE_CID: u16 = 0x0023;
    pub const SYNC: u16 = 0x0027;
    /// libqmi's proxy handshake (never sent to a modem).
    pub const INTERNAL_PROXY_OPEN: u16 = 0xFF00;
}

/// UIM messages.
pub(super) mod uim {
    pub const RESET: u16 = 0x0000;
    pub const GET_CARD_STATUS: u16 = 0x002F;
    pub const SEND_APDU: u16 = 0x003B;
    pub const LOGICAL_CHANNEL: u16 = 0x003F;
    pub const OPEN_LOGICAL_CHANNEL: u16 = 0x0042;
    pub const GET_SLOT_STATUS: u16 = 0x0047;
}

/// The USIM application the card status lists (3GPP TS 31.102 RID + USIM PIX).
const USIM_AID: [u8; 7] = [0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02];

pub(super) struct QmiDevice<C: CardSlot> {
    control: ModemControl<C>,
    /// Allocated client ids per service.
    clients: BTreeMap<u8, BTreeSet<u8>>,
    /// Logical channels the modem opened on the card (Open Logical Channel), not yet closed.
    channels: BTreeSet<u8>,
    seen_epoch: u64,
}

type Tlvs = Vec<(u8, Vec<u8>)>;

impl<C: CardSlot> QmiDevice<C> {
    pub(super) fn new(control: ModemControl<C>) -> QmiDevice<C> {
        let seen_epoch = control.card().power_epoch();
        QmiDevice {
            control,
            clients: BTreeMap::new(),
            channels: BTreeSet::new(),
            seen_epoch,
        }
    }

    /// Whether `cid` of `service` is allocated.
    pub(super) fn has_client(&self, service: u8, cid: u8) -> bool {
        self.clients.get(&service).is_some_and(|c| c.contains(&cid))
    }

    /// The answer to one request from the host (`None`: not a request, dropped).
    pub(super) fn handle(&mut self, request: &Frame) -> Option<Frame> {
        if request.control != 0x00 || request.flags != 0x00 {
            return None;
        }
        self.control.count(|s| s.commands += 1);
        let (error, tlvs) = match request.service {
            CTL => self.ctl(request),
            service if !self.has_client(service, request.client) => {
                (Some(error::INVALID_CLIENT_ID), Vec::new())
            }
            UIM => self.uim(request),
            _ => (Some(error::INVALID_QMI_COMMAND), Vec::new()),
        };
        if let Some(e) = error {
            self.control
                .count(|s| *s.qmi_error.entry(e).or_insert(0) += 1);
        }
        Some(request.response(error, tlvs))
    }

    fn ctl(&mut self, request: &Frame) -> (Option<u16>, Tlvs) {
        match request.message {
            ctl::GET_VERSION_INFO => {
                // CTL 1.5, UIM 1.46 (what a recent Qualcomm modem reports).
                let mut list = vec![2u8];
                for (service, major, minor) in [(CTL, 1u16, 5u16), (UIM, 1, 46)] {
                    list.push(service);
                    list.extend_from_slice(&major.to_le_bytes());
                    list.extend_from_slice(&minor.to_le_bytes());
                }
                (None, vec![(0x01, list)])
            }
            ctl::ALLOCATE_CID => {
                let Some(&[service]) = request.tlv(0x01) else {
                    return (Some(error::MISSING_ARGUMENT), Vec::new());
                };
                if service == CTL {
                    return (Some(error::INVALID_ARGUMENT), Vec::new());
                }
                let taken = self.clients.entry(service).or_default();
                if taken.len() >= MAX_CLIENTS_PER_SERVICE {
                    return (Some(error::CLIENT_IDS_EXHAUSTED), Vec::new());
                }
                let Some(cid) = (1..=0xFEu8).find(|c| !taken.contains(c)) else {
                    return (Some(error::CLIENT_IDS_EXHAUSTED), Vec::new());
                };
                taken.insert(cid);
                self.clients_changed();
                (None, vec![(0x01, vec![service, cid])])
            }
            ctl::RELEASE_CID => {
                let Some(&[service, cid]) = request.tlv(0x01) else {
                    return (Some(error::MISSING_ARGUMENT), Vec::new());
                };
                let released = self
                    .clients
                    .get_mut(&service)
                    .is_some_and(|c| c.remove(&cid));
                if !released {
                    return (Some(error::INVALID_CLIENT_ID), Vec::new());
                }
                self.clients_changed();
                (None, vec![(0x01, vec![service, cid])])
            }
            ctl::SYNC => {
                // Sync drops every client id (what a host does after it restarted).
                self.clients.clear();
                self.clients_changed();
                (None, Vec::new())
            }
            _ => (Some(error::INVALID_QMI_COMMAND), Vec::new()),
        }
    }

    fn clients_changed(&self) {
        let n = self.clients.values().map(|c| c.len() as u64).sum::<u64>();
        self.control.count(|s| {
            s.client_ids = n;
            s.max_client_ids = s.max_client_ids.max(n);
        });
    }

    fn channels_changed(&self) {
        self.control.record_open_sessions(self.channels.len());
    }

    /// Forgets the channels when the card was power-cycled (reset, removed) since we last
    /// looked; true while the card is present.
    fn sync_presence(&mut self) -> bool {
        if self.control.card_power_cycled(&mut self.seen_epoch) {
            self.channels.clear();
            self.channels_changed();
        }
        self.control.card().is_present()
    }

    fn uim(&mut self, request: &Frame) -> (Option<u16>, Tlvs) {
        match request.message {
            uim::RESET => (None, Vec::new()),
            uim::GET_CARD_STATUS => {
                let present = self.sync_presence();
                (None, vec![(0x10, card_status(present))])
            }
            uim::GET_SLOT_STATUS => (Some(error::NOT_SUPPORTED), Vec::new()),
            uim::OPEN_LOGICAL_CHANNEL => {
                self.control.count(|s| s.qmi_open_channel += 1);
                self.open_channel(request)
            }
            uim::LOGICAL_CHANNEL => match (request.tlv(0x11), request.tlv(0x10)) {
                (Some(&[ch]), _) => {
                    self.control.count(|s| s.qmi_close_channel += 1);
                    self.close_channel(request, ch)
                }
                (None, Some(_)) => {
                    self.control.count(|s| s.qmi_open_channel += 1);
                    self.open_channel(request)
                }
                _ => (Some(error::MISSING_ARGUMENT), Vec::new()),
            },
            uim::SEND_APDU => {
                self.control.count(|s| s.qmi_send_apdu += 1);
                self.send_apdu(request)
            }
            _ => (Some(error::INVALID_QMI_COMMAND), Vec::new()),
        }
    }

    /// Slot TLV 0x01: only slot 1 has a card.
    fn slot_ok(request: &Frame) -> Result<(), u16> {
        match request.tlv(0x01) {
            Some(&[1]) => Ok(()),
            Some(&[_]) => Err(error::INVALID_ARGUMENT),
            _ => Err(error::MISSING_ARGUMENT),
        }
    }

    fn open_channel(&mut self, request: &Frame) -> (Option<u16>, Tlvs) {
        if let Err(e) = Self::slot_ok(request) {
            return (Some(e), Vec::new());
        }
        let aid = match request.tlv(0x10) {
            Some([len, aid @ ..]) if usize::from(*len) == aid.len() && aid.len() <= 32 => {
                aid.to_vec()
            }
            Some(_) => return (Some(error::INVALID_ARGUMENT), Vec::new()),
            None => return (Some(error::MISSING_ARGUMENT), Vec::new()),
        };
        // FCI option: 0 none (P2 0C), 1 FCP (04, the default), 2/3 FCI (00), 4 FMD (08).
        let p2 = match request.tlv(0x11) {
            Some(&[0]) => 0x0C,
            None | Some(&[1]) => 0x04,
            Some(&[2 | 3]) => 0x00,
            Some(&[4]) => 0x08,
            Some(_) => return (Some(error::INVALID_ARGUMENT), Vec::new()),
        };
        if !self.sync_presence() {
            return (Some(error::DEVICE_NOT_READY), Vec::new());
        }
        let card = self.control.card();
        let r = card.transmit(&[0x00, 0x70, 0x00, 0x00, 0x01]);
        let ch = match r.as_slice() {
            [ch, 0x90, 0x00] if (1..=19).contains(ch) => *ch,
            [.., sw1, sw2] => {
                let e = if [*sw1, *sw2] == [0x6A, 0x81] {
                    error::INSUFFICIENT_RESOURCES
                } else {
                    error::INTERNAL
                };
                return (Some(e), vec![(0x11, vec![*sw1, *sw2])]);
            }
            _ => return (Some(error::INTERNAL), Vec::new()),
        };
        let mut select = vec![cla_on_channel(0x00, ch), 0xA4, 0x04, p2, aid.len() as u8];
        select.extend_from_slice(&aid);
        // The modem fetches the SELECT's own 61xx.
        let r = with_get_response(card, cla_on_channel(0x00, ch), card.transmit(&select));
        let (data, sw) = split_sw(&r);
        if sw != [0x90, 0x00] {
            card.transmit(&[0x00, 0x70, 0x80, ch]);
            let e = match sw {
                [0x6A, 0x82] => error::SIM_FILE_NOT_FOUND,
                [0x69, 0x82 | 0x85] => error::ACCESS_DENIED,
                _ => error::INTERNAL,
            };
            return (Some(e), vec![(0x11, sw.to_vec())]);
        }
        self.channels.insert(ch);
        self.channels_changed();
        let mut fci = vec![data.len().min(255) as u8];
        fci.extend_from_slice(&data[..data.len().min(255)]);
        (
            None,
            vec![(0x10, vec![ch]), (0x11, sw.to_vec()), (0x12, fci)],
        )
    }

    fn close_channel(&mut self, request: &Frame, ch: u8) -> (Option<u16>, Tlvs) {
        if let Err(e) = Self::slot_ok(request) {
            return (Some(e), Vec::new());
        }
        if !self.sync_presence() {
            return (Some(error::DEVICE_NOT_READY), Vec::new());
        }
        if !self.channels.remove(&ch) {
            return (Some(error::INVALID_ARGUMENT), Vec::new());
        }
        self.channels_changed();
        let r = self.control.card().transmit(&[0x00, 0x70, 0x80, ch]);
        let (_, sw) = split_sw(&r);
        (None, vec![(0x11, sw.to_vec())])
    }

    fn send_apdu(&mut self, request: &Frame) -> (Option<u16>, Tlvs) {
        if let Err(e) = Self::slot_ok(request) {
            return (Some(e), Vec::new());
        }
        let mut apdu = match request.tlv(0x02) {
            Some([l0, l1, apdu @ ..])
                if usize::from(u16::from_le_bytes([*l0, *l1])) == apdu.len() && apdu.len() >= 4 =>
            {
                apdu.to_vec()
            }
            Some(_) => return (Some(error::INVALID_ARGUMENT), Vec::new()),
            None => return (Some(error::MISSING_ARGUMENT), Vec::new()),
        };
        let chain = match request.tlv(0x11) {
            None | Some(&[0]) => false,
            Some(&[1]) => true,
            Some(_) => return (Some(error::INVALID_ARGUMENT), Vec::new()),
        };
        if !self.sync_presence() {
            return (Some(error::DEVICE_NOT_READY), Vec::new());
        }
        let ch = match request.tlv(0x10) {
            None => 0,
            Some(&[ch]) if self.channels.contains(&ch) => ch,
            Some(_) => return (Some(error::INVALID_ARGUMENT), Vec::new()),
        };
        // The modem puts the channel into CLA itself; it counts hosts that did not.
        let cla = cla_on_channel(apdu[0], ch);
        if cla != apdu[0] {
            self.control.count(|s| s.qmi_cla_rewritten += 1);
        }
        apdu[0] = cla;
        let card = self.control.card();
        let mut r = card.transmit(&apdu);
        if chain {
            r = with_get_response(card, cla & !0x10, r);
        }
        let mut value = (r.len() as u16).to_le_bytes().to_vec();
        value.extend_from_slice(&r);
        (None, vec![(0x10, value)])
    }
}

/// Fetches 61xx with GET RESPONSE until the card is done; the data concatenated.
fn with_get_response<C: CardSlot>(card: &C, cla: u8, mut r: Vec<u8>) -> Vec<u8> {
    let mut data = Vec::new();
    while let [.., 0x61, le] = r[..] {
        data.extend_from_slice(&r[..r.len() - 2]);
        r = card.transmit(&[cla, 0xC0, 0x00, 0x00, le]);
    }
    data.extend_from_slice(&r);
    data
}

fn split_sw(r: &[u8]) -> (&[u8], [u8; 2]) {
    match r {
        [data @ .., sw1, sw2] => (data, [*sw1, *sw2]),
        _ => (&[], [0x6F, 0x00]),
    }
}

/// The Card Status TLV (0x10): indexes of the provisioning applications, then one card with
/// its USIM when `present`, else one absent card.
fn card_status(present: bool) -> Vec<u8> {
    let mut v = Vec::new();
    // Primary GW session on card 0, application 0; no 1X, no secondary.
    let gw_primary: u16 = if present { 0x0000 } else { 0xFFFF };
    for index in [gw_primary, 0xFFFF, 0xFFFF, 0xFFFF] {
        v.extend_from_slice(&index.to_le_bytes());
    }
    v.push(1); // one card
    if !present {
        // absent; UPIN unknown, no retries, error "no ATR" (3); no applications.
        v.extend_from_slice(&[0, 0, 0, 0, 3, 0]);
        return v;
    }
    // present; UPIN not initialized, 0 retries; no error.
    v.extend_from_slice(&[1, 0, 0, 0, 0]);
    v.push(1); // one application
    // USIM, ready, personalization ready, feature 0, no retries.
    v.extend_from_slice(&[2, 7, 2, 0, 0, 0]);
    v.push(USIM_AID.len() as u8);
    v.extend_from_slice(&USIM_AID);
    // UPIN does not replace PIN1; PIN1 disabled (3) 3/10 retries; PIN2 enabled-not-verified (1).
    v.extend_from_slice(&[0, 3, 3, 10, 1, 3, 10]);
    v
}
