use crate::mp4::FourCc;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way input can be malformed or too big. Messages name the box or field at fault so a
/// log line is enough to understand a rejected upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated {what}: needs {need} bytes, {have} available")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("box `{kind}` has an invalid size {size}")]
    BadBoxSize { kind: FourCc, size: u64 },
    #[error("box `{kind}` of {size} bytes exceeds the {max}-byte limit")]
    BoxTooLarge { kind: FourCc, size: u64, max: u64 },
    #[error("malformed {0}")]
    Malformed(String),
    #[error("unsupported {0}")]
    Unsupported(String),
    #[error("{what}: {count} exceeds the limit of {max}")]
    Limit {
        what: &'static str,
        count: u64,
        max: u64,
    },
    #[error("no track with id {0}")]
    NoSuchTrack(u32),
    #[error("not a CMAF media segment: {0}")]
    NotCmafSegment(String),
    #[error("not a CMAF header: {0}")]
    NotCmafHeader(String),
    #[error("not an MPEG-TS stream: {0}")]
    NotMpegTs(String),
}

impl Error {
    pub(crate) fn malformed(msg: impl Into<String>) -> Self {
        Error::Malformed(msg.into())
    }
}
