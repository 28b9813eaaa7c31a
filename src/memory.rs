//! Keeps the agent's resident memory near what it is using. A regeneration at 100k hosts holds
//! a snapshot and rendered files of several megabytes each for a moment; without this, glibc
//! keeps those pages after they are freed and an idle agent stays at its peak.

/// Fixes glibc's mmap threshold. glibc raises the threshold each time a large block is freed,
/// after which multi-megabyte buffers come from the heap and their pages stay with the process;
/// with a fixed threshold each such buffer is its own mapping, returned to the system on free.
/// Call once, before other threads start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning and is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

/// Hands free heap pages back to the system, after a regeneration released its buffers.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
