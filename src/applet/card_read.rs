//! The first card read: what the object cache needs, in one transaction — application
//! information, the object list, every active public key and file.

use log::warn;

use super::channel::AppletChannel;
use super::error::Result;
use super::info::AppInfo;
use super::objects::{ObjectClass, ObjectInfo};
use super::pairing::{ProvenPair, prove_pairs};

/// What was read from the card for one object.
#[derive(Debug, Clone)]
pub struct CardObject {
    pub info: ObjectInfo,
    /// Public keys: the point from READ PUBLIC KEY.
    pub point: Option<[u8; 65]>,
    /// Files: the content from READ FILE.
    pub content: Option<Vec<u8>>,
}

/// Everything the card said about itself and its objects.
#[derive(Debug, Clone, Default)]
pub struct CardContents {
    pub app_info: AppInfo,
    pub objects: Vec<CardObject>,
    /// Private keys whose public half a signature proved (see `pairing.rs`).
    pub proven_pairs: Vec<ProvenPair>,
}

/// Reads the application information (a failure is logged and leaves it unknown), the object
/// list, and the content of every active public key and file (a failure there is logged and
/// leaves that object without content), and pairs the key halves the card does not name
/// alike (`known`: the proofs made on this card before, kept while they still hold). `reader`
/// names the card in log lines.
pub fn read_card(
    ch: &mut AppletChannel<'_>,
    reader: &str,
    known: &[ProvenPair],
) -> Result<CardContents> {
    let changes_before = ch.content_changes;
    let app_info = ch.application_info().unwrap_or_else(|e| {
        warn!("{reader}: GET DATA (application) failed: {e}");
        AppInfo::default()
    });
    read_objects(ch, app_info, changes_before, reader, known)
}

/// [`read_card`] on a channel that may not be ours (one another process recorded): a failed
/// GET DATA (application) is the channel's answer, not a card quirk to log and pass over.
pub(super) fn read_card_on_probation(
    ch: &mut AppletChannel<'_>,
    reader: &str,
) -> Result<CardContents> {
    let changes_before = ch.content_changes;
    let app_info = ch.application_info()?;
    read_objects(ch, app_info, changes_before, reader, &[])
}

/// The object list, the content of every active public key and file, and the pairing proofs.
fn read_objects(
    ch: &mut AppletChannel<'_>,
    app_info: AppInfo,
    changes_before: u32,
    reader: &str,
    known: &[ProvenPair],
) -> Result<CardContents> {
    let list = ch.object_list()?;
    let mut objects = Vec::with_capacity(list.len());
    for info in list {
        let mut obj = CardObject {
            info,
            point: None,
            content: None,
        };
        if obj.info.is_active() {
            match obj.info.class() {
                ObjectClass::PublicKey => match ch.read_public_key(&obj.info) {
                    Ok(p) => obj.point = Some(p),
                    Err(e) => warn!("{reader}: public key {:?}: {e}", obj.info.id),
                },
                ObjectClass::File => match ch.read_file(&obj.info) {
                    Ok(c) => obj.content = Some(c),
                    Err(e) => warn!("{reader}: file {:?}: {e}", obj.info.id),
                },
                _ => {}
            }
        }
        objects.push(obj);
    }
    let proven_pairs = prove_pairs(ch, &objects, known, reader)?;
    let contents = CardContents {
        app_info,
        objects,
        proven_pairs,
    };
    // Only a read the card did not report a change during is worth keeping.
    if ch.content_changes == changes_before {
        ch.fresh_read = Some(contents.clone());
    }
    Ok(contents)
}
