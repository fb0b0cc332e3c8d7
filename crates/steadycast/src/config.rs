//! The node's configuration file (`steadycast serve --config steadycast.toml`): server settings
//! and channels. Errors name the file and line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use channel::ChannelSpec;
use serde::Deserialize;
use store::S3Config;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub channels: Vec<ChannelSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP: playback, packager ingest, API, metrics.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The embedded catalog (`catalog.db`) and blob directory (`segments/`) live here, unless
    /// `catalog` and `blobs` say otherwise.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The catalog: `sqlite://path` or `postgres://user:password@host/db`; SQLite in
    /// `data_dir` when absent.
    #[serde(default)]
    pub catalog: Option<String>,
    /// Where segment bytes go: `{ type = "dir" }` (the default, `data_dir/segments`) or
    /// `{ type = "s3", bucket = "…", endpoint = "http://…", … }`.
    #[serde(default)]
    pub blobs: BlobsConfig,
    /// The RTMPS listener (RTMP over TLS, the same stream keys), with `tls`'s certificate;
    /// none when absent.
    pub rtmps_listen: Option<SocketAddr>,
    /// The RTMP listener; none when absent.
    #[serde(default = "default_rtmp")]
    pub rtmp_listen: Option<SocketAddr>,
    /// The SRT listener; none when absent.
    #[serde(default = "default_srt")]
    pub srt_listen: Option<SocketAddr>,
    /// An encoder that takes input but writes nothing for this long is restarted.
    #[serde(default = "default_hang_timeout")]
    pub hang_timeout_seconds: u64,
    /// Lets `POST /api/v1/channels/{id}/faults` (and `steadycast chaos`) damage or delay a
    /// pipeline's deliveries. Off by default: it exists to prove failover, not for production.
    #[serde(default)]
    pub allow_faults: bool,
    /// How often segments past each channel's startover window are removed.
    #[serde(default = "default_retention_interval")]
    pub retention_interval_seconds: u64,
    /// What this node does: any of `ingest`, `pipeline`, `packager`, `origin`, `api` (all by
    /// default). Fewer than all needs the shared PostgreSQL catalog and S3 store.
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    /// This node's name in the cluster, stable across restarts; by default one made once and
    /// kept in the data directory (`node-id`).
    #[serde(default)]
    pub node_id: Option<String>,
    /// The base URL other nodes reach this node's HTTP listener at; by default
    /// `http://{listen}` (with 127.0.0.1 for an unspecified address).
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// How pipeline leases are kept (on a PostgreSQL catalog, pipelines are placed by them).
    #[serde(default)]
    pub leases: cluster::LeaseSettings,
    /// In a cluster, how long after its listing a segment appears in live manifests: every
    /// origin learns of it within this, so all show it from the same moment (their clocks
    /// NTP-synced, as the pipelines' are).
    #[serde(default = "default_listing_settle")]
    pub listing_settle_ms: u64,
    /// What nodes of a cluster authenticate each other with (segment deliveries, input
    /// relays): the same on every node, at least 16 characters; required on PostgreSQL.
    /// `STEADYCAST_CLUSTER_SECRET` keeps it out of the file.
    #[serde(default)]
    pub cluster_secret: Option<channel::Secret>,
    /// The control API's `admin` token, at least 32 characters; made at the first start when
    /// absent. `STEADYCAST_ADMIN_TOKEN` keeps it out of the file.
    pub admin_token: Option<channel::Secret>,
    /// The keys signed playback URLs are made and checked with, by id (`{ k1 = "…" }`, each
    /// at least 32 characters): the same on every origin node; several at once while one is
    /// rotated. `STEADYCAST_PLAYBACK_KEYS=k1=…,k2=…` keeps them out of the file.
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on `listen` with this PEM certificate chain
    /// and key, reloaded when the files change: `{ cert = "…", key = "…" }`.
    pub tls: Option<crate::tls::TlsFiles>,
    /// A PEM CA certificate this node's own requests trust besides the public roots: the CA
    /// of the cluster's certificates, when the nodes serve HTTPS.
    pub trust_ca: Option<PathBuf>,
    /// The load balancers and shields in front of this node (`["10.0.0.0/8"]`): a request
    /// from one of them is taken to come from the client its `X-Forwarded-For` names (for
    /// client-bound playback tokens and the API's limiter). Nobody else's header is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<access::Cidr>,
    /// When set, `/metrics` answers only a scraper presenting it as a bearer token (16+
    /// characters). `STEADYCAST_METRICS_TOKEN` keeps it out of the file.
    pub metrics_token: Option<channel::Secret>,
    #[serde(default)]
    pub playback_keys: std::collections::BTreeMap<String, channel::Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            catalog: None,
            blobs: BlobsConfig::default(),
            rtmp_listen: default_rtmp(),
            srt_listen: default_srt(),
            hang_timeout_seconds: default_hang_timeout(),
            allow_faults: false,
            retention_interval_seconds: default_retention_interval(),
            roles: default_roles(),
            node_id: None,
            advertise_url: None,
            leases: cluster::LeaseSettings::default(),
            listing_settle_ms: default_listing_settle(),
            cluster_secret: None,
            admin_token: None,
            playback_keys: Default::default(),
            metrics_token: None,
            tls: None,
            rtmps_listen: None,
            trust_ca: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum BlobsConfig {
    /// The `segments` directory of `data_dir`.
    #[default]
    Dir,
    /// An S3-compatible bucket; credentials from here or the standard AWS variables.
    S3(S3Config),
}

