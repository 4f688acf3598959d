//! Slots (card endpoints) and tokens (a card with the IoT SAFE applet, connected).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cryptoki_sys::*;
use log::{debug, info, warn};
use parking_lot::{ArcMutexGuard, Mutex, RawMutex, RwLock};

use crate::applet::{self, AppletChannel, ClassStyle, ObjectClass};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::transport::{CardConnection, ChannelRoute, ReaderSource, SessionOpen};

use super::handles::HandleAllocator;
use super::object::{self, CardObject, Object};

/// The card link of a token. Its lock is held for the whole APDU sequence of one operation
/// (one PC/SC transaction): the card is a serial device, and this keeps the sequences of two
/// sessions from interleaving on the channel. It is per token, never global.
struct Link {
    conn: Option<Box<dyn CardConnection>>,
    route: ChannelRoute,
    /// The AID selected on the channel (to re-select after a card reset).
    aid: Vec<u8>,
    logical_channel: bool,
    /// A command answered `63CF` since the flag was last taken.
    remote_update_seen: bool,
}

impl Link {
    /// A link without a connection (only if the pool was emptied by `close`): every operation
    /// on it reports the token removed.
    fn closed() -> Link {
        Link {
            conn: None,
            route: ChannelRoute::Cla(0),
            aid: Vec::new(),
            logical_channel: false,
            remote_update_seen: false,
        }
    }

    fn run_once<R>(
        &mut self,
        style: ClassStyle,
        op: &mut impl FnMut(&mut AppletChannel<'_>) -> Result<R>,
    ) -> Result<R> {
        let route = self.route;
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::new(CKR_DEVICE_REMOVED, "token was removed"))?;
        let mut output = None;
        let mut remote_update = false;
        let result = conn.with_transaction(route, &mut |pipe| {
            let mut ch = AppletChannel::new(pipe, route.cla_channel(), style);
            let r = op(&mut ch);
            remote_update |= ch.remote_update_completed;
            output = Some(r?);
            Ok(())
        });
        self.remote_update_seen |= remote_update;
        result?;
        output.ok_or_else(|| Error::new(CKR_GENERAL_ERROR, "operation did not run"))
    }

    /// After a card reset: reconnect, reopen the channel and re-select the applet.
    fn reopen(&mut self, style: ClassStyle, reader: &str) -> Result<()> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::new(CKR_DEVICE_REMOVED, "token was removed"))?;
        conn.reconnect()?;
        let aids = [self.aid.clone()];
        match open_applet_channel(conn.as_mut(), &aids, self.logical_channel, style, reader)? {
            Some((route, _)) => {
                self.route = route;
                Ok(())
            }
            None => Err(Error::new(
                CKR_DEVICE_REMOVED,
                "the applet no longer selects after the card reset",
            )),
        }
    }
}

/// Opens a logical channel and selects the first AID that answers: through the transport
/// (AT+CCHO) where it manages channels, else with MANAGE CHANNEL + SELECT (the basic channel
/// when the card refuses MANAGE CHANNEL or the configuration says so).
fn open_applet_channel(
    conn: &mut dyn CardConnection,
    aids: &[Vec<u8>],
    logical_channel: bool,
    style: ClassStyle,
    reader: &str,
) -> Result<Option<(ChannelRoute, Vec<u8>)>> {
    if logical_channel {
        let mut managed = false;
        for aid in aids {
            match conn.open_session(aid)? {
                SessionOpen::Opened(id) => {
                    return Ok(Some((ChannelRoute::Session(id), aid.clone())));
                }
                SessionOpen::NoApplet => managed = true,
                SessionOpen::NotManaged => break,
            }
        }
        if managed {
            debug!("{reader}: no IoT SAFE applet on this card");
            return Ok(None);
        }
    }
    let mut found = None;
    conn.with_transaction(ChannelRoute::Cla(0), &mut |pipe| {
        let channel = if logical_channel {
            applet::open_channel(pipe)?.unwrap_or_else(|| {
                debug!("{reader}: MANAGE CHANNEL refused; using the basic channel");
                0
            })
        } else {
            0
        };
        let mut ch = AppletChannel::new(pipe, channel, style);
        for aid in aids {
            if ch.select(aid)? {
                found = Some((ChannelRoute::Cla(channel), aid.clone()));
                return Ok(());
            }
        }
        debug!("{reader}: no IoT SAFE applet on this card");
        if channel != 0 {
            applet::close_channel(pipe, channel)?;
        }
        Ok(())
    })?;
    Ok(found)
}

