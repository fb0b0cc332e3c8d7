//! `steadycast chaos`: injects one failure into a running node or cluster while `verify`
//! watches the channel as a viewer, and reports verify's verdict with the scenario's timeline.
//! The node must run on this machine (encoders and nodes are signalled by pid) and, for
//! delivery faults, with `--allow-faults`.

mod cluster;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

#[derive(Args)]
pub struct ChaosArgs {
    /// The failure to inject.
    #[arg(long, value_enum, required_unless_present = "list")]
    pub scenario: Option<Scenario>,
    /// Explain every scenario and exit.
    #[arg(long)]
    pub list: bool,
    /// The node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "STEADYCAST_API")]
    pub node: String,
    /// The channel to hurt.
    #[arg(long, default_value = "demo")]
    pub channel: String,
    /// How long verify watches; the failure is injected after a third of it.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// What verify watches [default: the node's `/live/{channel}/main.m3u8`]; for a cluster,
    /// the load balancer's.
    #[arg(long)]
    pub watch: Option<String>,
    /// kill-store-node: the pid of the store node (a Garage server) to kill.
    #[arg(long)]
    pub pid: Option<u32>,
    /// restart-catalog: the shell command that restarts the catalog (e.g. `pg_ctl restart -D …`).
    #[arg(long)]
    pub command: Option<String>,
    /// An operator token for the node's API (faults, drains).
    #[command(flatten)]
    pub token: crate::cli::TokenArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    KillPipeline,
    HangPipeline,
    SlowPackagerIngest,
    CorruptFeed,
    CutPrimaryInput,
    CutAllInputsOfOnePipeline,
    FlapInput,
    UnsynchronisedFeeds,
    KillLeaseHolder,
    FreezeLeaseHolder,
    KillOrigin,
    KillIngest,
    DrainLeaseHolder,
    KillStoreNode,
    RestartCatalog,
}

