//! The reader on hand-built fragments exercising the tfhd/trun options ffmpeg does not use.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;
use crate::Error;
use crate::mp4::{BoxWriter, Mp4Box};
use crate::testutil::tiny_moov;

struct Trun {
    version: u8,
    flags: u32,
    data_offset: i32,
    first_flags: u32,
    /// duration, size, flags, cto — written only when the trun flags say so.
    samples: Vec<(u32, u32, u32, i32)>,
}

struct Traf {
    track_id: u32,
    tfhd_flags: u32,
    /// base_data_offset, sdi, duration, size, flags — written when flagged.
    tfhd: [u64; 5],
    tfdt: Option<u64>,
    truns: Vec<Trun>,
}

fn moof(trafs: &[Traf]) -> Bytes {
    let mut b = BytesMut::new();
    let moof = BoxWriter::start(&mut b, b"moof");
    let mfhd = BoxWriter::start_full(&mut b, b"mfhd", 0, 0);
    b.put_u32(9);
    mfhd.finish(&mut b);
    for t in trafs {
        let traf = BoxWriter::start(&mut b, b"traf");
        let tfhd = BoxWriter::start_full(&mut b, b"tfhd", 0, t.tfhd_flags);
        b.put_u32(t.track_id);
        if t.tfhd_flags & 1 != 0 {
            b.put_u64(t.tfhd[0]);
        }
        for (bit, v) in [
            (2, t.tfhd[1]),
            (8, t.tfhd[2]),
            (0x10, t.tfhd[3]),
            (0x20, t.tfhd[4]),
        ] {
            if t.tfhd_flags & bit != 0 {
                b.put_u32(v as u32);
            }
        }
        tfhd.finish(&mut b);
        if let Some(d) = t.tfdt {
            let tfdt = BoxWriter::start_full(&mut b, b"tfdt", 1, 0);
            b.put_u64(d);
            tfdt.finish(&mut b);
        }
        for r in &t.truns {
            let trun = BoxWriter::start_full(&mut b, b"trun", r.version, r.flags);
            b.put_u32(r.samples.len() as u32);
            if r.flags & 1 != 0 {
                b.put_i32(r.data_offset);
            }
            if r.flags & 4 != 0 {
                b.put_u32(r.first_flags);
            }
            for &(d, s, f, c) in &r.samples {
                for (bit, v) in [(0x100, d), (0x200, s), (0x400, f), (0x800, c as u32)] {
                    if r.flags & bit != 0 {
                        b.put_u32(v);
                    }
                }
            }
            trun.finish(&mut b);
        }
        traf.finish(&mut b);
    }
    moof.finish(&mut b);
    b.freeze()
}

fn mdat(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u32(8 + payload.len() as u32);
    b.put_slice(b"mdat");
    b.put_slice(payload);
    b.freeze()
}

fn read(boxes: &[Bytes]) -> Result<Vec<FragmentEvent>, Error> {
    let mut r = FragmentReader::default();
    for b in boxes {
        r.push(b);
    }
    let mut out = Vec::new();
    while let Some(e) = r.next_event()? {
        if !matches!(e, FragmentEvent::Init(_)) {
            out.push(e);
        }
    }
    Ok(out)
}

/// `(dts, duration, cto, flags, data)`.
type Row<'a> = (u64, u32, i32, u32, &'a [u8]);

fn samples_of(e: &FragmentEvent) -> (u32, Vec<Row<'_>>) {
    match e {
        FragmentEvent::Samples { track_id, samples } => (
            *track_id,
            samples
                .iter()
                .map(|s| (s.dts, s.duration, s.cto, s.flags, &s.data[..]))
                .collect(),
        ),
        FragmentEvent::Init(_) => panic!("init"),
    }
}

const T: u64 = 161_605_514_700_000;

