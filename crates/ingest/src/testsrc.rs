//! The built-in test source: a supervised ffmpeg child that renders a moving pattern with a
//! burnt-in wall clock and frame counter, plus a tone, as MPEG-TS stamped with Unix time (so the
//! channel is source-locked: both pipelines see the same timestamps).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::tcp::TsAligner;
use crate::{Container, InputPort};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf";
/// One read of ffmpeg's output: 64 KiB, the most a port chunk holds.
const CHUNK: usize = 64 * 1024;

/// Runs the test pattern on `port` until the task is aborted, restarting ffmpeg if it exits.
pub async fn run(port: Arc<InputPort>, size: String, frame_rate: String) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match run_once(&port, &size, &frame_rate).await {
            Ok(()) => tracing::warn!(input = %port.id(), "test pattern ended; restarting"),
            Err(e) => tracing::error!(input = %port.id(), error = %e, "test pattern failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn run_once(port: &Arc<InputPort>, size: &str, frame_rate: &str) -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut child = Command::new("ffmpeg")
        .args(pattern_args(size, frame_rate, now))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let Some(mut stdout) = child.stdout.take() else {
        return Err(std::io::Error::other("ffmpeg stdout not captured"));
    };
    let publisher = port
        .publish("test-pattern", Container::MpegTs)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let (mut buf, mut aligner) = (vec![0u8; CHUNK], TsAligner::new());
    loop {
        let n = stdout.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        aligner.push(&buf[..n]);
        while let Some(chunk) = aligner.next_chunk() {
            publisher.send(chunk);
        }
    }
    let status = child.wait().await?;
    tracing::info!(input = %port.id(), %status, "test pattern ffmpeg exited");
    Ok(())
}

/// The ffmpeg arguments: pattern and tone at real time, the wall clock of each frame drawn from
/// its own timestamp, x264 without B-frames, and TS timestamps offset to Unix time.
fn pattern_args(size: &str, frame_rate: &str, now: Duration) -> Vec<String> {
    let now = now.as_secs();
    let clock =
        format!(r"%{{pts\:gmtime\:{now}\:%Y-%m-%d %H\\\:%M\\\:%S}} UTC  frame %{{frame_num}}");
    let drawtext = format!(
        "drawtext=fontfile={FONT}:fontsize=h/14:fontcolor=white:box=1:boxcolor=black@0.6:\
         x=(w-tw)/2:y=h-th-h/12:text='{clock}'"
    );
    [
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate={frame_rate}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=1000:sample_rate=48000:beep_factor=4",
        "-vf",
        &drawtext,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-bf",
        "0",
        "-g",
        "30",
        "-b:v",
        "2M",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-ac",
        "2",
        "-output_ts_offset",
        &now.to_string(),
        // Stamp each frame with the time it was made, not the muxer's 1.4 s ahead of it.
        "-muxdelay",
        "0",
        "-muxpreload",
        "0",
        "-f",
        "mpegts",
        "pipe:1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_stamped_with_unix_time() {
        let args = pattern_args("320x180", "15", Duration::from_secs(1_795_616_148));
        let at = args.iter().position(|a| a == "-output_ts_offset").unwrap();
        assert_eq!(args[at + 1], "1795616148");
        assert!(args.iter().any(|a| a == "testsrc2=size=320x180:rate=15"));
        assert!(args.iter().any(|a| a.contains(r"gmtime\:1795616148")));
    }
}
