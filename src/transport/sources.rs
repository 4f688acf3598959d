//! The slots of a configuration: PC/SC readers (filtered by name) and configured modems.

use std::path::Path;

use super::at::ModemConnection;
use super::pcsc::PcscReaders;
use super::{CardConnection, ReaderSource, TransportError};
use crate::config::{Config, ModemConfig};

/// Every card endpoint the configuration names.
pub struct ConfiguredReaders {
    pcsc: Option<PcscReaders>,
    config: Config,
}

impl ConfiguredReaders {
    pub fn new(config: &Config) -> Self {
        ConfiguredReaders {
            pcsc: config.pcsc.enabled.then(PcscReaders::new),
            config: config.clone(),
        }
    }

    fn modem(&self, reader: &str) -> Option<&ModemConfig> {
        self.config.modem.iter().find(|m| m.slot_name() == reader)
    }
}

impl ReaderSource for ConfiguredReaders {
    fn reader_names(&self) -> Result<Vec<String>, TransportError> {
        let mut names: Vec<String> = self.config.modem.iter().map(|m| m.slot_name()).collect();
        if let Some(pcsc) = &self.pcsc {
            match pcsc.reader_names() {
                Ok(readers) => names.extend(
                    readers
                        .into_iter()
                        .filter(|r| self.config.reader_selected(r)),
                ),
                // No pcscd is not fatal when modems are configured.
                Err(e) if !names.is_empty() => log::debug!("PC/SC: {e}"),
                Err(e) => return Err(e),
            }
        }
        Ok(names)
    }

    fn connect(&self, reader: &str) -> Result<Option<Box<dyn CardConnection>>, TransportError> {
        if let Some(modem) = self.modem(reader) {
            return match ModemConnection::open(modem) {
                Ok(c) => Ok(Some(Box::new(c))),
                Err(TransportError::NoCard) => Ok(None),
                Err(e) => Err(e),
            };
        }
        match &self.pcsc {
            Some(pcsc) => pcsc.connect(reader),
            None => Err(TransportError::ReaderUnavailable),
        }
    }

    fn card_present(&self, reader: &str) -> bool {
        if let Some(modem) = self.modem(reader) {
            return Path::new(&modem.device).exists();
        }
        self.pcsc.as_ref().is_some_and(|p| p.card_present(reader))
    }
}