impl Scenario {
    fn explain(self) -> &'static str {
        match self {
            Scenario::KillLeaseHolder => {
                "cluster: kill -9 the node holding pipeline a. Another pipeline node takes the \
                 lease over at expiry and delivers on the same grid; b's copies cover meanwhile. \
                 Expect: seamless."
            }
            Scenario::FreezeLeaseHolder => {
                "cluster: SIGSTOP the node holding pipeline a until another node has taken its \
                 lease, then SIGCONT: the woken node's uploads are fenced and it stops its \
                 pipeline. Expect: seamless."
            }
            Scenario::KillOrigin => {
                "cluster: kill -9 an origin node (one holding no pipeline): the load balancer \
                 retries the other origins. Expect: seamless."
            }
            Scenario::KillIngest => {
                "cluster: kill -9 the ingest node the pipelines relay the channel's input from: \
                 they relay it from another ingest node the publisher also pushes to (or fill). \
                 Expect: seamless timeline."
            }
            Scenario::DrainLeaseHolder => {
                "cluster: drain the node holding pipeline a until it holds no lease, then \
                 undrain it. Expect: seamless."
            }
            Scenario::KillStoreNode => {
                "cluster: kill -9 the store node --pid names (one of three Garage nodes): the \
                 other two keep every object. Expect: seamless."
            }
            Scenario::RestartCatalog => {
                "cluster: restart the catalog with --command: origins serve what is listed \
                 meanwhile and listing resumes. Expect: seamless if the restart takes less than \
                 the players' buffer."
            }
            Scenario::KillPipeline => {
                "kill -9 pipeline a's encoder; once it has rejoined, kill pipeline b's. The \
                 supervisor restarts each; the other pipeline's copies cover. Expect: seamless."
            }
            Scenario::HangPipeline => {
                "SIGSTOP pipeline a's encoder: it takes no input and writes nothing, so the \
                 supervisor kills and restarts it after the hang timeout. Expect: seamless."
            }
            Scenario::SlowPackagerIngest => {
                "delay every upload of pipeline a by 3 s for a third of the run: b's copies \
                 arrive first and are served. Expect: seamless."
            }
            Scenario::CorruptFeed => {
                "pipeline a uploads corrupted, then truncated segments: the packager refuses \
                 them (Content-Digest, CMAF checks) and serves b's. Expect: seamless."
            }
            Scenario::CutPrimaryInput => {
                "cut both pipelines off their primary input for a third of the run: each \
                 freezes for the input-loss time, then switches to its backup (or fills \
                 without one), and returns to the primary once it has been clear for the \
                 error-clear time. Expect: seamless timeline."
            }
            Scenario::CutAllInputsOfOnePipeline => {
                "cut pipeline a off every input for a third of the run: a fills, its segments \
                 score low, and the packager serves b's better copies. Expect: seamless."
            }
            Scenario::UnsynchronisedFeeds => {
                "for a channel whose pipelines encode different, independently clocked inputs: \
                 kill -9 pipeline a's encoder, then b's, so that the packager serves one \
                 pipeline, then the other. Each pipeline re-times its input onto the epoch \
                 grid, so the copies interchange without a timestamp jump. Expect: seamless."
            }
            Scenario::FlapInput => {
                "both pipelines' primary input drops and returns, each for 1.5 × the \
                 input-loss time, for a third of the run: each pipeline switches to its backup \
                 once and stays there until the primary has been clear for the error-clear \
                 time. Expect: seamless timeline."
            }
        }
    }
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let Some(scenario) = args.scenario.filter(|_| !args.list) else {
        for s in Scenario::value_variants() {
            let name = s
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default();
            println!("{name:31} {}", s.explain());
        }
        return Ok(());
    };
    // A frozen node accepts connections and answers nothing: give up on it quickly.
    let client = args
        .token
        .client_builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .build()?;
    let mut api = Api {
        client,
        base: args.node.trim_end_matches('/').into(),
        fallbacks: Vec::new(),
        channel: args.channel.clone(),
    };
    api.channel()
        .await
        .with_context(|| format!("channel `{}` on {}", args.channel, args.node))?;
    // The other API nodes, should the fault hit this one (none on a single node).
    api.fallbacks = cluster::api_nodes(&api).await.unwrap_or_default();
    let watch = verify::VerifyArgs {
        url: args
            .watch
            .clone()
            .unwrap_or_else(|| format!("{}/live/{}/main.m3u8", api.base, args.channel)),
        seconds: args.seconds as f64,
        renditions: Vec::new(),
        buffer_segments: 3,
        json: false,
        ca_file: None,
    };
    let viewer = tokio::spawn(async move { verify::run(&watch).await });
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds / 3)).await;
    println!(
        "chaos: {scenario:?} on `{}`: {}",
        args.channel,
        scenario.explain()
    );
    let timeline = inject(&api, scenario, &args).await?;
    for (at, what) in &timeline {
        println!("  +{:>6.1} s  {what}", (*at - started).as_secs_f64());
    }
    let report = viewer.await.context("verify task")??;
    println!("{}", report.to_text());
    if !report.passed() {
        bail!("the viewer saw the failure: {:?}", report.verdict);
    }
    println!("chaos: {scenario:?}: seamless, as designed");
    Ok(())
}

struct Api {
    client: reqwest::Client,
    base: String,
    /// Other nodes' API addresses, asked when `base` does not answer (a cluster's node hurt).
    fallbacks: Vec<String>,
    channel: String,
}

impl Api {
    async fn channel(&self) -> anyhow::Result<Value> {
        self.get(&format!("/api/v1/channels/{}", self.channel))
            .await
    }

