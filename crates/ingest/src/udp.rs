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
                        publisher.end_because(format!(
                            "no datagrams for {} s",
                            LOSS_TIMEOUT.as_secs()
                        ));
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
        if !accept_datagram(&buf[..n], &from, &mut malformed) {
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
        let Some(publisher) = session.as_ref() else { continue };
        pending.extend_from_slice(&buf[..n]);
        // Coalesce datagrams that are already queued.
        for _ in 0..MAX_COALESCED {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    if !accept_datagram(&buf[..n], &from, &mut malformed) {
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
            &format!("datagram of {} bytes is not whole MPEG-TS packets", data.len()),
            1,
        );
        false
    }
}
