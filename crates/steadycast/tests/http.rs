//! Hostile HTTP peers: half-sent requests, garbage, oversized heads and paths that try to
//! leave the store get a clear answer or a closed connection, and everyone else is served.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::{Duration, Instant};

use common::*;

async fn assert_healthy(node: &TestNode) {
    let (status, _) = get(&node.url("/healthz")).await.expect("/healthz answers");
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_get_an_answer_or_a_closed_connection() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::serve_in(dir.path(), "").await;

    // Half a request head, and nothing more: closed after the 10 s head timeout, while
    // others are served meanwhile. A kept-alive connection that sends nothing after its
    // request is closed as soon.
    let timed = |request: &'static [u8]| {
        let addr = node.http;
        tokio::spawn(async move {
            let started = Instant::now();
            let exchanged = raw_exchange(addr, request, Duration::from_secs(30)).await;
            (exchanged, started.elapsed())
        })
    };
    let stalled = timed(b"GET /healthz HTTP/1.1\r\nhost: x\r\n");
    let idle = timed(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_healthy(&node).await;
    let ((answer, closed), waited) = stalled.await.unwrap();
    assert!(closed, "a half-sent head kept its connection for 30 s");
    assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    let ((answer, closed), waited) = idle.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle kept-alive connection stayed open for 30 s");
    assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");

    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("garbage", b"\x16\x03\x01\x02\x00hello\r\n\r\n".to_vec(), "400"),
        (
            "a 100 KB header",
            format!("GET /healthz HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(100_000)).into_bytes(),
            "431",
        ),
        (
            "a path out of the store",
            b"GET /live/../../etc/passwd HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            "404",
        ),
        (
            "an encoded path out of a VOD asset",
            b"GET /vod/x/..%2F..%2F..%2Fetc%2Fpasswd HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                .to_vec(),
            "400",
        ),
        (
            "an unknown method",
            b"BREW /live/x/main.m3u8 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
            "405",
        ),
    ];
    for (what, request, status) in cases {
        let (answer, closed) = raw_exchange(node.http, &request, Duration::from_secs(10)).await;
        let line = answer.lines().next().unwrap_or_default();
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: answered `{line}`"
        );
        assert!(closed, "{what}: the connection stayed open");
        assert!(!answer.contains("root:"), "{what}: {answer}");
        assert_healthy(&node).await;
    }
}
