//! Writes the seed corpus of the fuzz targets that need a card conversation
//! (`fuzz/seeds/card_read/default-card`, `fuzz/seeds/apdu_codec/default-card-and-signature`),
//! recorded from the simulator's default card. Run it after changing the module's
//! first-session commands, then commit the seeds:
//!
//! ```sh
//! cargo run --example write_fuzz_seeds
//! ```
//!
//! `tests/fuzz_regressions.rs` replays these files on every test run.

use std::path::PathBuf;

use iotsafe_pkcs11::applet::{AppletChannel, ClassStyle, GSMA_AID, ObjectClass};
use iotsafe_pkcs11::transport::{Transmit, TransportError};

/// Forwards to the simulator and records every answer as `len ‖ bytes`.
struct Recorder {
    card: iotsafe_sim::SharedCard,
    script: Vec<u8>,
}

impl Transmit for Recorder {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, TransportError> {
        let answer = self.card.transmit(command);
        match u8::try_from(answer.len()) {
            Ok(len) if len < 0xFF => self.script.push(len),
            _ => {
                self.script.push(0xFF);
                self.script
                    .extend_from_slice(&(answer.len() as u16).to_be_bytes());
            }
        }
        self.script.extend_from_slice(&answer);
        Ok(answer)
    }
}

fn write_seed(target: &str, name: &str, data: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("{} ({} bytes)", path.display(), data.len());
}

fn main() {
    let card = iotsafe_sim::SharedCard::from_profile(
        iotsafe_sim::default_profile(),
        iotsafe_sim::CardOptions::default(),
    );
    let mut rec = Recorder {
        card,
        script: Vec::new(),
    };
    // The first contact, as Token::connect does it.
    let channel = iotsafe_pkcs11::applet::open_channel(&mut rec)
        .expect("MANAGE CHANNEL")
        .expect("a logical channel");
    let mut ch = AppletChannel::new(&mut rec, channel, ClassStyle::InterIndustry);
    assert!(ch.select(&GSMA_AID).expect("SELECT"), "applet selected");
    ch.application_info().expect("application info");
    let list = ch.object_list().expect("object list");
    for info in &list {
        match info.class() {
            ObjectClass::PublicKey if info.is_active() => {
                let _ = ch.read_public_key(info);
            }
            ObjectClass::File if info.is_active() => {
                let _ = ch.read_file(info);
            }
            _ => {}
        }
    }
    let first_contact = std::mem::take(&mut rec.script);
    write_seed("card_read", "default-card", &first_contact);

    let mut ch = AppletChannel::new(&mut rec, channel, ClassStyle::InterIndustry);
    let key = list
        .iter()
        .find(|o| o.class() == ObjectClass::PrivateKey)
        .expect("a private key on the default card");
    ch.sign_hash(key, 1, &[0x5A; 32]).expect("signature");
    let mut codec = first_contact;
    codec.extend_from_slice(&rec.script);
    write_seed("apdu_codec", "default-card-and-signature", &codec);
}
