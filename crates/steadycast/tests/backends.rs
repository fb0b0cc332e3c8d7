//! The scale-out backends end to end: a node whose catalog is PostgreSQL and whose segments
//! live in an S3-compatible bucket (Garage), both real servers on loopback. It plays, survives
//! kill -9 with every listed segment byte-identical, repairs what the crash left in the bucket,
//! and harvests a VOD asset into the bucket.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use store::{BlobStore, Catalog, S3Config, S3Store};
use test_servers::{Garage, Postgres, Tmpfs};

const PATTERN: &str =
    "[channels.inputs.pattern]\ntype = \"test-pattern\"\nsize = \"320x180\"\nframe_rate = \"15\"";

fn listed(playlist: &str) -> Vec<u64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_suffix(".m4s")?.rsplit('/').next()?.parse().ok())
        .collect()
}

async fn playlist(node: &TestNode, rendition: &str) -> Vec<u64> {
    let url = node.url(&format!("/live/scale/{rendition}.m3u8"));
    listed(&get(&url).await.unwrap().1)
}

/// Waits for the first event of `kind` on the `scale` channel.
async fn wait_for_event(node: &TestNode, kind: &str, seconds: u64) {
    wait_for(
        &format!("a {kind} event"),
        Duration::from_secs(seconds),
        || async { (!events_of(node, "scale", kind).await.is_empty()).then_some(()) },
    )
    .await;
}

