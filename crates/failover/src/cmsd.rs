//! The quality score on the wire, in the style of CTA-5006 Common Media Server Data: a
//! `CMSD-Static` structured-field dictionary with a custom key (custom keys carry a hyphenated
//! prefix, and keys are lowercase). Pipelines send it with each segment they PUT; the origin
//! repeats it on the segment's responses.

pub const HEADER: &str = "cmsd-static";

const KEY: &str = "com.steadycast-quality";

/// `CMSD-Static` for a segment: object type (`v` video, `a` audio), stream type live, score.
pub fn static_value(video: bool, score: u8) -> String {
    let ot = if video { "v" } else { "a" };
    format!("ot={ot},st=l,{KEY}={score}")
}

/// The score in a `CMSD-Static` value, if it carries one in range.
pub fn parse_quality(value: &str) -> Option<u8> {
    value.split(',').find_map(|member| {
        let (key, score) = member.split_once('=')?;
        (key.trim() == KEY)
            .then(|| score.trim().parse::<u8>().ok())
            .flatten()
            .filter(|s| *s <= 100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let value = static_value(true, 87);
        assert_eq!(value, "ot=v,st=l,com.steadycast-quality=87");
        assert_eq!(parse_quality(&value), Some(87));
        assert_eq!(parse_quality("ot=a, com.steadycast-quality=100"), Some(100));
    }

    #[test]
    fn absent_or_out_of_range_scores_are_none() {
        assert_eq!(parse_quality("ot=v,st=l"), None);
        assert_eq!(parse_quality("com.steadycast-quality=101"), None);
        assert_eq!(parse_quality("com.steadycast-quality=-1"), None);
        assert_eq!(parse_quality("com.steadycast-quality"), None);
        assert_eq!(parse_quality(""), None);
    }
}
