//! The command line: `demo`, `serve`, `channel …`. Every option can also come from the
//! environment (`STEADYCAST_*`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use store::S3Config;
use tracing_subscriber::EnvFilter;

use crate::config::{self, BlobsConfig, ServerConfig};
use crate::node::Node;
use crate::{api, demo, ops};

#[derive(Parser)]
#[command(
    name = "steadycast",
    version,
    about = "A self-hosted live channel that never goes dark: \
    contribution ingest, two epoch-locked encoding pipelines, one origin serving HLS and DASH."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "STEADYCAST_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run an all-in-one node with the channel `demo`, fed by a built-in test pattern (a moving
    /// picture with a burnt-in clock and a tone), encoded on pipelines a and b.
    Demo(NodeArgs),
    /// Run a node with the channels of a config file (and those created through the API).
    Serve {
        /// The TOML config file: a `[server]` table and `[[channels]]`.
        #[arg(long, short, env = "STEADYCAST_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Manage the channels of a running node through its API.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// The nodes of a cluster: list them, drain one before a restart.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The control API's tokens (admin scope): create one (its secret is shown once), list
    /// them, revoke one.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make a signed playback token for a channel (offline, with the node's playback keys):
    /// append it to the playback URL as `?st=TOKEN`.
    Sign(SignArgs),
    /// Measure the segmenter, the packager and the origin (run it from a release build).
    Bench(crate::bench::BenchArgs),
    /// Play a live HLS or DASH stream as a viewer would and check its steady state; exits
    /// non-zero on any violation.
    Verify(verify::VerifyArgs),
    /// Inject a failure into a running node while verify watches; exits non-zero when the
    /// viewer saw it. `--list` explains the scenarios.
    Chaos(crate::chaos::ChaosArgs),
}

/// Options that override the `[server]` table of the config.
#[derive(Args, Clone, Default)]
pub struct NodeArgs {
    /// HTTP address for playback, packager ingest, the API and metrics [default: 127.0.0.1:8080].
    #[arg(long, env = "STEADYCAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the catalog and segments live; the same directory continues the same channels.
    #[arg(long, env = "STEADYCAST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The catalog: `sqlite://path` or `postgres://user:password@host/db` [default: SQLite in
    /// the data directory].
    #[arg(long, env = "STEADYCAST_CATALOG")]
    pub catalog: Option<String>,
    /// Store segment bytes in this S3 bucket instead of the data directory; endpoint, region
    /// and credentials from `[server.blobs]` or the standard AWS variables (AWS_ENDPOINT_URL,
    /// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "STEADYCAST_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// Prefix of every key in the S3 bucket, for several nodes or channels sets in one bucket.
    #[arg(long, env = "STEADYCAST_S3_PREFIX", requires = "s3_bucket")]
    pub s3_prefix: Option<String>,
    /// RTMP listener address [default: 127.0.0.1:1935].
    #[arg(long, env = "STEADYCAST_RTMP_LISTEN")]
    pub rtmp_listen: Option<SocketAddr>,
    /// SRT listener address [default: 127.0.0.1:9000].
    #[arg(long, env = "STEADYCAST_SRT_LISTEN")]
    pub srt_listen: Option<SocketAddr>,
    /// Restart an encoder that takes input but writes nothing for this many seconds [default: 15].
    #[arg(long, env = "STEADYCAST_HANG_TIMEOUT")]
    pub hang_timeout_seconds: Option<u64>,
    /// Accept fault injection through the API (for `steadycast chaos`; never in production).
    #[arg(long, env = "STEADYCAST_ALLOW_FAULTS")]
    pub allow_faults: bool,
    /// What this node runs, comma-separated: ingest, pipeline, packager, origin, api [default:
    /// all]. Fewer than all needs a PostgreSQL catalog and an S3 bucket shared by the nodes.
    #[arg(long, env = "STEADYCAST_ROLES", value_delimiter = ',')]
    pub roles: Option<Vec<String>>,
    /// This node's stable name in the cluster [default: made once, kept in the data directory].
    #[arg(long, env = "STEADYCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// The base URL other nodes reach this node at [default: http://{listen}].
    #[arg(long, env = "STEADYCAST_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// The secret a cluster's nodes authenticate each other with (prefer the variable: an
    /// argument shows in the process list).
    #[arg(long, env = "STEADYCAST_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// The control API's admin token, at least 32 characters [default: made at the first
    /// start, written to DATA_DIR/admin-token and printed once]. Prefer the variable.
    #[arg(long, env = "STEADYCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Added to the config's.
    #[command(flatten)]
    pub playback_keys: PlaybackKeysArg,
    /// RTMPS listener address (needs --tls-cert) [default: none].
    #[arg(long, env = "STEADYCAST_RTMPS_LISTEN")]
    pub rtmps_listen: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); reloaded when it changes.
    #[arg(long, env = "STEADYCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, env = "STEADYCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A PEM CA certificate this node's deliveries and relays trust (a cluster's own CA).
    #[arg(long, env = "STEADYCAST_TRUST_CA")]
    pub trust_ca: Option<PathBuf>,
    /// The token Prometheus presents to read /metrics [default: /metrics is open].
    #[arg(long, env = "STEADYCAST_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

