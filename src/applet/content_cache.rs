//! What a card said about itself (application information, objects, public keys, files),
//! kept on disk per user so that the next process on this machine does not read it all again.
//!
//! Safety rules:
//! - An entry is used only against the endpoint's current [`ContentVersion`] (the channel
//!   note's epoch and generation, which every process of this module bumps when it learns of a
//!   change), and only after the card proved it is the same card: one of its public keys,
//!   read again, equals the cached one.
//! - One JSON file per endpoint in a 0700 directory of the user (`$XDG_CACHE_HOME/iotsafe-pkcs11`,
//!   `~/.cache/iotsafe-pkcs11`, or `/var/cache/iotsafe-pkcs11` for root), written to a temporary
//!   file and renamed, so a reader sees a whole entry or none. A file that is not a regular 0600
//!   file of this user, or does not parse as this format, is ignored (and replaced by the next
//!   full read).
//! - Only public data is kept: no secret ever comes out of the card.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use log::{debug, warn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::card_read::{CardContents, CardObject};
use super::channel_note::ContentVersion;
use super::info::AppInfo;
use super::objects::{ObjectClass, ObjectInfo};
use super::pairing::ProvenPair;

/// Bumped whenever the file layout changes: an entry of another format is ignored.
/// 2: the key-pairing proofs.
const FORMAT: u32 = 2;
/// Larger files are not read (a card's public content is a few KiB).
const MAX_FILE: u64 = 1 << 20;

/// The per-user content cache; `None` directory: switched off.
pub struct ContentCache {
    dir: Option<PathBuf>,
    warned: AtomicBool,
}

/// One card's content as cached.
#[derive(Debug, Clone)]
pub struct CachedCard {
    pub version: ContentVersion,
    pub aid: Vec<u8>,
    pub writable: bool,
    pub contents: CardContents,
}

impl CachedCard {
    /// The public key that proves the card is the one cached: the first active public key
    /// with its point.
    pub fn identity_key(&self) -> Option<(&ObjectInfo, &[u8; 65])> {
        self.contents.objects.iter().find_map(|o| {
            (o.info.class() == ObjectClass::PublicKey && o.info.is_active())
                .then_some(())
                .and(o.point.as_ref().map(|p| (&o.info, p)))
        })
    }
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    endpoint: String,
    version: ContentVersion,
    #[serde(with = "hex::serde")]
    aid: Vec<u8>,
    writable: bool,
    app_info: AppInfo,
    objects: Vec<CachedObject>,
    /// Proofs of which public half belongs to a private key, so no later process signs again.
    #[serde(default)]
    proven_pairs: Vec<ProvenPair>,
}

#[derive(Serialize, Deserialize)]
struct CachedObject {
    info: ObjectInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

impl ContentCache {
    /// The cache in `dir`, or the user's default directory; `enabled = false` switches it off.
    pub fn new(enabled: bool, dir: Option<&Path>) -> ContentCache {
        let dir = if enabled {
            dir.map(Path::to_path_buf).or_else(default_dir)
        } else {
            None
        };
        ContentCache {
            dir,
            warned: AtomicBool::new(false),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// The entry for `endpoint`, if there is a trustworthy one.
    pub fn load(&self, endpoint: &str) -> Option<CachedCard> {
        let path = self.dir.as_ref()?.join(file_name(endpoint));
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                debug!("content cache {}: {e}; ignored", path.display());
                return None;
            }
        };
        let entry = read_own_file(file)
            .map_err(|why| debug!("content cache {}: {why}; ignored", path.display()))
            .ok()?;
        let parsed: CacheFile = serde_json::from_slice(&entry)
            .map_err(|e| debug!("content cache {}: {e}; ignored", path.display()))
            .ok()?;
        if parsed.format != FORMAT || parsed.endpoint != endpoint {
            debug!(
                "content cache {}: another format or endpoint; ignored",
                path.display()
            );
            return None;
        }
        let mut objects = Vec::with_capacity(parsed.objects.len());
        for o in parsed.objects {
            let point = match o.point {
                Some(p) => Some(<[u8; 65]>::try_from(hex::decode(p).ok()?).ok()?),
                None => None,
            };
            let content = match o.content {
                Some(c) => Some(hex::decode(c).ok()?),
                None => None,
            };
            objects.push(CardObject {
                info: o.info,
                point,
                content,
            });
        }
        Some(CachedCard {
            version: parsed.version,
            aid: parsed.aid,
            writable: parsed.writable,
            contents: CardContents {
                app_info: parsed.app_info,
                objects,
                proven_pairs: parsed.proven_pairs,
            },
        })
    }

    /// Replaces the entry for `endpoint` (atomically: other processes see the old or the new
    /// entry). A directory that cannot be used is warned about once and the cache is skipped.
    pub fn store(&self, endpoint: &str, card: &CachedCard) {
        let Some(dir) = self.dir.as_ref() else {
            return;
        };
        let file = CacheFile {
            format: FORMAT,
            endpoint: endpoint.to_string(),
            version: card.version,
            aid: card.aid.clone(),
            writable: card.writable,
            app_info: card.contents.app_info.clone(),
            objects: card
                .contents
                .objects
                .iter()
                .map(|o| CachedObject {
                    info: o.info.clone(),
                    point: o.point.map(hex::encode),
                    content: o.content.as_ref().map(hex::encode),
                })
                .collect(),
            proven_pairs: card.contents.proven_pairs.clone(),
        };
        let written = serde_json::to_vec(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(dir, &file_name(endpoint), &bytes));
        if let Err(e) = written
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            warn!(
                "content cache {}: {e}; working without the cache (set `cache = false` to silence)",
                dir.display()
            );
        }
    }
}

