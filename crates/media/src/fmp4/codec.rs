//! RFC 6381 `CODECS` values from sample entries: what HLS/DASH manifests must declare (hls.js
//! guesses wrong without them, see reference/epoch-lock-ffmpeg.md).

use crate::mp4::{FourCc, Reader, find_child};
use crate::{Error, Result};

/// `avc1.PPCCLL` from an `avcC` body: profile, constraint flags, level in uppercase hex.
pub fn avc(entry: [u8; 4], avcc: &[u8]) -> Result<String> {
    let mut r = Reader::new(avcc);
    let _version = r.u8("avcC")?;
    let profile = r.u8("avcC profile")?;
    let compat = r.u8("avcC constraints")?;
    let level = r.u8("avcC level")?;
    Ok(format!(
        "{}.{profile:02X}{compat:02X}{level:02X}",
        FourCc(entry)
    ))
}

/// `hvc1.P.C.TL.B…` from an `hvcC` body (ISO 14496-15 annex E), best effort.
pub fn hevc(entry: [u8; 4], hvcc: &[u8]) -> Result<String> {
    let mut r = Reader::new(hvcc);
    let _version = r.u8("hvcC")?;
    let b = r.u8("hvcC profile")?;
    let space = match b >> 6 {
        0 => "",
        1 => "A",
        2 => "B",
        _ => "C",
    };
    let tier = if b & 0x20 != 0 { 'H' } else { 'L' };
    let profile = b & 0x1f;
    // The compatibility flags are written bit-reversed in the codec string.
    let compat = r.u32("hvcC compatibility")?.reverse_bits();
    let constraints = r.array::<6>("hvcC constraints")?;
    let level = r.u8("hvcC level")?;
    let mut s = format!(
        "{}.{space}{profile}.{compat:X}.{tier}{level}",
        FourCc(entry)
    );
    let used = constraints
        .iter()
        .rposition(|&c| c != 0)
        .map_or(0, |i| i + 1);
    for c in constraints.iter().take(used) {
        s.push_str(&format!(".{c:X}"));
    }
    Ok(s)
}

/// `mp4a.40.N` from an `esds` body: N is the AudioSpecificConfig object type; other object
/// type indications (MP3 = 0x6B, …) give `mp4a.XX`.
pub fn mp4a(esds: &[u8]) -> Result<String> {
    match es_config(esds)? {
        (0x40, asc) => Ok(format!("mp4a.40.{}", audio_specific_config(asc)?.0)),
        (oti, _) => Ok(format!("mp4a.{oti:02X}")),
    }
}

/// `(audioObjectType, channelConfiguration)` from an AudioSpecificConfig (ISO 14496-3
/// 1.6.2.1); a channel configuration of 0 means "in the program config element".
pub fn audio_specific_config(asc: &[u8]) -> Result<(u8, u8)> {
    let mut bits = 0u64;
    for (i, b) in asc.iter().take(8).enumerate() {
        bits |= u64::from(*b) << (56 - 8 * i);
    }
    let avail = 8 * asc.len().min(8) as u32;
    let mut used = 0u32;
    let mut take = |n: u32| -> Result<u8> {
        if used + n > avail {
            return Err(Error::Truncated {
                what: "AudioSpecificConfig",
                need: u64::from(used + n).div_ceil(8),
                have: asc.len() as u64,
            });
        }
        let v = (bits << used) >> (64 - n);
        used += n;
        Ok(v as u8)
    };
    let mut aot = take(5)?;
    if aot == 31 {
        aot = 32 + take(6)?;
    }
    if take(4)? == 15 {
        // An explicit 24-bit sampling frequency.
        take(8)?;
        take(8)?;
        take(8)?;
    }
    let channels = take(4)?;
    Ok((aot, channels))
}