impl ServerConfig {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether this node shares its catalog with others: on PostgreSQL, pipelines are placed
    /// by leases and fenced, and packagers and origins follow the catalog's channels.
    pub fn is_clustered(&self) -> bool {
        self.catalog_url().starts_with("postgres")
    }

    /// What is wrong with the roles and the cluster settings, if anything.
    pub fn cluster_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for role in &self.roles {
            if !cluster::ROLES.contains(&role.as_str()) {
                problems.push(format!(
                    "unknown role `{role}`; roles are {}",
                    cluster::ROLES.join(", ")
                ));
            }
        }
        if self.roles.is_empty() {
            problems.push("a node needs at least one role".into());
        }
        let all = cluster::ROLES.iter().all(|r| self.has_role(r));
        let shared = self.is_clustered() && matches!(self.blobs, BlobsConfig::S3(_));
        if !all && !shared {
            problems.push(format!(
                "roles `{}` split a channel over several nodes, which must share one catalog \
                 and one store: give a PostgreSQL catalog (--catalog postgres://…) and an S3 \
                 bucket (--s3-bucket); SQLite and a local directory are this machine's alone",
                self.roles.join(",")
            ));
        }
        if let Some(id) = &self.node_id
            && (id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        {
            problems.push(format!(
                "node id `{id}`: 1-64 of a-z, A-Z, 0-9, `-`, `_`, `.`"
            ));
        }
        match &self.cluster_secret {
            None if self.is_clustered() => problems.push(
                "a node on a PostgreSQL catalog is one of a cluster: give the cluster's shared \
                 secret (`cluster_secret` in [server] or STEADYCAST_CLUSTER_SECRET), which its \
                 nodes authenticate segment deliveries and input relays with"
                    .into(),
            ),
            Some(secret) if secret.len() < MIN_CLUSTER_SECRET => problems.push(format!(
                "the cluster secret is {} characters; it needs at least {MIN_CLUSTER_SECRET}",
                secret.len()
            )),
            _ => {}
        }
        if self
            .metrics_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_CLUSTER_SECRET)
        {
            problems.push(format!(
                "the metrics token needs at least {MIN_CLUSTER_SECRET} characters"
            ));
        }
        problems.extend(self.leases.problems());
        problems
    }

    /// The catalog URL in force: the configured one, or SQLite in the data directory.
    pub fn catalog_url(&self) -> String {
        self.catalog.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("catalog.db").display()
            )
        })
    }
}

/// A cluster secret shorter than this is refused: it guards every node's ingest.
const MIN_CLUSTER_SECRET: usize = 16;

fn default_listing_settle() -> u64 {
    500
}

fn default_roles() -> Vec<String> {
    cluster::ROLES.iter().map(|r| r.to_string()).collect()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

fn default_rtmp() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 1935)))
}

fn default_srt() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9000)))
}

fn default_retention_interval() -> u64 {
    60
}

fn default_hang_timeout() -> u64 {
    15
}

