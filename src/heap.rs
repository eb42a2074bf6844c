//! The allocator's heap, kept ready for the threads that apply and reply.
//!
//! Where fresh memory is slow to touch (a virtual machine whose host takes
//! back freed memory), the first write to a page stalls its thread in the
//! host, and on transparent huge pages one such stall covers 2 MiB and lasts
//! milliseconds. The heap grows at its top, so a background thread touches
//! the top of the heap ahead of use (`MADV_POPULATE_WRITE`, which faults pages
//! in without changing what they hold) and the allocator keeps that much
//! free there instead of handing it back; the role threads then seldom meet
//! an untouched page.

use std::time::Duration;

/// Free memory kept at the top of the heap, touched ahead of use: about a
/// second of a replica's allocations while a store grows at full speed.
pub const TOP_RESERVE_BYTES: usize = 32 << 20;

/// How often the top of the heap is touched: at 30 MB/s of allocations (a
/// store growing at full speed) well within the reserve.
pub const TOUCH_PERIOD: Duration = Duration::from_millis(50);

/// Asks the allocator to grow the heap by `TOP_RESERVE_BYTES` more than it
/// needs and to keep that much when trimming. The top is trimmed only once it
/// holds twice that, so that the heap's end does not go down and up again
/// with each free and allocation at its edge (glibc's default threshold is
/// 128 KiB). Setting these ends glibc's own moving threshold for serving a
/// block by `mmap`, so that is set too, at 4 MiB, above every frame and chunk
/// buffer a replica reuses (a block served by `mmap` is untouched memory on
/// every use). Call before any thread starts.
pub fn keep_top_reserve() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, TOP_RESERVE_BYTES as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * TOP_RESERVE_BYTES as libc::c_int);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES as libc::c_int);
    }
}

/// Blocks at least this large are served by `mmap` and returned on free.
pub const MMAP_THRESHOLD_BYTES: usize = 4 << 20;

/// Returns the heap's free pages to the system after a large free (store
/// versions a transfer pinned, the buffers of loading a snapshot): glibc
/// keeps them otherwise, and the replica's resident memory would stay at its
/// peak. The touched reserve at the top is kept.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(TOP_RESERVE_BYTES);
    }
}

/// Starts the thread that touches the top of the heap every `period` in
/// which the heap's end moved. Only then: touching takes the process's
/// memory-map lock, which every thread started or stopped needs too (touching
/// every 50 ms regardless slowed a flood of 100,000 connections, a thread
/// each, to two and a half times as long).
pub fn spawn_toucher(period: Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    let _ = std::thread::Builder::new().name("heap-toucher".into()).spawn(move || {
        crate::node::run_in_background();
        let mut start = None;
        let mut touched_up_to = 0;
        loop {
            start = start.or_else(|| heap_range().map(|(start, _)| start));
            if let Some(start) = start {
                let end = heap_end();
                if end != touched_up_to && touch(start.max(end.saturating_sub(TOP_RESERVE_BYTES)), end) {
                    touched_up_to = end;
                }
            }
            std::thread::sleep(period);
        }
    });
}

/// Where the heap ends now: glibc's own note of the program break, read
/// without a system call (`brk` itself takes the memory-map lock).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_end() -> usize {
    unsafe extern "C" {
        fn sbrk(increment: libc::intptr_t) -> *mut libc::c_void;
    }
    // SAFETY: sbrk(0) moves nothing; it returns the current break.
    unsafe { sbrk(0) as usize }
}

/// The `[heap]` mapping of this process, from `/proc/self/maps`.
fn heap_range() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|line| line.ends_with("[heap]"))?;
    let (start, rest) = line.split_once('-')?;
    let end = rest.split_whitespace().next()?;
    Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
}

/// Faults in every page of `[start, end)` not yet present; pages present are
/// left as they are. False if that failed (a range unmapped meanwhile, when
/// the allocator trimmed its heap, fails with ENOMEM).
#[cfg(target_os = "linux")]
fn touch(start: usize, end: usize) -> bool {
    if end <= start {
        return true;
    }
    // SAFETY: MADV_POPULATE_WRITE changes no memory contents: it only faults
    // in pages of the range that are missing.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_POPULATE_WRITE) == 0 }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn resident_pages(start: usize, len: usize) -> usize {
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: `start` is page-aligned and mapped for `len` bytes; `vec` has a byte per page.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    #[test]
    fn touching_faults_in_missing_pages_and_keeps_what_pages_hold() {
        let len = 64 << 10;
        // SAFETY: a fresh private anonymous mapping, unmapped at the end.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let start = map as usize;
        // SAFETY: within the mapping.
        unsafe { *(start as *mut u8).add(4096) = 7 };
        assert_eq!(resident_pages(start, len), 1, "only the page written is present");
        assert!(touch(start, start + len));
        assert_eq!(resident_pages(start, len), len / 4096, "every page is present");
        // SAFETY: within the mapping.
        assert_eq!(unsafe { *(start as *const u8).add(4096) }, 7, "what a page held is kept");
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(map, len) };
    }

    #[test]
    fn the_heap_is_found_and_its_end_read() {
        let _grow = vec![0u8; 1 << 16];
        let (start, end) = heap_range().expect("a [heap] mapping");
        assert!(start < end);
        #[cfg(target_env = "gnu")]
        assert!((start..=end + (64 << 20)).contains(&heap_end()), "the break lies at the heap's end");
    }
}
