//! A scratch (bump) allocator for plugins that keep nothing between `transform` calls: every
//! allocation of a call, the lowered input batch included, is a pointer bump, and the whole
//! call's memory is released at once when the host next calls in, which beats dlmalloc (the
//! wasm32-wasip2 default) on the many short-lived allocations of per-record JSON work.
//!
//! When it resets: not when `transform` returns (the host still lifts the results from guest
//! memory, and wit-bindgen's post-return frees them afterwards), but at the first thing the host
//! does for its next call: the `cabi_realloc` that places the next call's arguments (this module
//! exports that symbol in place of std's weak one), or the start of the next export when it has no
//! arguments to place. Only a plugin that opts in ([`crate::Plugin::ARENA`]) runs on it; the
//! plugin value built by `init`, and anything allocated outside an opted-in `transform`, lives
//! in the ordinary allocator, and `dealloc` tells the two apart by address.
//!
//! Bounds: chunks come from the ordinary allocator, so the host's memory limit applies to them as
//! to any allocation. An allocation larger than [`LARGE`] bypasses the arena (a huge record is not
//! retained by it after its call), and after a call that needed several chunks the arena keeps
//! one chunk of their combined size (up to [`MAX_CHUNK`]) instead of all of them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// The first chunk's size: a batch of 64 typical records fits.
pub const FIRST_CHUNK: usize = 256 << 10;
/// The largest chunk the arena allocates or keeps.
pub const MAX_CHUNK: usize = 8 << 20;
/// Allocations above this size go to the ordinary allocator.
pub const LARGE: usize = 1 << 20;

/// Every chunk starts with this header, so that the chunk list needs no allocation of its own.
#[repr(C)]
struct Chunk {
    /// The chunk allocated before this one, or null.
    previous: *mut Chunk,
    /// The chunk's size in bytes, header included.
    size: usize,
}

/// Chunks are aligned to this, and the header is padded to it.
const CHUNK_ALIGN: usize = 16;
const HEADER: usize = size_of::<Chunk>().next_multiple_of(CHUNK_ALIGN);

/// The bump state over a list of chunks taken from `System`. Not thread-safe: a component
/// instance runs one thread, and the global wrapper below is built only for wasm32.
#[derive(Debug)]
pub struct Arena {
    /// The newest chunk (allocations bump inside it), or null before the first allocation.
    current: *mut Chunk,
    /// The next free byte of `current`.
    cursor: usize,
    /// One past the last byte of `current`.
    end: usize,
    /// The size of the next chunk to allocate.
    next_size: usize,
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

impl Arena {
    /// An empty arena; its first allocation takes a chunk of [`FIRST_CHUNK`] bytes.
    pub const fn new() -> Self {
        Arena {
            current: ptr::null_mut(),
            cursor: 0,
            end: 0,
            next_size: FIRST_CHUNK,
        }
    }

    /// Bumps `layout` out of the current chunk, taking a new chunk when it does not fit. Null
    /// when `System` has no memory left (the host's limit), as any allocator signals it.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[inline]
    pub unsafe fn alloc(&mut self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(found) => found,
            // SAFETY: as this function's.
            None => unsafe { self.alloc_in_new_chunk(layout) },
        }
    }