#[derive(Args, Clone, Default)]
pub struct PlaybackKeysArg {
    /// Keys for signed playback URLs, `id=secret,id=secret`.
    #[arg(
        long = "playback-keys",
        env = "STEADYCAST_PLAYBACK_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub pairs: Vec<String>,
}

impl PlaybackKeysArg {
    /// `(id, secret)` pairs; one without `=` is left to `PlaybackKeys::parse` to refuse.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.pairs
            .iter()
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect()
    }
}

impl NodeArgs {
    fn apply(&self, server: &mut ServerConfig) {
        if let Some(v) = self.listen {
            server.listen = v;
        }
        if let Some(v) = &self.data_dir {
            server.data_dir = v.clone();
        }
        if let Some(v) = &self.catalog {
            server.catalog = Some(v.clone());
        }
        if let Some(bucket) = &self.s3_bucket {
            let mut s3 = match &server.blobs {
                BlobsConfig::S3(s3) => s3.clone(),
                BlobsConfig::Dir => S3Config::default(),
            };
            s3.bucket = bucket.clone();
            if let Some(prefix) = &self.s3_prefix {
                s3.prefix = prefix.clone();
            }
            server.blobs = BlobsConfig::S3(s3);
        }
        if let Some(v) = self.rtmp_listen {
            server.rtmp_listen = Some(v);
        }
        if let Some(v) = self.srt_listen {
            server.srt_listen = Some(v);
        }
        if let Some(v) = self.hang_timeout_seconds {
            server.hang_timeout_seconds = v;
        }
        server.allow_faults |= self.allow_faults;
        if let Some(v) = &self.roles {
            server.roles = v.clone();
        }
        if let Some(v) = &self.node_id {
            server.node_id = Some(v.clone());
        }
        if let Some(v) = &self.advertise_url {
            server.advertise_url = Some(v.clone());
        }
        for (id, secret) in self.playback_keys.pairs() {
            server
                .playback_keys
                .insert(id.to_string(), channel::Secret::new(secret));
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            server.tls = Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(v) = self.rtmps_listen {
            server.rtmps_listen = Some(v);
        }
        if let Some(v) = &self.trust_ca {
            server.trust_ca = Some(v.clone());
        }
        if let Some(v) = &self.metrics_token {
            server.metrics_token = Some(channel::Secret::new(v.clone()));
        }
        if let Some(v) = &self.admin_token {
            server.admin_token = Some(channel::Secret::new(v.clone()));
        }
        if let Some(v) = &self.cluster_secret {
            server.cluster_secret = Some(channel::Secret::new(v.clone()));
        }
    }
}

#[derive(Subcommand)]
pub enum ChannelCommand {
    /// Create a channel from a JSON or TOML file (the same fields as a `[[channels]]` entry).
    Create {
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the node's channels.
    List(ApiArgs),
    /// Show one channel with its input and playback URLs.
    Show {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Copy a past range of a channel into a VOD asset (`/vod/{name}/main.m3u8`, `manifest.mpd`).
    Harvest {
        id: String,
        /// The asset's name: 1-64 of a-z, 0-9, `-`, `_`.
        #[arg(long)]
        name: String,
        /// Unix seconds or ISO 8601 (2026-11-25T14:00:00Z).
        #[arg(long)]
        start: String,
        /// Unix seconds or ISO 8601; in the past, at most 24 h after start.
        #[arg(long)]
        end: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Give an RTMP input a new stream key (printed once); the old one keeps working for the
    /// grace time, so the publisher moves over without a drop.
    RotateKey {
        id: String,
        /// The RTMP input.
        #[arg(long)]
        input: String,
        /// How long the old key keeps working.
        #[arg(long, default_value_t = 600)]
        grace_seconds: u64,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete a channel (stored segments stay until retention removes them).
    Delete {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Every node on the catalog: roles, pid, when last seen, the leases it holds, the inputs
    /// a publisher is connected to there.
    List(ApiArgs),
    /// Move a node's pipelines to other nodes, one at a time, before a restart or an upgrade.
    Drain {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Put a drained node back in service.
    Undrain {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct SignArgs {
    /// The channel the token opens (`/live/{channel}/`).
    #[arg(long)]
    pub channel: String,
    /// How long it opens it, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_seconds: u64,
    /// Only for this client address.
    #[arg(long)]
    pub client: Option<std::net::IpAddr>,
    /// The key to sign with [default: the first by id].
    #[arg(long)]
    pub key_id: Option<String>,
    #[command(flatten)]
    pub playback_keys: PlaybackKeysArg,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints its secret, once.
    Create {
        /// 1 to 64 of a-z, 0-9, `.`, `_`, `-`.
        name: String,
        /// read (lists, status, events), operator (channels, harvests, drains, faults) or
        /// admin (everything, tokens included).
        #[arg(long, default_value = "read")]
        scope: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Every token: name, scope, when created, when revoked.
    List(ApiArgs),
    /// Revoke a token at once, on every node.
    Revoke {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct ApiArgs {
    /// The node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "STEADYCAST_API")]
    pub api: String,
    #[command(flatten)]
    pub token: TokenArg,
}

#[derive(Args, Clone, Default)]
pub struct TokenArg {
    /// The API token (prefer the variable: an argument shows in the process list).
    #[arg(long = "token", env = "STEADYCAST_TOKEN", hide_env_values = true)]
    pub value: Option<String>,
}

impl TokenArg {
    /// An HTTP client that presents the token on every request.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        self.client_builder().build().map_err(Into::into)
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(mut value) = self
            .value
            .as_ref()
            .and_then(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder().default_headers(headers)
    }
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => {
            let mut server = ServerConfig {
                data_dir: PathBuf::from("data/demo"),
                ..Default::default()
            };
            args.apply(&mut server);
            let (node, http) = start_node(server).await?;
            let spec = node.ensure_channel(demo::channel()).await?;
            print_channel(&node, &spec);
            // The demo runs on a laptop: its dashboard link carries the admin token in the
            // fragment, which no server sees, so the page lists channels in one click.
            let file = node.server.data_dir.join(crate::auth::TOKEN_FILE);
            if let Ok(token) = std::fs::read_to_string(&file) {
                let page = format!("http://{}/?channel={}", node.http, spec.id);
                println!(
                    "  dashboard with the API token: {page}#token={}",
                    token.trim()
                );
            }
            serve_forever(node, http).await
        }
        Command::Serve {
            config: path,
            node: args,
        } => {
            let config = config::load(&path)?;
            let mut server = config.server.clone();
            args.apply(&mut server);
            let (node, http) = start_node(server).await?;
            for spec in config.channels {
                let spec = node
                    .ensure_channel(spec)
                    .await
                    .with_context(|| format!("{}: starting a channel", path.display()))?;
                print_channel(&node, &spec);
            }
            node.resume_stored_channels().await?;
            serve_forever(node, http).await
        }
        Command::Channel(command) => crate::client::channel_command(command).await,
        Command::Node(command) => crate::client::node_command(command).await,
        Command::Token(command) => crate::client::token_command(command).await,
        Command::Sign(args) => sign(&args),
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Verify(args) => verify::main(args).await,
        Command::Chaos(args) => crate::chaos::run(args).await,
    }
}

fn sign(args: &SignArgs) -> anyhow::Result<()> {
    let pairs = args.playback_keys.pairs();
    let keys = access::PlaybackKeys::parse(pairs.iter().copied()).map_err(anyhow::Error::msg)?;
    let key_id = match &args.key_id {
        Some(id) => id.as_str(),
        None => pairs
            .iter()
            .map(|(id, _)| *id)
            .min()
            .context("give the node's playback keys (STEADYCAST_PLAYBACK_KEYS=id=secret,…)")?,
    };
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + args.ttl_seconds;
    let prefix = format!("/live/{}/", args.channel);
    let token = keys
        .sign(key_id, &prefix, expires, args.client)
        .map_err(anyhow::Error::msg)?;
    println!("{token}");
    Ok(())
}

type HttpTask = tokio::task::JoinHandle<()>;

/// Binds HTTP first (the pipelines deliver to it), then opens the node and serves its routes.
async fn start_node(server: ServerConfig) -> anyhow::Result<(Arc<Node>, HttpTask)> {
    let metrics = ops::install_metrics()?;
    let listener = tokio::net::TcpListener::bind(server.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", server.listen))?;
    let http = listener.local_addr()?;
    let node = Node::open(server, http).await?;
    let roles = &node.server;
    if roles.has_role(cluster::ROLE_API) {
        let given = match &roles.admin_token {
            Some(t) => Some(access::TokenSecret::given(t.expose()).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let made = crate::auth::bootstrap(&node.catalog, given.as_ref(), &roles.data_dir).await?;
        if let Some(token) = made {
            let file = roles.data_dir.join(crate::auth::TOKEN_FILE);
            // Standard output, never the log: shown once, as a new token is.
            println!("admin token (shown once; also in {}):", file.display());
            println!("  {}", token.expose());
        }
    }
    let mut app = ops::router(node.clone(), metrics);
    if roles.has_role(cluster::ROLE_ORIGIN) {
        app = app.merge(node.origin.playback_router());
    }
    if roles.has_role(cluster::ROLE_PACKAGER) {
        app = app.merge(node.origin.ingest_router());
    }
    if let Some(secret) = roles.cluster_secret.clone()
        && roles.has_role(cluster::ROLE_INGEST)
        && roles.is_clustered()
    {
        app = app.merge(cluster::relay::router(node.inputs.clone(), secret));
    }
    if roles.has_role(cluster::ROLE_API) {
        app = app
            .merge(api::router(
                node.clone(),
                crate::auth::ApiAuth::new(node.catalog.clone(), roles.trusted_proxies.clone()),
            ))
            .merge(crate::web::router(node.clone()));
    }
    let app = app.layer(axum::middleware::from_fn(ops::track_requests));
    let task = tokio::spawn(crate::http::serve(listener, app, node.tls.clone()));
    tracing::info!(%http, "HTTP up");
    Ok((node, task))
}

/// Runs until Ctrl-C or SIGTERM, or until the HTTP server fails.
/// Marks the node ready (its channels are started) and serves until told to stop.
async fn serve_forever(node: Arc<Node>, http: HttpTask) -> anyhow::Result<()> {
    node.mark_started();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = http => result.context("HTTP server")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        _ = term.recv() => tracing::info!("terminated; stopping"),
    }
    node.shutdown().await;
    Ok(())
}

fn print_channel(node: &Node, spec: &channel::ChannelSpec) {
    let base = format!("http://{}/live/{}", node.http, spec.id);
    println!("channel {}", spec.id);
    println!("  watch: http://{}/?channel={}", node.http, spec.id);
    println!("  HLS:  {base}/main.m3u8");
    println!("  DASH: {base}/manifest.mpd");
    // Standard output may end in a journal: the stream keys stay in the config they came from.
    for (name, url) in node.input_urls(&spec.redacted()) {
        println!("  input {name}: {url}");
    }
}