/// A configuration error, as `file:line:column: what is wrong`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| line_col(text, s.start));
        let message = e.message().trim();
        match at {
            Some((line, col)) => ConfigError(format!("{name}:{line}:{col}: {message}")),
            None => ConfigError(format!("{name}: {message}")),
        }
    })?;
    let mut problems = Vec::new();
    for (i, channel) in config.channels.iter().enumerate() {
        let at = line_of_channel(text, &channel.id)
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        if config.channels[..i].iter().any(|c| c.id == channel.id) {
            problems.push(format!(
                "{name}{at}: channel `{}` is defined twice",
                channel.id
            ));
        }
        if let Err(errors) = channel.validate() {
            for e in errors {
                problems.push(format!("{name}{at}: channel `{}`: {e}", channel.id));
            }
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError(problems.join("\n")))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The line of a channel's `id = "…"`, to point semantic errors at it.
fn line_of_channel(text: &str, id: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim();
            l.starts_with("id") && l.contains(&format!("\"{id}\""))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses() {
        let config = parse(
            r#"
[server]
listen = "127.0.0.1:9090"
data_dir = "/tmp/sc"

[[channels]]
id = "news"
[channels.inputs.main]
type = "rtmp"
stream_key = "secret"
"#,
            "steadycast.toml",
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 9090);
        assert_eq!(config.channels[0].id, "news");
    }

    #[test]
    fn scale_out_backends_are_configured_in_the_server_table() {
        let config = parse(
            r#"
[server]
catalog = "postgres://steadycast:pw@db.internal/steadycast"
[server.blobs]
type = "s3"
bucket = "media"
endpoint = "http://127.0.0.1:3900"
prefix = "node-1"
"#,
            "s.toml",
        )
        .unwrap();
        assert!(config.server.catalog_url().starts_with("postgres://"));
        let BlobsConfig::S3(s3) = &config.server.blobs else {
            panic!("{:?}", config.server.blobs)
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("media", "node-1")
        );

        let embedded = parse(
            "[server]
data_dir = \"/srv/sc\"\n",
            "e.toml",
        )
        .unwrap();
        assert_eq!(
            embedded.server.catalog_url(),
            "sqlite:///srv/sc/catalog.db?mode=rwc"
        );
        assert!(matches!(embedded.server.blobs, BlobsConfig::Dir));

        for (text, says) in [
            ("[server.blobs]\ntype = \"ftp\"\n", "unknown variant `ftp`"),
            (
                "[server.blobs]\ntype = \"s3\"\nbukket = \"x\"\n",
                "unknown field `bukket`",
            ),
            ("[server.blobs]\ntype = \"s3\"\n", "missing field `bucket`"),
        ] {
            let err = parse(text, "b.toml").unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../../steadycast.example.toml");
        let config = parse(text, "steadycast.example.toml").unwrap();
        assert_eq!(config.channels.len(), 3);
        let concert = &config.channels[2];
        assert_eq!(concert.inputs_of(timeline::Feed::B), vec!["spare", "venue"]);
        assert!(concert.failover.black.is_some());
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let err = parse(
            "[server]\nlisten = \"127.0.0.1:80\"\nlisten_typo = 3\n",
            "a.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("a.toml:3:1: unknown field `listen_typo`"),
            "{err}"
        );
        let err = parse("[server]\nlisten = \"not an address\"\n", "a.toml").unwrap_err();
        assert!(err.to_string().starts_with("a.toml:2:"), "{err}");
    }

    #[test]
    fn semantic_errors_name_the_channel_and_its_line() {
        let err = parse(
            "[[channels]]\nid = \"x\"\npreset = \"warp\"\n[channels.inputs.m]\ntype = \"srt\"\n",
            "b.toml",
        )
        .unwrap_err();
        assert_eq!(err.to_string().lines().count(), 1, "{err}");
        assert!(
            err.to_string()
                .starts_with("b.toml:2: channel `x`: preset `warp`"),
            "{err}"
        );
    }

    #[test]
    fn a_cluster_needs_shared_backends_and_a_strong_secret() {
        let problems = |text: &str| parse(text, "c.toml").unwrap().server.cluster_problems();
        assert!(problems("[server]\n").is_empty(), "the embedded default");
        let split = problems("[server]\nroles = [\"pipeline\"]\n");
        assert!(
            split[0].contains("share one catalog and one store"),
            "{split:?}"
        );
        let pg = "[server]\ncatalog = \"postgres://u@db/sc\"\n\
                  blobs = { type = \"s3\", bucket = \"b\" }\nroles = [\"origin\"]\n";
        let unkeyed = problems(pg);
        assert_eq!(unkeyed.len(), 1, "{unkeyed:?}");
        assert!(
            unkeyed[0].contains("STEADYCAST_CLUSTER_SECRET"),
            "{unkeyed:?}"
        );
        let short = problems(&format!("{pg}cluster_secret = \"tiny-secret\"\n"));
        assert!(short[0].contains("11 characters"), "{short:?}");
        assert!(
            !short[0].contains("tiny"),
            "a problem never shows the secret"
        );
        let keyed = format!("{pg}cluster_secret = \"0123456789abcdef\"\n");
        assert!(problems(&keyed).is_empty());
        let config = parse(&keyed, "c.toml").unwrap();
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        let unknown = problems("[server]\nroles = [\"encoder\"]\n");
        assert!(
            unknown[0].starts_with("unknown role `encoder`"),
            "{unknown:?}"
        );
    }
}