#[test]
fn implicit_bases_defaults_and_signed_cto() {
    let payload = b"AAABBCCCCDDDDD";
    // Track 1: base = moof start (first traf, no flags), explicit data offset, first-sample
    // flags, tfhd default duration, per-sample sizes, v1 negative cto.
    // Track 2: base = end of track 1's data; trun without data offset; tfhd default size;
    // trex default flags (0x10000 from tiny_moov); no tfdt (starts at 0).
    let m = moof(&[
        Traf {
            track_id: 1,
            tfhd_flags: 0x08 | 0x20,
            tfhd: [0, 0, 3000, 0, 0x0101_0000],
            tfdt: Some(T),
            truns: vec![Trun {
                version: 1,
                flags: 0x1 | 0x4 | 0x200 | 0x800,
                data_offset: 0,
                first_flags: 0x0200_0000,
                samples: vec![(0, 3, 0, 6000), (0, 2, 0, -3000)],
            }],
        },
        Traf {
            track_id: 2,
            tfhd_flags: 0x10 | 0x02,
            tfhd: [0, 1, 0, 4, 0],
            tfdt: None,
            truns: vec![Trun {
                version: 0,
                flags: 0x100,
                data_offset: 0,
                first_flags: 0,
                samples: vec![(1024, 0, 0, 0), (1000, 0, 0, 0)],
            }],
        },
    ]);
    // Data offset of track 1 = moof size + mdat header: the data starts right in the mdat.
    let mut v = m.to_vec();
    let at = v.windows(4).position(|w| w == b"trun").unwrap() + 12;
    v[at..at + 4].copy_from_slice(&(m.len() as i32 + 8).to_be_bytes());
    let m = Bytes::from(v);
    let ev = read(&[tiny_moov(&[1, 2]), m, mdat(payload)]).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        samples_of(&ev[0]),
        (
            1,
            vec![
                (T, 3000, 6000, 0x0200_0000, &b"AAA"[..]),
                (T + 3000, 3000, -3000, 0x0101_0000, b"BB")
            ]
        )
    );
    assert_eq!(
        samples_of(&ev[1]),
        (
            2,
            vec![
                (0, 1024, 0, 0x10000, &b"CCCC"[..]),
                (1024, 1000, 0, 0x10000, b"DDDD")
            ]
        )
    );
}

#[test]
fn explicit_base_data_offset_and_continuing_truns() {
    // ftyp (16 bytes) + moov come first: base_data_offset is an absolute stream offset.
    let ftyp = Bytes::from_static(b"\0\0\0\x10ftypiso6\0\0\0\0");
    let moov = tiny_moov(&[5]);
    let traf = |base: u64| Traf {
        track_id: 5,
        tfhd_flags: 0x1 | 0x8 | 0x10 | 0x20,
        tfhd: [base, 0, 1000, 2, 0],
        tfdt: Some(T),
        truns: vec![
            Trun {
                version: 0,
                flags: 0,
                data_offset: 0,
                first_flags: 0,
                samples: vec![(0, 0, 0, 0)],
            },
            Trun {
                version: 0,
                flags: 0x200,
                data_offset: 0,
                first_flags: 0,
                samples: vec![(0, 3, 0, 0)],
            },
        ],
    };
    let moof_len = moof(&[traf(0)]).len() as u64;
    let data_at = 16 + moov.len() as u64 + moof_len + 8;
    let m = moof(&[traf(data_at)]);
    let ev = read(&[ftyp, moov, m, mdat(b"xxYYY")]).unwrap();
    assert_eq!(
        samples_of(&ev[0]),
        (
            5,
            vec![(T, 1000, 0, 0, &b"xx"[..]), (T + 1000, 1000, 0, 0, b"YYY")]
        )
    );
}

#[test]
fn rejects_samples_outside_the_mdat_and_orphans() {
    let moov = tiny_moov(&[1]);
    let traf = |size: u32| Traf {
        track_id: 1,
        tfhd_flags: 0x02_0000,
        tfhd: [0; 5],
        tfdt: Some(T),
        truns: vec![Trun {
            version: 0,
            flags: 0x1 | 0x200,
            data_offset: 0,
            first_flags: 0,
            samples: vec![(0, size, 0, 0)],
        }],
    };
    let len = moof(&[traf(0)]).len() as i32;
    let with_offset = |size: u32, off: i32| {
        let mut v = moof(&[traf(size)]).to_vec();
        let at = v.windows(4).position(|w| w == b"trun").unwrap() + 12;
        v[at..at + 4].copy_from_slice(&off.to_be_bytes());
        Bytes::from(v)
    };
    assert!(read(&[moov.clone(), with_offset(4, len + 8), mdat(b"abcd")]).is_ok());
    for (size, off) in [
        (5, len + 8),
        (4, len + 7),
        (4, 0),
        (4, -100),
        (u32::MAX, len + 8),
    ] {
        let e = read(&[moov.clone(), with_offset(size, off), mdat(b"abcd")]).unwrap_err();
        assert!(matches!(e, Error::Malformed(_)), "{size} {off}: {e}");
    }
    assert!(read(&[moov.clone(), mdat(b"abcd")]).is_err());
    assert!(read(&[with_offset(4, len + 8), mdat(b"abcd")]).is_err());
    // A traf for a track the moov does not have.
    let mut other = with_offset(4, len + 8).to_vec();
    let at = other.windows(4).position(|w| w == b"tfhd").unwrap() + 8;
    other[at..at + 4].copy_from_slice(&9u32.to_be_bytes());
    assert!(read(&[moov, Bytes::from(other), mdat(b"abcd")]).is_err());
}

