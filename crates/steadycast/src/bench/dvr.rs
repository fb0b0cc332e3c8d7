//! DVR figures: catalog insert rate, time-shifted playlists over long windows (rendered from the
//! catalog on request), and how long a node takes to restart over a long catalog.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use futures::{StreamExt, TryStreamExt};
use origin::Origin;
use store::{BlobStore, Catalog, SegmentRow};
use timeline::Feed;

/// Fills `days` of 2 s segments of rendition 360p into the catalog, then measures.
pub async fn run(
    catalog: &Catalog,
    blobs: &BlobStore,
    spec: &channel::ChannelSpec,
    days: u32,
) -> anyhow::Result<()> {
    let grid = spec.grid().map_err(anyhow::Error::msg)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    // Leave the last minutes to the segments the packager measurement stored.
    let last = grid.segment_at(now - Duration::from_secs(300));
    let first = grid.segment_at(now - Duration::from_secs(u64::from(days) * 86_400 + 3600));
    // The listings decode with the header the packager measurement stored.
    let Some(header) = catalog
        .headers(&spec.id)
        .await?
        .into_iter()
        .find(|h| h.rendition == "360p")
    else {
        bail!("no 360p header stored by the packager measurement");
    };
    // Bytes behind every listing (a few, not 200 KB), so that the restart below walks a
    // store as large as the catalog, as a real one would; listed with their true length, or
    // the repair would take them for segments a full disk cut short.
    let bytes = bytes::Bytes::from_static(b"segment");
    let started = Instant::now();
    for n in first..last {
        let row = SegmentRow {
            channel: spec.id.clone(),
            rendition: "360p".into(),
            n,
            feed: Feed::A,
            start: grid.start_of(n, 90_000),
            duration: grid.duration_ticks(90_000).unwrap_or(180_000),
            timescale: 90_000,
            byte_len: bytes.len() as u64,
            blob_key: format!("live/{}/360p/{n}.m4s", spec.id),
            quality: Some(100),
            header: Some(header.id.clone()),
            disc: 0,
            listed_ms: grid.start_of(n + 1, 1000),
        };
        catalog.insert_segment(&row).await?;
    }
    let insert_secs = started.elapsed().as_secs_f64();
    // Many at once: each put waits for two fsyncs.
    futures::stream::iter(first..last)
        .map(|n| {
            let key = format!("live/{}/360p/{n}.m4s", spec.id);
            let bytes = &bytes;
            async move { blobs.put(&key, bytes).await }
        })
        .buffer_unordered(64)
        .try_collect::<()>()
        .await?;
    let secs = insert_secs;
    let rows = last - first;
    println!(
        "catalog: {:.0} segment listings/s ({rows} rows, {days} day(s) of one rendition, {:?})",
        rows as f64 / secs,
        catalog.backend()
    );

    let started = Instant::now();
    let restarted = Origin::new(
        catalog.clone(),
        blobs.clone(),
        channel::Events::default(),
        None,
        Default::default(),
    );
    restarted.repair(&spec.id, None).await?;
    let repaired = started.elapsed().as_secs_f64();
    let rss_before = resident_bytes();
    restarted.add_channel(spec.clone(), "bench".into()).await?;
    println!(
        "restart: catalog/store repair {repaired:.2} s, then index and live window restore: \
         {:.2} s in all over {rows} listings",
        started.elapsed().as_secs_f64()
    );
    let per_listing = resident_bytes().saturating_sub(rss_before) as f64 / rows as f64;
    println!(
        "memory: the restored index holds {rows} listings in {:.1} MB more resident memory \
         ({per_listing:.0} B per listing: a 24 h window of 2 s segments in 4 renditions is \
         about {:.0} MB per channel)",
        per_listing * rows as f64 / 1e6,
        per_listing * 43_200.0 * 4.0 / 1e6
    );
    // The restarted origin knows every listing (the packager path was bypassed above).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = restarted.playback_router();
    tokio::spawn(crate::http::serve(listener, app, None));

    let client = reqwest::Client::new();
    // Ranges at the live end of the index, and a day from the far end of a long one.
    let end = now.as_secs() - 360;
    let mut ranges = vec![(end - 3600, end, "1 h"), (end - 86_400, end, "24 h")];
    if days >= 2 {
        let oldest = grid.start_time(first).as_secs() + 60;
        ranges.push((oldest, oldest + 86_400, "24 h from the oldest end"));
    }
    for (start, end, what) in ranges {
        let url = format!("{base}/live/{}/360p.m3u8?start={start}&end={end}", spec.id);
        let (mut best, mut total, mut bytes) = (f64::MAX, 0.0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            let response = client.get(&url).send().await?;
            if !response.status().is_success() {
                bail!("GET {url}: {}", response.text().await.unwrap_or_default());
            }
            bytes = response.bytes().await?.len();
            let took = t.elapsed().as_secs_f64();
            best = best.min(took);
            total += took;
        }
        println!(
            "time-shift: {what} HLS playlist ({} segments, {} KB) over a {days}-day index served \
             in {:.1} ms (best of 5; mean {:.1} ms), from the in-memory index",
            (end - start) / 2,
            bytes / 1000,
            best * 1e3,
            total / 5.0 * 1e3
        );
    }

    Ok(())
}

/// This process's resident memory, from /proc (0 where there is none), after the allocator
/// gave back the pages it holds free, so that it counts what is in use.
fn resident_bytes() -> u64 {
    // SAFETY: malloc_trim has no preconditions; it only returns free memory to the system.
    unsafe { libc::malloc_trim(0) };
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
