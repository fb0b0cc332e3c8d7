//! The cluster's faults for `steadycast chaos`: nodes found through the API's node list (their
//! pids, so they must run on this machine) and hurt as a real outage would; the store node and
//! the catalog through what the operator names (`--pid`, `--command`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Api, ChaosArgs, Scenario, note, signal};

/// How long a takeover or a drain may take before chaos gives up on it.
const HEAL_WITHIN: Duration = Duration::from_secs(60);

/// A node as the node list shows it.
struct ClusterNode {
    id: String,
    pid: u64,
    roles: Vec<String>,
    /// The channel's pipelines it holds, with their lease epochs.
    leases: Vec<(String, u64)>,
    publishing: Vec<String>,
}

impl ClusterNode {
    fn from_json(node: &Value, channel: &str) -> Option<Self> {
        let strings = |v: &Value| -> Vec<String> {
            let items = v.as_array().into_iter().flatten();
            items.filter_map(|s| s.as_str().map(String::from)).collect()
        };
        let leases = node["leases"].as_array().into_iter().flatten();
        Some(Self {
            id: node["id"].as_str()?.to_string(),
            pid: node["pid"].as_u64()?,
            roles: strings(&node["roles"]),
            leases: leases
                .filter(|l| l["channel"] == channel)
                .filter_map(|l| Some((l["feed"].as_str()?.to_string(), l["epoch"].as_u64()?)))
                .collect(),
            publishing: strings(&node["publishing"]),
        })
    }

    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    fn holds(&self, feed: &str) -> Option<u64> {
        self.leases.iter().find(|(f, _)| f == feed).map(|(_, e)| *e)
    }
}

impl Api {
    /// The nodes that are up (seen within a lease TTL), by id.
    async fn nodes(&self) -> anyhow::Result<Vec<ClusterNode>> {
        let list = self.get("/api/v1/nodes").await?;
        let up = list["nodes"].as_array().into_iter().flatten();
        Ok(up
            .filter(|n| n["state"] != "gone")
            .filter_map(|n| ClusterNode::from_json(n, &self.channel))
            .collect())
    }

    /// The node holding pipeline a, and its epoch.
    async fn holder_of_a(&self) -> anyhow::Result<(ClusterNode, u64)> {
        let nodes = self.nodes().await?;
        let holder = nodes.into_iter().find_map(|n| Some((n.holds("a")?, n)));
        let (epoch, node) = holder.context("no node holds pipeline a: is this a cluster?")?;
        Ok((node, epoch))
    }

    /// Waits until a node other than `old` holds pipeline a at a newer epoch.
    async fn await_takeover(&self, old: &str, epoch: u64) -> anyhow::Result<(String, u64)> {
        let deadline = Instant::now() + HEAL_WITHIN;
        while Instant::now() < deadline {
            if let Ok(nodes) = self.nodes().await {
                let taken = nodes.iter().find_map(|n| {
                    let e = n.holds("a").filter(|&e| e > epoch && n.id != old)?;
                    Some((n.id.clone(), e))
                });
                if let Some(taken) = taken {
                    return Ok(taken);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("nobody took pipeline a over from {old} within {HEAL_WITHIN:?}")
    }
}

/// The API addresses of every node with the API role, for when the first one is hurt.
pub(super) async fn api_nodes(api: &Api) -> anyhow::Result<Vec<String>> {
    let list = api.get("/api/v1/nodes").await?;
    let nodes = list["nodes"].as_array().into_iter().flatten();
    Ok(nodes
        .filter(|n| {
            n["roles"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == "api"))
        })
        .filter_map(|n| n["url"].as_str().map(String::from))
        .collect())
}

/// Runs a cluster scenario; appends to `timeline`.
pub(super) async fn inject(
    api: &Api,
    scenario: Scenario,
    args: &ChaosArgs,
    timeline: &mut Vec<(Instant, String)>,
) -> anyhow::Result<()> {
    match scenario {
        Scenario::KillLeaseHolder | Scenario::FreezeLeaseHolder => {
            let (node, epoch) = api.holder_of_a().await?;
            let hit = Instant::now();
            let freeze = scenario == Scenario::FreezeLeaseHolder;
            signal(if freeze { "-STOP" } else { "-KILL" }, node.pid).await?;
            let what = if freeze { "SIGSTOP" } else { "kill -9" };
            let doing = format!(
                "{what} {} (pid {}), holding a at epoch {epoch}",
                node.id, node.pid
            );
            note(timeline, doing);
            let (by, new_epoch) = api.await_takeover(&node.id, epoch).await?;
            let after = hit.elapsed().as_secs_f64();
            note(
                timeline,
                format!("{by} holds a at epoch {new_epoch}, {after:.1} s later"),
            );
            if freeze {
                signal("-CONT", node.pid).await?;
                note(
                    timeline,
                    format!("SIGCONT {}: it finds its lease gone", node.id),
                );
            }
        }
        Scenario::KillOrigin | Scenario::KillIngest => {
            let nodes = api.nodes().await?;
            let victim = match scenario {
                // The first ingest node (by id) with a publisher: the one relays take from.
                Scenario::KillIngest => nodes.iter().find(|n| {
                    n.has_role("ingest")
                        && n.publishing
                            .iter()
                            .any(|i| i.starts_with(&format!("{}/", api.channel)))
                }),
                // An origin that holds no pipeline, so that only the origin is hurt.
                _ => nodes
                    .iter()
                    .filter(|n| n.has_role("origin"))
                    .min_by_key(|n| n.leases.len()),
            };
            let victim = victim.context("no node fits the scenario")?;
            signal("-KILL", victim.pid).await?;
            let roles = victim.roles.join(",");
            note(
                timeline,
                format!("kill -9 {} (pid {}, {roles})", victim.id, victim.pid),
            );
        }
        Scenario::DrainLeaseHolder => {
            let (node, _) = api.holder_of_a().await?;
            let drain = format!("/api/v1/nodes/{}/drain", node.id);
            api.request(reqwest::Method::POST, &drain).await?;
            note(timeline, format!("drain {}", node.id));
            let hit = Instant::now();
            while api
                .nodes()
                .await?
                .iter()
                .any(|n| n.id == node.id && !n.leases.is_empty())
            {
                if hit.elapsed() > HEAL_WITHIN {
                    bail!(
                        "{} still holds a lease {HEAL_WITHIN:?} after its drain",
                        node.id
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let after = hit.elapsed().as_secs_f64();
            note(
                timeline,
                format!("{} holds no lease, {after:.1} s later", node.id),
            );
            api.request(reqwest::Method::DELETE, &drain).await?;
            note(timeline, format!("undrain {}", node.id));
        }
        Scenario::KillStoreNode => {
            let pid = args
                .pid
                .context("kill-store-node needs --pid (a store node's process)")?;
            signal("-KILL", u64::from(pid)).await?;
            note(timeline, format!("kill -9 store node pid {pid}"));
        }
        Scenario::RestartCatalog => {
            let command = args.command.as_deref();
            let command = command.context("restart-catalog needs --command (how to restart it)")?;
            let status = tokio::process::Command::new("sh")
                .args(["-c", command])
                .status()
                .await
                .with_context(|| format!("running `{command}`"))?;
            if !status.success() {
                bail!("`{command}` failed: {status}");
            }
            note(timeline, format!("catalog restarted (`{command}`)"));
        }
        _ => bail!("{scenario:?} is not a cluster scenario"),
    }
    Ok(())
}
