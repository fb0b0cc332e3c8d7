//! RTMP ingest against a real ffmpeg publisher.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::InputSpec;
use crate::tcp::test_support::{collect, ffmpeg, finish, probe_codecs};

async fn start(
    key: &str,
) -> (
    Arc<InputRegistry>,
    Arc<crate::InputPort>,
    SocketAddr,
    CancellationToken,
) {
    let registry = Arc::new(InputRegistry::new());
    let port = registry
        .add(
            "demo",
            "a",
            InputSpec::Rtmp {
                stream_key: key.into(),
            },
        )
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(serve(listener, registry.clone(), cancel.clone()));
    (registry, port, addr, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publish_becomes_a_valid_flv_session() {
    let (_registry, port, addr, cancel) = start("s3cret-key").await;
    let mut rx = port.subscribe();
    let child = ffmpeg("flv", &format!("rtmp://{addr}/live/s3cret-key"));
    let deadline = Instant::now() + Duration::from_secs(40);
    let (session, (ok, log)) = tokio::join!(
        collect(&mut rx, deadline),
        finish(child, Duration::from_secs(40))
    );
    assert!(ok, "ffmpeg failed: {log}");
    assert_eq!(session.started.map(|s| s.1), Some(Container::Flv));
    assert!(session.ended.is_some(), "session did not end");
    // Every chunk is whole tags: the first is the file header, the others parse on their own.
    assert_eq!(&session.chunks[0][..3], b"FLV");
    for chunk in &session.chunks[1..] {
        let mut framed = flv::file_header(true, true).to_vec();
        framed.extend_from_slice(chunk);
        let n: usize = flv::tags(&framed).map(|t| flv::tag_len(t.body.len())).sum();
        assert_eq!(n, chunk.len(), "chunk is not whole tags");
    }
    let bytes = session.bytes();
    let tags: Vec<_> = flv::tags(&bytes).collect();
    assert!(
        tags.iter().any(|t| t.tag_type == flv::TAG_SCRIPT),
        "no onMetaData"
    );
    let avc_header = tags
        .iter()
        .position(|t| t.tag_type == flv::TAG_VIDEO && t.body.starts_with(&[0x17, 0]));
    let aac_header = tags.iter().position(|t| {
        t.tag_type == flv::TAG_AUDIO && t.body.len() > 1 && t.body[0] >> 4 == 10 && t.body[1] == 0
    });
    let first_video = tags.iter().position(|t| t.tag_type == flv::TAG_VIDEO);
    let first_audio = tags.iter().position(|t| t.tag_type == flv::TAG_AUDIO);
    assert!(
        avc_header.is_some() && avc_header == first_video,
        "AVC sequence header first"
    );
    assert!(
        aac_header.is_some() && aac_header == first_audio,
        "AAC sequence header first"
    );
    let video = tags.iter().filter(|t| t.tag_type == flv::TAG_VIDEO).count();
    let audio = tags.iter().filter(|t| t.tag_type == flv::TAG_AUDIO).count();
    assert!(video >= 30 && audio >= 30, "video {video} audio {audio}");
    assert!(flv::first_timestamp(&bytes).is_some());
    let codecs = probe_codecs(&bytes, "flv").await;
    assert!(codecs.contains(&"h264".to_string()), "{codecs:?}");
    assert!(codecs.contains(&"aac".to_string()), "{codecs:?}");
    // The port is free again for the next publisher.
    assert!(port.live().is_none());
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_refused_and_starts_no_session() {
    let (_registry, port, addr, cancel) = start("right-key").await;
    let mut rx = port.subscribe();
    let child = ffmpeg("flv", &format!("rtmp://{addr}/live/wrong-key"));
    let (ok, log) = finish(child, Duration::from_secs(30)).await;
    assert!(!ok, "ffmpeg should fail on a wrong key: {log}");
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
    assert!(port.live().is_none());

    // Wrong application too.
    let child = ffmpeg("flv", &format!("rtmp://{addr}/other/right-key"));
    let (ok, log) = finish(child, Duration::from_secs(30)).await;
    assert!(!ok, "ffmpeg should fail on a wrong app: {log}");
    assert!(matches!(
        rx.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_outside_the_allowed_networks_is_refused_with_the_right_key() {
    let registry = Arc::new(InputRegistry::new());
    let rtmp = |key: &str| InputSpec::Rtmp {
        stream_key: key.into(),
    };
    let elsewhere = vec!["192.0.2.0/24".parse().unwrap()];
    let guarded = registry
        .add_allowing("demo", "guarded", rtmp("guarded-key"), elsewhere)
        .unwrap();
    let loopback = vec!["127.0.0.0/8".parse().unwrap()];
    let open = registry
        .add_allowing("demo", "open", rtmp("open-key"), loopback)
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(serve(listener, registry.clone(), cancel.clone()));

    let mut refused = guarded.subscribe();
    let child = ffmpeg("flv", &format!("rtmp://{addr}/live/guarded-key"));
    let (ok, log) = finish(child, Duration::from_secs(30)).await;
    assert!(!ok, "a source outside the list published: {log}");
    assert!(matches!(
        refused.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Empty)
    ));
    let mut rx = open.subscribe();
    let child = ffmpeg("flv", &format!("rtmp://{addr}/live/open-key"));
    let deadline = Instant::now() + Duration::from_secs(40);
    let (session, (ok, log)) = tokio::join!(
        collect(&mut rx, deadline),
        finish(child, Duration::from_secs(40))
    );
    assert!(ok, "{log}");
    assert!(session.started.is_some(), "an allowed source was refused");
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_publisher_is_refused_while_the_first_keeps_going() {
    let (_registry, port, addr, cancel) = start("busy-key").await;
    let mut rx = port.subscribe();
    let url = format!("rtmp://{addr}/live/busy-key");
    let first = ffmpeg("flv", &url);
    let deadline = Instant::now() + Duration::from_secs(40);
    let collecting = async {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap();
        let crate::InputEvent::Started { session, container } = event else {
            panic!("expected Started, got {event:?}")
        };
        let (ok, log) = finish(ffmpeg("flv", &url), Duration::from_secs(30)).await;
        assert!(!ok, "second publisher should be refused: {log}");
        assert!(log.contains("busy"), "{log}");
        let started = Some((session, container));
        let seen = crate::tcp::test_support::Session {
            started,
            ..Default::default()
        };
        crate::tcp::test_support::collect_more(&mut rx, deadline, seen).await
    };
    let (session, (ok, log)) = tokio::join!(collecting, finish(first, Duration::from_secs(40)));
    assert!(ok, "first publisher failed: {log}");
    assert!(session.ended.is_some());
    let codecs = probe_codecs(&session.bytes(), "flv").await;
    assert!(codecs.contains(&"h264".to_string()), "{codecs:?}");
    cancel.cancel();
}