/// Waits until the 180p playlist lists a segment after `n`: new segments are listed again.
async fn wait_for_listing_past(node: &TestNode, n: u64) {
    let url = node.url("/live/scale/180p.m3u8");
    wait_for("segments listed again", Duration::from_secs(60), || {
        let url = url.clone();
        async move { (listed(&get(&url).await?.1).last()? > &n).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgres_and_s3_plays_survives_kill_and_harvests() {
    let (pg, garage) = tokio::join!(Postgres::start(), Garage::start());
    let server = format!(
        "{CLUSTER_SECRET}\ncatalog = \"{}\"\nblobs = {{ type = \"s3\", bucket = \"{}\", endpoint = \"{}\", \
         region = \"{}\", prefix = \"node\", access_key_id = \"{}\", secret_access_key = \"{}\" }}",
        pg.url,
        garage.bucket,
        garage.endpoint,
        garage.region,
        garage.access_key_id,
        garage.secret_access_key
    );
    let bucket: BlobStore = S3Store::open(&S3Config {
        bucket: garage.bucket.clone(),
        endpoint: Some(garage.endpoint.clone()),
        region: Some(garage.region.clone()),
        prefix: "node".into(),
        access_key_id: Some(garage.access_key_id.clone()),
        secret_access_key: Some(garage.secret_access_key.clone()),
    })
    .unwrap()
    .into();
    let channel = channel_toml("scale", PATTERN);
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::serve_with(dir.path(), &server, &channel).await;
    node.wait_for_segments("scale", &RENDITIONS, 4).await;
    let (ok, report, _) = verify(&node.url("/live/scale/main.m3u8"), &["--seconds", "6"]).await;
    assert_steady("HLS on PostgreSQL + S3", ok, &report);

    // The bytes are in the bucket and the listing in PostgreSQL, nothing in the data directory.
    let before = playlist(&node, "180p").await;
    let kept = *before.last().unwrap();
    let catalog = Catalog::open(&pg.url).await.unwrap();
    let row = catalog
        .segment("scale", "180p", kept)
        .await
        .unwrap()
        .unwrap();
    // On PostgreSQL the node places its pipelines by leases: each copy is stored under its
    // writer's key (feed and lease epoch).
    let writer = format!("live/scale/180p/{kept}-{}", row.feed);
    assert!(row.blob_key.starts_with(&writer), "{row:?}");
    let in_bucket = bucket.list("live/scale/180p").await.unwrap();
    assert!(
        in_bucket.iter().any(|b| b.key == row.blob_key),
        "{in_bucket:?}"
    );
    assert!(!dir.path().join("data/segments").exists());
    assert!(!dir.path().join("data/catalog.db").exists());

    let (_, bytes) = get_bytes(&node.url(&format!("/live/scale/180p/{kept}.m4s"))).await;
    assert_eq!(bytes.len() as u64, row.byte_len);
    node.child.start_kill().unwrap();
    node.child.wait().await.unwrap();
    // What a crash can leave in a bucket: an object never listed, and a listed segment whose
    // object is gone.
    let orphan = "live/scale/180p/1.m4s";
    bucket
        .put(orphan, &Bytes::from_static(b"never listed"))
        .await
        .unwrap();
    let lost = before[0];
    let lost_row = catalog.segment("scale", "180p", lost).await.unwrap();
    bucket.delete(&lost_row.unwrap().blob_key).await.unwrap();

    let node = TestNode::serve_with(dir.path(), &server, &channel).await;
    assert_eq!(
        bucket.get(orphan).await.unwrap(),
        None,
        "the orphan survived the repair"
    );
    let after = playlist(&node, "180p").await;
    assert!(!after.contains(&lost), "a listing without bytes: {after:?}");
    assert!(
        after.contains(&kept),
        "segment {kept} lost across the restart: {after:?}"
    );
    let (status, again) = get_bytes(&node.url(&format!("/live/scale/180p/{kept}.m4s"))).await;
    assert_eq!(
        (status, again),
        (200, bytes),
        "segment {kept} changed across the restart"
    );
    let repaired = events_of(&node, "scale", "store_repaired").await;
    assert!(!repaired.is_empty(), "no repair reported");
    let url = node.url("/live/scale/180p.m3u8");
    let resumed = wait_for(
        "new segments after the restart",
        Duration::from_secs(60),
        || {
            let url = url.clone();
            async move {
                let n = listed(&get(&url).await?.1);
                (n.last()? > &(kept + 2)).then_some(n)
            }
        },
    )
    .await;
    // The live edge resumed on the same grid: no number was listed twice or out of order.
    assert!(resumed.windows(2).all(|w| w[0] < w[1]), "{resumed:?}");

    // A harvest writes its asset into the bucket and plays from the origin.
    let start = row.start / u64::from(row.timescale);
    let created = api_client()
        .post(node.url("/api/v1/channels/scale/harvests"))
        .json(&serde_json::json!({ "name": "clip", "start": start, "end": start + 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let job = node.url("/api/v1/channels/scale/harvests/clip");
    let done = wait_for("the harvest to finish", Duration::from_secs(60), || async {
        let v: serde_json::Value = serde_json::from_str(&get(&job).await?.1).ok()?;
        (v["harvest"]["state"] != "queued" && v["harvest"]["state"] != "running").then_some(v)
    })
    .await;
    assert_eq!(done["harvest"]["state"], "done", "{done}");
    let asset = bucket.list("vod/clip").await.unwrap();
    assert!(
        asset.iter().any(|b| b.key == "vod/clip/main.m3u8"),
        "{asset:?}"
    );
    let (ok, errors) = play(&node.url("/vod/clip/main.m3u8"), 30).await;
    assert!(
        ok && errors.trim().is_empty(),
        "the clip did not play: {errors}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_object_store_is_reported_and_what_is_listed_stays_served() {
    let mut garage = Garage::start().await;
    let server = format!(
        "blobs = {{ type = \"s3\", bucket = \"{}\", endpoint = \"{}\", region = \"{}\", \
         access_key_id = \"{}\", secret_access_key = \"{}\" }}",
        garage.bucket,
        garage.endpoint,
        garage.region,
        garage.access_key_id,
        garage.secret_access_key
    );
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::serve_with(dir.path(), &server, &channel_toml("scale", PATTERN)).await;
    node.wait_for_segments("scale", &RENDITIONS, 3).await;

    garage.stop().await;
    wait_for_event(&node, "store_failed", 30).await;
    let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("steadycast_store_failing{part=\"blobs\"} 1"),
        "{metrics}"
    );
    // Everything listed is still served, from memory.
    let listed_during = playlist(&node, "180p").await;
    assert!(listed_during.len() >= 3);
    for n in &listed_during {
        let (status, _) = get_bytes(&node.url(&format!("/live/scale/180p/{n}.m4s"))).await;
        assert_eq!(status, 200, "segment {n} during the outage");
    }
    let failed = events_of(&node, "scale", "store_failed").await;
    assert_eq!(
        failed.len(),
        1,
        "reported once, not per segment: {failed:?}"
    );
    assert!(node.log().contains("store"), "the log says why");

    garage.resume().await;
    wait_for_event(&node, "store_recovered", 60).await;
    wait_for_listing_past(&node, *listed_during.last().unwrap() + 1).await;
    let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("steadycast_store_failing{part=\"blobs\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_what_is_listed_stays_served() {
    let dir = tempfile::tempdir().unwrap();
    // Room for a few seconds of segments; the catalog stays on the roomy disk.
    let disk = Tmpfs::mount(&dir.path().join("data/segments"), "600k").await;
    let node = TestNode::serve_in(dir.path(), &channel_toml("scale", PATTERN)).await;
    wait_for_event(&node, "store_failed", 90).await;
    let failed = events_of(&node, "scale", "store_failed").await;
    assert!(failed[0].contains("No space left"), "{failed:?}");
    let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
    assert!(
        metrics.contains("steadycast_store_failing{part=\"blobs\"} 1"),
        "{metrics}"
    );
    let listed_during = playlist(&node, "180p").await;
    assert!(
        !listed_during.is_empty(),
        "nothing was listed before the disk filled"
    );
    for n in &listed_during {
        let (status, _) = get_bytes(&node.url(&format!("/live/scale/180p/{n}.m4s"))).await;
        assert_eq!(status, 200, "segment {n} on a full disk");
    }

    disk.resize("64m").await;
    wait_for_event(&node, "store_recovered", 60).await;
    wait_for_listing_past(&node, *listed_during.last().unwrap() + 1).await;
    // No partial file of a failed write is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("data/segments/live/scale/180p"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_outage_is_reported_and_what_is_listed_stays_served() {
    let mut pg = Postgres::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = format!("{CLUSTER_SECRET}\ncatalog = \"{}\"", pg.url);
    let node = TestNode::serve_with(dir.path(), &server, &channel_toml("scale", PATTERN)).await;
    node.wait_for_segments("scale", &RENDITIONS, 3).await;

    pg.stop().await;
    let failing = "steadycast_store_failing{part=\"catalog\"} 1";
    wait_for(
        "the catalog to be reported failing",
        Duration::from_secs(60),
        || async {
            let (_, metrics) = get(&node.url("/metrics")).await?;
            metrics.contains(failing).then_some(())
        },
    )
    .await;
    // The event could not be kept in the catalog it is about: the log has it.
    assert!(node.log().contains("StoreFailed"), "{}", node.log());
    let listed_during = playlist(&node, "180p").await;
    assert!(listed_during.len() >= 3);
    let listed_before = *listed_during.last().unwrap();
    // The packager stores what the pipelines make meanwhile and waits to list it.
    wait_for(
        "three segments stored while the catalog is down",
        Duration::from_secs(60),
        || async {
            let (_, metrics) = get(&node.url("/metrics")).await?;
            (deferred(&metrics, "180p") >= 3.0).then_some(())
        },
    )
    .await;
    for n in &listed_during {
        let (status, _) = get_bytes(&node.url(&format!("/live/scale/180p/{n}.m4s"))).await;
        assert_eq!(status, 200, "segment {n} while the catalog is down");
    }
    // On PostgreSQL a node is one of a cluster sharing the catalog: an outage alone does not
    // take it out of the balancer, which would stop what it still serves; and the check does
    // not wait for the catalog (a balancer gives it half a second).
    let asked = std::time::Instant::now();
    let (status, ready) = get(&node.url("/readyz")).await.unwrap();
    assert_eq!(status, 200, "{ready}");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    pg.resume().await;
    wait_for_event(&node, "store_recovered", 60).await;
    wait_for_listing_past(&node, listed_before + 4).await;
    assert_eq!(get(&node.url("/readyz")).await.unwrap().0, 200);
    // Nothing made during the outage is lost: listed, in order, once the catalog answered.
    let (_, after) = get(&node.url("/live/scale/180p.m3u8")).await.unwrap();
    assert!(!after.contains("EXT-X-GAP"), "{after}");
    for n in listed_before + 1..=listed_before + 3 {
        let (status, _) = get_bytes(&node.url(&format!("/live/scale/180p/{n}.m4s"))).await;
        assert_eq!(status, 200, "segment {n}, made while the catalog was down");
    }
    let catalog = Catalog::open(&pg.url).await.unwrap();
    let row = catalog.segment("scale", "180p", listed_before + 1).await;
    assert!(
        row.unwrap().is_some(),
        "segment {} is in the catalog",
        listed_before + 1
    );
}

/// `steadycast_listings_deferred_total` of a rendition of `scale`.
fn deferred(metrics: &str, rendition: &str) -> f64 {
    let label = format!("rendition=\"{rendition}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("steadycast_listings_deferred_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
