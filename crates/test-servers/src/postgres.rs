use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::{free_port, run, wait_for_port};

/// A throwaway PostgreSQL cluster on a loopback port, trusting local connections; fsync off,
/// since it dies with the test (commits still reach the WAL before they are acknowledged).
pub struct Postgres {
    /// `postgres://steadycast@127.0.0.1:{port}/postgres`
    pub url: String,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    port: u16,
    server: Option<Child>,
    dir: tempfile::TempDir,
}

impl Postgres {
    pub async fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("steadycast-pg")
            .tempdir()
            .unwrap();
        // PostgreSQL refuses to run as root: the cluster belongs to the `postgres` account.
        let owner = server_account();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        run(as_owner(Command::new(bin.join("initdb")), owner)
            .args([
                "-U",
                "steadycast",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))
        .await;
        let port = free_port();
        let server = spawn(&bin, owner, dir.path(), port).await;
        Self {
            url: format!("postgres://steadycast@127.0.0.1:{port}/postgres"),
            bin,
            owner,
            port,
            server: Some(server),
            dir,
        }
    }

    /// Stops the server at once (SIGQUIT: an immediate shutdown, no checkpoint, so a restart
    /// recovers from its WAL as after a crash, and its backends go with it).
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            if let Some(pid) = server.id() {
                run(Command::new("kill").args(["-QUIT", &pid.to_string()])).await;
            }
            server.wait().await.unwrap();
        }
    }

    /// Starts the server again on the same port and data (it recovers from its WAL).
    pub async fn resume(&mut self) {
        if self.server.is_none() {
            let server = spawn(&self.bin, self.owner, self.dir.path(), self.port).await;
            self.server = Some(server);
        }
    }
}

async fn spawn(bin: &Path, owner: Option<(u32, u32)>, dir: &Path, port: u16) -> Child {
    let server = as_owner(Command::new(bin.join("postgres")), owner)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
        .arg(dir)
        // No fsync (the machine does not crash under a test), but every commit in the WAL
        // before it is acknowledged: a killed server must keep what it said it listed.
        .args(["-c", "fsync=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_for_port("PostgreSQL", port, Duration::from_secs(30)).await;
    wait_until_ready(bin, port).await;
    server
}

/// The listener opens before recovery ends; `pg_isready` says when queries are accepted.
async fn wait_until_ready(bin: &Path, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "PostgreSQL never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn as_owner(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        command.as_std_mut().uid(uid).gid(gid);
    }
    command
}

/// `Some((uid, gid))` of the `postgres` account when running as root.
fn server_account() -> Option<(u32, u32)> {
    // Our own uid, read without libc.
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?;
    if uid != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let entry = passwd.lines().find(|l| l.starts_with("postgres:"));
    let fields: Vec<&str> = entry
        .expect("running as root needs the `postgres` account: run scripts/setup.sh --services")
        .split(':')
        .collect();
    Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
}

/// `STEADYCAST_PG_BIN`, or the newest Debian PostgreSQL under /usr/lib/postgresql.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STEADYCAST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed: run scripts/setup.sh --services")
}
