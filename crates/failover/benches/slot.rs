//! `cargo bench -p failover`: the failover work a switcher does per frame slot, for a pipeline
//! with a primary and a backup input at 1080p and 720p: each input's picture measured for the
//! black trigger, its PCM for the silence trigger, the policy observed and asked. Prints
//! timings; asserts nothing about them.

use std::hint::black_box;
use std::time::Instant;

use failover::{
    BlackTrigger, FailoverSpec, InputSelector, Observation, SilenceTrigger, mean_luma,
    pcm_level_dbfs,
};

const SLOTS: u64 = 3_000;

fn main() {
    let spec = FailoverSpec {
        black: Some(BlackTrigger { luma: 20, ms: 2000 }),
        silence: Some(SilenceTrigger {
            db: -60.0,
            ms: 5000,
        }),
        ..FailoverSpec::default()
    };
    // 1601 or 1602 stereo s16 samples: a slot at 29.97 fps.
    let pcm: Vec<u8> = (0..1602 * 4).map(|i| (i * 7 % 251) as u8).collect();
    for (name, width, height) in [("1080p", 1920u32, 1080u32), ("720p", 1280, 720)] {
        let picture: Vec<u8> = (0..(width * height * 3 / 2) as usize)
            .map(|i| (i * 13 % 256) as u8)
            .collect();
        let mut selector = InputSelector::new(&spec, 2);
        let started = Instant::now();
        for slot in 0..SLOTS {
            let now_ms = slot * 1001 / 30;
            for input in 0..2 {
                let obs = Observation {
                    frame: true,
                    black: mean_luma(black_box(&picture), width, height) <= 20,
                    silent: pcm_level_dbfs(black_box(&pcm)) <= -60.0,
                };
                selector.observe(input, obs, now_ms);
            }
            black_box(selector.select(now_ms, slot % 60 == 0));
        }
        let per_slot = started.elapsed() / SLOTS as u32;
        println!(
            "failover per slot, 2 inputs at {name}: {:.1} µs ({:.2} % of a 29.97 fps slot)",
            per_slot.as_secs_f64() * 1e6,
            per_slot.as_secs_f64() * 100.0 * 30_000.0 / 1001.0
        );
    }
}
