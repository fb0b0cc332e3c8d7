//! The system allocator, counting what each thread holds, so a fuzz run can tell how much one
//! call of a parser took at its peak: an input that makes a parser reserve what a length field
//! claims is a denial of service even when the machine happens to have the memory (and Linux
//! hands out untouched pages lazily, so it would not even be seen).
//!
//! It is installed in every test binary that links this crate; counting is two thread-local
//! additions per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    // Signed: a thread may free what another allocated.
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn grow(n: usize) {
    // `try_with`: never panic inside the allocator, even while the thread is torn down.
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(n as i64);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrink(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(n as i64)));
}

// SAFETY: every call is passed on to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrink(layout.size());
            grow(new_size);
        }
        p
    }
}

/// Bytes this thread holds now; pass it to [`peak_since`] after the code to measure.
pub(crate) fn mark() -> i64 {
    let live = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(live));
    live
}

/// The most this thread held at once since `mark`, above what it held then.
pub(crate) fn peak_since(mark: i64) -> u64 {
    let peak = PEAK.with(Cell::get);
    u64::try_from(peak - mark).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_the_peak_of_what_was_freed_again() {
        let m = mark();
        // `black_box`: an allocation nobody reads may be optimised away.
        drop(std::hint::black_box(vec![0u8; 10 << 20]));
        let small = vec![0u8; 100];
        assert!(peak_since(m) >= 10 << 20);
        drop(small);
        let m = mark();
        assert_eq!(peak_since(m), 0);
    }
}
