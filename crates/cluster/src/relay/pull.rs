//! The pipeline's side of the relay: while a pipeline here reads an input that no publisher
//! feeds here, the input's session is pulled from an ingest node that has one.

use std::sync::Arc;
use std::time::Duration;

use channel::Secret;
use futures::StreamExt;
use futures::future::BoxFuture;
use ingest::{InputPort, OffsetAgreement, Publisher};
use tokio::sync::watch;

use super::serve::ALIVE_EVERY;
use super::wire::{Frame, FrameReader};

/// How often an input nobody relays looks for a publisher (and for a pipeline that wants it).
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// A relay that says nothing for this long (not even that it is alive) is given up.
const SILENT_FOR: Duration = Duration::from_secs(3);

/// The ingest nodes' base URLs, in the order they are asked: every pipeline node asks them in
/// the same order, so pipelines on different nodes take the same session.
pub type IngestNodes = watch::Receiver<Vec<String>>;

/// Relays sessions into `port` for as long as the task runs (the registry aborts it with the
/// input): only while some pipeline here subscribes and no publisher here feeds the port.
/// `client` is the node's (trusting its cluster's CA), with a short connect timeout: a dead
/// ingest node must not hold the relay up.
pub async fn pull(
    port: Arc<InputPort>,
    nodes: IngestNodes,
    credential: Secret,
    client: reqwest::Client,
) {
    let relay = Relay {
        port,
        client,
        credential,
    };
    loop {
        tokio::time::sleep(LOOK_EVERY).await;
        if relay.port.subscribers() == 0 || relay.port.live().is_some() {
            continue;
        }
        let urls = nodes.borrow().clone();
        for url in urls {
            if relay.from(&url).await {
                break;
            }
        }
    }
}

struct Relay {
    port: Arc<InputPort>,
    client: reqwest::Client,
    credential: Secret,
}

impl Relay {
    fn session_url(&self, base: &str) -> String {
        let id = self.port.id();
        format!("{base}/relay/{}/{}", id.channel, id.input)
    }

    /// Relays the session `base` has, if it has one; returns whether it had.
    async fn from(&self, base: &str) -> bool {
        let response = self
            .client
            .get(self.session_url(base))
            .bearer_auth(self.credential.expose())
            .send()
            .await;
        let response = match response {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => return false,
            Ok(r) => {
                tracing::warn!(input = %self.port.id(), node = base, status = %r.status(),
                    "the ingest node refused the relay");
                return false;
            }
            Err(e) => {
                tracing::debug!(input = %self.port.id(), node = base, error = %e,
                    "ingest node unreachable");
                return false;
            }
        };
        let labels = [("input", self.port.id().to_string())];
        metrics::gauge!("steadycast_relay_connected", &labels).set(1.0);
        let why = self.relay(base, response).await;
        metrics::gauge!("steadycast_relay_connected", &labels).set(0.0);
        tracing::info!(input = %self.port.id(), node = base, %why, "relayed session ended");
        true
    }

    /// Feeds one relayed session into the port; returns why it ended.
    async fn relay(&self, base: &str, response: reqwest::Response) -> String {
        let mut body = response.bytes_stream();
        let mut reader = FrameReader::default();
        let mut publisher: Option<Publisher> = None;
        let mut preempted = None;
        let bytes_total = metrics::counter!("steadycast_relay_bytes_total",
            "input" => self.port.id().to_string());
        loop {
            let preempted_now = async {
                match &preempted {
                    Some(token) => tokio_util::sync::CancellationToken::cancelled(token).await,
                    None => std::future::pending().await,
                }
            };
            let chunk = tokio::select! {
                _ = preempted_now => return "a publisher here took the input over".into(),
                chunk = tokio::time::timeout(SILENT_FOR, body.next()) => chunk,
            };
            let chunk = match chunk {
                Err(_) => return end(publisher, "the ingest node went silent"),
                Ok(None) => return end(publisher, "the ingest node closed the relay"),
                Ok(Some(Err(e))) => return end(publisher, &format!("relay broken: {e}")),
                Ok(Some(Ok(chunk))) => chunk,
            };
            bytes_total.increment(chunk.len() as u64);
            if let Err(e) = reader.push(&chunk) {
                return end(publisher, &e.to_string());
            }
            loop {
                let frame = match reader.next_frame() {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => return end(publisher, &e.to_string()),
                };
                match (frame, &publisher) {
                    (
                        Frame::Started {
                            session,
                            container,
                            peer,
                        },
                        None,
                    ) => {
                        let agreement = Arc::new(RemoteAgreement {
                            client: self.client.clone(),
                            url: format!("{}/offset", self.session_url(base)),
                            session,
                            credential: self.credential.clone(),
                        });
                        let peer = format!("{peer} via {base}");
                        match self.port.publish_relayed(&peer, container, agreement) {
                            Ok((p, token)) => (publisher, preempted) = (Some(p), Some(token)),
                            Err(busy) => return busy.to_string(),
                        }
                    }
                    (Frame::Prologue(bytes), Some(p)) => p.send_prologue(bytes),
                    (Frame::Data(bytes), Some(p)) => p.send(bytes),
                    (Frame::Alive, _) => {}
                    (Frame::Ended(reason), _) => return end(publisher, &reason),
                    (_, _) => return end(publisher, "the relay broke its protocol"),
                }
            }
            if self.port.subscribers() == 0 {
                return end(publisher, "no pipeline here reads the input");
            }
        }
    }
}

/// Ends the relayed session (if it began) for `why`, which it returns.
fn end(publisher: Option<Publisher>, why: &str) -> String {
    if let Some(mut publisher) = publisher {
        publisher.end_because(format!("relay: {why}"));
    }
    why.to_string()
}

/// Asks the publisher's node for a relayed session's offset.
struct RemoteAgreement {
    client: reqwest::Client,
    url: String,
    session: u64,
    credential: Secret,
}

impl OffsetAgreement for RemoteAgreement {
    fn agree(&self, proposed_us: i64) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            let response = self
                .client
                .post(&self.url)
                .query(&[("session", self.session.to_string())])
                .query(&[("proposed_us", proposed_us.to_string())])
                .bearer_auth(self.credential.expose())
                .timeout(ALIVE_EVERY)
                .send()
                .await
                .ok()?;
            if !response.status().is_success() {
                return None;
            }
            response.text().await.ok()?.trim().parse().ok()
        })
    }
}
