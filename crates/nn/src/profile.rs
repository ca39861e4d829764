//! Per-op wall-clock timers for `genprior bench --profile`.
//!
//! Off by default: a disabled [`scope`] costs one relaxed atomic load. When enabled, each
//! scope adds its elapsed time to a named counter of the calling thread. CPU ops run eagerly, so the times are
//! exact there; on CUDA/Metal kernels are asynchronous and the numbers only show launch cost.
//! Scopes may nest (e.g. `attention` contains `attention/softmax`); the report lists nested
//! names with their parent's prefix so the totals are not double-counted by a reader.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
thread_local! {
    // Per thread: the model runs its ops from one thread (the kernels parallelise inside an
    // op), so the thread that runs the passes reads its own table.
    static TABLE: RefCell<BTreeMap<&'static str, (f64, u64)>> = const { RefCell::new(BTreeMap::new()) };
    /// Time inside outermost scopes only (so nested scopes are not counted twice).
    static OUTER: Cell<f64> = const { Cell::new(0.0) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Turn the timers on or off (clears nothing).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether timers are on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A running timer; adds its elapsed time to `name` when dropped.
pub struct Scope {
    name: &'static str,
    start: Option<Instant>,
    outer: bool,
}

/// Start timing `name` (a no-op unless [`enable`]d).
pub fn scope(name: &'static str) -> Scope {
    if !enabled() {
        return Scope {
            name,
            start: None,
            outer: false,
        };
    }
    let outer = DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get() == 1
    });
    Scope {
        name,
        start: Some(Instant::now()),
        outer,
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(t0) = self.start {
            let dt = t0.elapsed().as_secs_f64();
            TABLE.with(|t| {
                let mut table = t.borrow_mut();
                let e = table.entry(self.name).or_insert((0.0, 0));
                e.0 += dt;
                e.1 += 1;
            });
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
            if self.outer {
                OUTER.with(|o| o.set(o.get() + dt));
            }
        }
    }
}

/// Seconds spent inside outermost scopes since the last [`take`] (nested time counted once).
pub fn outer_seconds() -> f64 {
    OUTER.with(|o| o.get())
}

/// The accumulated `(name, seconds, calls)`, largest first, and clears the table.
pub fn take() -> Vec<(&'static str, f64, u64)> {
    OUTER.with(|o| o.set(0.0));
    let mut v: Vec<_> = TABLE.with(|t| {
        let mut table = t.borrow_mut();
        let v = table.iter().map(|(k, (s, n))| (*k, *s, *n)).collect();
        table.clear();
        v
    });
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_accumulate_only_when_enabled() {
        {
            let _s = scope("test/off");
        }
        enable(true);
        for _ in 0..3 {
            let _s = scope("test/on");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        enable(false);
        let t = take();
        assert!(t.iter().all(|(n, _, _)| *n != "test/off"));
        let on = t.iter().find(|(n, _, _)| *n == "test/on").unwrap();
        assert_eq!(on.2, 3);
        assert!(on.1 >= 0.006, "{}", on.1);
        // Nested scopes count once in the outer total.
        enable(true);
        {
            let _a = scope("test/outer");
            let _b = scope("test/inner");
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        enable(false);
        let outer = outer_seconds();
        let t = take();
        let get = |n: &str| t.iter().find(|e| e.0 == n).unwrap().1;
        assert!(outer >= get("test/inner") && outer <= get("test/outer") + 1e-9);
        assert!(outer < get("test/outer") + get("test/inner"));
    }
}
