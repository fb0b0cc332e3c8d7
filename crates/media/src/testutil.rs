//! Builders shared by unit tests.

use bytes::Bytes;

/// A minimal moov for video tracks with trex defaults, enough for the reader.
pub fn tiny_moov(track_ids: &[u32]) -> Bytes {
    use crate::mp4::BoxWriter;
    use bytes::{BufMut, BytesMut};
    let mut b = BytesMut::new();
    let moov = BoxWriter::start(&mut b, b"moov");
    let mvhd = BoxWriter::start_full(&mut b, b"mvhd", 0, 0);
    b.put_slice(&[0; 8]);
    b.put_u32(1000);
    b.put_slice(&[0; 84]);
    mvhd.finish(&mut b);
    for &track_id in track_ids {
        let trak = BoxWriter::start(&mut b, b"trak");
        let tkhd = BoxWriter::start_full(&mut b, b"tkhd", 0, 0);
        b.put_slice(&[0; 8]);
        b.put_u32(track_id);
        b.put_slice(&[0; 68]);
        tkhd.finish(&mut b);
        let mdia = BoxWriter::start(&mut b, b"mdia");
        let mdhd = BoxWriter::start_full(&mut b, b"mdhd", 0, 0);
        b.put_slice(&[0; 8]);
        b.put_u32(90_000);
        b.put_slice(&[0; 8]);
        mdhd.finish(&mut b);
        let hdlr = BoxWriter::start_full(&mut b, b"hdlr", 0, 0);
        b.put_u32(0);
        b.put_slice(b"vide");
        b.put_slice(&[0; 13]);
        hdlr.finish(&mut b);
        let minf = BoxWriter::start(&mut b, b"minf");
        let stbl = BoxWriter::start(&mut b, b"stbl");
        let stsd = BoxWriter::start_full(&mut b, b"stsd", 0, 0);
        b.put_u32(1);
        let avc1 = BoxWriter::start(&mut b, b"avc1");
        b.put_slice(&[0; 24]);
        b.put_u16(320);
        b.put_u16(180);
        b.put_slice(&[0; 50]);
        let avcc = BoxWriter::start(&mut b, b"avcC");
        b.put_slice(&[1, 0x64, 0x00, 0x1f, 0xff, 0xe0, 0]);
        avcc.finish(&mut b);
        avc1.finish(&mut b);
        stsd.finish(&mut b);
        stbl.finish(&mut b);
        minf.finish(&mut b);
        mdia.finish(&mut b);
        trak.finish(&mut b);
    }
    let mvex = BoxWriter::start(&mut b, b"mvex");
    for &track_id in track_ids {
        let trex = BoxWriter::start_full(&mut b, b"trex", 0, 0);
        b.put_u32(track_id);
        b.put_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        trex.finish(&mut b);
    }
    mvex.finish(&mut b);
    moov.finish(&mut b);
    b.freeze()
}
