//! Fuzzing on the stable toolchain, as part of `cargo test`: test support only (a
//! dev-dependency). It reads no files (the corpus is compiled in) and writes only its reports
//! to stderr.
//!
//! A target is a name and a check. [`Target::run`] feeds the check every file of the target's
//! committed corpus (`fuzz/corpus/<name>/`, compiled in by the build script), then
//! [`STEADYCAST_FUZZ_ITERATIONS`](ITERATIONS_VAR) inputs (2000 unless set) made from one seed:
//! mutations of the corpus (bit flips, inserted and deleted bytes, truncations, splices of two
//! files, boundary integers, repeated ranges) and random bytes. An input fails the target if
//! the check panics on it, takes more than a second, or makes this thread hold more memory at
//! once than a fixed budget plus 64 bytes per input byte; the failure message carries the input
//! as hex (for the corpus) and as a Rust literal (for the regression test). An input that never
//! returns is printed and the test process aborted.

mod alloc;
mod mutate;

use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use mutate::{Inputs, Origin};

// `CORPUS`: (target, file name, bytes) for every committed corpus file, sorted.
include!(concat!(env!("OUT_DIR"), "/corpus.rs"));

/// How many generated inputs each target runs (the corpus files come on top).
pub const ITERATIONS_VAR: &str = "STEADYCAST_FUZZ_ITERATIONS";
/// Small enough that every target together adds seconds to a debug `cargo test`.
const DEFAULT_ITERATIONS: usize = 2000;
/// One input slower than this is a failure: a parser must be linear in what it is given, and
/// the largest inputs here take microseconds.
const SLOW: Duration = Duration::from_secs(1);
/// One input running this long is taken to never return.
const HUNG: Duration = Duration::from_secs(10);
/// What one call may hold at once beyond [`BUDGET_PER_BYTE`] per input byte: room for a
/// parser's fixed-size buffers, far below what an attacker-chosen length field would reserve.
const BUDGET: u64 = 16 << 20;
const BUDGET_PER_BYTE: u64 = 64;

/// One fuzz target: a corpus directory and what the check may be given.
pub struct Target {
    name: &'static str,
    words: &'static [&'static str],
}

impl Target {
    /// The target whose corpus is `fuzz/corpus/{name}/`.
    pub fn new(name: &'static str) -> Self {
        Self { name, words: &[] }
    }

    /// Tokens of the input language (`start=`, `%3A`, `#!::`…) that mutations insert whole,
    /// so a text parser sees more than invalid characters.
    pub fn words(self, words: &'static [&'static str]) -> Self {
        Self { words, ..self }
    }

    /// Runs `check` on every input; panics with the first failing input.
    pub fn run(self, check: impl FnMut(&[u8]) + Send) {
        let seeds: Vec<(&str, &[u8])> = CORPUS
            .iter()
            .filter(|(target, ..)| *target == self.name)
            .map(|&(_, file, bytes)| (file, bytes))
            .collect();
        assert!(
            !seeds.is_empty(),
            "fuzz target `{0}` has no corpus: add files to fuzz/corpus/{0}/",
            self.name
        );
        let corpus: Vec<&[u8]> = seeds.iter().map(|s| s.1).collect();
        let generated = iterations();
        let seed = fnv1a(self.name.as_bytes());
        let inputs = || Inputs::new(seed, &corpus, self.words, generated);
        let started = Instant::now();
        let progress = AtomicUsize::new(0);
        let (alive, ended) = mpsc::channel::<()>();
        let stats = std::thread::scope(|s| {
            let progress = &progress;
            let seeds = &seeds;
            let worker = s.spawn(move || {
                // Dropped when the worker ends, however it ends.
                let _alive = alive;
                let mut check = check;
                let mut stats = Stats::default();
                for (i, (origin, input)) in inputs().enumerate() {
                    progress.store(i + 1, Ordering::SeqCst);
                    if let Err(problem) = stats.call(&mut check, &input) {
                        panic!("{}", failure(self.name, i, origin, seeds, &input, &problem));
                    }
                }
                stats
            });
            let mut seen = 0;
            while let Err(RecvTimeoutError::Timeout) = ended.recv_timeout(HUNG) {
                let now = progress.load(Ordering::SeqCst);
                if now == seen
                    && let Some(i) = now.checked_sub(1)
                    && let Some((origin, input)) = inputs().nth(i)
                {
                    hung(self.name, i, origin, seeds, &input);
                }
                seen = now;
            }
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        eprintln!(
            "fuzz {}: {} corpus files + {generated} generated inputs in {:.2?}; slowest input \
             {:.2?}, most held at once {} KiB",
            self.name,
            seeds.len(),
            started.elapsed(),
            stats.slowest,
            stats.most_held >> 10
        );
    }
}

#[derive(Default)]
struct Stats {
    slowest: Duration,
    most_held: u64,
}

impl Stats {
    /// Calls `check` on one input; why it failed, if it did.
    fn call(&mut self, check: &mut impl FnMut(&[u8]), input: &[u8]) -> Result<(), String> {
        let mark = alloc::mark();
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
        let took = start.elapsed();
        let held = alloc::peak_since(mark);
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return Err(format!("panicked: {message}"));
        }
        if took > SLOW {
            return Err(format!("took {took:.2?} (at most {SLOW:?})"));
        }
        let budget = BUDGET + BUDGET_PER_BYTE * input.len() as u64;
        if held > budget {
            return Err(format!(
                "held {held} bytes at once (at most {budget} for {} input bytes)",
                input.len()
            ));
        }
        self.slowest = self.slowest.max(took);
        self.most_held = self.most_held.max(held);
        Ok(())
    }
}

