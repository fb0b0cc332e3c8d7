//! The ffmpeg command lines of a pipeline. Decoders turn one input session into raw pictures on
//! the epoch frame grid and raw PCM on the epoch sample grid; encoders turn the switcher's
//! continuous raw output into one fragmented MP4 per kind (every video rendition, or audio),
//! stamped from a known first slot so that every encoder start lands on the grid.

use channel::{AudioSpec, ChannelSpec};
use ingest::Container;
use timeline::{FrameRate, SegmentGrid};

/// The size every input is scaled (and letterboxed) to before switching: the largest rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
}

impl Canvas {
    pub fn of(spec: &ChannelSpec) -> Self {
        let top = spec
            .ladder
            .iter()
            .max_by_key(|r| u64::from(r.width) * u64::from(r.height));
        top.map_or(
            Canvas {
                width: 320,
                height: 180,
            },
            |r| Canvas {
                width: r.width,
                height: r.height,
            },
        )
    }

    /// Bytes of one yuv420p picture.
    pub fn frame_bytes(self) -> usize {
        self.width as usize * self.height as usize * 3 / 2
    }
}

/// Bytes of one interleaved s16 sample frame (all channels).
pub fn sample_bytes(audio: &AudioSpec) -> usize {
    2 * usize::from(audio.channels)
}

/// How one input session is decoded.
pub struct DecoderPlan<'a> {
    pub container: Container,
    /// Added to every input timestamp so that it becomes Unix time (microseconds).
    pub offset_us: i64,
    pub rate: FrameRate,
    pub canvas: Canvas,
    pub audio: &'a AudioSpec,
    /// The first frame slot to output: earlier pictures are trimmed, a later start is padded
    /// with the first picture, so picture `k` of the output is slot `start_slot + k`.
    pub start_slot: u64,
}

impl DecoderPlan<'_> {
    pub fn video_args(&self) -> Vec<String> {
        let Canvas { width, height } = self.canvas;
        let start = self.rate.slot_time(self.start_slot);
        let filters = format!(
            "fps={}:start_time={}.{:09},scale={width}:{height}:force_original_aspect_ratio=decrease,\
             pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p",
            self.rate,
            start.as_secs(),
            start.subsec_nanos()
        );
        let mut args = self.input_args();
        args.extend(strings(&["-an", "-sn", "-dn", "-vf", &filters]));
        args.extend(strings(&[
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "pipe:1",
        ]));
        args
    }

    /// PCM from the first sample of `start_slot`, gaps filled with silence and overlaps
    /// trimmed (`async=1`), so that byte `k` of the output is always the same epoch sample.
    pub fn audio_args(&self) -> Vec<String> {
        let rate = self.audio.sample_rate;
        let first = self.rate.first_sample(self.start_slot, rate);
        let filters = format!(
            "aresample={rate}:async=1:first_pts={first},aformat=sample_fmts=s16:channel_layouts={}",
            layout(self.audio)
        );
        let mut args = self.input_args();
        args.extend(strings(&["-vn", "-sn", "-dn", "-af", &filters]));
        args.extend(strings(&["-f", "s16le", "pipe:1"]));
        args
    }

    fn input_args(&self) -> Vec<String> {
        let mut args = quiet();
        // A short probe: a decoder (re)starting sooner rejoins sooner.
        args.extend(strings(&[
            "-analyzeduration",
            "1500000",
            "-probesize",
            "4000000",
        ]));
        args.extend(strings(&[
            "-itsoffset",
            &format_offset(self.offset_us),
            "-copyts",
        ]));
        args.extend(strings(&[
            "-f",
            self.container.ffmpeg_format(),
            "-i",
            "pipe:0",
        ]));
        args
    }
}

/// How the switcher's raw output is encoded, from `start_slot` (a segment's first slot) on.
pub struct EncoderPlan<'a> {
    pub spec: &'a ChannelSpec,
    pub grid: SegmentGrid,
    pub canvas: Canvas,
    pub start_slot: u64,
}

