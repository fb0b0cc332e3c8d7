//! The catalog and blob-store suites, each run on both backends: SQLite and PostgreSQL, a
//! directory and an S3-compatible store (Garage). The servers are real and start per test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use channel::{Event, EventKind};
use store::{
    Backend, BlobStore, Catalog, ChannelRow, DirStore, HarvestRow, HeaderRow, InitRow, S3Config,
    S3Store, SegmentRow, StoreError,
};
use test_servers::{Garage, Postgres, Tmpfs};
use timeline::Feed;

#[tokio::test]
async fn catalog_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    catalog_suite(&url, Backend::Sqlite).await;
}

#[tokio::test]
async fn catalog_on_postgres() {
    let pg = Postgres::start().await;
    catalog_suite(&pg.url, Backend::Postgres).await;
}

#[tokio::test]
async fn blobs_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path()).await.unwrap();
    blob_suite(store.into()).await;
    // No temporary file is left behind by a put.
    let left: Vec<_> = std::fs::read_dir(dir.path().join("live/a/x"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["init-a.mp4"]);
}

#[tokio::test]
async fn a_full_disk_is_an_error_and_leaves_no_partial_blob() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("blobs"), "64k").await;
    let store = BlobStore::from(DirStore::open(dir.path().join("blobs")).await.unwrap());
    let segment = Bytes::from(vec![7u8; 40_000]);
    store.put("live/a/1.m4s", &segment).await.unwrap();
    let full = store.put("live/a/2.m4s", &segment).await;
    let message = full.unwrap_err().to_string();
    assert!(
        message.contains("live/a/2.m4s") && message.contains("No space left"),
        "{message}"
    );
    assert_eq!(keys(&store, "live/a").await, ["live/a/1.m4s"]);
    assert_eq!(store.get("live/a/2.m4s").await.unwrap(), None);
    assert_eq!(
        store.get("live/a/1.m4s").await.unwrap(),
        Some(segment.clone())
    );
    disk.resize("1m").await;
    store.put("live/a/2.m4s", &segment).await.unwrap();
    assert_eq!(store.get("live/a/2.m4s").await.unwrap(), Some(segment));
}