fn iterations() -> usize {
    match std::env::var(ITERATIONS_VAR) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{ITERATIONS_VAR}={v}: expected a number of inputs")),
        Err(_) => DEFAULT_ITERATIONS,
    }
}

/// A failing input, told so that it can be kept: hex for the corpus, a literal for the test.
fn failure(
    target: &str,
    i: usize,
    origin: Origin,
    seeds: &[(&str, &[u8])],
    input: &[u8],
    problem: &str,
) -> String {
    let from = match origin {
        Origin::Seed(s) => format!("corpus file `{}`", seeds.get(s).map_or("?", |s| s.0)),
        Origin::Mutated(s) => format!("a mutation of `{}`", seeds.get(s).map_or("?", |s| s.0)),
        Origin::Random => "random bytes".into(),
    };
    let mut hex = String::with_capacity(input.len() * 2);
    for b in input {
        let _ = write!(hex, "{b:02x}");
    }
    format!(
        "fuzz target `{target}`: input {i} ({from}, {} bytes) {problem}\n\
         keep it in the corpus:\n  echo {hex} | xxd -r -p > fuzz/corpus/{target}/crash-{:016x}\n\
         as a literal for the regression test:\n  b\"{}\"",
        input.len(),
        fnv1a(input),
        input.escape_ascii()
    )
}

/// Reports an input that never returned and ends the process: a running thread cannot be
/// stopped. Written to stderr directly, since the test harness's capture dies with us.
fn hung(target: &str, i: usize, origin: Origin, seeds: &[(&str, &[u8])], input: &[u8]) -> ! {
    let problem = format!("has not returned after {HUNG:?}");
    let _ = writeln!(
        std::io::stderr(),
        "{}",
        failure(target, i, origin, seeds, input, &problem)
    );
    std::process::abort()
}

/// FNV-1a: a stable seed per target name (and a short name for a crash file).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_and_hoarding_fail_an_input() {
        let mut stats = Stats::default();
        assert_eq!(stats.call(&mut |_: &[u8]| {}, b"x"), Ok(()));
        let boom = stats.call(&mut |_: &[u8]| panic!("boom"), b"x");
        assert_eq!(boom, Err("panicked: boom".to_string()));
        // What a length field would make a parser reserve (untouched, so the machine does not
        // notice).
        let mut hoard = |_: &[u8]| drop(std::hint::black_box(Vec::<u8>::with_capacity(1 << 28)));
        let held = stats.call(&mut hoard, b"\x10\0\0\0");
        assert!(held.is_err_and(|e| e.starts_with("held 268435456 bytes")));
        let report = failure("t", 3, Origin::Random, &[], b"\x47\"", "panicked: boom");
        assert!(report.contains("echo 4722 | xxd -r -p > fuzz/corpus/t/crash-"));
        assert!(report.contains(r#"b"G\""#));
    }
}
