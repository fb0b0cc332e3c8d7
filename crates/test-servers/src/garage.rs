use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use tokio::process::{Child, Command};

use crate::{free_port, run, wait_for_port};

/// How long a Garage node waits on a peer before asking another (default 300 s). A peer
/// killed mid-connection is only noticed at the next write to it, so a quorum read sent there
/// would otherwise wait for the next status exchange (up to 10 s).
const RPC_TIMEOUT_MS: u64 = 1000;

/// Garage on loopback ports: one node (replication factor 1), or a cluster of `n` nodes in
/// `n` zones keeping every object on each (replication factor `n`), with one bucket and one
/// key allowed to read and write it.
pub struct Garage {
    /// `http://127.0.0.1:{port}`: the S3 API of the first node.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    bin: PathBuf,
    nodes: Vec<GarageNode>,
    _dir: tempfile::TempDir,
}

struct GarageNode {
    config: PathBuf,
    port: u16,
    server: Option<Child>,
}

fn hex(rng: &mut rand::rngs::ThreadRng, bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
        .collect()
}

impl Garage {
    pub async fn start() -> Self {
        Self::cluster(1).await
    }

    /// `count` nodes, each in a zone of its own, every object on all of them.
    pub async fn cluster(count: usize) -> Self {
        let bin = binary();
        let dir = tempfile::Builder::new()
            .prefix("steadycast-garage")
            .tempdir()
            .unwrap();
        let mut rng = rand::thread_rng();
        let secret = hex(&mut rng, 32);
        let mut nodes = Vec::new();
        for i in 0..count {
            let (s3, rpc, admin) = (free_port(), free_port(), free_port());
            let root = dir.path().join(format!("node{i}"));
            let config = dir.path().join(format!("garage{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\n\
                     db_engine = \"sqlite\"\nreplication_factor = {count}\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\nrpc_timeout_msec = {RPC_TIMEOUT_MS}\n\
                     [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                    root = root.display()
                ),
            )
            .unwrap();
            let server = spawn(&bin, &config, s3).await;
            nodes.push(GarageNode {
                config,
                port: s3,
                server: Some(server),
            });
        }
        let on = |node: &GarageNode| {
            let mut command = Command::new(&bin);
            command.arg("-c").arg(&node.config);
            command
        };
        for (i, node) in nodes.iter().enumerate() {
            let id = run(on(node).args(["node", "id", "-q"])).await;
            let id = id.trim();
            if i > 0 {
                run(on(&nodes[0]).args(["node", "connect", id])).await;
            }
            let id = id.split('@').next().unwrap_or_default().to_string();
            let zone = format!("dc{}", i + 1);
            run(on(&nodes[0]).args(["layout", "assign", "-z", &zone, "-c", "1G", &id])).await;
        }
        let first = &nodes[0];
        run(on(first).args(["layout", "apply", "--version", "1"])).await;
        let bucket = "steadycast".to_string();
        let access_key_id = format!("GK{}", hex(&mut rng, 12));
        let secret_access_key = hex(&mut rng, 32);
        run(on(first).args(["bucket", "create", &bucket])).await;
        run(on(first).args(["key", "import", "--yes", &access_key_id, &secret_access_key])).await;
        run(on(first)
            .args(["bucket", "allow", "--read", "--write", "--owner", &bucket])
            .args(["--key", &access_key_id]))
        .await;
        Self {
            endpoint: format!("http://127.0.0.1:{}", first.port),
            region: "garage".into(),
            bucket,
            access_key_id,
            secret_access_key,
            bin,
            nodes,
            _dir: dir,
        }
    }

    /// The S3 API of node `i`.
    pub fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The process of node `i`, while it runs.
    pub fn pid_of(&self, i: usize) -> Option<u32> {
        self.nodes[i].server.as_ref()?.id()
    }

    /// Kills the first node (SIGKILL): a single-node store becomes unreachable.
    pub async fn stop(&mut self) {
        self.kill(0).await;
    }

    /// Kills node `i` (SIGKILL).
    pub async fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.nodes[i].server.take() {
            server.kill().await.unwrap();
        }
    }

    /// Starts the first node again on the same ports and data.
    pub async fn resume(&mut self) {
        let node = &mut self.nodes[0];
        if node.server.is_none() {
            node.server = Some(spawn(&self.bin, &node.config, node.port).await);
        }
    }
}

async fn spawn(bin: &Path, config: &Path, port: u16) -> Child {
    let server = Command::new(bin)
        .arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port("Garage", port, Duration::from_secs(30)).await;
    server
}

/// `STEADYCAST_GARAGE`, or where `scripts/setup.sh --services` builds it, or `garage` on PATH.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STEADYCAST_GARAGE") {
        return PathBuf::from(path);
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/steadycast/garage/bin/garage"));
    if let Some(path) = cached.filter(|p| p.is_file()) {
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|p| p.is_file())
    });
    on_path.expect("Garage is not installed: run scripts/setup.sh --services")
}
