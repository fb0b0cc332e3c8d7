//! A channel across machines: two ingest/packager/origin/API nodes and two pipeline nodes,
//! separate processes on one PostgreSQL catalog and a three-node Garage, behind HAProxy and an
//! nginx shield with the configurations in `ops/`. A publisher pushes the channel's RTMP input
//! to both ingest nodes; pipelines a and b sit on the two pipeline nodes by their leases,
//! relay the input from an ingest node and deliver to both packagers. A viewer alternating
//! its requests between the two origins sees one consistent stream; fifty viewers through the
//! shield cost the origins one request per object. Then, with `steadycast verify` watching
//! through HAProxy, the ingest node the relays use (a packager and origin too) is killed (-9),
//! the Garage node an origin works through is killed (by `steadycast chaos`), the node
//! holding pipeline a is killed, restarted (the lone survivor gives it a pipeline back),
//! frozen past its lease (SIGSTOP, then SIGCONT: it stops its pipeline and lists nothing under
//! its old epoch), drained, its catalog crashed and restarted (the viewer's playlists pause;
//! nothing made meanwhile is lost) and stopped: the viewer sees nothing.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;
use store::Catalog;
use test_servers::{Garage, Haproxy, Nginx, Postgres};

/// One RTMP input, published to both ingest nodes; the pipeline nodes relay it.
const INPUT: &str = "[channels.inputs.main]\ntype = \"rtmp\"\nstream_key = \"scale-key\"";
/// Short leases, so that a takeover fits a test: expired 2 s after the last renewal.
const LEASES: &str = "leases = { ttl_ms = 2000, renew_interval_ms = 400, claim_interval_ms = 400 }";

struct Cluster {
    pg: Postgres,
    server: String,
    /// The packager, origin and API nodes.
    packager: TestNode,
    second: TestNode,
    /// Where viewers connect: HAProxy over both origins.
    balancer: Haproxy,
}

impl Cluster {
    /// The `[server]` keys of a node with `roles` and `id` on the shared catalog and bucket.
    fn config(&self, roles: &str, id: &str) -> String {
        format!(
            "{}\nroles = [{roles}]\nnode_id = \"{id}\"\n{LEASES}",
            self.server
        )
    }

    async fn pipeline_node(&self, dir: &Path, id: &str) -> TestNode {
        TestNode::serve_with(dir, &self.config("\"pipeline\"", id), "").await
    }

