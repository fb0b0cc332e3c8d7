//! `steadycast channel …`: the API's channel operations from the command line.

use anyhow::{Context, bail};
use channel::ChannelSpec;
use serde_json::Value;

use crate::cli::{ChannelCommand, NodeCommand, TokenCommand};

pub async fn channel_command(command: ChannelCommand) -> anyhow::Result<()> {
    let (response, api) = match command {
        ChannelCommand::Create { file, api } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            let spec = parse_spec(&text, &file.display().to_string())?;
            let url = format!("{}/api/v1/channels", api.api);
            (api.token.client()?.post(&url).json(&spec).send().await, api)
        }
        ChannelCommand::List(api) => (
            api.token
                .client()?
                .get(format!("{}/api/v1/channels", api.api))
                .send()
                .await,
            api,
        ),
        ChannelCommand::Show { id, api } => (
            api.token
                .client()?
                .get(format!("{}/api/v1/channels/{id}", api.api))
                .send()
                .await,
            api,
        ),
        ChannelCommand::Harvest {
            id,
            name,
            start,
            end,
            api,
        } => {
            let url = format!("{}/api/v1/channels/{id}/harvests", api.api);
            let body = serde_json::json!({ "name": name, "start": start, "end": end });
            (api.token.client()?.post(&url).json(&body).send().await, api)
        }
        ChannelCommand::RotateKey {
            id,
            input,
            grace_seconds,
            api,
        } => {
            let url = format!("{}/api/v1/channels/{id}/inputs/{input}/rotate", api.api);
            let body = serde_json::json!({ "grace_seconds": grace_seconds });
            (api.token.client()?.post(&url).json(&body).send().await, api)
        }
        ChannelCommand::Delete { id, api } => (
            api.token
                .client()?
                .delete(format!("{}/api/v1/channels/{id}", api.api))
                .send()
                .await,
            api,
        ),
    };
    let body = answer(response, &api.api).await?;
    if !body.is_empty() {
        let pretty = serde_json::from_str::<Value>(&body)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or(body);
        println!("{pretty}");
    }
    Ok(())
}

pub async fn node_command(command: NodeCommand) -> anyhow::Result<()> {
    let (response, api) = match command {
        NodeCommand::List(api) => {
            let response = api
                .token
                .client()?
                .get(format!("{}/api/v1/nodes", api.api))
                .send();
            let body = answer(response.await, &api.api).await?;
            print!("{}", node_table(&serde_json::from_str(&body)?));
            return Ok(());
        }
        NodeCommand::Drain { id, api } => {
            let url = format!("{}/api/v1/nodes/{id}/drain", api.api);
            (api.token.client()?.post(url).send().await, api)
        }
        NodeCommand::Undrain { id, api } => {
            let url = format!("{}/api/v1/nodes/{id}/drain", api.api);
            (api.token.client()?.delete(url).send().await, api)
        }
    };
    answer(response, &api.api).await?;
    Ok(())
}

/// `GET /api/v1/nodes` as a table: a line per node.
fn node_table(nodes: &Value) -> String {
    let mut out = format!(
        "{:<20} {:<36} {:>8} {:>8}  {:<8} {:<24} {}\n",
        "NODE", "ROLES", "PID", "SEEN", "STATE", "LEASES", "PUBLISHING"
    );
    let list = |v: &Value| {
        let items = v.as_array().into_iter().flatten().filter_map(Value::as_str);
        items.collect::<Vec<_>>().join(",")
    };
    for n in nodes["nodes"].as_array().into_iter().flatten() {
        let leases: Vec<String> = n["leases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                format!(
                    "{}/{}@{}",
                    l["channel"].as_str().unwrap_or_default(),
                    l["feed"].as_str().unwrap_or_default(),
                    l["epoch"]
                )
            })
            .collect();
        let seen = n["seen_ago_ms"].as_u64().unwrap_or_default() as f64 / 1000.0;
        out.push_str(&format!(
            "{:<20} {:<36} {:>8} {:>7.1}s  {:<8} {:<24} {}\n",
            n["id"].as_str().unwrap_or_default(),
            list(&n["roles"]),
            n["pid"],
            seen,
            n["state"].as_str().unwrap_or_default(),
            leases.join(" "),
            list(&n["publishing"]),
        ));
    }
    out
}

pub async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, scope, api } => {
            let url = format!("{}/api/v1/tokens", api.api);
            let body = serde_json::json!({ "name": name, "scope": scope });
            let response = api.token.client()?.post(&url).json(&body).send().await;
            let created: Value = serde_json::from_str(&answer(response, &api.api).await?)?;
            println!(
                "{} token `{}` (shown once):",
                created["scope"].as_str().unwrap_or_default(),
                created["name"].as_str().unwrap_or_default()
            );
            println!("  {}", created["token"].as_str().unwrap_or_default());
        }
        TokenCommand::List(api) => {
            let url = format!("{}/api/v1/tokens", api.api);
            let response = api.token.client()?.get(&url).send().await;
            let listed: Value = serde_json::from_str(&answer(response, &api.api).await?)?;
            for t in listed["tokens"].as_array().into_iter().flatten() {
                let state = match t["revoked_ms"].as_u64() {
                    Some(ms) => format!("revoked {}", iso(ms)),
                    None => "live".into(),
                };
                println!(
                    "{:<24} {:<9} created {}  {state}",
                    t["name"].as_str().unwrap_or_default(),
                    t["scope"].as_str().unwrap_or_default(),
                    iso(t["created_ms"].as_u64().unwrap_or_default()),
                );
            }
        }
        TokenCommand::Revoke { name, api } => {
            let url = format!("{}/api/v1/tokens/{name}", api.api);
            let response = api.token.client()?.delete(&url).send().await;
            answer(response, &api.api).await?;
            println!("token `{name}` revoked");
        }
    }
    Ok(())
}

fn iso(ms: u64) -> String {
    manifest::iso8601(ms)
}

/// The body of a successful answer; an error status becomes the API's error and details.
async fn answer(response: reqwest::Result<reqwest::Response>, api: &str) -> anyhow::Result<String> {
    let response = response.with_context(|| format!("cannot reach the node at {api}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .map(|v| {
                let mut m = v["error"].as_str().unwrap_or("error").to_string();
                for d in v["details"].as_array().into_iter().flatten() {
                    m.push_str(&format!("\n  - {}", d.as_str().unwrap_or_default()));
                }
                m
            })
            .unwrap_or(body);
        bail!("{status}: {message}");
    }
    Ok(body)
}

/// A channel file in JSON (by its first character) or TOML, with errors naming file and line.
fn parse_spec(text: &str, name: &str) -> anyhow::Result<ChannelSpec> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{name}:{}:{}: {e}", e.line(), e.column()));
    }
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        anyhow::anyhow!("{name}:{}: {}", line.unwrap_or(0), e.message())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_files_in_json_and_toml() {
        let toml = "id = \"x\"\n[inputs.m]\ntype = \"srt\"\n";
        assert_eq!(parse_spec(toml, "x.toml").unwrap().id, "x");
        let json = r#"{"id": "y", "inputs": {"m": {"type": "srt"}}}"#;
        assert_eq!(parse_spec(json, "y.json").unwrap().id, "y");
        let err = parse_spec("id = \"x\"\nbogus = 1\n", "z.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("z.toml:2: unknown field `bogus`"),
            "{err}"
        );
    }
}
