//! Test builds only: counts the heap bytes the current thread holds, so a
//! test can check a memory estimate against what a structure really takes.
//! Per thread, so tests running in parallel do not disturb each other's
//! counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

/// What glibc spends on a request of `size` bytes: an 8-byte header,
/// rounded up to 16, at least 32.
fn chunk(size: usize) -> isize {
    (size + 8).next_multiple_of(16).max(32) as isize
}

fn add(n: isize) {
    // `try_with`: an allocation while the thread's locals are torn down
    // goes uncounted instead of panicking.
    let _ = HELD.try_with(|h| h.set(h.get() + n));
}

struct Counting;

// SAFETY: every call is passed to `System` unchanged; only counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(chunk(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(chunk(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        add(-chunk(layout.size()));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            add(chunk(new_size) - chunk(layout.size()));
        }
        q
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Heap bytes allocated and not yet freed by this thread (frees of memory
/// other threads allocated count against it).
pub fn held() -> isize {
    HELD.try_with(Cell::get).unwrap_or(0)
}
