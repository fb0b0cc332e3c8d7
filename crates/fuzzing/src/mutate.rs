//! The inputs of one target: its corpus as committed, then a fixed number of mutations of it
//! and random inputs, all from one seeded generator so that input `i` is the same on every run
//! and every machine.

/// The longest purely random input.
const MAX_RANDOM_LEN: usize = 4096;

/// Values that sit on the edges parsers get wrong: zero, one, signedness and width limits, and
/// the sizes of the formats we read (a TS packet, box and tag headers).
const BOUNDARIES: &[u64] = &[
    0,
    1,
    2,
    4,
    7,
    8,
    9,
    11,
    15,
    16,
    188,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7f_ffff,
    0xff_ffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000_0000,
    (1 << 33) - 1,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Bytes with a meaning in some format or encoding: the TS sync byte, separators and escapes of
/// the text targets, and the extremes.
const BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\x47/%&=:.|,#!+-TZ 09af";

/// xorshift64*: small, fast, and good enough to pick mutations (not for anything secret).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Self(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0); the bias of `%` does not matter here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> Option<&'a T> {
        from.get(self.below(from.len()))
    }

    fn byte(&mut self) -> u8 {
        if self.chance(2) {
            self.pick(BYTES).copied().unwrap_or(0)
        } else {
            self.next() as u8
        }
    }

    /// Mostly short lengths, sometimes long ones: short inputs reach the early checks, long ones
    /// the loops.
    fn len(&mut self, max: usize) -> usize {
        let cap = if self.chance(2) { max.min(64) } else { max };
        self.below(cap + 1)
    }
}

/// Where input `i` came from, for the failure report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Seed(usize),
    Mutated(usize),
    Random,
}

/// Generates a target's inputs in a fixed order.
pub(crate) struct Inputs<'a> {
    rng: Rng,
    corpus: &'a [&'a [u8]],
    words: &'a [&'a str],
    generated: usize,
    index: usize,
}

