//! The node's inputs: which port each channel's input publishes to, and the per-input listener
//! tasks (UDP, TCP, test pattern). The shared RTMP and SRT listeners look inputs up here.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::{InputId, InputPort, InputSpec};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("input {0} already exists")]
    DuplicateInput(InputId),
    #[error("the RTMP stream key is already used by input {existing}")]
    DuplicateStreamKey { existing: InputId },
    #[error("{protocol} address {addr} is already used by input {existing}")]
    DuplicateBind {
        protocol: &'static str,
        addr: SocketAddr,
        existing: InputId,
    },
    #[error("cannot bind {protocol} {addr} for input {input}: {source}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        input: InputId,
        #[source]
        source: io::Error,
    },
    #[error("invalid {what} {name:?}: use letters, digits, '-', '_' or '.'")]
    InvalidName { what: &'static str, name: String },
    #[error("invalid spec for input {input}: {reason}")]
    InvalidSpec { input: InputId, reason: String },
    #[error("inputs with listeners must be added from inside a tokio runtime")]
    NoRuntime,
    #[error("no input {0}")]
    UnknownInput(InputId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
}

struct Entry {
    port: Arc<InputPort>,
    spec: InputSpec,
    /// The per-input task (UDP, TCP, test pattern), aborted on removal.
    task: Option<AbortHandle>,
    /// The bound address of a UDP/TCP input (the real port when the spec said port 0).
    local_addr: Option<SocketAddr>,
    /// Cancelled when the input is removed; sessions on the shared listeners (RTMP, SRT) watch it.
    removed: CancellationToken,
}

#[derive(Default)]
struct Inner {
    inputs: HashMap<InputId, Entry>,
    stream_keys: HashMap<String, InputId>,
    /// Stream keys replaced by a rotation, each still opening its input until a Unix time in
    /// milliseconds: a publisher moves to the new key without a drop.
    retiring: HashMap<String, (InputId, u64)>,
    binds: HashMap<(Proto, SocketAddr), InputId>,
}

/// What relays an input from other nodes into its port here (a cluster's input relay); it
/// runs until the input is removed.
pub type Relay = Arc<dyn Fn(Arc<InputPort>) -> BoxFuture<'static, ()> + Send + Sync>;

/// All inputs of this node. `Send + Sync`; share it behind an `Arc`. Dropping it aborts every
/// per-input task.
#[derive(Default)]
pub struct InputRegistry {
    inner: Mutex<Inner>,
    events: channel::Events,
    relay: Option<Relay>,
    /// A node without the ingest role binds no UDP/TCP input: its inputs come by relay.
    relay_only: bool,
}

/// What the shared listeners get for an input: its port and the token cancelled on removal.
pub(crate) struct Lookup {
    pub(crate) port: Arc<InputPort>,
    pub(crate) removed: CancellationToken,
    pub(crate) passphrase: Option<String>,
}

impl Inner {
    /// The input a stream key opens now or until its rotation's grace ends.
    fn key_owner(&self, key: &str) -> Option<&InputId> {
        self.stream_keys
            .get(key)
            .or_else(|| self.retiring.get(key).map(|(id, _)| id))
    }
}

fn check_stream_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > 256 || key.bytes().any(|b| b.is_ascii_control() || b == b'/') {
        return Err("the RTMP stream key must be 1-256 characters without '/'");
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl InputRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose ports report publishers coming and going to `events`.
    pub fn with_events(events: channel::Events) -> Self {
        let mut registry = Self::default();
        registry.events = events;
        registry
    }

    /// Feeds every contribution input (not a test pattern, made wherever it is encoded) by
    /// `relay` too; with `relay_only`, UDP and TCP inputs bind nothing here.
    pub fn relaying(mut self, relay: Relay, relay_only: bool) -> Self {
        self.relay = Some(relay);
        self.relay_only = relay_only;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds input `input` of `channel`. UDP and TCP inputs bind their socket here (so "address in
    /// use" is reported at once) and start their listener task; a test pattern starts its task;
    /// RTMP and SRT inputs are served by the shared listeners ([`crate::rtmp::serve`],
    /// [`crate::srt::serve`]).
    pub fn add(
        &self,
        channel: &str,
        input: &str,
        spec: InputSpec,
    ) -> Result<Arc<InputPort>, RegistryError> {
        self.add_allowing(channel, input, spec, Vec::new())
    }

    /// [`InputRegistry::add`], for publishers from the networks in `allowed` only (any, when
    /// empty): set before the input can be found or bound, so no other source gets a byte in.
    pub fn add_allowing(
        &self,
        channel: &str,
        input: &str,
        spec: InputSpec,
        allowed: Vec<access::Cidr>,
    ) -> Result<Arc<InputPort>, RegistryError> {
        if !valid_name(channel) {
            return Err(RegistryError::InvalidName {
                what: "channel name",
                name: channel.into(),
            });
        }
        if !valid_name(input) {
            return Err(RegistryError::InvalidName {
                what: "input name",
                name: input.into(),
            });
        }
        let id = InputId {
            channel: channel.to_string(),
            input: input.to_string(),
        };
        let invalid = |reason: &str| RegistryError::InvalidSpec {
            input: id.clone(),
            reason: reason.to_string(),
        };

        // Validate and check for conflicts before binding anything.
        let bind = {
            let inner = self.lock();
            if inner.inputs.contains_key(&id) {
                return Err(RegistryError::DuplicateInput(id));
            }
            match &spec {
                InputSpec::Rtmp { stream_key } => {
                    check_stream_key(stream_key).map_err(invalid)?;
                    if let Some(existing) = inner.key_owner(stream_key) {
                        return Err(RegistryError::DuplicateStreamKey {
                            existing: existing.clone(),
                        });
                    }
                    None
                }
                InputSpec::Srt { passphrase } => {
                    if let Some(p) = passphrase
                        && !(10..=79).contains(&p.len())
                    {
                        return Err(invalid("an SRT passphrase must be 10 to 79 characters"));
                    }
                    None
                }
                InputSpec::Udp { .. } | InputSpec::Tcp { .. } if self.relay_only => None,
                InputSpec::Udp { bind, .. } => Some((Proto::Udp, *bind)),
                InputSpec::Tcp { bind } => Some((Proto::Tcp, *bind)),
                InputSpec::TestPattern { .. } => None,
            }
        };
        let relay = self
            .relay
            .clone()
            .filter(|_| !matches!(spec, InputSpec::TestPattern { .. }));
        if let Some(key) = bind
            && key.1.port() != 0
            && let Some(existing) = self.lock().binds.get(&key)
        {
            return Err(RegistryError::DuplicateBind {
                protocol: key.0.name(),
                addr: key.1,
                existing: existing.clone(),
            });
        }

        let needs_runtime =
            !matches!(spec, InputSpec::Rtmp { .. } | InputSpec::Srt { .. }) || relay.is_some();
        let runtime = if needs_runtime {
            Some(tokio::runtime::Handle::try_current().map_err(|_| RegistryError::NoRuntime)?)
        } else {
            None
        };
        let port = InputPort::allowing(id.clone(), self.events.clone(), allowed);
        let bind_error = |protocol: &'static str, addr: SocketAddr| {
            let id = id.clone();
            move |source| RegistryError::Bind {
                protocol,
                addr,
                input: id,
                source,
            }
        };

        // Bind (synchronously) and start the task, but only register the abort handle once the
        // entry is in; the task only holds the port, never the registry.
        let (task, local_addr) = match (&spec, runtime.clone()) {
            (
                InputSpec::Udp {
                    bind,
                    multicast,
                    interface,
                },
                Some(rt),
            ) if !self.relay_only => {
                let _guard = rt.enter();
                let socket = crate::udp::bind(*bind, *multicast, *interface)
                    .map_err(bind_error("UDP", *bind))?;
                let local = socket.local_addr().ok();
                let task = rt.spawn(crate::udp::run(socket, port.clone()));
                (Some(task.abort_handle()), local)
            }
            (InputSpec::Tcp { bind }, Some(rt)) if !self.relay_only => {
                let _guard = rt.enter();
                let listener = std::net::TcpListener::bind(bind)
                    .and_then(|l| {
                        l.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(l)
                    })
                    .map_err(bind_error("TCP", *bind))?;
                let local = listener.local_addr().ok();
                let task = rt.spawn(crate::tcp::run(listener, port.clone()));
                (Some(task.abort_handle()), local)
            }
            (InputSpec::TestPattern { size, frame_rate }, Some(rt)) => {
                let task = rt.spawn(crate::testsrc::run(
                    port.clone(),
                    size.clone(),
                    frame_rate.clone(),
                ));
                (Some(task.abort_handle()), None)
            }
            _ => (None, None),
        };

        let mut inner = self.lock();
        // Another add may have raced us between the checks and here.
        let conflict = if inner.inputs.contains_key(&id) {
            Some(RegistryError::DuplicateInput(id.clone()))
        } else if let InputSpec::Rtmp { stream_key } = &spec
            && let Some(existing) = inner.key_owner(stream_key)
        {
            Some(RegistryError::DuplicateStreamKey {
                existing: existing.clone(),
            })
        } else if let Some(key) = bind
            && key.1.port() != 0
            && let Some(existing) = inner.binds.get(&key)
        {
            Some(RegistryError::DuplicateBind {
                protocol: key.0.name(),
                addr: key.1,
                existing: existing.clone(),
            })
        } else {
            None
        };
        if let Some(err) = conflict {
            if let Some(task) = task {
                task.abort();
            }
            return Err(err);
        }
        if let InputSpec::Rtmp { stream_key } = &spec {
            inner.stream_keys.insert(stream_key.clone(), id.clone());
        }
        if let Some((proto, addr)) = bind {
            // Port 0 means "any": record the real address so it is found as a duplicate later.
            let addr = if addr.port() == 0 {
                local_addr.unwrap_or(addr)
            } else {
                addr
            };
            inner.binds.insert((proto, addr), id.clone());
        }
        tracing::info!(input = %id, kind = spec_kind(&spec), local_addr = ?local_addr, "input added");
        let removed = CancellationToken::new();
        if let (Some(relay), Some(rt)) = (relay, runtime) {
            let (relayed, removed) = (relay(port.clone()), removed.clone());
            rt.spawn(async move {
                tokio::select! {
                    _ = removed.cancelled() => {}
                    _ = relayed => {}
                }
            });
        }
        inner.inputs.insert(
            id,
            Entry {
                port: port.clone(),
                spec,
                task,
                local_addr,
                removed,
            },
        );
        Ok(port)
    }

    /// Removes every input of `channel`: aborts their tasks (which ends UDP/TCP sessions), ends
    /// RTMP/SRT sessions on them and forgets their ports. Returns how many inputs were removed.
    pub fn remove_channel(&self, channel: &str) -> usize {
        self.remove_where(channel, |_| true)
    }

    /// Removes the test patterns of `channel` (made where they are encoded) and keeps its
    /// contribution inputs.
    pub fn remove_generated(&self, channel: &str) -> usize {
        self.remove_where(channel, |spec| {
            matches!(spec, InputSpec::TestPattern { .. })
        })
    }

    fn remove_where(&self, channel: &str, which: impl Fn(&InputSpec) -> bool) -> usize {
        let removed: Vec<(InputId, Entry)> = {
            let mut inner = self.lock();
            let ids: Vec<InputId> = inner
                .inputs
                .iter()
                .filter(|(id, entry)| id.channel == channel && which(&entry.spec))
                .map(|(id, _)| id.clone())
                .collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(entry) = inner.inputs.remove(&id) {
                    out.push((id, entry));
                }
            }
            inner
                .stream_keys
                .retain(|_, id| !out.iter().any(|(gone, _)| gone == id));
            inner
                .retiring
                .retain(|_, (id, _)| !out.iter().any(|(gone, _)| gone == id));
            inner
                .binds
                .retain(|_, id| !out.iter().any(|(gone, _)| gone == id));
            out
        };
        for (id, entry) in &removed {
            if let Some(task) = &entry.task {
                task.abort();
            }
            entry.removed.cancel();
            tracing::info!(input = %id, "input removed");
        }
        removed.len()
    }

    /// The inputs a publisher is connected to here (not relayed from elsewhere), as
    /// `channel/input`.
    pub fn publishing(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .lock()
            .inputs
            .iter()
            .filter(|(_, e)| e.port.live().is_some_and(|l| l.relayed.is_none()))
            .map(|(id, _)| id.to_string())
            .collect();
        ids.sort();
        ids
    }

    pub fn port(&self, channel: &str, input: &str) -> Option<Arc<InputPort>> {
        let id = InputId {
            channel: channel.to_string(),
            input: input.to_string(),
        };
        self.lock().inputs.get(&id).map(|e| e.port.clone())
    }

    /// The RTMP input with this stream key.
    pub fn by_stream_key(&self, key: &str) -> Option<Arc<InputPort>> {
        self.lookup_stream_key(key).map(|l| l.port)
    }

    /// The SRT input `channel/input` and its passphrase, if it requires one.
    pub fn srt_input(
        &self,
        channel: &str,
        input: &str,
    ) -> Option<(Arc<InputPort>, Option<String>)> {
        self.lookup_srt(channel, input)
            .map(|l| (l.port, l.passphrase))
    }

    /// The address a UDP or TCP input is bound to (the real port if the spec asked for port 0).
    pub fn local_addr(&self, channel: &str, input: &str) -> Option<SocketAddr> {
        let id = InputId {
            channel: channel.to_string(),
            input: input.to_string(),
        };
        self.lock().inputs.get(&id).and_then(|e| e.local_addr)
    }

    /// Every input id, sorted.
    pub fn inputs(&self) -> Vec<InputId> {
        let mut ids: Vec<InputId> = self.lock().inputs.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Gives RTMP input `input` of `channel` the stream key `current`; each of `retiring`
    /// (a key and a Unix time in ms) still opens it until then. Replaces the keys it had.
    pub fn set_stream_keys(
        &self,
        channel: &str,
        input: &str,
        current: &str,
        retiring: &[(String, u64)],
    ) -> Result<(), RegistryError> {
        let id = InputId {
            channel: channel.to_string(),
            input: input.to_string(),
        };
        check_stream_key(current).map_err(|reason| RegistryError::InvalidSpec {
            input: id.clone(),
            reason: reason.into(),
        })?;
        let mut inner = self.lock();
        let theirs = std::iter::once(current).chain(retiring.iter().map(|(k, _)| k.as_str()));
        for key in theirs {
            if let Some(existing) = inner.key_owner(key).filter(|owner| **owner != id) {
                return Err(RegistryError::DuplicateStreamKey {
                    existing: existing.clone(),
                });
            }
        }
        let Some(entry) = inner.inputs.get_mut(&id) else {
            return Err(RegistryError::UnknownInput(id));
        };
        let InputSpec::Rtmp { stream_key } = &mut entry.spec else {
            return Err(RegistryError::InvalidSpec {
                input: id,
                reason: "only an RTMP input has a stream key".into(),
            });
        };
        *stream_key = current.to_string();
        inner.stream_keys.retain(|_, owner| *owner != id);
        inner.retiring.retain(|_, (owner, _)| *owner != id);
        inner.stream_keys.insert(current.to_string(), id.clone());
        for (key, until_ms) in retiring {
            inner.retiring.insert(key.clone(), (id.clone(), *until_ms));
        }
        Ok(())
    }

    pub(crate) fn lookup_stream_key(&self, key: &str) -> Option<Lookup> {
        let mut inner = self.lock();
        let id = match inner.stream_keys.get(key) {
            Some(id) => id.clone(),
            None => {
                let (id, until_ms) = inner.retiring.get(key)?.clone();
                if now_ms() >= until_ms {
                    inner.retiring.remove(key);
                    return None;
                }
                id
            }
        };
        let id = &id;
        let entry = inner.inputs.get(id)?;
        Some(Lookup {
            port: entry.port.clone(),
            removed: entry.removed.clone(),
            passphrase: None,
        })
    }

    pub(crate) fn lookup_srt(&self, channel: &str, input: &str) -> Option<Lookup> {
        let id = InputId {
            channel: channel.to_string(),
            input: input.to_string(),
        };
        let inner = self.lock();
        let entry = inner.inputs.get(&id)?;
        match &entry.spec {
            InputSpec::Srt { passphrase } => Some(Lookup {
                port: entry.port.clone(),
                removed: entry.removed.clone(),
                passphrase: passphrase.clone(),
            }),
            _ => None,
        }
    }
}

impl Drop for InputRegistry {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        for entry in inner.inputs.values() {
            if let Some(task) = &entry.task {
                task.abort();
            }
            entry.removed.cancel();
        }
    }
}

fn spec_kind(spec: &InputSpec) -> &'static str {
    match spec {
        InputSpec::Rtmp { .. } => "rtmp",
        InputSpec::Srt { .. } => "srt",
        InputSpec::Udp { .. } => "udp",
        InputSpec::Tcp { .. } => "tcp",
        InputSpec::TestPattern { .. } => "test-pattern",
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