    async fn nodes(&self) -> Value {
        let (status, body) = get(&self.packager.url("/api/v1/nodes")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The node holding pipeline `feed` of the channel, with its lease epoch.
    async fn holder(&self, feed: &str) -> Option<(String, u64)> {
        let nodes = self.nodes().await;
        nodes["nodes"].as_array()?.iter().find_map(|n| {
            let lease = n["leases"].as_array()?.iter().find(|l| l["feed"] == feed)?;
            Some((n["id"].as_str()?.to_string(), lease["epoch"].as_u64()?))
        })
    }

    /// Waits until pipelines a and b are held by `a` and `b`; returns their epochs.
    async fn wait_for_placement(&self, a: &str, b: &str, what: &str) -> (u64, u64) {
        wait_for(what, Duration::from_secs(30), || async {
            match (self.holder("a").await?, self.holder("b").await?) {
                ((ha, ea), (hb, eb)) if ha == a && hb == b => Some((ea, eb)),
                _ => None,
            }
        })
        .await
    }

    /// Second copies compared with the listed ones, and how many disagreed, over renditions.
    async fn alignment(&self) -> (u64, u64) {
        let url = self.packager.url("/api/v1/channels/scale/alignment");
        let report: Value = serde_json::from_str(&get(&url).await.unwrap().1).unwrap();
        let renditions = report["renditions"].as_object().unwrap();
        renditions.values().fold((0, 0), |(c, m), r| {
            (
                c + r["compared"].as_u64().unwrap(),
                m + r["misaligned"].as_u64().unwrap(),
            )
        })
    }

    /// `steadycast node ARGS… --api` the first packager/API node.
    fn node_command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(BIN)
            .env("STEADYCAST_TOKEN", ADMIN_TOKEN)
            .arg("node")
            .args(args)
            .args(["--api", &self.packager.url("")])
            .output()
            .unwrap()
    }

    /// Uploads of pipeline `feed` the first packager received, whatever became of them.
    async fn uploads_of(&self, feed: &str) -> u64 {
        let (_, metrics) = get(&self.packager.url("/metrics")).await.unwrap();
        let label = format!("feed=\"{feed}\"");
        metrics
            .lines()
            .filter(|l| l.starts_with("steadycast_segments_received_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until `count` relayed sessions from ingest node `from` started (an input event
    /// names the node a session is relayed from), as the second API node tells.
    async fn wait_for_relays(&self, from: &TestNode, count: usize) {
        let via = format!("via {}", from.url(""));
        let relayed = || async {
            let started = events_of(&self.second, "scale", "input_started").await;
            (started.iter().filter(|e| e.contains(&via)).count() >= count).then_some(())
        };
        wait_for("relayed input sessions", Duration::from_secs(30), relayed).await;
    }

    /// Waits until the packager has compared `more` further copies: both pipelines deliver.
    async fn wait_for_both_feeds(&self, more: u64, what: &str) {
        let (start, _) = self.alignment().await;
        wait_for(what, Duration::from_secs(60), || async {
            (self.alignment().await.0 >= start + more).then_some(())
        })
        .await;
    }
}

/// The media sequence and the segment numbers a media playlist lists (EXT-X-GAP ones too).
fn parse_playlist(body: &str) -> (u64, Vec<u64>) {
    let sequence = body
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")?.parse().ok())
        .unwrap_or_else(|| panic!("no media sequence:\n{body}"));
    let listed = body
        .lines()
        .filter_map(|l| l.strip_suffix(".m4s")?.rsplit('/').next()?.parse().ok())
        .collect();
    (sequence, listed)
}

/// Requests the origins served, by kind (`segment`, `hls_playlist`, …), over both.
async fn origin_requests(cluster: &Cluster, kind: &str) -> u64 {
    let mut total = 0.0;
    for node in [&cluster.packager, &cluster.second] {
        let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
        let prefix = "steadycast_http_requests_total{";
        total += metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(&format!("kind=\"{kind}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    total as u64
}

/// Fifty viewers play through the shield for `time`; the origins see at most one request per
/// segment, and one per playlist per cache period (1 s, half a segment).
async fn fifty_viewers_through_the_shield(cluster: &Cluster, time: Duration) {
    let shield = Nginx::start(cluster.balancer.addr).await;
    let base = format!("http://{}/live/scale", shield.addr);
    let (segments_before, playlists_before) = (
        origin_requests(cluster, "segment").await,
        origin_requests(cluster, "hls_playlist").await,
    );
    let started = std::time::Instant::now();
    let fetched = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let viewers: Vec<_> = (0..50)
        .map(|_| {
            let (base, fetched) = (base.clone(), fetched.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut newest = 0;
                while started.elapsed() < time {
                    let playlist = client.get(format!("{base}/180p.m3u8")).send().await;
                    let body = playlist.unwrap().text().await.unwrap();
                    let since = newest;
                    for n in parse_playlist(&body).1.into_iter().filter(|&n| n > since) {
                        let url = format!("{base}/180p/{n}.m4s");
                        let response = client.get(&url).send().await.unwrap();
                        assert_eq!(response.status(), 200, "{url}");
                        response.bytes().await.unwrap();
                        fetched.lock().unwrap().insert(n);
                        newest = n;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        })
        .collect();
    for viewer in viewers {
        viewer.await.unwrap();
    }
    let seconds = started.elapsed().as_secs();
    let segments = origin_requests(cluster, "segment").await - segments_before;
    let playlists = origin_requests(cluster, "hls_playlist").await - playlists_before;
    let distinct = fetched.lock().unwrap().len() as u64;
    eprintln!(
        "shield: 50 viewers, {seconds} s: {distinct} segments fetched, origins served {segments} \
         segment and {playlists} playlist requests"
    );
    assert!(
        distinct > seconds / 2,
        "the viewers fetched only {distinct} segments"
    );
    assert!(
        segments <= distinct,
        "{segments} segment requests reached the origins for {distinct} segments"
    );
    assert!(
        playlists <= seconds + 3,
        "{playlists} playlist requests reached the origins in {seconds} s"
    );
}

/// A viewer whose requests alternate between two origins for `time`: playlists never go
/// backwards, every listed segment answers 200 with the same bytes on both, and both render
/// the same playlist for the same listing.
async fn alternate_between_origins(one: &TestNode, two: &TestNode, time: Duration) {
    let origins = [one, two];
    let deadline = std::time::Instant::now() + time;
    let (mut newest, mut checked, mut same_bodies) = ((0, 0), 0u64, 0);
    let mut bodies: std::collections::HashMap<(u64, Vec<u64>), String> = Default::default();
    for turn in 0usize.. {
        if std::time::Instant::now() > deadline {
            break;
        }
        let (here, there) = (origins[turn % 2], origins[(turn + 1) % 2]);
        let (status, body) = get(&here.url("/live/scale/180p.m3u8")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let (sequence, listed) = parse_playlist(&body);
        let last = *listed.last().unwrap();
        assert!(
            (sequence, last) >= newest,
            "the playlist went backwards on {}: sequence {sequence} up to {last} after {newest:?}\n{body}",
            here.http
        );
        newest = (sequence, last);
        match bodies.get(&(sequence, listed.clone())) {
            Some(seen) => {
                assert_eq!(seen, &body, "two bodies for one listing");
                same_bodies += 1;
            }
            None => {
                bodies.insert((sequence, listed.clone()), body);
            }
        }
        let since = checked;
        for n in listed.into_iter().filter(|&n| n > since) {
            let path = format!("/live/scale/180p/{n}.m4s");
            let (a, b) = (
                get_bytes(&here.url(&path)).await,
                get_bytes(&there.url(&path)).await,
            );
            assert_eq!((a.0, b.0), (200, 200), "segment {n} on both origins");
            assert!(a.1 == b.1, "segment {n}: two bodies for one URL");
            checked = n;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        same_bodies > 10,
        "the origins never rendered the same listing twice"
    );
}

fn watch(cluster: &Cluster, seconds: u32) -> tokio::task::JoinHandle<(bool, Value, String)> {
    let url = format!("http://{}/live/scale/main.m3u8", cluster.balancer.addr);
    let seconds = seconds.to_string();
    tokio::spawn(async move { verify(&url, &["--seconds", &seconds]).await })
}

/// Asserts verify's verdict; on a failure, first prints what each node logged of leases,
/// warnings and errors, to tell a takeover's timing from a lost segment.
fn assert_seamless(what: &str, (ok, report, _): (bool, Value, String), nodes: &[&TestNode]) {
    if !ok {
        print_logs(nodes);
    }
    assert_steady(what, ok, &report);
}

/// Prints what each node logged of leases, warnings and errors.
fn print_logs(nodes: &[&TestNode]) {
    for node in nodes {
        eprintln!("--- {} ---", node.dir.display());
        node.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("lease"))
            .for_each(|l| eprintln!("{l}"));
    }
}

/// Asserts that the viewer saw at most playlists that paused: no stall, and no violation but
/// `stale` ones.
fn assert_only_paused(what: &str, (_, report, _): (bool, Value, String), nodes: &[&TestNode]) {
    let errors = report["errors"].as_object().unwrap();
    let paused = errors
        .get("stale")
        .map_or(0, |e| e["count"].as_u64().unwrap());
    let only_paused = errors.keys().all(|kind| kind == "stale");
    if !only_paused
        || report["violations"].as_u64() != Some(paused)
        || report["stall"]["count"] != 0
    {
        assert_seamless(what, (false, report, String::new()), nodes);
    }
    eprintln!("{what}: {paused} stale playlist reload(s), no other violation, no stall");
}

/// Segments the packager stored while the catalog did not answer, over renditions.
async fn deferred(node: &TestNode) -> u64 {
    let (_, metrics) = get(&node.url("/metrics")).await.unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("steadycast_listings_deferred_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn signal(node: &TestNode, signal: i32) {
    let pid = node.child.id().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// The highest segment number listed under `feed`'s lease `epoch`, over the video renditions.
async fn last_listed_under(catalog: &Catalog, feed: &str, epoch: u64) -> Option<u64> {
    let suffix = format!("-{feed}{epoch}.m4s");
    let mut last = None;
    for rendition in ["180p", "90p"] {
        let rows = catalog
            .segments_between("scale", rendition, 0, u64::MAX >> 2, 100_000)
            .await
            .unwrap();
        let under = rows.iter().filter(|r| r.blob_key.ends_with(&suffix));
        last = last.max(under.map(|r| r.n).max());
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_move_between_nodes_and_the_viewer_sees_nothing() {
    let (pg, garage) = tokio::join!(Postgres::start(), Garage::cluster(3));
    // Each node on its own Garage node; every object is kept on all three.
    let on_garage = |i: usize| {
        format!(
            "{CLUSTER_SECRET}\ncatalog = \"{}\"\nblobs = {{ type = \"s3\", bucket = \"{}\", endpoint = \"{}\", \
             region = \"{}\", access_key_id = \"{}\", secret_access_key = \"{}\" }}",
            pg.url,
            garage.bucket,
            garage.endpoint_of(i),
            garage.region,
            garage.access_key_id,
            garage.secret_access_key
        )
    };
    let server = on_garage(0);
    let second_server = on_garage(1);
    let dirs = [(); 4].map(|_| tempfile::tempdir().unwrap());
    // 2 s segments: on two loaded cores, a listing's jitter is a smaller part of a segment.
    let channel =
        channel_toml("scale", INPUT).replace("segment_seconds = 1.0", "segment_seconds = 2.0");
    assert!(channel.contains("segment_seconds = 2.0"));
    let edge = |server: &str, id: &str| {
        format!(
            "{server}\nroles = [\"ingest\", \"packager\", \"origin\", \"api\"]\n\
             node_id = \"{id}\"\n{LEASES}"
        )
    };
    let packager = TestNode::serve_with(dirs[0].path(), &edge(&server, "edge"), &channel).await;
    let second = TestNode::serve_with(dirs[3].path(), &edge(&second_server, "edge2"), "").await;
    // The publisher pushes to both ingest nodes, as to a managed encoder's two addresses.
    let rtmp = |node: &TestNode| format!("rtmp://{}/live/scale-key", node.rtmp);
    let _publishers = [
        publish("flv", &rtmp(&packager)),
        publish("flv", &rtmp(&second)),
    ];
    let balancer = Haproxy::start(&[packager.http, second.http]).await;
    let mut cluster = Cluster {
        pg,
        server: server.clone(),
        packager,
        second,
        balancer,
    };
    let mut x = cluster.pipeline_node(dirs[1].path(), "x").await;
    let mut y = cluster.pipeline_node(dirs[2].path(), "y").await;

    // Placement: a and b on different nodes, never both on one while the other is free.
    let (ha, _) = wait_for("pipeline a placed", Duration::from_secs(30), || async {
        cluster.holder("a").await
    })
    .await;
    let hb = if ha == "x" { "y" } else { "x" };
    let (epoch_a, _) = cluster
        .wait_for_placement(&ha, hb, "a and b on the two pipeline nodes")
        .await;
    cluster
        .packager
        .wait_for_segments("scale", &RENDITIONS, 3)
        .await;
    cluster
        .wait_for_both_feeds(6, "copies from both pipeline nodes")
        .await;
    let nodes = cluster.nodes().await;
    // The ingest nodes have the publisher; the pipeline nodes' relayed sessions are not theirs.
    for (id, publishing) in [("edge", 1), ("edge2", 1), ("x", 0), ("y", 0)] {
        let node = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap();
        assert_eq!(node["state"], "up", "{nodes:#}");
        let inputs = node["publishing"].as_array().unwrap();
        assert_eq!(inputs.len(), publishing, "{nodes:#}");
        assert!(inputs.iter().all(|i| i == "scale/main"), "{nodes:#}");
    }
    alternate_between_origins(&cluster.packager, &cluster.second, Duration::from_secs(60)).await;
    fifty_viewers_through_the_shield(&cluster, Duration::from_secs(30)).await;

    // Both pipeline nodes relay the input from the first ingest node (by id).
    cluster.wait_for_relays(&cluster.packager, 2).await;

    // That node (ingest, packager and origin) dies under the viewers: the relays move to the
    // other ingest node, HAProxy retries elsewhere. It comes back.
    let viewer = watch(&cluster, 20);
    cluster.wait_for_both_feeds(3, "verify under way").await;
    cluster.packager.child.start_kill().unwrap();
    cluster.packager.child.wait().await.unwrap();
    cluster.wait_for_relays(&cluster.second, 2).await;
    let seen = viewer.await.unwrap();
    let what = "kill -9 of an ingest, packager and origin node";
    assert_seamless(what, seen, &[&cluster.second, &x, &y]);
    cluster.packager.restart().await;

    // The Garage node the second origin works through dies, by `steadycast chaos` with verify
    // watching through HAProxy: the other two hold every object and make the write quorum;
    // that origin, unable to read what is listed, answers manifests 503 (HAProxy asks the
    // other) until HAProxy routes around it. The rest runs on two Garage nodes.
    cluster
        .wait_for_both_feeds(3, "both pipelines delivering")
        .await;
    let pid = garage.pid_of(1).unwrap().to_string();
    let chaos = tokio::process::Command::new(BIN)
        .env("STEADYCAST_TOKEN", ADMIN_TOKEN)
        .args(["chaos", "--channel", "scale", "--seconds", "30"])
        .args(["--node", &cluster.packager.url("")])
        .args([
            "--watch",
            &format!("http://{}/live/scale/main.m3u8", cluster.balancer.addr),
        ])
        .args(["--scenario", "kill-store-node", "--pid", &pid])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&chaos.stdout);
    assert!(
        chaos.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&chaos.stderr)
    );
    assert!(said.contains("seamless, as designed"), "{said}");

    if ha == "y" {
        std::mem::swap(&mut x, &mut y);
    }
    // From here `x` is the node that held pipeline a, `y` the other.
    let (xid, yid) = (ha.clone(), hb.to_string());

    // 1. kill -9 of the holder of a: y takes a over when the lease expires and its copies
    // line up with the grid; meanwhile b's copies keep the channel whole.
    let viewer = watch(&cluster, 30);
    cluster.wait_for_both_feeds(3, "verify under way").await;
    x.child.start_kill().unwrap();
    x.child.wait().await.unwrap();
    let killed = std::time::Instant::now();
    let uploads_of_a = cluster.uploads_of("a").await;
    let (taken, _) = cluster
        .wait_for_placement(&yid, &yid, "y running a and b after x died")
        .await;
    assert!(
        taken > epoch_a,
        "a takeover has a new epoch: {taken} after {epoch_a}"
    );
    let claimed = killed.elapsed();
    wait_for(
        "uploads of a from its new holder",
        Duration::from_secs(30),
        || async { (cluster.uploads_of("a").await > uploads_of_a).then_some(()) },
    )
    .await;
    // A figure for the README, not an assertion: it depends on the machine.
    eprintln!(
        "takeover: lease claimed {:.1} s and first upload {:.1} s after kill -9 (TTL 2 s)",
        claimed.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    let seen = viewer.await.unwrap();
    let what = "kill -9 of the node running pipeline a";
    assert_seamless(what, seen, &[&cluster.packager, &y]);
    let (_, misaligned) = cluster.alignment().await;
    assert_eq!(misaligned, 0, "copies from different nodes disagree");

    // 2. x restarts with its id; y gives it a pipeline back. Then y, now holding a, freezes
    // past its lease: x takes a over; when y wakes it stops a, and lists nothing under its
    // old epoch.
    let viewer = watch(&cluster, 45);
    x.restart().await;
    let (a_on_y, _) = cluster
        .wait_for_placement(&yid, &xid, "b back on the restarted node")
        .await;
    cluster
        .wait_for_both_feeds(3, "the restarted node delivering")
        .await;
    signal(&y, libc::SIGSTOP);
    let (a_on_x, _) = cluster
        .wait_for_placement(&xid, &xid, "x running a and b while y is frozen")
        .await;
    assert!(a_on_x > a_on_y);
    let catalog = Catalog::open(&cluster.pg.url).await.unwrap();
    let before_wake = last_listed_under(&catalog, "a", a_on_y).await;
    signal(&y, libc::SIGCONT);
    wait_for(
        "y stopping its stale pipeline",
        Duration::from_secs(20),
        || async {
            let lost = events_of(&cluster.packager, "scale", "lease_lost").await;
            lost.iter()
                .any(|e| e.contains(&format!("node {yid} lost")))
                .then_some(())
        },
    )
    .await;
    let seen = viewer.await.unwrap();
    let what = "SIGSTOP of the node running pipeline a";
    assert_seamless(what, seen, &[&cluster.packager, &x, &y]);
    assert_eq!(
        last_listed_under(&catalog, "a", a_on_y).await,
        before_wake,
        "the frozen node listed a segment under its old epoch after the takeover"
    );
    // The woken node is free again and gets a pipeline back.
    cluster
        .wait_for_placement(&xid, &yid, "a pipeline back on the woken node")
        .await;

    // 3. Drain y: its pipeline moves to x, and y claims nothing while drained.
    let viewer = watch(&cluster, 20);
    cluster
        .wait_for_both_feeds(3, "both nodes delivering before the drain")
        .await;
    let drained = cluster.node_command(&["drain", &yid]);
    assert!(drained.status.success(), "{drained:?}");
    cluster
        .wait_for_placement(&xid, &xid, "y drained onto x")
        .await;
    let listing = cluster.node_command(&["list"]);
    let table = String::from_utf8_lossy(&listing.stdout);
    let y_line = table.lines().find(|l| l.starts_with(&yid)).unwrap();
    assert!(y_line.contains("draining"), "{table}");
    assert!(
        !y_line.contains("scale/"),
        "a drained node holds no lease:\n{table}"
    );
    let seen = viewer.await.unwrap();
    assert_seamless(
        "drain of a pipeline node",
        seen,
        &[&cluster.packager, &x, &y],
    );

    // 4. Back in service, y gets a pipeline again; stopped (SIGTERM) it gives it up at once.
    let undrained = cluster.node_command(&["undrain", &yid]);
    assert!(undrained.status.success(), "{undrained:?}");
    cluster
        .wait_for_placement(&xid, &yid, "a pipeline back on the undrained node")
        .await;
    // 5. PostgreSQL crashes (SIGQUIT) and restarts under the viewer. The packagers store what
    // the pipelines make meanwhile and list it, in order, when the catalog answers again;
    // the pipelines keep running and keep their leases. The viewer's playlists pause (verify
    // calls that stale) and nothing is lost.
    let placed = cluster
        .wait_for_placement(&xid, &yid, "both pipelines placed before the outage")
        .await;
    let viewer = watch(&cluster, 30);
    cluster.wait_for_both_feeds(3, "verify under way").await;
    // The second origin's Garage node is dead since the chaos phase: ask the first.
    let deferred_before = deferred(&cluster.packager).await;
    cluster.pg.stop().await;
    let stored = tokio::time::timeout(Duration::from_secs(30), async {
        while deferred(&cluster.packager).await == deferred_before {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    if stored.await.is_err() {
        print_logs(&[&cluster.packager, &cluster.second, &x, &y]);
        panic!("no segment stored while the catalog was down");
    }
    cluster.pg.resume().await;
    let seen = viewer.await.unwrap();
    assert_only_paused(
        "a PostgreSQL crash and restart",
        seen,
        &[&cluster.packager, &x, &y],
    );
    let kept = cluster
        .wait_for_placement(&xid, &yid, "both pipelines where they were")
        .await;
    assert_eq!(kept, placed, "a lease changed hands over the outage");
    for rendition in RENDITIONS {
        let rows = catalog
            .segments_between("scale", rendition, 0, u64::MAX >> 2, 100_000)
            .await
            .unwrap();
        let newest = rows.iter().map(|r| r.n).max().unwrap();
        let recent: Vec<u64> = rows
            .iter()
            .map(|r| r.n)
            .filter(|&n| n + 20 > newest)
            .collect();
        assert_eq!(
            recent.len(),
            20,
            "{rendition}: segments missing: {recent:?}"
        );
    }

    // The node's own log: its event writer may not reach the catalog before it exits.
    let released = |y: &TestNode| y.log().matches("LeaseReleased").count();
    let before = released(&y);
    signal(&y, libc::SIGTERM);
    y.child.wait().await.unwrap();
    assert_eq!(
        released(&y),
        before + 1,
        "y stopped without giving its lease up"
    );

    drop((x, y, cluster));
}