/// Reads what the object cache needs: application info, object list, public keys, files.
fn read_card(
    ch: &mut AppletChannel<'_>,
    reader: &str,
) -> Result<(applet::AppInfo, Vec<CardObject>)> {
    let app_info = ch.application_info().unwrap_or_else(|e| {
        warn!("{reader}: GET DATA (application) failed: {e}");
        applet::AppInfo::default()
    });
    let list = ch.object_list()?;
    let mut card_objects = Vec::with_capacity(list.len());
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
        card_objects.push(obj);
    }
    Ok((app_info, card_objects))
}

/// Identifies one card object across cache rebuilds, so its handle stays the same.
type HandleKey = (CK_OBJECT_CLASS, Option<Vec<u8>>, Option<Vec<u8>>);

/// What the token knows about the card's objects.
struct Cache {
    /// As read from (or written to) the card.
    card_objects: Vec<CardObject>,
    /// The PKCS#11 view built from them.
    objects: Vec<Arc<Object>>,
}

pub struct Token {
    reader: String,
    /// The channel pool: one link (connection + logical channel) per channel, opened on demand
    /// up to `max_channels` while operations wait for each other.
    links: RwLock<Vec<Arc<Mutex<Link>>>>,
    max_channels: usize,
    /// The card refused another channel: the pool stays at its size.
    pool_full: AtomicBool,
    /// Held while the pool opens another channel.
    growing: Mutex<()>,
    /// Where more connections to this card come from.
    source: Arc<dyn ReaderSource>,
    style: ClassStyle,
    cache: RwLock<Cache>,
    handles: Mutex<HashMap<HandleKey, CK_OBJECT_HANDLE>>,
    /// Where new object handles come from (the module's allocator).
    handle_allocator: Arc<HandleAllocator>,
    /// The card said a remote-management session completed (`63CF`): re-read the objects
    /// before the next operation.
    stale: AtomicBool,
    /// What GET DATA (application) said.
    pub app_info: applet::AppInfo,
    /// The card takes writes through the STORE DATA provisioning profile.
    pub writable: bool,
    pub label: String,
    pub serial: String,
    pub applet_version: u8,
    pub logged_in: AtomicBool,
    removed: AtomicBool,
}

impl Token {
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub fn mark_removed(&self) {
        if !self.removed.swap(true, Ordering::AcqRel) {
            info!("token {:?} removed", self.label);
        }
    }

    pub fn object(&self, handle: CK_OBJECT_HANDLE) -> Option<Arc<Object>> {
        self.cache
            .read()
            .objects
            .iter()
            .find(|o| o.handle == handle)
            .cloned()
    }

    /// The token's objects as they stand.
    pub fn objects(&self) -> Vec<Arc<Object>> {
        self.cache.read().objects.clone()
    }

    /// A copy of the card objects as the cache knows them.
    pub fn card_objects(&self) -> Vec<CardObject> {
        self.cache.read().card_objects.clone()
    }

    /// Rebuilds the PKCS#11 view from `card_objects`; unchanged objects keep their handles.
    pub fn set_card_objects(&self, card_objects: Vec<CardObject>) {
        let mut handles = self.handles.lock();
        let objects = object::build_objects(&card_objects, |class, info| {
            *handles
                .entry((class, info.id.clone(), info.label.clone()))
                .or_insert_with(|| self.handle_allocator.object_handle())
        })
        .into_iter()
        .map(Arc::new)
        .collect();
        *self.cache.write() = Cache {
            card_objects,
            objects,
        };
    }

    /// Re-reads every object from the card (inside an operation of `run`).
    pub fn reload(&self, ch: &mut AppletChannel<'_>) -> Result<()> {
        let (_, card_objects) = read_card(ch, &self.reader)?;
        self.set_card_objects(card_objects);
        self.stale.store(false, Ordering::Release);
        info!("{}: object cache re-read", self.reader);
        Ok(())
    }

