//! An ffmpeg child of a pipeline: spawned with piped stdio, its stderr relayed at debug level
//! (joining a stream mid-way makes it chatty) while its last lines are kept to explain a crash.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

const LAST_WORDS: usize = 3;

pub(crate) struct Ffmpeg {
    child: Child,
    last_words: Arc<Mutex<VecDeque<String>>>,
    relay: JoinHandle<()>,
}

impl Ffmpeg {
    /// Starts ffmpeg; `what` names it in the log (`decoder main video`, `encoder audio`).
    pub fn spawn(
        args: &[String],
        channel: &str,
        what: String,
    ) -> std::io::Result<(Self, ChildStdin, ChildStdout)> {
        let mut child = Command::new("ffmpeg")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("ffmpeg pipes not captured"));
        };
        let last_words = Arc::new(Mutex::new(VecDeque::new()));
        let relay = tokio::spawn(relay_log(
            stderr,
            channel.to_string(),
            what,
            last_words.clone(),
        ));
        let ffmpeg = Self {
            child,
            last_words,
            relay,
        };
        Ok((ffmpeg, stdin, stdout))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `why`, followed by ffmpeg's own last words (its stderr ends just after its output does).
    pub async fn explain(&mut self, why: String) -> String {
        let _ = tokio::time::timeout(Duration::from_millis(500), &mut self.relay).await;
        let said: Vec<String> = self
            .last_words
            .lock()
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default();
        if said.is_empty() {
            why
        } else {
            format!("{why}; ffmpeg said: {}", said.join(" | "))
        }
    }

    /// Makes sure the process is gone.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.relay.abort();
    }
}

async fn relay_log(
    stderr: tokio::process::ChildStderr,
    channel: String,
    what: String,
    last_words: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(%channel, %what, "ffmpeg: {line}");
        if let Ok(mut words) = last_words.lock() {
            if words.len() == LAST_WORDS {
                words.pop_front();
            }
            words.push_back(line);
        }
    }
}
