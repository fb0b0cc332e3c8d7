//! The input relay over a real socket: a session published on one node's input reaches a
//! pipeline's port on another, prologue and offset agreement included; the relay refuses a
//! caller without the cluster's credential, gives way to a publisher connected locally, and
//! lets go of the ingest node once no pipeline reads the input.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use channel::{InputSpec, Secret};
use ingest::{Container, InputEvent, InputId, InputPort, InputRegistry};
use tokio::sync::{broadcast, watch};

const SECRET: &str = "relay-test-secret-0123456789";

async fn poll<T, F: Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_event(rx: &mut broadcast::Receiver<InputEvent>) -> InputEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an input event within 10 s")
        .unwrap()
}

/// An ingest node's input `demo/main`, served by the relay on a loopback port; the counter
/// counts the requests it answered.
async fn ingest_node() -> (Arc<InputRegistry>, Arc<InputPort>, String, Arc<AtomicUsize>) {
    let inputs = Arc::new(InputRegistry::new());
    let spec = InputSpec::Rtmp {
        stream_key: "k".into(),
    };
    let port = inputs.add("demo", "main", spec).unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let app = cluster::relay::router(inputs.clone(), Secret::new(SECRET)).layer(
        axum::middleware::from_fn(move |request, next: axum::middleware::Next| {
            let counter = counter.clone();
            async move {
                let response = next.run(request).await;
                counter.fetch_add(1, Ordering::Relaxed);
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (inputs, port, url, answered)
}

fn pipeline_port() -> Arc<InputPort> {
    InputPort::new(InputId {
        channel: "demo".into(),
        input: "main".into(),
    })
}

#[tokio::test]
async fn a_session_crosses_nodes_and_the_relay_lets_go_when_unread() {
    let (_inputs, here, url, _) = ingest_node().await;
    let there = pipeline_port();
    let mut decoder = there.subscribe();
    // A node that is down comes first: the relay goes on to the next.
    let nodes = watch::channel(vec!["http://127.0.0.1:9".to_string(), url.clone()]).1;
    let relay = tokio::spawn(cluster::relay::pull(
        there.clone(),
        nodes,
        Secret::new(SECRET),
        reqwest::Client::new(),
    ));

    let publisher = here.publish("10.0.0.1:5000", Container::Flv).unwrap();
    publisher.send_prologue(Bytes::from_static(b"FLV-header"));
    let InputEvent::Started { container, .. } = next_event(&mut decoder).await else {
        panic!("the relayed session starts first")
    };
    assert_eq!(container, Container::Flv);
    let live = there.live().unwrap();
    assert_eq!(live.peer, format!("10.0.0.1:5000 via {url}"));
    assert_eq!(live.prologue, [Bytes::from_static(b"FLV-header")]);
    let InputEvent::Data { bytes, .. } = next_event(&mut decoder).await else {
        panic!("then the prologue")
    };
    assert_eq!(bytes, Bytes::from_static(b"FLV-header"));
    for i in 0..100u8 {
        publisher.send(Bytes::from(vec![i; 1000]));
    }
    for i in 0..100u8 {
        match next_event(&mut decoder).await {
            InputEvent::Data { bytes, .. } => assert_eq!(bytes, vec![i; 1000]),
            other => panic!("chunk {i}: {other:?}"),
        }
    }

    // Pipelines on any node agree on the publisher's node: the first proposal wins there.
    let session = there.live().unwrap().session;
    here.agree_local(publisher.session(), 42_000_000);
    assert_eq!(there.agree_offset(session, 42_300_000).await, 42_000_000);

    drop(publisher);
    assert!(matches!(
        next_event(&mut decoder).await,
        InputEvent::Ended { .. }
    ));
    poll("the relayed session gone", || async {
        there.live().is_none().then_some(())
    })
    .await;

    // A new session is relayed too; once no pipeline reads the input, the relay lets go.
    let second = here.publish("10.0.0.1:5001", Container::MpegTs).unwrap();
    poll("the second session relayed", || async {
        there
            .live()
            .is_some_and(|l| l.container == Container::MpegTs)
            .then_some(())
    })
    .await;
    assert_eq!(
        here.subscribers(),
        1,
        "the relay reads the ingest node's port"
    );
    drop(decoder);
    poll("the relay letting go", || async {
        (here.subscribers() == 0 && there.live().is_none()).then_some(())
    })
    .await;
    second.send(Bytes::from_static(b"unread"));
    relay.abort();
}

#[tokio::test]
async fn the_relay_needs_the_cluster_credential_and_yields_to_a_local_publisher() {
    let (_inputs, here, url, answered) = ingest_node().await;
    let _publisher = here.publish("10.0.0.1:5000", Container::Flv).unwrap();
    let client = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some("Basic x")] {
        let mut request = client.get(format!("{url}/relay/demo/main"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(SECRET), "{body}");
    }
    let unknown = client
        .get(format!("{url}/relay/demo/other"))
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // A pipeline node whose own ingest gets the publisher takes it from there.
    let there = pipeline_port();
    let mut decoder = there.subscribe();
    let nodes = watch::channel(vec![url.clone()]).1;
    let relay = tokio::spawn(cluster::relay::pull(
        there.clone(),
        nodes,
        Secret::new("not-the-cluster-secret"),
        reqwest::Client::new(),
    ));
    // Until the ingest node has refused two of the relay's looks for a publisher.
    let before = answered.load(Ordering::Relaxed);
    poll("the relay asking twice", || async {
        (answered.load(Ordering::Relaxed) >= before + 2).then_some(())
    })
    .await;
    assert!(there.live().is_none(), "a wrong credential relays nothing");
    assert_eq!(here.subscribers(), 0);
    relay.abort();
    let nodes = watch::channel(vec![url]).1;
    let relay = tokio::spawn(cluster::relay::pull(
        there.clone(),
        nodes,
        Secret::new(SECRET),
        reqwest::Client::new(),
    ));
    assert!(matches!(
        next_event(&mut decoder).await,
        InputEvent::Started { .. }
    ));
    let local = there.publish("10.0.0.2:6000", Container::Flv).unwrap();
    let mut ended = false;
    loop {
        match next_event(&mut decoder).await {
            InputEvent::Ended { .. } => ended = true,
            InputEvent::Started { .. } => break,
            InputEvent::Data { .. } => {}
        }
    }
    assert!(
        ended,
        "the relayed session ends before the local one starts"
    );
    assert_eq!(there.live().unwrap().peer, "10.0.0.2:6000");
    poll("the relay letting go of the ingest node", || async {
        (here.subscribers() == 0).then_some(())
    })
    .await;
    drop(local);
    relay.abort();
}