/// `$XDG_CACHE_HOME/iotsafe-pkcs11`, else `/var/cache/iotsafe-pkcs11` for root, else
/// `~/.cache/iotsafe-pkcs11`.
fn default_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
        return Some(xdg.join("iotsafe-pkcs11"));
    }
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from("/var/cache/iotsafe-pkcs11"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".cache").join("iotsafe-pkcs11"))
}

/// The endpoint's file: a hash, so no reader or device name ever becomes a path.
fn file_name(endpoint: &str) -> String {
    format!(
        "{}.json",
        hex::encode(&Sha256::digest(endpoint.as_bytes())[..16])
    )
}

/// The content of `file` if it is a regular file of this user that no one else may read or
/// write, and not too large.
fn read_own_file(mut file: File) -> Result<Vec<u8>, String> {
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("owned by uid {}, not this user", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!("mode {:o}, not 0600", meta.mode() & 0o777));
    }
    if meta.len() > MAX_FILE {
        return Err("too large".into());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Writes `bytes` to `dir/name` through a temporary file of this process and a rename. The
/// directory is created 0700 and must belong to this user and be closed to others.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    if !meta.is_dir()
        || meta.uid() != rustix::process::geteuid().as_raw()
        || meta.mode() & 0o022 != 0
    {
        return Err(std::io::Error::other(
            "not a directory of this user closed to others",
        ));
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| fs::rename(&temp, dir.join(name)));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "iotsafe-content-cache-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn card() -> CachedCard {
        let key = ObjectInfo {
            class: Some(ObjectClass::PublicKey),
            id: Some(vec![1]),
            ..ObjectInfo::default()
        };
        let file = ObjectInfo {
            class: Some(ObjectClass::File),
            id: Some(vec![2]),
            label: Some(b"cert".to_vec()),
            ..ObjectInfo::default()
        };
        CachedCard {
            version: ContentVersion {
                epoch: 9,
                generation: 4,
            },
            aid: vec![0xA0, 0, 0, 5, 0x59, 0, 0x10],
            writable: true,
            contents: CardContents {
                app_info: AppInfo {
                    version: Some(1),
                    identifier: b"applet".to_vec(),
                    ..AppInfo::default()
                },
                objects: vec![
                    CardObject {
                        info: key,
                        point: Some([4; 65]),
                        content: None,
                    },
                    CardObject {
                        info: file,
                        point: None,
                        content: Some(vec![0x30, 0x82, 1, 2]),
                    },
                ],
                proven_pairs: vec![ProvenPair {
                    private: vec![0x84, 1, 6],
                    point: vec![4; 65],
                }],
            },
        }
    }

    #[test]
    fn an_entry_comes_back_as_stored_for_its_endpoint_only() {
        let dir = scratch("round-trip");
        let cache = ContentCache::new(true, Some(&dir));
        assert!(cache.load("reader A").is_none());
        cache.store("reader A", &card());
        let back = cache.load("reader A").expect("entry");
        assert_eq!(back.version, card().version);
        assert_eq!(back.aid, card().aid);
        assert!(back.writable);
        assert_eq!(back.contents.objects.len(), 2);
        assert_eq!(
            back.contents.objects[1].content,
            Some(vec![0x30, 0x82, 1, 2])
        );
        assert_eq!(back.identity_key().map(|(_, p)| p[0]), Some(4));
        assert_eq!(back.contents.app_info.identifier, b"applet".to_vec());
        assert_eq!(back.contents.proven_pairs, card().contents.proven_pairs);
        assert!(cache.load("reader B").is_none());
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_truncated_or_open_files_are_ignored() {
        let dir = scratch("untrusted");
        let cache = ContentCache::new(true, Some(&dir));
        cache.store("r", &card());
        let path = dir.join(file_name("r"));
        let whole = fs::read(&path).unwrap();
        fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        assert!(cache.load("r").is_none(), "truncated");
        fs::write(&path, b"{\"format\": 99}").unwrap();
        assert!(cache.load("r").is_none(), "foreign format");
        fs::write(&path, &whole).unwrap();
        assert!(cache.load("r").is_some());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(cache.load("r").is_none(), "readable by others");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn switched_off_it_neither_reads_nor_writes() {
        let dir = scratch("off");
        let cache = ContentCache::new(false, Some(&dir));
        cache.store("r", &card());
        assert!(!dir.exists());
        assert!(cache.load("r").is_none());
    }

    #[test]
    fn an_unusable_directory_means_no_cache() {
        let dir = scratch("unusable");
        fs::write(&dir, b"a file where the directory should be").unwrap();
        let cache = ContentCache::new(true, Some(&dir));
        cache.store("r", &card());
        assert!(cache.load("r").is_none());
        let _ = fs::remove_file(&dir);
    }
}
