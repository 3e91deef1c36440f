//! One cap on all of an instance's linear memories together. wasmtime's `StoreLimits` caps each
//! memory on its own, so a component defining several memories (up to `limits.memories`) could
//! hold that many times `limits.memory_mib`; this counts every memory's bytes against the one
//! cap and leaves the other limits to `StoreLimits`.

use wasmtime::{ResourceLimiter, StoreLimits};

/// The store's limiter: [`StoreLimits`], with its memories counted together.
#[derive(Debug)]
pub struct MemoryCap {
    limits: StoreLimits,
    /// Bytes of linear memory the instance's memories hold together.
    held: usize,
    /// The most they may hold together.
    most: usize,
}

impl MemoryCap {
    /// `limits`, with at most `most` bytes in all memories together.
    pub fn new(limits: StoreLimits, most: usize) -> Self {
        MemoryCap {
            limits,
            held: 0,
            most,
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.held.saturating_add(growth);
        if total > self.most {
            // Failing the grow traps, as `StoreLimits` does with `trap_on_grow_failure`.
            wasmtime::bail!(
                "growing a memory by {growth} bytes would make the plugin's memories hold {total} bytes together, over its limit of {} bytes (limits.memory_mib)",
                self.most
            );
        }
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.held = total;
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::StoreLimitsBuilder;

    use super::*;

    const MIB: usize = 1 << 20;

    fn capped(most: usize) -> MemoryCap {
        let limits = StoreLimitsBuilder::new()
            .memory_size(most)
            .trap_on_grow_failure(true)
            .build();
        MemoryCap::new(limits, most)
    }

    #[test]
    fn memories_are_capped_together_not_each() {
        let mut cap = capped(64 * MIB);
        // Two memories created at 40 MiB and 20 MiB fit together...
        assert!(cap.memory_growing(0, 40 * MIB, None).unwrap());
        assert!(cap.memory_growing(0, 20 * MIB, None).unwrap());
        // ...a third of 8 MiB, each under the per-memory cap, does not.
        let error = cap.memory_growing(0, 8 * MIB, None).unwrap_err();
        assert!(error.to_string().contains("limits.memory_mib"), "{error}");
        // Growing the first by what is left fits; a page more does not.
        assert!(cap.memory_growing(40 * MIB, 44 * MIB, None).unwrap());
        assert!(
            cap.memory_growing(44 * MIB, 44 * MIB + 65536, None)
                .is_err()
        );
    }

    #[test]
    fn a_grow_store_limits_refuses_is_not_counted() {
        let limits = StoreLimitsBuilder::new().memory_size(10 * MIB).build();
        let mut cap = MemoryCap::new(limits, 64 * MIB);
        assert!(
            !cap.memory_growing(0, 20 * MIB, None).unwrap(),
            "one memory's cap"
        );
        assert!(cap.memory_growing(0, 10 * MIB, None).unwrap());
        assert!(cap.memory_growing(0, 10 * MIB, None).unwrap());
        assert!(cap.memory_growing(0, 10 * MIB, None).unwrap());
    }
}