    /// GET `path` from the first API node that answers.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .request(reqwest::Method::GET, path)
            .await?
            .json()
            .await?)
    }

    /// Sends a body-less `method` request for `path` to the first API node that answers.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let mut failed = None;
        for base in std::iter::once(&self.base).chain(&self.fallbacks) {
            let url = format!("{base}{path}");
            match self.client.request(method.clone(), &url).send().await {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => bail!("{method} {url}: {}", r.status()),
                Err(e) => failed = Some(e),
            }
        }
        Err(failed.map_or_else(|| anyhow::anyhow!("no API node answers"), Into::into))
    }

    async fn pipeline(&self, feed: &str) -> anyhow::Result<Value> {
        Ok(self.channel().await?["pipelines"][feed].clone())
    }

    async fn fault(&self, fault: Value) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/channels/{}/faults", self.base, self.channel);
        let response = match fault {
            Value::Null => self.client.delete(&url).send().await?,
            fault => self.client.post(&url).json(&fault).send().await?,
        };
        if !response.status().is_success() {
            bail!("{url}: {}", response.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// Signals pipeline `feed`'s encoder, then waits until the supervisor replaced it and the
    /// new encoder delivered a segment of every rendition (it rejoined). Returns the old pid
    /// and when the pipeline was encoding again and when it rejoined.
    async fn signal_and_await_rejoin(
        &self,
        feed: &str,
        signal: &str,
    ) -> anyhow::Result<(u64, Instant, Instant)> {
        let channel = self.channel().await?;
        let renditions = channel["channel"]["ladder"].as_array().map_or(0, Vec::len) as u64 + 1;
        let before = &channel["pipelines"][feed];
        let pid = before["encoder_pid"]
            .as_u64()
            .with_context(|| format!("pipeline {feed} has no encoder running"))?;
        let restarts = before["restarts"].as_u64().unwrap_or(0);
        self::signal(signal, pid).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut encoding = None;
        while Instant::now() < deadline {
            let now = self.pipeline(feed).await?;
            let replaced = now["restarts"].as_u64() > Some(restarts)
                && now["phase"] == "encoding"
                && now["encoder_pid"].as_u64().is_some_and(|p| p != pid);
            if replaced {
                let since = *encoding.get_or_insert_with(Instant::now);
                if now["segments_this_run"].as_u64() >= Some(renditions) {
                    return Ok((pid, since, Instant::now()));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("pipeline {feed} did not rejoin within 2 minutes")
    }

    /// The name of pipeline `feed`'s primary input.
    async fn primary_input(&self, feed: &str) -> anyhow::Result<String> {
        let pipeline = self.pipeline(feed).await?;
        let name = pipeline["inputs"][0]["name"].as_str();
        Ok(name
            .with_context(|| format!("pipeline {feed} has no input"))?
            .to_string())
    }

    /// Polls pipeline `feed` until `done` holds; returns how it then reads (its phase and
    /// input) and how long that took.
    async fn await_pipeline(
        &self,
        feed: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<(String, Duration)> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let p = self.pipeline(feed).await?;
            if done(&p) {
                let input = p["input"].as_str().unwrap_or("no input");
                let phase = p["phase"].as_str().unwrap_or("?");
                return Ok((format!("{phase} from {input}"), started.elapsed()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("pipeline {feed} did not change within a minute")
    }
}

/// Sends `signal` to `pid` (a process on this machine).
async fn signal(signal: &str, pid: u64) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .await?;
    if !status.success() {
        bail!("kill {signal} {pid} failed (is the process on this machine?)");
    }
    Ok(())
}

fn note(timeline: &mut Vec<(Instant, String)>, what: String) {
    timeline.push((Instant::now(), what));
}

/// Runs the scenario; returns its timeline.
async fn inject(
    api: &Api,
    scenario: Scenario,
    args: &ChaosArgs,
) -> anyhow::Result<Vec<(Instant, String)>> {
    let span = Duration::from_secs(args.seconds / 3);
    let mut timeline = Vec::new();
    match scenario {
        Scenario::KillLeaseHolder
        | Scenario::FreezeLeaseHolder
        | Scenario::KillOrigin
        | Scenario::KillIngest
        | Scenario::DrainLeaseHolder
        | Scenario::KillStoreNode
        | Scenario::RestartCatalog => {
            cluster::inject(api, scenario, args, &mut timeline).await?;
        }
        Scenario::KillPipeline | Scenario::HangPipeline | Scenario::UnsynchronisedFeeds => {
            if scenario == Scenario::UnsynchronisedFeeds {
                different_inputs(api).await?;
            }
            let (signal, feeds) = match scenario {
                Scenario::HangPipeline => ("-STOP", &["a"][..]),
                _ => ("-KILL", &["a", "b"][..]),
            };
            for feed in feeds {
                let hit = Instant::now();
                note(
                    &mut timeline,
                    format!("signal {signal} to pipeline {feed}'s encoder"),
                );
                let (pid, encoding, rejoined) = api.signal_and_await_rejoin(feed, signal).await?;
                timeline.push((
                    encoding,
                    format!(
                        "pipeline {feed} encoding again ({:.1} s after the signal to pid {pid})",
                        (encoding - hit).as_secs_f64()
                    ),
                ));
                note(
                    &mut timeline,
                    format!(
                        "pipeline {feed} rejoined: every rendition delivered ({:.1} s after the signal)",
                        (rejoined - hit).as_secs_f64()
                    ),
                );
            }
        }
        Scenario::SlowPackagerIngest => {
            let fault = json!({ "feed": "a", "fault": { "kind": "delay", "ms": 3000 }, "seconds": span.as_secs() });
            api.fault(fault).await?;
            note(
                &mut timeline,
                format!("pipeline a's uploads delayed 3 s for {} s", span.as_secs()),
            );
            tokio::time::sleep(span).await;
            note(&mut timeline, "delay over".into());
        }
        Scenario::CorruptFeed => {
            for (kind, done) in [("corrupt", "corrupted"), ("truncate", "truncated")] {
                let fault = json!({ "feed": "a", "fault": { "kind": kind }, "seconds": span.as_secs() / 2 });
                api.fault(fault).await?;
                note(
                    &mut timeline,
                    format!("pipeline a's segments {done} for {} s", span.as_secs() / 2),
                );
                tokio::time::sleep(span / 2).await;
            }
            api.fault(Value::Null).await?;
            note(&mut timeline, "faults cleared".into());
        }
        Scenario::CutPrimaryInput | Scenario::FlapInput => {
            let flap = match scenario {
                // Each drop outlasts the input-loss time; each return is far shorter than the
                // error-clear time.
                Scenario::FlapInput => {
                    let channel = api.channel().await?;
                    let loss = channel["channel"]["failover"]["input_loss_ms"].as_u64();
                    Some((loss.unwrap_or(1000) * 3 / 2).max(300))
                }
                _ => None,
            };
            cut_primaries(api, flap, span, &mut timeline).await?;
        }
        Scenario::CutAllInputsOfOnePipeline => {
            let fault =
                json!({ "feed": "a", "fault": { "kind": "cut-input" }, "seconds": span.as_secs() });
            api.fault(fault).await?;
            note(
                &mut timeline,
                format!("pipeline a cut off every input for {} s", span.as_secs()),
            );
            let filling = api
                .await_pipeline("a", |p| p["phase"] != "encoding")
                .await?;
            note(
                &mut timeline,
                format!(
                    "pipeline a {} after {:.1} s",
                    filling.0,
                    filling.1.as_secs_f64()
                ),
            );
            tokio::time::sleep(span.saturating_sub(filling.1)).await;
            note(&mut timeline, "inputs restored".into());
        }
    }
    Ok(timeline)
}

/// The unsynchronised-feeds scenario needs pipelines that encode different inputs.
async fn different_inputs(api: &Api) -> anyhow::Result<()> {
    if api.primary_input("a").await? == api.primary_input("b").await? {
        bail!("unsynchronised-feeds needs a channel whose pipelines encode different inputs");
    }
    Ok(())
}

/// Cuts (or flaps) both pipelines' primary inputs and notes when each switched away and back.
async fn cut_primaries(
    api: &Api,
    flap_ms: Option<u64>,
    span: Duration,
    timeline: &mut Vec<(Instant, String)>,
) -> anyhow::Result<()> {
    let mut primaries = Vec::new();
    for feed in ["a", "b"] {
        let primary = api.primary_input(feed).await?;
        let fault = json!({ "feed": feed, "fault": { "kind": "cut-input", "input": primary,
            "flap_ms": flap_ms }, "seconds": span.as_secs() });
        api.fault(fault).await?;
        primaries.push((feed, primary));
    }
    let how = flap_ms.map_or("cut".to_string(), |ms| format!("flapping every {ms} ms"));
    note(
        timeline,
        format!(
            "both pipelines' primary input {how} for {} s",
            span.as_secs()
        ),
    );
    let started = Instant::now();
    for (feed, primary) in &primaries {
        let (state, after) = api
            .await_pipeline(feed, |p| p["input"].as_str() != Some(primary.as_str()))
            .await?;
        note(
            timeline,
            format!(
                "pipeline {feed} {state} {:.1} s after the cut",
                after.as_secs_f64()
            ),
        );
    }
    tokio::time::sleep(span.saturating_sub(started.elapsed())).await;
    note(timeline, "primary inputs restored".to_string());
    for (feed, primary) in &primaries {
        let (state, after) = api
            .await_pipeline(feed, |p| p["input"].as_str() == Some(primary.as_str()))
            .await?;
        note(
            timeline,
            format!(
                "pipeline {feed} {state} {:.1} s after the restore",
                after.as_secs_f64()
            ),
        );
    }
    Ok(())
}