/// `(objectTypeIndication, DecoderSpecificInfo)` from an `esds` body; for MPEG-4 audio
/// (0x40) the DecoderSpecificInfo is the AudioSpecificConfig.
pub fn es_config(esds: &[u8]) -> Result<(u8, &[u8])> {
    let mut r = Reader::new(esds);
    r.full_box("esds")?;
    let es = descriptor(&mut r, 0x03)?;
    let mut r = Reader::new(es);
    let _es_id = r.u16("ES_Descriptor")?;
    let flags = r.u8("ES_Descriptor")?;
    if flags & 0x80 != 0 {
        r.skip(2, "ES_Descriptor dependsOn")?;
    }
    if flags & 0x40 != 0 {
        let n = r.u8("ES_Descriptor URL")?;
        r.skip(n.into(), "ES_Descriptor URL")?;
    }
    if flags & 0x20 != 0 {
        r.skip(2, "ES_Descriptor OCR")?;
    }
    let dc = descriptor(&mut r, 0x04)?;
    let mut r = Reader::new(dc);
    let oti = r.u8("DecoderConfigDescriptor")?;
    r.skip(12, "DecoderConfigDescriptor")?;
    // MP3 and others may carry no DecoderSpecificInfo.
    let dsi = if r.remaining() > 0 {
        descriptor(&mut r, 0x05)?
    } else {
        &[]
    };
    Ok((oti, dsi))
}

/// Reads an MPEG-4 descriptor of the expected tag and returns its payload.
fn descriptor<'a>(r: &mut Reader<'a>, tag: u8) -> Result<&'a [u8]> {
    let got = r.u8("descriptor tag")?;
    if got != tag {
        return Err(Error::malformed(format!(
            "esds: descriptor tag {got:#x}, expected {tag:#x}"
        )));
    }
    // Expandable length: up to four bytes, seven bits each.
    let mut len = 0usize;
    for _ in 0..4 {
        let b = r.u8("descriptor length")?;
        len = (len << 7) | usize::from(b & 0x7f);
        if b & 0x80 == 0 {
            break;
        }
    }
    r.bytes(len, "descriptor body")
}

/// The codec string of a sample entry (`entry_body` starts after the entry's box header).
pub fn of_entry(kind: [u8; 4], children: &[u8]) -> Result<String> {
    let child = |k: &[u8; 4]| -> Result<&[u8]> {
        find_child(children, k)?
            .map(|b| b.body())
            .ok_or_else(|| Error::malformed(format!("`{}` without `{}`", FourCc(kind), FourCc(*k))))
    };
    match &kind {
        b"avc1" | b"avc3" => avc(kind, child(b"avcC")?),
        b"hvc1" | b"hev1" => hevc(kind, child(b"hvcC")?),
        b"mp4a" => mp4a(child(b"esds")?),
        b"Opus" => Ok("opus".into()),
        _ => Ok(FourCc(kind).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_strings() {
        assert_eq!(
            avc(*b"avc1", &[1, 0x42, 0xc0, 0x0d, 0xff]).unwrap(),
            "avc1.42C00D"
        );
        assert_eq!(
            avc(*b"avc1", &[1, 0x64, 0x00, 0x1f]).unwrap(),
            "avc1.64001F"
        );
        assert!(avc(*b"avc1", &[1, 0x64]).is_err());
    }

    #[test]
    fn hevc_string() {
        // Main profile, main tier, level 3.1, progressive+frame-only constraint flags.
        let hvcc = [1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 93];
        assert_eq!(hevc(*b"hvc1", &hvcc).unwrap(), "hvc1.1.6.L93.90");
    }

    #[test]
    fn mp4a_strings() {
        // ffmpeg's esds for AAC-LC 48 kHz mono (lengths in the 4-byte form).
        let esds = hex(
            "0000000003808080250003000480808017401500000000007d0000007d000580808005118856e500068080800102",
        );
        assert_eq!(mp4a(&esds).unwrap(), "mp4a.40.2");
        assert!(mp4a(&esds[..20]).is_err());
        // HE-AAC v2 signalled as AOT 29; escape value 31 for AOT ≥ 32.
        let mk = |asc: &[u8]| {
            let mut d = vec![
                0,
                0,
                0,
                0,
                3,
                (3 + 2 + 13 + 2 + asc.len()) as u8,
                0,
                1,
                0,
                4,
            ];
            d.push((13 + 2 + asc.len()) as u8);
            d.extend_from_slice(&[0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
            d.push(asc.len() as u8);
            d.extend_from_slice(asc);
            d
        };
        assert_eq!(mp4a(&mk(&[0xe8, 0x00])).unwrap(), "mp4a.40.29");
        assert_eq!(mp4a(&mk(&[0xf8, 0x20, 0x10])).unwrap(), "mp4a.40.33");
        assert_eq!(audio_specific_config(&[0x11, 0x88]).unwrap(), (2, 1));
        assert!(mp4a(&mk(&[])).is_err());
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }
}