    /// [`Arena::alloc`] when the current chunk is full: out of line, so that the bump above
    /// compiles to a few instructions with no stack frame (as Wasm, a call that needs none of
    /// the registers and linear-memory stack this path does).
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[cold]
    #[inline(never)]
    unsafe fn alloc_in_new_chunk(&mut self, layout: Layout) -> *mut u8 {
        let wanted = (layout.size() + layout.align() + HEADER).next_multiple_of(CHUNK_ALIGN);
        let size = self.next_size.max(wanted);
        // SAFETY: `size` is non-zero and a multiple of the alignment.
        let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(size, CHUNK_ALIGN)) };
        if chunk.is_null() {
            return ptr::null_mut();
        }
        let chunk = chunk.cast::<Chunk>();
        // SAFETY: `chunk` is a fresh allocation of at least `HEADER` bytes, aligned for `Chunk`.
        unsafe {
            chunk.write(Chunk {
                previous: self.current,
                size,
            })
        };
        self.current = chunk;
        self.cursor = chunk as usize + HEADER;
        self.end = chunk as usize + size;
        self.next_size = (size * 2).min(MAX_CHUNK);
        self.bump(layout).unwrap_or(ptr::null_mut())
    }

    #[inline]
    fn bump(&mut self, layout: Layout) -> Option<*mut u8> {
        if self.current.is_null() {
            return None;
        }
        // `Layout` guarantees a power of two, so rounding up is a mask. `next_multiple_of`
        // cannot know that and divides, which as Wasm is a division instruction per allocation.
        let mask = layout.align() - 1;
        let start = self.cursor.checked_add(mask)? & !mask;
        let stop = start.checked_add(layout.size())?;
        if stop > self.end {
            return None;
        }
        self.cursor = stop;
        Some(start as *mut u8)
    }

    /// Whether `ptr` points into one of the arena's chunks.
    pub fn contains(&self, ptr: *mut u8) -> bool {
        let address = ptr as usize;
        let mut chunk = self.current;
        while !chunk.is_null() {
            // SAFETY: every chunk in the list is live and starts with its header.
            let Chunk { previous, size } = unsafe { chunk.read() };
            let start = chunk as usize;
            if address >= start && address < start + size {
                return true;
            }
            chunk = previous;
        }
        false
    }

    /// Frees an arena allocation: only the newest one gives its bytes back (a vector that grew
    /// and was dropped), the rest waits for [`Arena::reset`].
    pub fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        self.release_from_current(ptr, layout);
    }

    /// [`Arena::dealloc`] for an allocation of the current chunk, answering whether `ptr` is
    /// one: the common case, told apart without walking the chunk list.
    #[inline]
    pub fn release_from_current(&mut self, ptr: *mut u8, layout: Layout) -> bool {
        if !self.in_current(ptr) {
            return false;
        }
        if ptr as usize + layout.size() == self.cursor {
            self.cursor = ptr as usize;
        }
        true
    }

    /// Resizes an arena allocation: in place when it is the newest and the chunk has room,
    /// otherwise into a new allocation from `allocate` (the arena or `System`), copying.
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`], with `ptr` from this arena.
    pub unsafe fn realloc(
        &mut self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        allocate: impl FnOnce(&mut Self, Layout) -> *mut u8,
    ) -> *mut u8 {
        let newest = ptr as usize + layout.size() == self.cursor && self.in_current(ptr);
        let new_end = (ptr as usize).checked_add(new_size);
        if let Some(new_end) = new_end.filter(|&end| newest && end <= self.end) {
            self.cursor = new_end;
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `new_size` fits the layout rules for this alignment.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let moved = allocate(self, new_layout);
        if !moved.is_null() {
            // SAFETY: both regions are live, distinct, and at least `layout.size()` long.
            unsafe { ptr::copy_nonoverlapping(ptr, moved, layout.size()) };
            self.dealloc(ptr, layout);
        }
        moved
    }

    #[inline]
    fn in_current(&self, ptr: *mut u8) -> bool {
        !self.current.is_null()
            && ptr as usize >= self.current as usize + HEADER
            && (ptr as usize) <= self.end
    }

    /// Releases every allocation at once. A single chunk is kept and reused; several are
    /// returned to `System` and the next chunk is sized to hold what they held (up to
    /// [`MAX_CHUNK`]), so the arena settles at one chunk that fits a whole call.
    ///
    /// # Safety
    /// No allocation from this arena may be used afterwards.
    pub unsafe fn reset(&mut self) {
        if self.current.is_null() {
            return;
        }
        // SAFETY: `current` is live and starts with its header.
        let newest = unsafe { self.current.read() };
        if newest.previous.is_null() {
            self.cursor = self.current as usize + HEADER;
            return;
        }
        let mut total = 0usize;
        let mut chunk = self.current;
        while !chunk.is_null() {
            // SAFETY: every chunk in the list is live; each is freed once, after its header is read.
            let Chunk { previous, size } = unsafe { chunk.read() };
            total = total.saturating_add(size);
            unsafe {
                System.dealloc(
                    chunk.cast(),
                    Layout::from_size_align_unchecked(size, CHUNK_ALIGN),
                )
            };
            chunk = previous;
        }
        // Fields one by one: assigning a whole `Arena` would drop the old value, whose chunks
        // are already freed.
        self.current = ptr::null_mut();
        self.cursor = 0;
        self.end = 0;
        self.next_size = total.min(MAX_CHUNK);
    }

    /// Bytes held in chunks, headers included.
    pub fn capacity(&self) -> usize {
        let mut total = 0;
        let mut chunk = self.current;
        while !chunk.is_null() {
            // SAFETY: every chunk in the list is live and starts with its header.
            let Chunk { previous, size } = unsafe { chunk.read() };
            total += size;
            chunk = previous;
        }
        total
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: nothing borrows from an arena being dropped.
        unsafe { self.reset() };
        if !self.current.is_null() {
            // SAFETY: after a reset at most one chunk is left, and it is freed exactly once here.
            let size = unsafe { self.current.read() }.size;
            unsafe {
                System.dealloc(
                    self.current.cast(),
                    Layout::from_size_align_unchecked(size, CHUNK_ALIGN),
                )
            };
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub(crate) use global::{after_transform, before_init, before_transform};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn before_init() {}
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn before_transform(_scratch: bool) {}
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn after_transform(_scratch: bool) {}

/// The global allocator of every plugin built with the SDK for wasm32: the arena while an
/// opted-in call runs, `System` (dlmalloc) otherwise. Natively the SDK installs nothing.
#[cfg(target_arch = "wasm32")]
mod global {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::UnsafeCell;

    use super::{Arena, LARGE};

    struct State {
        arena: Arena,
        /// Whether Rust allocations go to the arena.
        scratch: bool,
        /// An opted-in `transform` has returned: once the host calls in again, nothing in the
        /// arena is live.
        call_over: bool,
        /// A `transform` runs: a `cabi_realloc` now places an import's results, which C code in
        /// wasi-libc releases with `free` (its `getentropy`, its environment), so they must come
        /// from `System`, never from the arena.
        in_call: bool,
    }

    struct Scratch(UnsafeCell<State>);

    // SAFETY: wasm32 components run one thread (the SDK is not built with atomics), so the
    // state is never reached from two threads.
    unsafe impl Sync for Scratch {}

    #[global_allocator]
    static ALLOCATOR: Scratch = Scratch(UnsafeCell::new(State {
        arena: Arena::new(),
        scratch: false,
        call_over: false,
        in_call: false,
    }));

    fn state() -> *mut State {
        ALLOCATOR.0.get()
    }

    /// The host is calling in again: release the last call's memory if it is over.
    fn new_call() {
        // SAFETY: single-threaded (see `Sync` above), and no reference to the state outlives
        // this function.
        let state = unsafe { &mut *state() };
        if state.call_over {
            state.call_over = false;
            // SAFETY: the previous call's results were lifted and freed by post-return before
            // the host could call in again, and opted-in plugins keep nothing across calls.
            unsafe { state.arena.reset() };
        }
    }

    /// `init` builds the plugin value, which must outlive every call: not in the arena.
    pub(crate) fn before_init() {
        new_call();
        // SAFETY: as in `new_call`.
        unsafe { (*state()).scratch = false };
    }

    pub(crate) fn before_transform(scratch: bool) {
        new_call();
        // SAFETY: as in `new_call`.
        let state = unsafe { &mut *state() };
        state.scratch = scratch;
        state.in_call = true;
    }

    /// After an opted-in call the arena stays on, so that the lowering of the results and the
    /// next call's input land in it too; it resets when the next call begins.
    pub(crate) fn after_transform(scratch: bool) {
        // SAFETY: as in `new_call`.
        let state = unsafe { &mut *state() };
        state.call_over = scratch;
        state.scratch = scratch;
        state.in_call = false;
    }

    unsafe impl GlobalAlloc for Scratch {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: single-threaded; the allocator is not re-entered while this borrow lives.
            let state = unsafe { &mut *self.0.get() };
            if state.scratch && layout.size() <= LARGE {
                unsafe { state.arena.alloc(layout) }
            } else {
                unsafe { system_alloc(layout) }
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let state = unsafe { &mut *self.0.get() };
            if state.scratch && layout.size() <= LARGE {
                let found = unsafe { state.arena.alloc(layout) };
                if !found.is_null() {
                    // An arena's bytes are reused from earlier calls, so zero them.
                    unsafe { found.write_bytes(0, layout.size()) };
                }
                found
            } else {
                unsafe { System.alloc_zeroed(layout) }
            }
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let state = unsafe { &mut *self.0.get() };
            if !state.arena.release_from_current(ptr, layout) {
                unsafe { dealloc_elsewhere(&state.arena, ptr, layout) }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let state = unsafe { &mut *self.0.get() };
            if !state.arena.contains(ptr) {
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            let scratch = state.scratch;
            unsafe {
                state
                    .arena
                    .realloc(ptr, layout, new_size, |arena, new_layout| {
                        if scratch && new_layout.size() <= LARGE {
                            arena.alloc(new_layout)
                        } else {
                            System.alloc(new_layout)
                        }
                    })
            }
        }
    }

    /// `System`'s allocation, out of line for the reason [`Arena::alloc`]'s new chunk is.
    #[cold]
    #[inline(never)]
    unsafe fn system_alloc(layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    /// A free of memory outside the arena's current chunk: an older chunk's (nothing to do
    /// until the reset) or `System`'s. Out of line for the reason [`Arena::alloc`]'s new chunk is.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_elsewhere(arena: &Arena, ptr: *mut u8, layout: Layout) {
        if !arena.contains(ptr) {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// The canonical ABI's allocation export, called by the host to place a call's arguments,
    /// and during a call an import's results. It replaces std's weak definition so that the
    /// first placement of a new call releases the previous call's arena before the arguments
    /// land in it; an import's results go to `System` (see `State::in_call`).
    ///
    /// # Safety
    /// Called by the host following the canonical ABI's rules for `cabi_realloc`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn cabi_realloc(
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        new_call();
        // SAFETY: as in `new_call`; the borrow ends before any allocation.
        let in_call = unsafe { (*state()).in_call };
        // SAFETY: the host follows the canonical ABI's rules, which are `place`'s.
        unsafe {
            if in_call {
                place(&System, old_ptr, old_len, align, new_len)
            } else {
                place(&ALLOCATOR, old_ptr, old_len, align, new_len)
            }
        }
    }

    /// `cabi_realloc`'s work with `allocator`: the global one (the arena in an opted-in call's
    /// arguments), or `System` for an import's results, so that whoever releases them (Rust's
    /// `dealloc`, which routes by address, or C's `free`) can.
    ///
    /// # Safety
    /// `old_ptr` and `old_len` describe an earlier placement by the same allocator with
    /// `align`, or `old_len` is 0; `align` is a power of two.
    unsafe fn place(
        allocator: &impl GlobalAlloc,
        old_ptr: *mut u8,
        old_len: usize,
        align: usize,
        new_len: usize,
    ) -> *mut u8 {
        let found = unsafe {
            if old_len == 0 {
                if new_len == 0 {
                    return align as *mut u8;
                }
                allocator.alloc(Layout::from_size_align_unchecked(new_len, align))
            } else {
                allocator.realloc(
                    old_ptr,
                    Layout::from_size_align_unchecked(old_len, align),
                    new_len,
                )
            }
        };
        if found.is_null() {
            // Out of memory (the host's limit): trap, as std's definition does.
            core::arch::wasm32::unreachable();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn allocations_are_aligned_distinct_and_inside() {
        let mut arena = Arena::new();
        let a = unsafe { arena.alloc(layout(3, 1)) };
        let b = unsafe { arena.alloc(layout(8, 8)) };
        let c = unsafe { arena.alloc(layout(100, 64)) };
        assert_eq!(b as usize % 8, 0);
        assert_eq!(c as usize % 64, 0);
        assert!(a < b && (b as usize) + 8 <= c as usize);
        assert!(arena.contains(a) && arena.contains(c));
        let outside = Box::new(1u8);
        assert!(!arena.contains(&*outside as *const u8 as *mut u8));
    }

    #[test]
    fn grows_past_a_chunk_and_resets_to_one_chunk_that_fits_the_call() {
        let mut arena = Arena::new();
        let mut first = None;
        for _ in 0..200 {
            let p = unsafe { arena.alloc(layout(4096, 8)) };
            assert!(!p.is_null());
            unsafe { p.write_bytes(7, 4096) };
            first.get_or_insert(p);
        }
        let used = arena.capacity();
        assert!(used > FIRST_CHUNK, "{used}");
        assert!(arena.contains(first.unwrap()));
        unsafe { arena.reset() };
        assert_eq!(arena.capacity(), 0);
        let p = unsafe { arena.alloc(layout(4096, 8)) };
        assert!(!p.is_null());
        assert!(arena.capacity() >= used.min(MAX_CHUNK));
        for _ in 0..199 {
            assert!(!unsafe { arena.alloc(layout(4096, 8)) }.is_null());
        }
        assert_eq!(
            arena.capacity(),
            used.min(MAX_CHUNK),
            "one chunk holds a whole call"
        );
    }

    #[test]
    fn the_newest_allocation_grows_in_place_and_gives_back_its_bytes() {
        let mut arena = Arena::new();
        let p = unsafe { arena.alloc(layout(16, 8)) };
        unsafe { p.write_bytes(1, 16) };
        let grown = unsafe { arena.realloc(p, layout(16, 8), 64, |a, l| a.alloc(l)) };
        assert_eq!(grown, p);
        let q = unsafe { arena.alloc(layout(8, 8)) };
        // No longer the newest: growing copies.
        let moved = unsafe { arena.realloc(p, layout(64, 8), 128, |a, l| a.alloc(l)) };
        assert_ne!(moved, p);
        assert_eq!(unsafe { *moved.add(15) }, 1);
        arena.dealloc(moved, layout(128, 8));
        let r = unsafe { arena.alloc(layout(128, 8)) };
        assert_eq!(r, moved, "the newest allocation's bytes are reused");
        assert!(q < r);
    }

    #[test]
    fn an_allocation_larger_than_the_next_chunk_gets_its_own() {
        let mut arena = Arena::new();
        let big = unsafe { arena.alloc(layout(FIRST_CHUNK * 2, 16)) };
        assert!(!big.is_null());
        unsafe { big.write_bytes(0, FIRST_CHUNK * 2) };
        assert!(arena.contains(big));
    }
}
