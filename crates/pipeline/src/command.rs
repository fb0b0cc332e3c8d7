//! The ffmpeg command line of a pipeline: decode once, lock to the epoch grid, encode the whole
//! ladder, and write one fragmented MP4 with a track per rendition to stdout.

use std::time::Duration;

use channel::ChannelSpec;
use ingest::Container;
use timeline::SegmentGrid;

/// Everything that decides a pipeline's ffmpeg arguments.
pub struct EncoderPlan<'a> {
    pub spec: &'a ChannelSpec,
    pub grid: SegmentGrid,
    pub container: Container,
    /// Added to every input timestamp so that it becomes Unix time (microseconds).
    pub offset_us: i64,
    /// For an input without audio: when the generated silence starts (see [`silence_start`]).
    pub silence_from: Option<Duration>,
}

/// Where generated silence starts: the first AAC frame boundary (1024 samples, counted from the
/// epoch) a second from now, so that both pipelines' silent frames carry the same timestamps.
pub fn silence_start(now: Duration, sample_rate: u32) -> Duration {
    let per_frame = 1024 * 1_000_000_000u128;
    let at = (now + Duration::from_secs(1)).as_nanos() * u128::from(sample_rate);
    let frames = at.div_ceil(per_frame);
    Duration::from_nanos((frames * per_frame / u128::from(sample_rate)) as u64)
}

impl EncoderPlan<'_> {
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::with_capacity(64);
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        push(&[
            "-hide_banner",
            "-nostats",
            "-nostdin",
            "-loglevel",
            "warning",
        ]);
        // A short probe: an encoder (re)starting sooner rejoins the grid sooner.
        push(&["-analyzeduration", "1500000", "-probesize", "4000000"]);
        push(&["-itsoffset", &format_offset(self.offset_us), "-copyts"]);
        push(&["-f", self.container.ffmpeg_format(), "-i", "pipe:0"]);
        if let Some(start) = self.silence_from {
            let audio = &self.spec.audio;
            let layout = if audio.channels == 1 {
                "mono"
            } else {
                "stereo"
            };
            let source = format!("anullsrc=r={}:cl={layout}", audio.sample_rate);
            let offset = format_offset(start.as_micros() as i64);
            push(&["-itsoffset", &offset, "-f", "lavfi", "-i", &source]);
        }
        push(&["-filter_complex", &self.filter_graph()]);
        for i in 0..self.spec.ladder.len() {
            push(&["-map", &format!("[v{i}]")]);
        }
        push(&["-map", "[a0]"]);
        self.video_codec_args(&mut args);
        let audio = &self.spec.audio;
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        push(&["-c:a", "aac", "-b:a", &format!("{}k", audio.bitrate_kbps)]);
        push(&[
            "-ac",
            &audio.channels.to_string(),
            "-ar",
            &audio.sample_rate.to_string(),
        ]);
        // Absolute timestamps survive into tfdt only with frag_discont; negative composition
        // offsets keep a keyframe's decode time equal to its presentation time, on the grid.
        push(&["-fps_mode", "passthrough", "-avoid_negative_ts", "disabled"]);
        push(&[
            "-video_track_timescale",
            "90000",
            "-muxdelay",
            "0",
            "-f",
            "mp4",
        ]);
        push(&[
            "-movflags",
            "empty_moov+default_base_moof+frag_discont+negative_cts_offsets",
        ]);
        push(&["-frag_duration", "100000", "pipe:1"]);
        args
    }

    /// `fps` puts frames on the epoch-anchored frame grid (pts = frame number since the epoch);
    /// `select` drops frames until the first segment boundary, so that the encoders' relative
    /// keyframe schedule coincides with absolute boundaries.
    fn filter_graph(&self) -> String {
        let rate = self.grid.rate();
        let frames = self.grid.frames();
        let d = segment_seconds_expr(self.grid);
        let k = self.spec.ladder.len();
        let mut g = format!(
            "[0:v:0]fps={rate},select='gte(pts\\,ceil(start_pts/{frames})*{frames})',split={k}"
        );
        for i in 0..k {
            g.push_str(&format!("[s{i}]"));
        }
        for (i, r) in self.spec.ladder.iter().enumerate() {
            g.push_str(&format!(
                ";[s{i}]scale={}:{},setsar=1[v{i}]",
                r.width, r.height
            ));
        }
        let audio = if self.silence_from.is_some() {
            "1:a:0"
        } else {
            "0:a:0"
        };
        g.push_str(&format!(
            ";[{audio}]aresample={},aselect='gte(t\\,ceil(start_t/{d})*{d})'[a0]",
            self.spec.audio.sample_rate
        ));
        g
    }

    fn video_codec_args(&self, args: &mut Vec<String>) {
        let frames = self.grid.frames().to_string();
        let keyframes = format!("expr:gte(n,n_forced*{frames})");
        for item in [
            "-c:v",
            "libx264",
            "-preset",
            &self.spec.preset,
            "-pix_fmt",
            "yuv420p",
            "-g",
            &frames,
            "-keyint_min",
            &frames,
            "-sc_threshold",
            "0",
            "-x264-params",
            "open-gop=0",
            "-force_key_frames",
            &keyframes,
        ] {
            args.push(item.to_string());
        }
        for (i, r) in self.spec.ladder.iter().enumerate() {
            let kbps = r.bitrate_kbps;
            args.push(format!("-b:v:{i}"));
            args.push(format!("{kbps}k"));
            args.push(format!("-maxrate:v:{i}"));
            args.push(format!("{}k", kbps + kbps / 10));
            args.push(format!("-bufsize:v:{i}"));
            args.push(format!("{}k", kbps * 2));
        }
    }
}