#[tokio::test]
async fn blobs_on_s3() {
    let garage = Garage::start().await;
    blob_suite(s3(&garage, "node-1").await).await;
    // Two prefixes in one bucket do not see each other's keys.
    let other = s3(&garage, "node-2").await;
    assert!(other.list("live").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_s3_store_is_an_error_within_seconds() {
    let config = S3Config {
        bucket: "steadycast".into(),
        endpoint: Some(format!("http://127.0.0.1:{}", test_servers::free_port())),
        region: Some("garage".into()),
        access_key_id: Some("GK0000".into()),
        secret_access_key: Some("secret".into()),
        ..S3Config::default()
    };
    let store = BlobStore::from(S3Store::open(&config).unwrap());
    let started = Instant::now();
    let put = store.put("live/a/1.m4s", &Bytes::from_static(b"x")).await;
    assert!(matches!(put, Err(StoreError::S3 { .. })), "{put:?}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let message = put.unwrap_err().to_string();
    assert!(message.contains("live/a/1.m4s"), "{message}");
}

#[tokio::test]
async fn a_catalog_url_of_another_kind_is_refused_with_the_password_hidden() {
    let err = Catalog::open("mysql://me:hunter2@db/x").await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("mysql://me:***@db/x"), "{message}");
    assert!(!message.contains("hunter2"));
}

async fn keys(store: &BlobStore, prefix: &str) -> Vec<String> {
    let listed = store.list(prefix).await.unwrap();
    listed.into_iter().map(|b| b.key).collect()
}

async fn s3(garage: &Garage, prefix: &str) -> BlobStore {
    let config = S3Config {
        bucket: garage.bucket.clone(),
        endpoint: Some(garage.endpoint.clone()),
        region: Some(garage.region.clone()),
        prefix: prefix.into(),
        access_key_id: Some(garage.access_key_id.clone()),
        secret_access_key: Some(garage.secret_access_key.clone()),
    };
    S3Store::open(&config).unwrap().into()
}

async fn blob_suite(store: BlobStore) {
    let bytes = Bytes::from_static(b"moof");
    store.put("live/demo/360p/1.m4s", &bytes).await.unwrap();
    assert_eq!(
        store.get("live/demo/360p/1.m4s").await.unwrap(),
        Some(bytes)
    );
    assert_eq!(store.get("live/demo/360p/2.m4s").await.unwrap(), None);
    store.delete("live/demo/360p/1.m4s").await.unwrap();
    store.delete("live/demo/360p/1.m4s").await.unwrap();
    assert_eq!(store.get("live/demo/360p/1.m4s").await.unwrap(), None);

    for key in ["live/a/x/init-a.mp4", "live/a/y/1.m4s", "live/b/x/1.m4s"] {
        store.put(key, &Bytes::from_static(b"x")).await.unwrap();
    }
    store
        .put("live/a/y/2.m4s", &Bytes::from_static(b"longer"))
        .await
        .unwrap();
    let listed = store.list("live/a").await.unwrap();
    let listed: Vec<(&str, u64)> = listed.iter().map(|b| (b.key.as_str(), b.size)).collect();
    assert_eq!(
        listed,
        [
            ("live/a/x/init-a.mp4", 1),
            ("live/a/y/1.m4s", 1),
            ("live/a/y/2.m4s", 6)
        ]
    );
    store.delete("live/a/y/2.m4s").await.unwrap();
    assert!(store.list("live/none").await.unwrap().is_empty());
    store.delete("live/a/y/1.m4s").await.unwrap();

    for key in ["../x", "/etc/passwd", "a/../../b", ""] {
        assert!(
            matches!(store.get(key).await, Err(StoreError::BadKey(_))),
            "{key}"
        );
        assert!(matches!(
            store.put(key, &Bytes::new()).await,
            Err(StoreError::BadKey(_))
        ));
    }
}

async fn catalog_suite(url: &str, backend: Backend) {
    let catalog = Catalog::open(url).await.unwrap();
    assert_eq!(catalog.backend(), backend);
    first_copy_of_a_segment_wins(&catalog).await;
    ranges_and_retention_walk_the_index(&catalog).await;
    events_newest_first_and_pruned(&catalog).await;
    headers_are_kept_once_and_periods_pruned(&catalog).await;
    harvest_jobs_are_recorded_and_updated(&catalog).await;
    put_channels_and_inits(&catalog).await;
    tokens_are_kept_as_hashes_and_revoked(&catalog).await;
    catalog.close().await;

    // Everything survives a reopen, and migrating again changes nothing.
    let catalog = Catalog::open(url).await.unwrap();
    assert_eq!(
        catalog.channels().await.unwrap(),
        [ChannelRow {
            id: "demo".into(),
            spec: r#"{"id":"demo"}"#.into()
        }]
    );
    let inits = catalog.inits("demo").await.unwrap();
    assert_eq!(inits.len(), 1);
    assert!(inits[0].blob_key.ends_with("init-00000000000000ab.mp4"));
    assert_eq!(
        catalog.segment("demo", "360p", 897_808_074).await.unwrap(),
        Some(segment(897_808_074, Feed::B))
    );
    catalog.close().await;
}

fn segment(n: u64, feed: Feed) -> SegmentRow {
    SegmentRow {
        channel: "demo".into(),
        rendition: "360p".into(),
        n,
        feed,
        start: n * 180_000,
        duration: 180_000,
        timescale: 90_000,
        byte_len: 1000 + n,
        blob_key: format!("live/demo/360p/{n}.m4s"),
        quality: n.is_multiple_of(2).then_some(90),
        header: Some("00000000000000ab".into()),
        disc: 3,
        listed_ms: 1_764_000_000_000 + n,
    }
}

async fn tokens_are_kept_as_hashes_and_revoked(catalog: &Catalog) {
    assert!(!catalog.has_live_token().await.unwrap());
    assert!(catalog.insert_token("ci", "operator", "h1").await.unwrap());
    assert!(
        !catalog.insert_token("ci", "admin", "h2").await.unwrap(),
        "a live token's name is taken"
    );
    assert!(catalog.has_live_token().await.unwrap());
    assert_eq!(
        catalog.token_by_hash("h1").await.unwrap(),
        Some(("ci".into(), "operator".into()))
    );
    assert_eq!(catalog.token_by_hash("h2").await.unwrap(), None);
    assert!(catalog.revoke_token("ci").await.unwrap());
    assert!(!catalog.revoke_token("ci").await.unwrap());
    assert_eq!(catalog.token_by_hash("h1").await.unwrap(), None);
    assert!(!catalog.has_live_token().await.unwrap());
    let listed = catalog.tokens().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_ms.is_some());
    // A revoked token's name goes to a new one; a token from config replaces whatever was.
    assert!(catalog.insert_token("ci", "read", "h3").await.unwrap());
    assert_eq!(
        catalog.token_by_hash("h3").await.unwrap(),
        Some(("ci".into(), "read".into()))
    );
    catalog.put_token("admin", "admin", "h4").await.unwrap();
    catalog.put_token("admin", "admin", "h5").await.unwrap();
    assert_eq!(catalog.token_by_hash("h4").await.unwrap(), None);
    assert_eq!(
        catalog.token_by_hash("h5").await.unwrap(),
        Some(("admin".into(), "admin".into()))
    );
    assert_eq!(catalog.tokens().await.unwrap().len(), 2);
}

async fn first_copy_of_a_segment_wins(catalog: &Catalog) {
    let n = 897_808_074;
    assert!(catalog.insert_segment(&segment(n, Feed::B)).await.unwrap());
    assert!(!catalog.insert_segment(&segment(n, Feed::A)).await.unwrap());
    let kept = catalog.segment("demo", "360p", n).await.unwrap();
    assert_eq!(kept, Some(segment(n, Feed::B)));
    let unscored = SegmentRow {
        quality: None,
        header: None,
        ..segment(n + 1, Feed::A)
    };
    catalog.insert_segment(&unscored).await.unwrap();
    let kept = catalog.segment("demo", "360p", n + 1).await.unwrap();
    assert_eq!(kept, Some(unscored));
    catalog.delete_segment("demo", "360p", n + 1).await.unwrap();
}

async fn ranges_and_retention_walk_the_index(catalog: &Catalog) {
    for n in 100..110 {
        catalog.insert_segment(&segment(n, Feed::A)).await.unwrap();
    }
    let listed = catalog
        .segments_between("demo", "360p", 103, 106, 100)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|s| s.n).collect::<Vec<_>>(),
        [103, 104, 105, 106]
    );
    let capped = catalog
        .segments_between("demo", "360p", 0, u64::MAX, 2)
        .await
        .unwrap();
    assert_eq!(capped.iter().map(|s| s.n).collect::<Vec<_>>(), [100, 101]);
    let old = catalog
        .segments_before("demo", "360p", 104, 3)
        .await
        .unwrap();
    assert_eq!(old.iter().map(|s| s.n).collect::<Vec<_>>(), [100, 101, 102]);
    for s in &old {
        catalog.delete_segment("demo", "360p", s.n).await.unwrap();
    }
    let left = catalog
        .segments_before("demo", "360p", 104, 10)
        .await
        .unwrap();
    assert_eq!(left.iter().map(|s| s.n).collect::<Vec<_>>(), [103]);
    assert!(
        catalog
            .segment("demo", "360p", 100)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        catalog
            .segment("other", "360p", 104)
            .await
            .unwrap()
            .is_none()
    );
    let keys = catalog.blob_keys("demo").await.unwrap();
    assert!(keys.contains(&("live/demo/360p/109.m4s".to_string(), Some(1109))));
    assert!(!keys.iter().any(|(k, _)| k == "live/demo/360p/100.m4s"));
}

