//! MPEG-TS over UDP, unicast or multicast. A session starts with the first valid datagram and
//! ends after [`LOSS_TIMEOUT`] without one. Datagrams that are not whole TS packets are dropped
//! and counted; they never end a session.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::UdpSocket;

use crate::tcp::{MAX_CHUNK, MAX_TS_CHUNK, Malformed, is_whole_ts};
use crate::{Container, InputPort, Publisher};

/// A session ends when no datagram arrived for this long.
pub(crate) const LOSS_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many queued datagrams are coalesced into one chunk before it is sent.
const MAX_COALESCED: usize = 64;

/// Binds the input's socket (synchronously, so the caller sees "address in use" at once) and
/// joins `multicast` on `interface` (or any interface) if given. Must be called inside a tokio
/// runtime.
pub(crate) fn bind(
    bind: SocketAddr,
    multicast: Option<Ipv4Addr>,
    interface: Option<Ipv4Addr>,
) -> io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(bind);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if multicast.is_some() {
        // Lets several receivers (e.g. two nodes' inputs on one host) share the group's port.
        socket.set_reuse_address(true)?;
    }
    // A deeper kernel queue rides out scheduling hiccups at contribution bitrates.
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.bind(&bind.into())?;
    if let Some(group) = multicast {
        if !group.is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{group} is not a multicast address"),
            ));
        }
        let interface = interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
        socket.join_multicast_v4(&group, &interface)?;
        socket.set_multicast_loop_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams for `port` until the task is aborted.
