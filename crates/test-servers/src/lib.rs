//! Real servers for tests, on loopback, each in its own temporary directory and stopped when
//! its handle drops: a PostgreSQL cluster ([`Postgres`]) and a single-node Garage, the
//! S3-compatible store ([`Garage`]); HAProxy and an nginx cache with the configurations in
//! `ops/` ([`Haproxy`], [`Nginx`]); `scripts/setup.sh --services` installs them all. And a
//! disk that fills up ([`Tmpfs`]).
//!
//! A missing server is a panic that says how to install it, never a silently skipped test.
#![allow(clippy::unwrap_used)]

mod garage;
mod postgres;
mod proxies;
mod tmpfs;

pub use garage::Garage;
pub use postgres::Postgres;
pub use proxies::{Haproxy, Nginx};
pub use tmpfs::Tmpfs;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `port`, or panics after `limit`.
pub(crate) async fn wait_for_port(what: &str, port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a set-up command to completion; panics with its output when it fails.
pub(crate) async fn run(command: &mut tokio::process::Command) -> String {
    let out = command
        .output()
        .await
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
