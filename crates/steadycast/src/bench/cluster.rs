//! `steadycast bench --cluster API`: figures from a running cluster (`make cluster`): how long
//! after a segment's end each origin node shows it, how many requests viewers through the
//! shield cost the origins and the store, and CPU and memory per node (its roles) and per
//! node's ffmpeg children. The nodes must run on this machine (read by pid from `/proc`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use channel::ChannelSpec;
use serde_json::Value;

use super::BenchArgs;

/// How often each origin's playlist is read for the visibility figures.
const POLL: Duration = Duration::from_millis(50);

struct BenchNode {
    id: String,
    url: String,
    pid: u32,
    roles: String,
}

pub(super) async fn run(args: &BenchArgs, api: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let api_client = args.token.client()?;
    let api = api.trim_end_matches('/');
    let get = |url: String| {
        let client = api_client.clone();
        async move {
            let response = client.get(&url).send().await?.error_for_status()?;
            anyhow::Ok(response.json::<Value>().await?)
        }
    };
    let list = get(format!("{api}/api/v1/nodes")).await?;
    let nodes: Vec<BenchNode> = list["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] != "gone")
        .filter_map(|n| {
            let roles = n["roles"].as_array()?.iter().filter_map(Value::as_str);
            Some(BenchNode {
                id: n["id"].as_str()?.into(),
                url: n["url"].as_str()?.into(),
                pid: u32::try_from(n["pid"].as_u64()?).ok()?,
                roles: roles.collect::<Vec<_>>().join(","),
            })
        })
        .collect();
    let shown = get(format!("{api}/api/v1/channels/{}", args.channel)).await?;
    let spec: ChannelSpec =
        serde_json::from_value(shown["channel"].clone()).context("the channel's definition")?;
    let grid = spec.grid().map_err(anyhow::Error::msg)?;
    let rendition = spec.ladder.first().context("a ladder")?.name.clone();
    let origins: Vec<String> = nodes
        .iter()
        .filter(|n| n.roles.contains("origin"))
        .map(|n| n.url.clone())
        .collect();
    let time = Duration::from_secs(args.cluster_seconds);
    println!(
        "steadycast bench --cluster: {} nodes, {} origins, channel `{}` ({} segments of {:.3} s), {} s",
        nodes.len(),
        origins.len(),
        args.channel,
        rendition,
        grid.duration_secs(),
        time.as_secs()
    );

    let cpu_before: Vec<_> = nodes.iter().map(|n| cpu_ticks(n.pid)).collect();
    let before = OriginCounters::read(&client, &origins).await;
    let started = Instant::now();
    let path = format!("/live/{}/{rendition}", args.channel);
    let (seen, viewers) = tokio::join!(
        first_seen(&client, &origins, &path, time),
        play_through(args.shield.as_deref(), &path, args.viewers, time),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let after = OriginCounters::read(&client, &origins).await;

    let (polled, seen) = seen;
    visibility(&seen, &grid, origins.len());
    let reads = after.followed - before.followed;
    println!(
        "store: the origins read {reads} segments in {elapsed:.0} s (once per segment and \
         rendition on each origin that did not list it itself, whatever the audience)"
    );
    if let Some((viewer_requests, segments)) = viewers {
        // What reached the origins, less the visibility poller's own requests.
        let origin_requests = (after.requests - before.requests).saturating_sub(polled);
        println!(
            "shield: {} viewers made {viewer_requests} requests for {segments} segments; the \
             origins served {origin_requests} of them ({:.0} viewer requests per origin request)",
            args.viewers,
            viewer_requests as f64 / origin_requests.max(1) as f64,
        );
    }
    let ticks = clock_ticks();
    println!(
        "{:<12} {:<36} {:>9} {:>9} {:>9} {:>9}",
        "node", "roles", "cpu", "rss", "ffmpeg cpu", "ffmpeg rss"
    );
    for (node, before) in nodes.iter().zip(cpu_before) {
        let now = cpu_ticks(node.pid);
        let share = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / ticks / elapsed * 100.0;
        println!(
            "{:<12} {:<36} {:>8.0}% {:>6} MB {:>8.0}% {:>6} MB",
            node.id,
            node.roles,
            share(before.0, now.0),
            rss_bytes(&[node.pid]) >> 20,
            share(before.1, now.1),
            rss_bytes(&children(node.pid)) >> 20,
        );
    }
    Ok(())
}

/// When each origin first listed each segment (Unix ms), segments already listed at the start
/// left out.
type FirstSeen = BTreeMap<u64, Vec<u64>>;

/// Polls every origin's playlist for `time`; returns how many requests that took and when
/// each origin first showed each segment.
async fn first_seen(
    client: &reqwest::Client,
    origins: &[String],
    path: &str,
    time: Duration,
) -> (u64, FirstSeen) {
    let seen = Arc::new(Mutex::new(FirstSeen::new()));
    let polled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watchers = origins.iter().map(|origin| {
        let (client, seen, url) = (client.clone(), seen.clone(), format!("{origin}{path}.m3u8"));
        let polled = polled.clone();
        async move {
            let started = Instant::now();
            let mut known = None::<u64>;
            while started.elapsed() < time {
                polled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let body = match client.get(&url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let now = unix_ms();
                if let Some(newest) = listed(&body).max() {
                    if let Some(known) = known {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        for n in (known + 1)..=newest {
                            seen.entry(n).or_default().push(now);
                        }
                    }
                    known = Some(known.map_or(newest, |k| k.max(newest)));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    });
    futures::future::join_all(watchers).await;
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (polled.load(std::sync::atomic::Ordering::Relaxed), seen)
}

/// The segment numbers a media playlist lists.
fn listed(playlist: &str) -> impl Iterator<Item = u64> + '_ {
    playlist
        .lines()
        .filter_map(|l| l.strip_suffix(".m4s")?.rsplit('/').next()?.parse().ok())
}

fn visibility(seen: &FirstSeen, grid: &timeline::SegmentGrid, origins: usize) {
    let (mut edge, mut spread) = (Vec::new(), Vec::new());
    for (&n, times) in seen.iter().filter(|(_, t)| t.len() == origins) {
        let end = grid.start_of(n + 1, 1000);
        let (first, last) = (times.iter().min(), times.iter().max());
        if let (Some(&first), Some(&last)) = (first, last) {
            edge.push(first.saturating_sub(end));
            spread.push(last - first);
        }
    }
    println!(
        "visibility over {} segments seen by all {origins} origins: segment end → first origin \
         shows it {}; first → last origin {} (polled every {} ms)",
        edge.len(),
        percentiles(&mut edge),
        percentiles(&mut spread),
        POLL.as_millis()
    );
}

fn percentiles(values: &mut [u64]) -> String {
    if values.is_empty() {
        return "n/a".into();
    }
    values.sort_unstable();
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

/// Viewers playing `path` through `shield` for `time`: the requests they made and the
/// segments they fetched.
async fn play_through(
    shield: Option<&str>,
    path: &str,
    viewers: usize,
    time: Duration,
) -> Option<(u64, u64)> {
    let base = format!("{}{path}", shield?.trim_end_matches('/'));
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let segments = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let started = Instant::now();
    let players = (0..viewers).map(|_| {
        let (base, requests, segments) = (base.clone(), requests.clone(), segments.clone());
        async move {
            let client = reqwest::Client::new();
            let mut newest = None;
            while started.elapsed() < time {
                let count = || requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                count();
                let body = match client.get(format!("{base}.m3u8")).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                for n in listed(&body)
                    .filter(|&n| newest.is_none_or(|k| n > k))
                    .collect::<Vec<_>>()
                {
                    count();
                    if let Ok(r) = client.get(format!("{base}/{n}.m4s")).send().await {
                        let _ = r.bytes().await;
                    }
                    segments.lock().unwrap_or_else(|e| e.into_inner()).insert(n);
                    newest = Some(n);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    futures::future::join_all(players).await;
    let fetched = segments.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    Some((requests.load(std::sync::atomic::Ordering::Relaxed), fetched))
}

/// What the origins counted: playlist and segment requests served, segments read from the
/// store by following the catalog.
struct OriginCounters {
    requests: u64,
    followed: u64,
}

impl OriginCounters {
    async fn read(client: &reqwest::Client, origins: &[String]) -> Self {
        let mut counters = Self {
            requests: 0,
            followed: 0,
        };
        for origin in origins {
            let Ok(response) = client.get(format!("{origin}/metrics")).send().await else {
                continue;
            };
            let text = response.text().await.unwrap_or_default();
            let sum = |prefix: &str, kinds: &[&str]| -> u64 {
                text.lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter(|l| kinds.is_empty() || kinds.iter().any(|k| l.contains(k)))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>() as u64
            };
            let kinds = ["kind=\"segment\"", "kind=\"hls_playlist\""];
            counters.requests += sum("steadycast_http_requests_total{", &kinds);
            counters.followed += sum("steadycast_origin_followed_total{", &[]);
        }
        counters
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Fields of `/proc/{pid}/stat` after the command name: (ppid, utime + stime in clock ticks).
fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

/// The live children of `pid` (a pipeline node's ffmpeg decoders and encoders).
fn children(pid: u32) -> Vec<u32> {
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    entries
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| proc_stat(child).is_some_and(|(ppid, _)| ppid == pid))
        .collect()
}

/// CPU ticks used so far by `pid` itself and by its live children.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let own = proc_stat(pid).map_or(0, |(_, t)| t);
    let kids = children(pid)
        .into_iter()
        .filter_map(proc_stat)
        .map(|(_, t)| t)
        .sum();
    (own, kids)
}

fn rss_bytes(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 1024
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}
