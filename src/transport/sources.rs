//! The card endpoints of a set-up: PC/SC readers (filtered by name) and modems (AT, MBIM, QMI),
//! each a slot.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::at::{ModemConnection, ModemSettings};
use super::mbim::MbimConnection;
use super::pcsc::PcscReaders;
use super::qmi::QmiConnection;
use super::{CardConnection, ReaderSource, TransportError};

static READER_SOURCE_OVERRIDE: Mutex<Option<Arc<dyn ReaderSource>>> = Mutex::new(None);

/// Replaces the configured endpoints by `source` for tokens connected from now on (tests plug
/// a simulated card in here); `None` restores the configured ones.
pub fn set_reader_source_override(source: Option<Arc<dyn ReaderSource>>) {
    *READER_SOURCE_OVERRIDE.lock() = source;
}

/// The source installed by [`set_reader_source_override`], if any.
pub fn reader_source_override() -> Option<Arc<dyn ReaderSource>> {
    READER_SOURCE_OVERRIDE.lock().clone()
}

/// Which PC/SC readers are slots, by name.
#[derive(Debug, Clone, Default)]
pub struct ReaderFilter {
    /// Only readers whose name contains one of these strings (empty: all readers).
    pub include: Vec<String>,
    /// Never readers whose name contains one of these strings.
    pub exclude: Vec<String>,
}

impl ReaderFilter {
    pub fn selects(&self, name: &str) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|r| name.contains(r));
        included && !self.exclude.iter().any(|r| name.contains(r))
    }
}

/// A modem slot: its name (the slot description) and how to reach it.
#[derive(Debug, Clone)]
pub struct ModemEndpoint {
    pub name: String,
    pub link: ModemLink,
}

/// How a modem is reached.
#[derive(Debug, Clone)]
pub enum ModemLink {
    /// AT commands on a serial port.
    At(ModemSettings),
    /// MBIM on the control device, or through `mbim-proxy`.
    Mbim(ControlSettings),
    /// QMI on the control device, or through `qmi-proxy`.
    Qmi(ControlSettings),
}

impl ModemLink {
    /// The device node: the AT port or the control device.
    pub fn device(&self) -> &str {
        match self {
            ModemLink::At(s) => &s.device,
            ModemLink::Mbim(s) | ModemLink::Qmi(s) => &s.device,
        }
    }
}

/// A modem's control device (MBIM or QMI) and how to reach it.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The control device, e.g. `/dev/cdc-wdm0`.
    pub device: String,
    /// The proxy's abstract socket name when the proxy may be used (it is when it runs);
    /// `None`: always the device directly.
    pub proxy_socket: Option<String>,
    /// QMI: the SIM slot (1-based).
    pub sim_slot: u8,
    /// Deadline for one request.
    pub timeout: std::time::Duration,
    /// Where the device's lock file (and note) lives; default `/run/lock`.
    pub lock_dir: Option<std::path::PathBuf>,
}

/// Every card endpoint of the set-up.
pub struct ConfiguredReaders {
    pcsc: Option<(PcscReaders, ReaderFilter)>,
    modems: Vec<ModemEndpoint>,
}

impl ConfiguredReaders {
    /// `pcsc`: use PC/SC readers (those the filter selects); `modems`: one slot each.
    /// `lock_dir`: where the lock files of turns live (default `/run/lock`).
    pub fn new(
        pcsc: Option<ReaderFilter>,
        modems: Vec<ModemEndpoint>,
        lock_dir: Option<std::path::PathBuf>,
    ) -> Self {
        ConfiguredReaders {
            pcsc: pcsc.map(|filter| (PcscReaders::new(lock_dir), filter)),
            modems,
        }
    }

    fn modem(&self, reader: &str) -> Option<&ModemLink> {
        self.modems
            .iter()
            .find(|m| m.name == reader)
            .map(|m| &m.link)
    }
}

impl ReaderSource for ConfiguredReaders {
    fn reader_names(&self) -> Result<Vec<String>, TransportError> {
        let mut names: Vec<String> = self.modems.iter().map(|m| m.name.clone()).collect();
        if let Some((pcsc, filter)) = &self.pcsc {
            match pcsc.reader_names() {
                Ok(readers) => names.extend(readers.into_iter().filter(|r| filter.selects(r))),
                // No pcscd is not fatal when modems are configured.
                Err(e) if !names.is_empty() => log::debug!("PC/SC: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(names)
    }

    fn connect(&self, reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError> {
        if let Some(modem) = self.modem(reader) {
            let opened: Result<Box<dyn CardConnection>, TransportError> =
                match modem {
                    ModemLink::At(settings) => ModemConnection::open(settings)
                        .map(|c| Box::new(c) as Box<dyn CardConnection>),
                    ModemLink::Mbim(settings) => MbimConnection::open(settings)
                        .map(|c| Box::new(c) as Box<dyn CardConnection>),
                    ModemLink::Qmi(settings) => QmiConnection::open(settings)
                        .map(|c| Box::new(c) as Box<dyn CardConnection>),
                };
            return match opened {
                Ok(c) => Ok(Some(c)),
                Err(TransportError::NoCard) => Ok(None),
                Err(e) => Err(e),
            };
        }
        match &self.pcsc {
            Some((pcsc, _)) => pcsc.connect(reader),
            None => Err(TransportError::ReaderUnavailable),
        }
    }

    fn is_modem(&self, reader: &str) -> bool {
        self.modem(reader).is_some()
    }

    fn card_present(&self, reader: &str) -> bool {
        if let Some(modem) = self.modem(reader) {
            return Path::new(modem.device()).exists();
        }
        self.pcsc
            .as_ref()
            .is_some_and(|(p, _)| p.card_present(reader))
    }
}
