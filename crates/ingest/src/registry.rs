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
                    if stream_key.is_empty()
                        || stream_key.len() > 256
                        || stream_key
                            .bytes()
                            .any(|b| b.is_ascii_control() || b == b'/')
                    {
                        return Err(invalid(
                            "the RTMP stream key must be 1-256 characters without '/'",
                        ));
                    }
                    if let Some(existing) = inner.stream_keys.get(stream_key) {
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
            && let Some(existing) = inner.stream_keys.get(stream_key)
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

    pub(crate) fn lookup_stream_key(&self, key: &str) -> Option<Lookup> {
        let inner = self.lock();
        let id = inner.stream_keys.get(key)?;
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
mod tests {
    use super::*;

    fn udp(bind: &str) -> InputSpec {
        InputSpec::Udp {
            bind: bind.parse().unwrap(),
            multicast: None,
            interface: None,
        }
    }

    #[tokio::test]
    async fn duplicates_are_refused() {
        let reg = InputRegistry::new();
        reg.add(
            "demo",
            "a",
            InputSpec::Rtmp {
                stream_key: "k1".into(),
            },
        )
        .unwrap();
        assert!(matches!(
            reg.add("demo", "a", InputSpec::Srt { passphrase: None }),
            Err(RegistryError::DuplicateInput(_))
        ));
        let err = reg
            .add(
                "other",
                "a",
                InputSpec::Rtmp {
                    stream_key: "k1".into(),
                },
            )
            .err()
            .unwrap();
        assert!(
            matches!(err, RegistryError::DuplicateStreamKey { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("demo/a"));

        reg.add("demo", "u", udp("127.0.0.1:0")).unwrap();
        let bound = reg.local_addr("demo", "u").unwrap();
        assert_ne!(bound.port(), 0);
        let err = reg
            .add("demo", "u2", udp(&bound.to_string()))
            .err()
            .unwrap();
        assert!(matches!(err, RegistryError::DuplicateBind { .. }), "{err}");

        reg.add(
            "demo",
            "t",
            InputSpec::Tcp {
                bind: "127.0.0.1:0".parse().unwrap(),
            },
        )
        .unwrap();
        let bound = reg.local_addr("demo", "t").unwrap();
        // Same address, other protocol: fine.
        reg.add("demo", "u3", udp(&bound.to_string())).unwrap();

        assert!(reg.by_stream_key("k1").is_some());
        assert!(reg.by_stream_key("nope").is_none());
        assert!(reg.srt_input("demo", "a").is_none(), "demo/a is RTMP");
    }

    #[tokio::test]
    async fn address_in_use_is_reported_synchronously() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let reg = InputRegistry::new();
        let err = reg
            .add("demo", "t", InputSpec::Tcp { bind: addr })
            .err()
            .unwrap();
        assert!(matches!(err, RegistryError::Bind { .. }), "{err}");
        assert!(reg.port("demo", "t").is_none());
    }

    #[tokio::test]
    async fn invalid_names_and_specs() {
        let reg = InputRegistry::new();
        assert!(
            reg.add("de/mo", "a", InputSpec::Srt { passphrase: None })
                .is_err()
        );
        assert!(
            reg.add("demo", "", InputSpec::Srt { passphrase: None })
                .is_err()
        );
        assert!(
            reg.add(
                "demo",
                "a",
                InputSpec::Srt {
                    passphrase: Some("short".into())
                }
            )
            .is_err()
        );
        assert!(
            reg.add(
                "demo",
                "a",
                InputSpec::Rtmp {
                    stream_key: "a/b".into()
                }
            )
            .is_err()
        );
        let (port, pass) = {
            reg.add(
                "demo",
                "a",
                InputSpec::Srt {
                    passphrase: Some("0123456789".into()),
                },
            )
            .unwrap();
            reg.srt_input("demo", "a").unwrap()
        };
        assert_eq!(port.id().to_string(), "demo/a");
        assert_eq!(pass.as_deref(), Some("0123456789"));
    }

    #[test]
    fn listener_inputs_need_a_runtime_but_shared_ones_do_not() {
        let reg = InputRegistry::new();
        assert!(matches!(
            reg.add("demo", "u", udp("127.0.0.1:0")),
            Err(RegistryError::NoRuntime)
        ));
        reg.add(
            "demo",
            "r",
            InputSpec::Rtmp {
                stream_key: "k".into(),
            },
        )
        .unwrap();
    }

    #[tokio::test]
    async fn remove_channel_frees_keys_addresses_and_ends_sessions() {
        let reg = InputRegistry::new();
        reg.add(
            "demo",
            "a",
            InputSpec::Rtmp {
                stream_key: "k".into(),
            },
        )
        .unwrap();
        reg.add(
            "demo",
            "t",
            InputSpec::Tcp {
                bind: "127.0.0.1:0".parse().unwrap(),
            },
        )
        .unwrap();
        reg.add("keep", "a", InputSpec::Srt { passphrase: None })
            .unwrap();
        let addr = reg.local_addr("demo", "t").unwrap();
        let token = reg.lookup_stream_key("k").unwrap().removed;
        assert_eq!(reg.remove_channel("demo"), 2);
        assert!(token.is_cancelled());
        assert!(reg.port("demo", "a").is_none());
        assert!(reg.by_stream_key("k").is_none());
        assert!(reg.port("keep", "a").is_some());
        // The key and (once the aborted task released it) the address can be used again.
        reg.add(
            "demo2",
            "a",
            InputSpec::Rtmp {
                stream_key: "k".into(),
            },
        )
        .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match reg.add("demo2", "t", InputSpec::Tcp { bind: addr }) {
                Ok(_) => break,
                Err(RegistryError::Bind { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