    /// Notes that the card reported a completed remote-management session.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Runs one operation's APDUs on the token's channel inside one card transaction. After a
    /// card reset (another process, a power cycle) the channel is reopened and the operation
    /// retried once; a removed card marks the token removed.
    pub fn run<R>(&self, mut op: impl FnMut(&mut AppletChannel<'_>) -> Result<R>) -> Result<R> {
        if self.is_removed() {
            return Err(Error::new(CKR_DEVICE_REMOVED, "token was removed"));
        }
        let mut link = self.lease_link();
        if self.stale.load(Ordering::Acquire) {
            let reloaded = link.run_once(self.style, &mut |ch: &mut AppletChannel<'_>| {
                self.reload(ch)
            });
            if let Err(e) = reloaded {
                warn!(
                    "{}: re-reading the objects after a remote update: {e}",
                    self.reader
                );
            }
        }
        let mut result = link.run_once(self.style, &mut op);
        if let Err(e) = &result
            && e.is_card_reset()
        {
            info!("{}: the card was reset; reopening the channel", self.reader);
            result = link
                .reopen(self.style, &self.reader)
                .and_then(|()| link.run_once(self.style, &mut op));
        }
        // A failed exchange with a card that is no longer there is a removal, whatever the
        // transport called it.
        if let Err(e) = &result
            && e.rv() == CKR_DEVICE_ERROR
            && !link.conn.as_mut().is_some_and(|c| c.is_present())
        {
            result = Err(Error::new(
                CKR_DEVICE_REMOVED,
                format!("{} (the card is no longer present)", e.detail()),
            ));
        }
        if let Err(e) = &result
            && e.rv() == CKR_DEVICE_REMOVED
        {
            self.mark_removed();
        }
        // A remote update completed (63CF) or changed an object under us (6989): the next
        // operation first re-reads the objects, so no stale credential is ever used.
        let changed =
            matches!(&result, Err(e) if e.rv() == crate::error::CKR_IOTSAFE_OBJECT_CHANGED);
        if std::mem::take(&mut link.remote_update_seen) || changed {
            info!(
                "{}: the card's objects changed remotely; refreshing the cache",
                self.reader
            );
            self.mark_stale();
            // Right away, so that object lookups (0 APDUs) never serve the old credential.
            if let Err(e) = link.run_once(self.style, &mut |ch: &mut AppletChannel<'_>| {
                self.reload(ch)
            }) {
                warn!(
                    "{}: re-reading the objects: {e} (retried before the next operation)",
                    self.reader
                );
            }
        }
        result
    }

    /// A channel for one operation: a free one of the pool, else a new one while the pool may
    /// grow (another connection, MANAGE CHANNEL + SELECT), else the first that frees up.
    fn lease_link(&self) -> ArcMutexGuard<RawMutex, Link> {
        let links = self.links.read().clone();
        for link in &links {
            if let Some(guard) = link.try_lock_arc() {
                return guard;
            }
        }
        if links.len() < self.max_channels
            && !self.pool_full.load(Ordering::Acquire)
            && let Some(_growing) = self.growing.try_lock()
            && self.links.read().len() < self.max_channels
        {
            // One thread grows the pool at a time; the others wait for a channel below.
            match self.open_link() {
                Some(link) => {
                    let guard = link.lock_arc();
                    self.links.write().push(link);
                    return guard;
                }
                None => self.pool_full.store(true, Ordering::Release),
            }
        }
        // Wait for a busy channel; spread waiters over the pool.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let i = NEXT.fetch_add(1, Ordering::Relaxed) as usize % links.len().max(1);
        match links.get(i) {
            Some(link) => link.lock_arc(),
            None => Arc::new(Mutex::new(Link::closed())).lock_arc(),
        }
    }

    /// Another connection with its own logical channel and the applet selected on it.
    fn open_link(&self) -> Option<Arc<Mutex<Link>>> {
        let (aid, logical_channel) = {
            let links = self.links.read();
            let first = links.first()?.lock();
            (first.aid.clone(), first.logical_channel)
        };
        if !logical_channel {
            return None;
        }
        let mut conn = match self.source.connect(&self.reader) {
            Ok(Some(c)) => c,
            _ => return None,
        };
        match open_applet_channel(
            conn.as_mut(),
            std::slice::from_ref(&aid),
            true,
            self.style,
            &self.reader,
        ) {
            Ok(Some((route, _))) if route != ChannelRoute::Cla(0) => {
                debug!("{}: channel pool grows: {route:?}", self.reader);
                Some(Arc::new(Mutex::new(Link {
                    conn: Some(conn),
                    route,
                    aid,
                    logical_channel: true,
                    remote_update_seen: false,
                })))
            }
            _ => {
                debug!(
                    "{}: no further logical channel; the pool stays at its size",
                    self.reader
                );
                conn.disconnect();
                None
            }
        }
    }

    /// How many channels the pool holds now.
    pub fn channels(&self) -> usize {
        self.links.read().len()
    }

    /// True while the card is still in the reader (no APDU sent). A busy link means the card
    /// is in use, hence present.
    pub fn check_present(&self) -> bool {
        if self.is_removed() {
            return false;
        }
        let first = self.links.read().first().cloned();
        let Some(first) = first else { return false };
        if let Some(mut link) = first.try_lock() {
            let present = link.conn.as_mut().is_some_and(|c| c.is_present());
            if !present {
                self.mark_removed();
            }
            return present;
        }
        true
    }

    /// Closes the logical channels and leaves the card as it is.
    pub fn close(&self) {
        let links = std::mem::take(&mut *self.links.write());
        for link in links {
            self.close_link(&mut link.lock());
        }
    }

    fn close_link(&self, link: &mut Link) {
        let route = link.route;
        if let Some(mut conn) = link.conn.take() {
            if !self.is_removed() {
                let closed = match route {
                    ChannelRoute::Session(id) => conn.close_session(id).map_err(Error::from),
                    ChannelRoute::Cla(0) => Ok(()),
                    ChannelRoute::Cla(ch) => conn
                        .with_transaction(ChannelRoute::Cla(0), &mut |pipe| {
                            applet::close_channel(pipe, ch)
                        }),
                };
                if let Err(e) = closed {
                    debug!("{}: closing the channel: {e}", self.reader);
                }
            }
            conn.disconnect();
        }
    }

    /// A token over one connection whose pool cannot grow (no source of further connections),
    /// with handles of its own.
    pub fn connect(
        conn: Box<dyn CardConnection>,
        config: &Config,
        reader: &str,
    ) -> Result<Option<Token>> {
        let handles = Arc::new(HandleAllocator::new());
        Self::connect_pooled(
            Arc::new(NoFurtherConnections),
            handles,
            conn,
            config,
            reader,
        )
    }

    /// Opens a channel, selects the applet and reads everything the object cache needs; more
    /// channels come from `source` when the pool grows. `Ok(None)` when the card has no IoT
    /// SAFE applet.
    pub fn connect_pooled(
        source: Arc<dyn ReaderSource>,
        handle_allocator: Arc<HandleAllocator>,
        mut conn: Box<dyn CardConnection>,
        config: &Config,
        reader: &str,
    ) -> Result<Option<Token>> {
        let style = config.class_style();
        let opened = open_applet_channel(
            conn.as_mut(),
            &config.aids(),
            config.applet.logical_channel,
            style,
            reader,
        )?;
        let Some((route, aid)) = opened else {
            conn.disconnect();
            return Ok(None);
        };
        let mut read = None;
        conn.with_transaction(route, &mut |pipe| {
            let mut ch = AppletChannel::new(pipe, route.cla_channel(), style);
            let (app_info, objects) = read_card(&mut ch, reader)?;
            let writable = match config.applet.provisioning.as_str() {
                "on" => true,
                "off" => false,
                _ => ch.supports_provisioning()?,
            };
            read = Some((app_info, objects, writable));
            Ok(())
        })?;
        let Some((app_info, card_objects, writable)) = read else {
            return Err(Error::new(CKR_GENERAL_ERROR, "card read did not run"));
        };
        let serial: String = app_info
            .identifier
            .iter()
            .take(8)
            .map(|b| format!("{b:02X}"))
            .collect();
        let label = config.applet.token_label.clone().unwrap_or_else(|| {
            format!("IoT SAFE {}", serial.get(..8).unwrap_or(&serial))
                .trim()
                .to_string()
        });
        info!(
            "{reader}: IoT SAFE token {label:?} on {route:?}, {} card objects",
            card_objects.len()
        );
        let token = Token {
            reader: reader.to_string(),
            links: RwLock::new(vec![Arc::new(Mutex::new(Link {
                conn: Some(conn),
                route,
                aid,
                logical_channel: config.applet.logical_channel,
                remote_update_seen: false,
            }))]),
            max_channels: config.applet.max_channels.max(1),
            pool_full: AtomicBool::new(false),
            growing: Mutex::new(()),
            source,
            style,
            cache: RwLock::new(Cache {
                card_objects: Vec::new(),
                objects: Vec::new(),
            }),
            handles: Mutex::new(HashMap::new()),
            handle_allocator,
            stale: AtomicBool::new(false),
            label,
            serial,
            applet_version: app_info.version.unwrap_or(0),
            app_info,
            writable,
            logged_in: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        };
        token.set_card_objects(card_objects);
        Ok(Some(token))
    }
}

