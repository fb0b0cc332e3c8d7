//! The publisher's side of the relay: an ingest node streams a live session of one of its
//! inputs to a pipeline node that asked, with the cluster's credential.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use channel::Secret;
use ingest::{InputEvent, InputPort, InputRegistry, LiveSession};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::wire::Frame;

/// With nothing to send for this long, the relay says it is alive.
pub(super) const ALIVE_EVERY: Duration = Duration::from_secs(1);

struct RelayState {
    inputs: Arc<InputRegistry>,
    credential: Secret,
}

/// `GET /relay/{channel}/{input}`: the input's live session, from its start (prologue
/// included) to its end, as [`Frame`]s; 404 at once when no publisher is connected here.
/// `POST /relay/{channel}/{input}/offset?session=&proposed_us=`: the session's agreed
/// clock-lock offset (see [`InputPort::agree_local`]).
pub fn router(inputs: Arc<InputRegistry>, credential: Secret) -> Router {
    Router::new()
        .route("/relay/{channel}/{input}", get(relay))
        .route("/relay/{channel}/{input}/offset", post(agree))
        .with_state(Arc::new(RelayState { inputs, credential }))
}

type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, why: String) -> Refusal {
    (status, format!("{why}\n"))
}

/// The port of a live session published here (not itself relayed), if the caller may have it.
fn published_here(
    state: &RelayState,
    headers: &HeaderMap,
    channel: &str,
    input: &str,
) -> Result<Arc<InputPort>, Refusal> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !state.credential.matches(given) {
        let why = "the relay needs the cluster's credential".to_string();
        return Err(refuse(StatusCode::UNAUTHORIZED, why));
    }
    state.inputs.port(channel, input).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            format!("no input {channel}/{input} here"),
        )
    })
}

fn local_session(port: &InputPort) -> Option<LiveSession> {
    port.live().filter(|live| live.relayed.is_none())
}

async fn relay(
    State(state): State<Arc<RelayState>>,
    Path((channel, input)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let port = match published_here(&state, &headers, &channel, &input) {
        Ok(port) => port,
        Err(refused) => return refused.into_response(),
    };
    // Subscribe before looking at the session, so that nothing falls in between.
    let rx = port.subscribe();
    let Some(live) = local_session(&port) else {
        let why = format!("no publisher on {channel}/{input} here");
        return refuse(StatusCode::NOT_FOUND, why).into_response();
    };
    tracing::info!(input = %port.id(), session = live.session, "relaying an input session");
    let frames = SessionFrames::new(&live, rx, port.id().to_string());
    let body = Body::from_stream(futures::stream::unfold(frames, |mut frames| async move {
        let frame = frames.next().await?;
        Some((Ok::<Bytes, std::io::Error>(frame.encode()), frames))
    }));
    ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response()
}

/// One session's frames, read from the port as the relay's client takes them: a client that
/// falls a port's capacity behind is cut off, never buffered for.
struct SessionFrames {
    pending: VecDeque<Frame>,
    rx: broadcast::Receiver<InputEvent>,
    session: u64,
    input: String,
    done: bool,
}

impl SessionFrames {
    fn new(live: &LiveSession, rx: broadcast::Receiver<InputEvent>, input: String) -> Self {
        let mut pending = VecDeque::from([Frame::Started {
            session: live.session,
            container: live.container,
            peer: live.peer.clone(),
        }]);
        pending.extend(live.prologue.iter().cloned().map(Frame::Prologue));
        Self {
            pending,
            rx,
            session: live.session,
            input,
            done: false,
        }
    }

    async fn next(&mut self) -> Option<Frame> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        if self.done {
            return None;
        }
        loop {
            let event = match tokio::time::timeout(ALIVE_EVERY, self.rx.recv()).await {
                Err(_) => return Some(Frame::Alive),
                Ok(event) => event,
            };
            let ended = |why: &str| Frame::Ended(why.to_string());
            let frame = match event {
                Ok(InputEvent::Data { session, bytes }) if session == self.session => {
                    return Some(Frame::Data(bytes));
                }
                Ok(InputEvent::Ended { session, reason }) if session == self.session => {
                    Frame::Ended(reason)
                }
                Ok(InputEvent::Started { .. }) => ended("a new session began"),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    metrics::counter!("steadycast_relay_lagged_total", "input" => self.input.clone())
                        .increment(1);
                    ended("the relay fell behind the input")
                }
                Err(broadcast::error::RecvError::Closed) => ended("the input was removed"),
            };
            self.done = true;
            return Some(frame);
        }
    }
}

#[derive(Deserialize)]
struct Proposal {
    session: u64,
    proposed_us: i64,
}

async fn agree(
    State(state): State<Arc<RelayState>>,
    Path((channel, input)): Path<(String, String)>,
    Query(proposal): Query<Proposal>,
    headers: HeaderMap,
) -> Response {
    let port = match published_here(&state, &headers, &channel, &input) {
        Ok(port) => port,
        Err(refused) => return refused.into_response(),
    };
    if local_session(&port).is_none_or(|live| live.session != proposal.session) {
        let why = format!(
            "session {} of {channel}/{input} is not live here",
            proposal.session
        );
        return refuse(StatusCode::NOT_FOUND, why).into_response();
    }
    let agreed = port.agree_local(proposal.session, proposal.proposed_us);
    agreed.to_string().into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::{Container, InputId};

    #[tokio::test]
    async fn a_relay_that_falls_behind_is_cut_off_not_buffered_for() {
        let port = InputPort::new(InputId {
            channel: "demo".into(),
            input: "main".into(),
        });
        let rx = port.subscribe();
        let publisher = port.publish("10.0.0.1:5000", Container::MpegTs).unwrap();
        let mut frames = SessionFrames::new(&port.live().unwrap(), rx, "demo/main".into());
        for _ in 0..5000 {
            publisher.send(Bytes::from_static(&[0x47; 188]));
        }
        assert!(matches!(frames.next().await, Some(Frame::Started { .. })));
        let mut data = 0;
        let end = loop {
            match frames.next().await.unwrap() {
                Frame::Data(_) => data += 1,
                other => break other,
            }
        };
        assert_eq!(end, Frame::Ended("the relay fell behind the input".into()));
        assert_eq!(data, 0, "nothing older than the port's capacity is kept");
        assert_eq!(frames.next().await, None);
    }
}
