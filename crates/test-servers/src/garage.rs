use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use tokio::process::{Child, Command};

use crate::{free_port, run, wait_for_port};

/// A single-node Garage (replication factor 1) on loopback ports, with one bucket and one key
/// allowed to read and write it.
pub struct Garage {
    /// `http://127.0.0.1:{port}`: the S3 API.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    bin: PathBuf,
    config: PathBuf,
    port: u16,
    server: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Garage {
    pub async fn start() -> Self {
        let bin = binary();
        let dir = tempfile::Builder::new()
            .prefix("steadycast-garage")
            .tempdir()
            .unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let mut rng = rand::thread_rng();
        let hex = |rng: &mut rand::rngs::ThreadRng, bytes: usize| {
            (0..bytes)
                .map(|_| format!("{:02x}", rng.r#gen::<u8>()))
                .collect::<String>()
        };
        let config = dir.path().join("garage.toml");
        let root = dir.path().display();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\n\
                 db_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                hex(&mut rng, 32)
            ),
        )
        .unwrap();
        let server = spawn(&bin, &config, s3).await;
        let garage = || {
            let mut command = Command::new(&bin);
            command.arg("-c").arg(&config);
            command
        };
        let node = run(garage().args(["node", "id", "-q"])).await;
        let node = node
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .to_string();
        run(garage().args(["layout", "assign", "-z", "dc1", "-c", "1G", &node])).await;
        run(garage().args(["layout", "apply", "--version", "1"])).await;
        let bucket = "steadycast".to_string();
        let access_key_id = format!("GK{}", hex(&mut rng, 12));
        let secret_access_key = hex(&mut rng, 32);
        run(garage().args(["bucket", "create", &bucket])).await;
        run(garage().args(["key", "import", "--yes", &access_key_id, &secret_access_key])).await;
        run(garage()
            .args(["bucket", "allow", "--read", "--write", "--owner", &bucket])
            .args(["--key", &access_key_id]))
        .await;
        Self {
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket,
            access_key_id,
            secret_access_key,
            bin,
            config,
            port: s3,
            server: Some(server),
            _dir: dir,
        }
    }

    /// Kills the server (SIGKILL): the store becomes unreachable.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill().await.unwrap();
        }
    }

    /// Starts the server again on the same ports and data.
    pub async fn resume(&mut self) {
        if self.server.is_none() {
            self.server = Some(spawn(&self.bin, &self.config, self.port).await);
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
