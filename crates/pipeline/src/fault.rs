//! Faults a chaos run injects into one pipeline's delivery, for a while: uploads delayed,
//! corrupted (same length, damaged bytes) or truncated after their digest was taken, as a
//! slow or damaging network would.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DeliveryFault {
    /// Every upload waits this long before it is sent.
    Delay { ms: u64 },
    /// Every media segment's bytes are damaged in the middle.
    Corrupt,
    /// Every media segment loses its second half.
    Truncate,
}

/// The fault in force on a pipeline, if any, and until when.
#[derive(Debug, Default)]
pub struct Faults(Mutex<Option<(DeliveryFault, Instant)>>);

impl Faults {
    pub fn inject(&self, fault: DeliveryFault, lasting: Duration) {
        *self.lock() = Some((fault, Instant::now() + lasting));
    }

    pub fn clear(&self) {
        *self.lock() = None;
    }

    pub fn current(&self) -> Option<DeliveryFault> {
        let mut slot = self.lock();
        match *slot {
            Some((fault, until)) if Instant::now() < until => Some(fault),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(DeliveryFault, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body as the fault leaves it (headers are never damaged: a packager must be able to
/// accept a header to judge later segments).
pub fn damage(fault: DeliveryFault, body: &Bytes) -> Bytes {
    match fault {
        DeliveryFault::Delay { .. } => body.clone(),
        DeliveryFault::Corrupt => {
            let mut damaged = body.to_vec();
            let middle = damaged.len() / 2;
            for b in damaged.iter_mut().skip(middle).take(64) {
                *b ^= 0x5A;
            }
            Bytes::from(damaged)
        }
        DeliveryFault::Truncate => body.slice(..body.len() / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_expire() {
        let faults = Faults::default();
        faults.inject(DeliveryFault::Corrupt, Duration::from_secs(60));
        assert_eq!(faults.current(), Some(DeliveryFault::Corrupt));
        faults.inject(DeliveryFault::Truncate, Duration::ZERO);
        assert_eq!(faults.current(), None);
        faults.inject(DeliveryFault::Delay { ms: 5 }, Duration::from_secs(60));
        faults.clear();
        assert_eq!(faults.current(), None);
    }

    #[test]
    fn damage_keeps_or_halves_length() {
        let body = Bytes::from(vec![1u8; 1000]);
        let corrupt = damage(DeliveryFault::Corrupt, &body);
        assert_eq!(corrupt.len(), 1000);
        assert_ne!(corrupt, body);
        assert_eq!(damage(DeliveryFault::Truncate, &body).len(), 500);
        let json = serde_json::to_string(&DeliveryFault::Delay { ms: 3000 }).unwrap();
        assert_eq!(json, r#"{"kind":"delay","ms":3000}"#);
    }
}