/// A source that has no further connections to give (the pool stays at one channel).
struct NoFurtherConnections;

impl ReaderSource for NoFurtherConnections {
    fn reader_names(&self) -> std::result::Result<Vec<String>, crate::transport::TransportError> {
        Ok(Vec::new())
    }
    fn connect(
        &self,
        _reader: &str,
    ) -> std::result::Result<Option<Box<dyn CardConnection>>, crate::transport::TransportError>
    {
        Ok(None)
    }
    fn card_present(&self, _reader: &str) -> bool {
        false
    }
}

pub struct Slot {
    pub id: CK_SLOT_ID,
    pub reader: String,
    token: Mutex<Option<Arc<Token>>>,
    /// Serialises connection attempts to this slot's card (per slot, never global).
    connecting: Mutex<()>,
}

impl Slot {
    pub fn new(id: CK_SLOT_ID, reader: String) -> Self {
        Slot {
            id,
            reader,
            token: Mutex::new(None),
            connecting: Mutex::new(()),
        }
    }

    /// The connected token, connecting first if needed. `Ok(None)`: no card or no applet.
    pub fn token(
        &self,
        source: &Arc<dyn ReaderSource>,
        config: &Config,
        handles: &Arc<HandleAllocator>,
    ) -> Result<Option<Arc<Token>>> {
        if let Some(t) = self.current_token() {
            return Ok(Some(t));
        }
        let _connecting = self.connecting.lock();
        if let Some(t) = self.current_token() {
            return Ok(Some(t));
        }
        let conn = match source.connect(&self.reader) {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(None),
            Err(e) => {
                debug!("{}: connect: {e}", self.reader);
                return Ok(None);
            }
        };
        match Token::connect_pooled(source.clone(), handles.clone(), conn, config, &self.reader) {
            Ok(Some(token)) => {
                let token = Arc::new(token);
                *self.token.lock() = Some(token.clone());
                Ok(Some(token))
            }
            Ok(None) => Ok(None),
            // Gone while being read: simply no token.
            Err(e) if e.rv() == CKR_DEVICE_REMOVED => Ok(None),
            // A card that is there but fails is a device error, not a missing token.
            Err(e) => {
                warn!("{}: reading the IoT SAFE applet failed: {e}", self.reader);
                Err(Error::new(CKR_DEVICE_ERROR, e.detail().to_string()))
            }
        }
    }

    /// The token as it stands, without connecting; drops a token whose card went away.
    pub fn current_token(&self) -> Option<Arc<Token>> {
        let mut guard = self.token.lock();
        match guard.as_ref() {
            Some(t) if !t.is_removed() => Some(t.clone()),
            Some(_) => {
                *guard = None;
                None
            }
            None => None,
        }
    }

    /// Closes the token's channel and connection (C_Finalize).
    pub fn close(&self) {
        if let Some(t) = self.token.lock().take() {
            t.close();
        }
    }
}