pub(crate) async fn run(socket: UdpSocket, port: Arc<InputPort>) {
    let mut malformed = Malformed::new(port.id().clone());
    let mut buf = vec![0u8; 65536];
    let mut session: Option<Publisher> = None;
    let mut pending = BytesMut::with_capacity(MAX_CHUNK);
    loop {
        let received = if session.is_some() {
            match tokio::time::timeout(LOSS_TIMEOUT, socket.recv_from(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(mut publisher) = session.take() {
                        publisher
                            .end_because(format!("no datagrams for {} s", LOSS_TIMEOUT.as_secs()));
                    }
                    continue;
                }
            }
        } else {
            socket.recv_from(&mut buf).await
        };
        let (n, from) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(input = %port.id(), error = %e, "UDP receive failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !port.admits(from.ip(), "udp") || !accept_datagram(&buf[..n], &from, &mut malformed) {
            continue;
        }
        if session.is_none() {
            match port.publish(&from.to_string(), Container::MpegTs) {
                Ok(p) => session = Some(p),
                Err(busy) => {
                    tracing::warn!(input = %port.id(), peer = %from, reason = %busy, "UDP datagram dropped: input busy");
                    continue;
                }
            }
        }
        let Some(publisher) = session.as_ref() else {
            continue;
        };
        pending.extend_from_slice(&buf[..n]);
        // Coalesce datagrams that are already queued.
        for _ in 0..MAX_COALESCED {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    if !port.admits(from.ip(), "udp")
                        || !accept_datagram(&buf[..n], &from, &mut malformed)
                    {
                        continue;
                    }
                    if pending.len() + n > MAX_TS_CHUNK {
                        publisher.send(pending.split().freeze());
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            publisher.send(pending.split().freeze());
        }
    }
}

fn accept_datagram(data: &[u8], from: &SocketAddr, malformed: &mut Malformed) -> bool {
    if is_whole_ts(data) && data.len() <= MAX_TS_CHUNK {
        true
    } else {
        malformed.record(
            &from.to_string(),
            &format!(
                "datagram of {} bytes is not whole MPEG-TS packets",
                data.len()
            ),
            1,
        );
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::tcp::TS_PACKET;
    use crate::tcp::test_support::*;
    use crate::{InputEvent, InputRegistry, InputSpec};

    /// Runs ffmpeg to `url` against the input, sends a garbage datagram once the session is up,
    /// and checks the session: whole packets, not ended by the garbage, ended by the silence.
    async fn publish_and_check(registry: &InputRegistry, channel: &str, url: &str) {
        let port = registry.port(channel, "a").unwrap();
        let addr = registry.local_addr(channel, "a").unwrap();
        let mut rx = port.subscribe();
        let child = ffmpeg("mpegts", url);
        let deadline = Instant::now() + Duration::from_secs(40);
        let collecting = async {
            let first = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap()
                .unwrap();
            let InputEvent::Started { session, container } = first else {
                panic!("expected Started, got {first:?}")
            };
            assert_eq!(container, Container::MpegTs);
            let garbage = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let target = SocketAddr::from(([127, 0, 0, 1], addr.port()));
            garbage.send_to(&[0x47; 100], target).await.unwrap();
            garbage
                .send_to(b"not a transport stream at all", target)
                .await
                .unwrap();
            let started = Some((session, container));
            let s = collect_more(
                &mut rx,
                deadline,
                Session {
                    started,
                    ..Session::default()
                },
            )
            .await;
            (s, Instant::now())
        };
        let ((session, ended_at), ((ok, log), exited_at)) = tokio::join!(collecting, async {
            let r = finish(child, Duration::from_secs(40)).await;
            (r, Instant::now())
        });
        assert!(ok, "ffmpeg failed: {log}");
        assert!(
            session
                .ended
                .as_deref()
                .is_some_and(|r| r.contains("no datagrams")),
            "ended: {:?}",
            session.ended
        );
        // The session outlived the garbage: it ended by silence after ffmpeg was done.
        assert!(ended_at >= exited_at);
        session.chunks.iter().for_each(|c| assert_whole_ts(c));
        let bytes = session.bytes();
        assert!(bytes.len() > 50 * TS_PACKET);
        let codecs = probe_codecs(&bytes, "ts").await;
        assert!(
            codecs.contains(&"h264".into()) && codecs.contains(&"aac".into()),
            "{codecs:?}"
        );
        assert!(counter("steadycast_input_malformed_total", channel, "a") >= 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unicast() {
        install_recorder();
        let registry = InputRegistry::new();
        let bind = "127.0.0.1:0".parse().unwrap();
        registry
            .add(
                "udpuni",
                "a",
                InputSpec::Udp {
                    bind,
                    multicast: None,
                    interface: None,
                },
            )
            .unwrap();
        let addr = registry.local_addr("udpuni", "a").unwrap();
        publish_and_check(&registry, "udpuni", &format!("udp://{addr}?pkt_size=1316")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multicast_on_loopback() {
        install_recorder();
        let registry = InputRegistry::new();
        let group = Ipv4Addr::new(239, 255, 77, 11);
        let spec = InputSpec::Udp {
            bind: "0.0.0.0:0".parse().unwrap(),
            multicast: Some(group),
            interface: Some(Ipv4Addr::LOCALHOST),
        };
        registry.add("udpmc", "a", spec).unwrap();
        let port = registry.local_addr("udpmc", "a").unwrap().port();
        let url = format!("udp://{group}:{port}?pkt_size=1316&localaddr=127.0.0.1&ttl=1");
        publish_and_check(&registry, "udpmc", &url).await;
    }

    #[tokio::test]
    async fn datagrams_from_outside_the_allowed_networks_start_nothing() {
        install_recorder();
        let registry = InputRegistry::new();
        let spec = InputSpec::Udp {
            bind: "127.0.0.1:0".parse().unwrap(),
            multicast: None,
            interface: None,
        };
        let only = vec!["127.0.0.2/32".parse().unwrap()];
        let port = registry.add_allowing("udpallow", "a", spec, only).unwrap();
        let addr = registry.local_addr("udpallow", "a").unwrap();
        let mut rx = port.subscribe();
        // Whole TS packets (sync byte, null PID): what a real sender's datagrams look like.
        let mut packet = [0xffu8; TS_PACKET];
        packet[..4].copy_from_slice(&[0x47, 0x1f, 0xff, 0x10]);
        let datagram = packet.repeat(7);
        let send_from = |local: [u8; 4]| {
            let datagram = datagram.clone();
            async move {
                let socket = tokio::net::UdpSocket::bind((Ipv4Addr::from(local), 0))
                    .await
                    .unwrap();
                for _ in 0..20 {
                    socket.send_to(&datagram, addr).await.unwrap();
                }
            }
        };
        send_from([127, 0, 0, 1]).await;
        let outsider = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(outsider.is_err(), "a refused source started a session");
        assert!(port.live().is_none());
        assert_eq!(
            counter("steadycast_input_sources_refused_total", "udpallow", "a"),
            20
        );
        send_from([127, 0, 0, 2]).await;
        let started = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(
            matches!(started, Ok(Ok(InputEvent::Started { .. }))),
            "{started:?}"
        );
    }

    /// Any datagram is taken or dropped, never a panic; one taken goes on as it came, as the
    /// aligner would pass it.
    #[test]
    fn fuzz_udp_datagram() {
        let from = SocketAddr::from(([192, 0, 2, 1], 5000));
        let mut malformed = Malformed::new(crate::InputId {
            channel: "fuzz".into(),
            input: "a".into(),
        });
        fuzzing::Target::new("udp_datagram").run(|data| {
            if accept_datagram(data, &from, &mut malformed) {
                let mut aligner = crate::tcp::TsAligner::new();
                aligner.push(data);
                assert_eq!(aligner.next_chunk().as_deref(), Some(data));
                assert_eq!(aligner.next_chunk(), None);
            }
        });
    }

    #[tokio::test]
    async fn a_non_multicast_group_is_refused() {
        let registry = InputRegistry::new();
        let spec = InputSpec::Udp {
            bind: "127.0.0.1:0".parse().unwrap(),
            multicast: Some(Ipv4Addr::new(10, 0, 0, 1)),
            interface: None,
        };
        assert!(registry.add("udpbad", "a", spec).is_err());
    }
}