async fn events_newest_first_and_pruned(catalog: &Catalog) {
    let kinds = [
        EventKind::InputStarted,
        EventKind::EncoderStarted,
        EventKind::EncoderRestarted,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let event = Event {
            at_ms: 1_000 + i as u64,
            channel: "demo".into(),
            source: "pipeline a".into(),
            kind,
            detail: format!("#{i}"),
        };
        catalog.insert_event(&event).await.unwrap();
    }
    let events = catalog.events("demo", 2).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::EncoderRestarted, EventKind::EncoderStarted]
    );
    assert_eq!(events[0].detail, "#2");
    assert!(catalog.events("other", 10).await.unwrap().is_empty());
    assert_eq!(catalog.prune_events(1_002).await.unwrap(), 2);
    assert_eq!(catalog.events("demo", 10).await.unwrap().len(), 1);
}

async fn headers_are_kept_once_and_periods_pruned(catalog: &Catalog) {
    let header = HeaderRow {
        channel: "demo".into(),
        rendition: "360p".into(),
        id: "0123456789abcdef".into(),
        blob_key: "live/demo/360p/init-0123456789abcdef.mp4".into(),
    };
    assert!(catalog.put_header(&header).await.unwrap());
    assert!(!catalog.put_header(&header).await.unwrap());
    assert_eq!(
        catalog.headers("demo").await.unwrap(),
        std::slice::from_ref(&header)
    );
    let keys = catalog.blob_keys("demo").await.unwrap();
    assert!(keys.contains(&(header.blob_key.clone(), None)));

    let legacy = SegmentRow {
        header: None,
        ..segment(7, Feed::A)
    };
    catalog.insert_segment(&legacy).await.unwrap();
    let named = catalog
        .name_unnamed_segments("demo", "360p", &header.id)
        .await
        .unwrap();
    assert_eq!(named, 1);
    let seven = catalog.segment("demo", "360p", 7).await.unwrap().unwrap();
    assert_eq!(seven.header.as_deref(), Some(header.id.as_str()));
    catalog.delete_segment("demo", "360p", 7).await.unwrap();

    for n in [100, 200, 300, 400] {
        catalog.put_period("demo", n, n * 2000).await.unwrap();
    }
    catalog.put_period("demo", 200, 1).await.unwrap();
    catalog.delete_periods_before("demo", 350).await.unwrap();
    // 300 is in force at 350, and continues 200: only 100 goes.
    assert_eq!(
        catalog.periods("demo").await.unwrap(),
        [(200, 400_000), (300, 600_000), (400, 800_000)]
    );
    catalog.delete_periods_before("demo", 50).await.unwrap();
    catalog.delete_periods_before("demo", 250).await.unwrap();
    assert_eq!(catalog.periods("demo").await.unwrap().len(), 3);
}