impl<'a> Inputs<'a> {
    pub(crate) fn new(
        seed: u64,
        corpus: &'a [&'a [u8]],
        words: &'a [&'a str],
        generated: usize,
    ) -> Self {
        Self {
            rng: Rng::new(seed),
            corpus,
            words,
            generated,
            index: 0,
        }
    }

    fn random(&mut self) -> Vec<u8> {
        let len = self.rng.len(MAX_RANDOM_LEN);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            match self.rng.pick(self.words) {
                Some(word) if self.rng.chance(4) => out.extend_from_slice(word.as_bytes()),
                _ => out.push(self.rng.byte()),
            }
        }
        out
    }

    fn mutated(&mut self, seed: usize) -> Vec<u8> {
        let mut data = self.corpus.get(seed).map_or_else(Vec::new, |s| s.to_vec());
        // Twice the largest seed at most: duplications must not snowball.
        let limit = self.corpus.iter().map(|s| s.len()).max().unwrap_or(0) * 2 + 64;
        let rounds = 1 + self.rng.below(3) + if self.rng.chance(8) { 8 } else { 0 };
        for _ in 0..rounds {
            self.mutate_once(&mut data);
            data.truncate(limit);
        }
        data
    }

    fn mutate_once(&mut self, data: &mut Vec<u8>) {
        use Mutation::*;
        // Mostly in place: a length that changes breaks the framing of every binary format
        // here, and the parser would rarely get past its first size check.
        let kind = if self.rng.chance(4) {
            self.rng.pick(&[Insert, Delete, Truncate, Splice, Repeat])
        } else {
            self.rng
                .pick(&[FlipBit, SetByte, Boundary, Arithmetic, CopyOver, Fill])
        };
        let rng = &mut self.rng;
        let len = data.len();
        let at = rng.below(len + 1);
        match kind.copied().unwrap_or(Insert) {
            FlipBit if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            SetByte if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            Delete if len > 0 => {
                let n = 1 + rng.below(len / 4 + 1);
                data.drain(at.min(len - 1)..(at + n).min(len));
            }
            Truncate => data.truncate(at),
            // This one's head on another seed's tail.
            Splice => {
                let other = rng.pick(self.corpus).copied().unwrap_or_default();
                let from = rng.below(other.len() + 1);
                data.truncate(at);
                data.extend_from_slice(other.get(from..).unwrap_or_default());
            }
            // 1 to 8 bytes, big- or little-endian, over what is there.
            Boundary => {
                let value = rng.pick(BOUNDARIES).copied().unwrap_or(0);
                let value = if rng.chance(4) {
                    value.wrapping_add(rng.below(3) as u64).wrapping_sub(1)
                } else {
                    value
                };
                let width = [1, 2, 3, 4, 8][rng.below(5)];
                let bytes = if rng.chance(2) {
                    value.to_be_bytes()[8 - width..].to_vec()
                } else {
                    value.to_le_bytes()[..width].to_vec()
                };
                overwrite(data, at, &bytes);
            }
            // A little more or less in a big-endian 32-bit field (sizes, counts, offsets).
            Arithmetic if len >= 4 => {
                let i = rng.below(len - 3);
                let mut field = [0u8; 4];
                field.copy_from_slice(&data[i..i + 4]);
                let delta = rng.below(33) as u32;
                let v = u32::from_be_bytes(field);
                let v = if rng.chance(2) {
                    v.wrapping_add(delta)
                } else {
                    v.wrapping_sub(delta)
                };
                data[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
            // Another packet, box or tag of the same kind.
            Repeat if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(1024));
                let copy = data[from..from + n].to_vec();
                data.splice(at..at, copy);
            }
            CopyOver if len > 0 => {
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(256));
                let copy = data[from..from + n].to_vec();
                overwrite(data, at, &copy);
            }
            Fill if len > 0 => {
                let start = at.min(len - 1);
                let n = 1 + rng.below((len - start).min(256));
                data[start..start + n].fill(rng.byte());
            }
            // A few bytes, or a word of the target's vocabulary; also what an empty input
            // gets instead of a mutation that needs bytes.
            _ => {
                let bytes: Vec<u8> = match rng.pick(self.words) {
                    Some(word) if rng.chance(2) => word.as_bytes().to_vec(),
                    _ => (0..1 + rng.below(16)).map(|_| rng.byte()).collect(),
                };
                data.splice(at..at, bytes);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Mutation {
    FlipBit,
    SetByte,
    Insert,
    Delete,
    Truncate,
    Splice,
    Boundary,
    Arithmetic,
    Repeat,
    CopyOver,
    Fill,
}

/// Writes `bytes` at `at`, growing `data` if they run past its end.
fn overwrite(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[at..end].copy_from_slice(bytes);
}

impl Iterator for Inputs<'_> {
    type Item = (Origin, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.index;
        self.index += 1;
        if let Some(seed) = self.corpus.get(i) {
            return Some((Origin::Seed(i), seed.to_vec()));
        }
        if i >= self.corpus.len() + self.generated {
            return None;
        }
        // One in eight is random, so a target without a corpus is still fuzzed.
        if self.corpus.is_empty() || self.rng.chance(8) {
            return Some((Origin::Random, self.random()));
        }
        let seed = self.rng.below(self.corpus.len());
        Some((Origin::Mutated(seed), self.mutated(seed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let corpus: &[&[u8]] = &[b"hello world", b"\x47\x00\x11\x10"];
        let a: Vec<_> = Inputs::new(7, corpus, &["x="], 300).collect();
        let b: Vec<_> = Inputs::new(7, corpus, &["x="], 300).collect();
        let c: Vec<_> = Inputs::new(8, corpus, &["x="], 300).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 302);
        assert_eq!(a[0], (Origin::Seed(0), corpus[0].to_vec()));
        assert!(a.iter().any(|(o, _)| *o == Origin::Random));
        assert!(a.iter().any(|(o, _)| *o == Origin::Mutated(1)));
        // Mutations stay near their seeds in size.
        assert!(
            a.iter()
                .all(|(_, d)| d.len() <= MAX_RANDOM_LEN.max(2 * 11 + 64))
        );
    }
}
