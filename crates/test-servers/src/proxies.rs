//! The load balancer and the CDN shield in front of origins: Debian's HAProxy and nginx, run
//! with the configurations shipped in `ops/`, their addresses filled in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, run, wait_for_port};

/// HAProxy balancing over origin nodes with `ops/haproxy/steadycast.cfg`.
pub struct Haproxy {
    /// Where viewers connect.
    pub addr: SocketAddr,
    _server: Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    pub async fn start(origins: &[SocketAddr]) -> Self {
        let bin = installed("haproxy", "/usr/sbin/haproxy");
        let dir = tempdir("steadycast-haproxy");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let servers: Vec<String> = origins
            .iter()
            .enumerate()
            .map(|(i, o)| format!("    server origin{} {o} check", i + 1))
            .collect();
        let config = render(
            &shipped("haproxy/steadycast.cfg"),
            &[
                ("bind", vec![format!("    bind {addr}")]),
                ("origins", servers),
            ],
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        run(Command::new(&bin).arg("-c").arg("-q").arg("-f").arg(&path)).await;
        let mut command = Command::new(&bin);
        command.arg("-db").arg("-f").arg(&path);
        let server = serve("HAProxy", command, dir.path(), addr).await;
        Self {
            addr,
            _server: server,
            _dir: dir,
        }
    }
}

/// An nginx cache in front of `upstream` with `ops/nginx/steadycast-shield.conf`.
pub struct Nginx {
    pub addr: SocketAddr,
    _server: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub async fn start(upstream: SocketAddr) -> Self {
        let bin = installed("nginx", "/usr/sbin/nginx");
        let dir = tempdir("steadycast-nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = render(
            &shipped("nginx/steadycast-shield.conf"),
            &[
                ("upstream", vec![format!("        server {upstream};")]),
                ("listen", vec![format!("        listen {addr};")]),
            ],
        );
        let path = dir.path().join("shield.conf");
        std::fs::write(&path, config).unwrap();
        // In the foreground, as this process's child, with every path under its prefix; one
        // process, no workers, so that killing it when the test ends leaves nothing behind.
        let mut command = Command::new(&bin);
        command.arg("-p").arg(dir.path()).arg("-c").arg(&path);
        command.args(["-g", "daemon off; master_process off;"]);
        let server = serve("nginx", command, dir.path(), addr).await;
        Self {
            addr,
            _server: server,
            _dir: dir,
        }
    }
}

/// A configuration shipped in `ops/`.
fn shipped(path: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../ops")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// `template` with the lines between `# BEGIN name` and `# END name` replaced.
fn render(template: &str, blocks: &[(&str, Vec<String>)]) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in template.lines() {
        let mark = line.trim();
        if let Some(name) = mark.strip_prefix("# BEGIN ") {
            let (_, lines) = blocks
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("no lines for block `{name}`"));
            out.extend(lines.iter().cloned());
            skipping = true;
        } else if mark.starts_with("# END ") {
            skipping = false;
        } else if !skipping {
            out.push(line.to_string());
        }
    }
    out.join("\n") + "\n"
}

fn installed(name: &str, path: &str) -> PathBuf {
    let bin = PathBuf::from(path);
    assert!(
        bin.is_file(),
        "{name} is not installed at {path}: run `scripts/setup.sh --services`"
    );
    bin
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// Runs `command`, its output in `dir/server.log`, until the handle drops; returns once it
/// listens on `addr`.
async fn serve(what: &str, mut command: Command, dir: &Path, addr: SocketAddr) -> Child {
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let server = command
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    wait_for_port(what, addr.port(), Duration::from_secs(10)).await;
    server
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn blocks_are_replaced_and_the_rest_kept() {
        let template = "a\n  # BEGIN x\n  old\n  # END x\nb\n";
        let out = render(template, &[("x", vec!["  new1".into(), "  new2".into()])]);
        assert_eq!(out, "a\n  new1\n  new2\nb\n");
    }
}
