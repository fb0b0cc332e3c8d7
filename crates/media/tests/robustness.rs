//! Peer-controlled bytes never panic: random input, truncations and byte flips of valid
//! segments, headers and ffmpeg's stream go through every parser.

// Test helpers outside #[test] fns: panicking on a broken fixture is the point.
#![allow(clippy::unwrap_used)]

use media::cmaf::{init_segment, inspect_init, inspect_segment, media_segment};
use media::fmp4::{FragmentReader, Movie, Sample};
use media::mp4::BoxSplitter;
use media::ts::first_pts;
use proptest::prelude::*;

const FIXTURE: &[u8] = include_bytes!("fixtures/ladder.mp4");

fn valid_segment() -> Vec<u8> {
    let samples: Vec<Sample> = (0..8u32)
        .map(|i| Sample {
            dts: 161_605_514_700_000 + 3000 * u64::from(i),
            duration: 3000,
            cto: if i % 2 == 0 { 3000 } else { -3000 },
            flags: if i == 0 { 0x0200_0000 } else { 0x0101_0000 },
            data: vec![i as u8; 5 + i as usize].into(),
        })
        .collect();
    media_segment(1, 1, samples[0].dts, &samples)
        .unwrap()
        .to_vec()
}

fn moov() -> &'static [u8] {
    let len = u32::from_be_bytes(FIXTURE[28..32].try_into().unwrap()) as usize;
    &FIXTURE[28..28 + len]
}

fn everything(bytes: &[u8]) {
    let _ = inspect_segment(bytes);
    let _ = inspect_init(bytes);
    let _ = Movie::parse(bytes);
    let _ = first_pts(bytes);
    let mut r = FragmentReader::new(1 << 20);
    r.push(bytes);
    for _ in 0..1000 {
        match r.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            // Errors about one box leave the reader usable: keep pulling.
            Err(_) => {}
        }
    }
    let mut s = BoxSplitter::new(1 << 16);
    s.push(bytes);
    while let Ok(Some(_)) = s.next_box() {}
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        everything(&bytes);
    }

    #[test]
    fn truncated_and_flipped_segments(cut in 0usize..400, flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..6)) {
        let mut seg = valid_segment();
        for (at, v) in flips {
            if let Some(b) = seg.get_mut(at) {
                *b = v;
            }
        }
        everything(&seg);
        everything(&seg[..cut.min(seg.len())]);
    }

    #[test]
    fn flipped_moov_and_stream(flips in proptest::collection::vec((0usize..6000, any::<u8>()), 1..8), cut in 0usize..6000) {
        let mut head = FIXTURE[..6000].to_vec();
        for (at, v) in flips {
            head[at] = v;
        }
        everything(&head);
        everything(&head[..cut]);
        let mut moov = moov().to_vec();
        let at = cut % moov.len();
        moov[at] ^= 0xff;
        if let Ok(m) = Movie::parse(&moov) {
            for t in &m.tracks {
                if let Ok(init) = init_segment(&m, t.track_id) {
                    let _ = inspect_init(&init);
                }
            }
        }
    }
}

#[test]
fn valid_inputs_really_are_valid() {
    assert!(inspect_segment(&valid_segment()).is_ok());
    assert_eq!(Movie::parse(moov()).unwrap().tracks.len(), 3);
}