impl EncoderPlan<'_> {
    /// Every video rendition from raw pictures on stdin. `setpts` numbers the pictures from
    /// `start_slot` in the input's 1/rate time base, exactly, whatever the rate.
    pub fn video_args(&self) -> Vec<String> {
        let rate = self.grid.rate();
        let Canvas { width, height } = self.canvas;
        let mut args = quiet();
        args.extend(strings(&[
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-video_size",
            &format!("{width}x{height}"),
            "-framerate",
            &rate.to_string(),
            "-i",
            "pipe:0",
        ]));
        args.extend(strings(&["-filter_complex", &self.video_graph()]));
        for i in 0..self.spec.ladder.len() {
            args.extend(strings(&["-map", &format!("[v{i}]")]));
        }
        self.video_codec_args(&mut args);
        args.extend(strings(&["-video_track_timescale", "90000"]));
        args.extend(fragmented_mp4());
        args
    }

    /// Where the audio encoder starts: the first sample at or after `start_slot`'s that lies on
    /// the epoch's grid of AAC frames (1024 samples), and how many samples of the slot's PCM
    /// come before it. On that grid, encoders started at any time make the same frames, so
    /// both pipelines' audio segments hold the same frames at the same times.
    pub fn audio_start(&self) -> (u64, u64) {
        let first = self
            .grid
            .rate()
            .first_sample(self.start_slot, self.spec.audio.sample_rate);
        let aligned = first.div_ceil(AAC_FRAME) * AAC_FRAME;
        (aligned, aligned - first)
    }

    /// The audio rendition from PCM on stdin (starting at [`EncoderPlan::audio_start`]).
    pub fn audio_args(&self) -> Vec<String> {
        let audio = &self.spec.audio;
        let (first, _) = self.audio_start();
        let mut args = quiet();
        args.extend(strings(&[
            "-f",
            "s16le",
            "-ar",
            &audio.sample_rate.to_string(),
            "-ac",
            &audio.channels.to_string(),
            "-i",
            "pipe:0",
        ]));
        args.extend(strings(&["-af", &format!("asetpts=PTS+{first}")]));
        args.extend(strings(&[
            "-c:a",
            "aac",
            "-b:a",
            &format!("{}k", audio.bitrate_kbps),
        ]));
        args.extend(fragmented_mp4());
        args
    }

    fn video_graph(&self) -> String {
        let k = self.spec.ladder.len();
        let mut g = format!("[0:v:0]setpts=PTS+{},split={k}", self.start_slot);
        for i in 0..k {
            g.push_str(&format!("[s{i}]"));
        }
        for (i, r) in self.spec.ladder.iter().enumerate() {
            g.push_str(&format!(
                ";[s{i}]scale={}:{},setsar=1[v{i}]",
                r.width, r.height
            ));
        }
        g
    }

    /// Keyframes every segment's first frame: the encoder starts on a segment boundary, so
    /// counting frames from its start counts slots.
    fn video_codec_args(&self, args: &mut Vec<String>) {
        let frames = self.grid.frames().to_string();
        let keyframes = format!("expr:gte(n,n_forced*{frames})");
        args.extend(strings(&[
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
        ]));
        for (i, r) in self.spec.ladder.iter().enumerate() {
            let kbps = r.bitrate_kbps;
            args.extend([
                format!("-b:v:{i}"),
                format!("{kbps}k"),
                format!("-maxrate:v:{i}"),
                format!("{}k", kbps + kbps / 10),
                format!("-bufsize:v:{i}"),
                format!("{}k", kbps * 2),
            ]);
        }
    }
}

/// Samples in an AAC-LC frame.
const AAC_FRAME: u64 = 1024;

fn quiet() -> Vec<String> {
    strings(&[
        "-hide_banner",
        "-nostats",
        "-nostdin",
        "-loglevel",
        "warning",
    ])
}

/// Absolute timestamps survive into tfdt only with frag_discont; negative composition offsets
/// keep a keyframe's decode time equal to its presentation time, on the grid.
fn fragmented_mp4() -> Vec<String> {
    strings(&[
        "-fps_mode",
        "passthrough",
        "-avoid_negative_ts",
        "disabled",
        "-muxdelay",
        "0",
        "-f",
        "mp4",
        "-movflags",
        "empty_moov+default_base_moof+frag_discont+negative_cts_offsets",
        "-frag_duration",
        "100000",
        "pipe:1",
    ])
}

fn layout(audio: &AudioSpec) -> &'static str {
    if audio.channels == 1 {
        "mono"
    } else {
        "stereo"
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
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
        let spec: ChannelSpec = toml::from_str(
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
        .unwrap();
        spec.validate().unwrap();
        spec
    }

    #[test]
    fn offsets_have_microsecond_precision() {
        assert_eq!(format_offset(1_795_582_660_881_067), "1795582660.881067");
        assert_eq!(format_offset(-1_500), "-0.001500");
        assert_eq!(format_offset(0), "0.000000");
    }

    #[test]
    fn decoders_start_on_a_slot_and_its_first_sample() {
        let spec = spec();
        let plan = DecoderPlan {
            container: Container::MpegTs,
            offset_us: 95_443_717_688_889,
            rate: spec.frame_rate,
            canvas: Canvas::of(&spec),
            audio: &spec.audio,
            // 2.002 s after the epoch: slot 60.
            start_slot: 60,
        };
        let video = plan.video_args().join(" ");
        assert!(
            video.contains("-itsoffset 95443717.688889 -copyts -f mpegts -i pipe:0 -an"),
            "{video}"
        );
        assert!(
            video.contains("fps=30000/1001:start_time=2.002000000,scale=320:180"),
            "{video}"
        );
        assert!(video.ends_with("-f rawvideo pipe:1"), "{video}");
        let audio = plan.audio_args().join(" ");
        assert!(
            audio.contains("aresample=48000:async=1:first_pts=96096,"),
            "{audio}"
        );
        assert!(audio.ends_with("-f s16le pipe:1"), "{audio}");
    }

    #[test]
    fn encoders_number_from_their_first_slot() {
        let spec = spec();
        let plan = EncoderPlan {
            spec: &spec,
            grid: spec.grid().unwrap(),
            canvas: Canvas::of(&spec),
            start_slot: 1_200,
        };
        let args = plan.video_args();
        let graph = &args[args.iter().position(|a| a == "-filter_complex").unwrap() + 1];
        assert_eq!(
            graph,
            "[0:v:0]setpts=PTS+1200,split=2[s0][s1];\
             [s0]scale=320:180,setsar=1[v0];[s1]scale=160:90,setsar=1[v1]"
        );
        let joined = args.join(" ");
        assert!(joined.contains("-video_size 320x180 -framerate 30000/1001 -i pipe:0"));
        assert!(joined.contains("-force_key_frames expr:gte(n,n_forced*60)"));
        assert!(joined.contains("-b:v:1 100k -maxrate:v:1 110k -bufsize:v:1 200k"));
        assert!(joined.ends_with("-frag_duration 100000 pipe:1"));
        // 1200 slots of 1001/30000 s = 40.04 s = 1 921 920 samples; the next AAC frame of the
        // epoch's grid starts 1 922 048 (1877 × 1024), 128 samples on.
        let audio = plan.audio_args().join(" ");
        assert!(audio.contains("-af asetpts=PTS+1922048"), "{audio}");
        assert_eq!(plan.audio_start(), (1_922_048, 128));
    }
}