#[test]
fn huge_sample_counts_without_per_sample_fields_are_capped() {
    let m = moof(&[Traf {
        track_id: 1,
        tfhd_flags: 0x02_0000,
        tfhd: [0; 5],
        tfdt: Some(T),
        truns: vec![Trun {
            version: 0,
            flags: 0,
            data_offset: 0,
            first_flags: 0,
            samples: vec![],
        }],
    }]);
    let mut v = m.to_vec();
    let at = v.windows(4).position(|w| w == b"trun").unwrap() + 8;
    v[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let e = read(&[tiny_moov(&[1]), Bytes::from(v), mdat(b"")]).unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
}

#[test]
fn push_box_and_push_agree() {
    let mut r = FragmentReader::new(1 << 16);
    r.push_box(Mp4Box {
        kind: *b"ftyp",
        bytes: Bytes::from_static(b"\0\0\0\x08ftyp"),
    })
    .unwrap();
    r.push_box(Mp4Box {
        kind: *b"moov",
        bytes: tiny_moov(&[1]),
    })
    .unwrap();
    let Some(FragmentEvent::Init(movie)) = r.next_event().unwrap() else {
        panic!()
    };
    assert_eq!(movie.tracks.len(), 1);
    assert_eq!(r.movie().map(|m| m.timescale), Some(1000));
}

#[test]
fn movie_rejects_broken_moovs() {
    let good = tiny_moov(&[1, 2]);
    assert_eq!(Movie::parse(&good).unwrap().tracks.len(), 2);
    assert!(
        Movie::parse(&tiny_moov(&[1, 1])).is_err(),
        "duplicate track ids"
    );
    assert!(Movie::parse(b"").is_err());
    assert!(Movie::parse(b"\0\0\0\x08free").is_err());
    for cut in [8, 20, good.len() / 2, good.len() - 1] {
        let mut v = good[..cut].to_vec();
        v[..4].copy_from_slice(&(cut as u32).to_be_bytes());
        assert!(Movie::parse(&v).is_err(), "cut at {cut}");
    }
    // mdhd timescale 0 would divide by zero in the grid later.
    let mut v = good.to_vec();
    let at = v.windows(4).position(|w| w == b"mdhd").unwrap() + 16;
    v[at..at + 4].copy_from_slice(&0u32.to_be_bytes());
    assert!(Movie::parse(&v).is_err());
}

/// The box readers on any bytes: top-level boxes lie end to end inside the buffer, the
/// splitter cuts the same boxes (or fails on the same one) however the bytes arrive, and the
/// fragment reader hands out samples that are slices of what it was given.
#[test]
fn fuzz_fmp4() {
    use crate::mp4::Boxes;

    fn split(data: &[u8], piece: usize) -> (Vec<Mp4Box>, Option<Error>) {
        let mut splitter = crate::mp4::BoxSplitter::new(1 << 20);
        let mut boxes = Vec::new();
        for chunk in data.chunks(piece) {
            splitter.push(chunk);
            loop {
                match splitter.next_box() {
                    Ok(Some(b)) => boxes.push(b),
                    Ok(None) => break,
                    Err(e) => return (boxes, Some(e)),
                }
            }
        }
        (boxes, None)
    }

    fuzzing::Target::new("fmp4").run(|data| {
        let mut end = 0;
        for b in Boxes::file(data) {
            let Ok(b) = b else { break };
            assert_eq!(b.offset, end);
            assert!(b.header_len <= b.data.len());
            end += b.data.len();
        }
        assert!(end <= data.len());

        let whole = split(data, data.len().max(1));
        assert_eq!(split(data, 1 + data.len() % 97), whole);
        let cut: Vec<u8> = whole
            .0
            .iter()
            .flat_map(|b| b.bytes.iter().copied())
            .collect();
        assert!(data.starts_with(&cut));

        let mut reader = FragmentReader::new(1 << 20);
        reader.push(data);
        // A framing error repeats forever; every other outcome consumes a box or an event.
        for _ in 0..data.len() / 4 + 4 {
            match reader.next_event() {
                Ok(Some(FragmentEvent::Samples { samples, .. })) => {
                    assert!(samples.iter().all(|s| s.data.len() <= data.len()));
                }
                Ok(Some(FragmentEvent::Init(movie))) => assert!(movie.tracks.len() <= MAX_TRACKS),
                Ok(None) => break,
                Err(_) => {}
            }
        }
    });
}