async fn harvest_jobs_are_recorded_and_updated(catalog: &Catalog) {
    let job = HarvestRow {
        name: "goal".into(),
        channel: "demo".into(),
        start_ms: 1_000,
        end_ms: 5_000,
        state: "queued".into(),
        progress: 0,
        detail: String::new(),
    };
    assert!(catalog.insert_harvest(&job).await.unwrap());
    assert!(
        !catalog.insert_harvest(&job).await.unwrap(),
        "names are unique"
    );
    catalog
        .update_harvest("goal", "done", 100, "12 segments")
        .await
        .unwrap();
    let stored = catalog.harvest("goal").await.unwrap().unwrap();
    assert_eq!((stored.state.as_str(), stored.progress), ("done", 100));
    assert_eq!(stored.detail, "12 segments");
    assert_eq!(catalog.harvests("demo").await.unwrap().len(), 1);
    assert!(catalog.harvest("nope").await.unwrap().is_none());
}

async fn put_channels_and_inits(catalog: &Catalog) {
    catalog.put_channel("demo", "{}").await.unwrap();
    catalog
        .put_channel("demo", r#"{"id":"demo"}"#)
        .await
        .unwrap();
    catalog.put_channel("news", "{}").await.unwrap();
    assert!(catalog.delete_channel("news").await.unwrap());
    assert!(!catalog.delete_channel("news").await.unwrap());
    assert!(catalog.channel("news").await.unwrap().is_none());
    let init = InitRow {
        channel: "demo".into(),
        rendition: "360p".into(),
        feed: Feed::A,
        blob_key: "live/demo/360p/init.mp4".into(),
        track: "{}".into(),
    };
    assert!(catalog.put_init(&init).await.unwrap());
    assert!(!catalog.put_init(&init).await.unwrap());
    let newer = InitRow {
        blob_key: "live/demo/360p/init-00000000000000ab.mp4".into(),
        ..init.clone()
    };
    assert!(catalog.put_init(&newer).await.unwrap(), "the latest wins");
}