/// `D` in seconds as a decimal ffmpeg expressions read exactly enough (2.002, not 2.00199…).
fn segment_seconds_expr(grid: SegmentGrid) -> String {
    let s = format!("{:.9}", grid.duration_secs());
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// ffmpeg's time syntax at microsecond precision: `-12.000345`.
fn format_offset(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let abs = us.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ChannelSpec {
        toml_spec(
            r#"
            id = "t"
            frame_rate = "30000/1001"
            preset = "ultrafast"
            [inputs.p]
            type = "test-pattern"
            [[ladder]]
            name = "180p"
            width = 320
            height = 180
            bitrate_kbps = 300
            [[ladder]]
            name = "90p"
            width = 160
            height = 90
            bitrate_kbps = 100
            "#,
        )
    }

    fn toml_spec(s: &str) -> ChannelSpec {
        let spec: ChannelSpec = serde_json::from_value(toml_to_json(s)).unwrap();
        spec.validate().unwrap();
        spec
    }

    fn toml_to_json(s: &str) -> serde_json::Value {
        let v: toml::Value = toml::from_str(s).unwrap();
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn silence_starts_on_the_epoch_aac_frame_grid() {
        let now = Duration::from_millis(1_795_616_148_123);
        let start = silence_start(now, 48_000);
        assert!(start >= now + Duration::from_secs(1));
        assert!(start < now + Duration::from_secs(1) + Duration::from_micros(21_334));
        // A whole number of 1024-sample frames since the epoch, to the nanosecond.
        let samples = start.as_nanos() * 48_000;
        let frames = (samples + 500_000_000) / 1_000_000_000 / 1024;
        let back = Duration::from_nanos((frames * 1024 * 1_000_000_000 / 48_000) as u64);
        assert_eq!(back, start);
        // Two pipelines starting apart land on the same grid.
        let other = silence_start(now + Duration::from_millis(777), 48_000);
        let apart = (other - start).as_nanos() * 48_000;
        assert_eq!(apart % (1024 * 1_000_000_000), 0);
    }

    #[test]
    fn an_input_without_audio_gets_silence() {
        let spec = spec();
        let plan = EncoderPlan {
            spec: &spec,
            grid: spec.grid().unwrap(),
            container: Container::Flv,
            offset_us: 0,
            silence_from: Some(Duration::from_secs(1_795_616_150)),
        };
        let joined = plan.args().join(" ");
        assert!(
            joined.contains("-itsoffset 1795616150.000000 -f lavfi -i anullsrc=r=48000:cl=stereo"),
            "{joined}"
        );
        assert!(joined.contains(";[1:a:0]aresample=48000"), "{joined}");
    }

    #[test]
    fn offsets_have_microsecond_precision() {
        assert_eq!(format_offset(1_795_582_660_881_067), "1795582660.881067");
        assert_eq!(format_offset(-1_500), "-0.001500");
        assert_eq!(format_offset(0), "0.000000");
    }

    #[test]
    fn ntsc_grid_in_filters_and_keyframes() {
        let spec = spec();
        let plan = EncoderPlan {
            spec: &spec,
            grid: spec.grid().unwrap(),
            container: Container::MpegTs,
            offset_us: 95_443_717_688_889,
            silence_from: None,
        };
        let args = plan.args();
        let graph = &args[args.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        assert_eq!(
            graph,
            "[0:v:0]fps=30000/1001,select='gte(pts\\,ceil(start_pts/60)*60)',split=2[s0][s1];\
             [s0]scale=320:180,setsar=1[v0];[s1]scale=160:90,setsar=1[v1];\
             [0:a:0]aresample=48000,aselect='gte(t\\,ceil(start_t/2.002)*2.002)'[a0]"
        );
        let joined = args.join(" ");
        assert!(joined.contains("-itsoffset 95443717.688889 -copyts -f mpegts -i pipe:0"));
        assert!(joined.contains("-force_key_frames expr:gte(n,n_forced*60)"));
        assert!(joined.contains("-b:v:1 100k -maxrate:v:1 110k -bufsize:v:1 200k"));
        assert!(joined.ends_with("-frag_duration 100000 pipe:1"));
    }
}
