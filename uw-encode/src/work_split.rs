//! Sharing one tensor's chunks between the thread that works on it and
//! threads that would otherwise idle: the scheme of the encoder
//! (`bf16_huffman::write_planned`) and of the fused decoder
//! (`restore`).
//!
//! The thread that owns the tensor takes steps from the front, in order, so
//! that it can write its output in place as it goes. A helper job is offered
//! to the pool for every other thread; one that an idle thread runs takes
//! groups of whole steps from the back, each a share of what is left that
//! shrinks as that does, so that all threads run out at about the same time.
//! A helper that no idle thread took before the owner finished is run by the
//! owner and finds nothing left. Cutting every tensor a fixed number of ways
//! whatever the load had cost up to 7% of the work per CPU (the group's own
//! buffers, the copies, the lost locality; docs/benchmarks.md).
//!
//! What is shared out is a range of units (chunks) and the bytes that go
//! with them, a fixed number per unit (the last unit may have fewer): a
//! taker gets its units with their bytes, split off the rest, so that every
//! thread writes its own bytes with no lock held.

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// Units no thread has taken yet, with their bytes.
#[derive(Debug)]
pub struct Unclaimed<'a> {
    units: Range<usize>,
    /// The bytes of `units`.
    bytes: &'a mut [u8],
    /// Bytes per unit (the last unit may have fewer).
    unit_bytes: usize,
    /// Units per step: what the front takes at a time, and what groups
    /// from the back are made of.
    step: usize,
}

impl<'a> Unclaimed<'a> {
    /// `units` with their `bytes`, `unit_bytes` per unit, taken `step`
    /// units at a time.
    ///
    /// # Panics
    ///
    /// If `step` or `unit_bytes` is zero, or `bytes` is longer than the
    /// units hold.
    pub fn new(units: Range<usize>, bytes: &'a mut [u8], unit_bytes: usize, step: usize) -> Self {
        assert!(step > 0 && unit_bytes > 0, "empty units or steps");
        assert!(
            bytes.len() <= units.len() * unit_bytes,
            "bytes beyond the units"
        );
        Self {
            units,
            bytes,
            unit_bytes,
            step,
        }
    }

    /// The next step from the front (fewer units at the end), with its
    /// bytes.
    pub fn take_front(&mut self) -> Option<(Range<usize>, &'a mut [u8])> {
        let n = self.step.min(self.units.len());
        if n == 0 {
            return None;
        }
        let len = (n * self.unit_bytes).min(self.bytes.len());
        let (taken, rest) = std::mem::take(&mut self.bytes).split_at_mut(len);
        self.bytes = rest;
        let start = self.units.start;
        self.units.start += n;
        Some((start..start + n, taken))
    }

    /// Whole steps from the back for one of `threads` threads, with their
    /// bytes: a `2 * threads`th of the steps left, rounded up; nothing while
    /// fewer than two steps are left (the front takes those).
    pub fn take_back(&mut self, threads: usize) -> Option<(Range<usize>, &'a mut [u8])> {
        let steps = self.units.len().div_ceil(self.step);
        if steps < 2 {
            return None;
        }
        let kept_steps = steps - steps.div_ceil(2 * threads.max(1));
        let from = self.units.start + kept_steps * self.step;
        let (rest, taken) =
            std::mem::take(&mut self.bytes).split_at_mut(kept_steps * self.step * self.unit_bytes);
        self.bytes = rest;
        let end = std::mem::replace(&mut self.units.end, from);
        Some((from..end, taken))
    }
}

/// [`Unclaimed`] units shared by threads. Each take holds the lock for the
/// take alone: a guard taken in a `while let` scrutinee would live through
/// the loop's body, so that a thread would hold it while it works on what
/// it took.
#[derive(Debug)]
pub struct Claims<'a>(Mutex<Unclaimed<'a>>);

impl<'a> Claims<'a> {
    /// Shares `unclaimed`.
    pub fn new(unclaimed: Unclaimed<'a>) -> Self {
        Self(Mutex::new(unclaimed))
    }

    /// See [`Unclaimed::take_front`].
    pub fn take_front(&self) -> Option<(Range<usize>, &'a mut [u8])> {
        lock(&self.0).take_front()
    }

    /// See [`Unclaimed::take_back`].
    pub fn take_back(&self, threads: usize) -> Option<(Range<usize>, &'a mut [u8])> {
        lock(&self.0).take_back(threads)
    }

    /// Whether a group could be taken from the back now (two steps or more
    /// are left).
    fn can_share(&self) -> bool {
        let u = lock(&self.0);
        u.units.len() > u.step
    }
}

/// Runs `front` on this thread, which takes its units from `claims`' front,
/// and offers a helper per other thread of the current pool: a helper that
/// an idle thread runs takes groups from the back and runs `group` on each.
/// A helper no thread took before `front` returned is run here and finds
/// nothing left. Yields what `front` returned and the groups' results, in
/// unit order.
pub fn share<'a, F, G>(
    claims: &Claims<'a>,
    front: impl FnOnce() -> F,
    group: impl Fn(Range<usize>, &'a mut [u8]) -> G + Sync,
) -> (F, Vec<G>)
where
    G: Send,
{
    let threads = rayon::current_num_threads();
    let done = Mutex::new(Vec::new());
    let help = |threads: usize| {
        while let Some((units, bytes)) = claims.take_back(threads) {
            let start = units.start;
            let result = group(units, bytes);
            lock(&done).push((start, result));
        }
    };
    let front = rayon::in_place_scope(|s| {
        if threads > 1 && claims.can_share() {
            for _ in 1..threads {
                s.spawn(|_| help(threads));
            }
        }
        #[cfg(test)]
        if tests::HELP_FIRST.get() {
            // As if a helper took its groups before this thread began.
            help(2);
        }
        front()
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_unstable_by_key(|&(start, _)| start);
    (front, done.into_iter().map(|(_, result)| result).collect())
}

/// Locks `m`. A panic elsewhere while it was held ends the whole job
/// anyway (scopes pass it on), so a poisoned lock is simply used.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes [`share`] run a helper's share on its own thread before
        /// `front`, so that groups from the back are taken whatever the
        /// timing.
        pub(crate) static HELP_FIRST: Cell<bool> = const { Cell::new(false) };
    }

    proptest! {
        /// However front and back takes interleave, the takes tile the
        /// units and their bytes exactly once: fronts in order from the
        /// start, backs in order from the end, each back group whole steps
        /// aligned to the start.
        #[test]
        fn takes_tile_the_units(
            units in 0usize..200,
            unit_bytes in 1usize..9,
            short in 0usize..8,
            step in 1usize..6,
            threads in 1usize..5,
            order in proptest::collection::vec(any::<bool>(), 0..400),
        ) {
            let len = (units * unit_bytes).saturating_sub(short.min(unit_bytes - 1));
            let mut bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let expected = bytes.clone();
            let mut u = Unclaimed::new(10..10 + units, &mut bytes, unit_bytes, step);
            let (mut front, mut back) = (Vec::new(), Vec::new());
            for &from_back in order.iter().chain(std::iter::repeat_n(&false, 400)) {
                if from_back {
                    if let Some((r, b)) = u.take_back(threads) {
                        prop_assert_eq!((r.start - 10) % step, 0);
                        prop_assert!(r.len() >= step || r.end == 10 + units);
                        back.push((r, b.to_vec()));
                    }
                } else if let Some((r, b)) = u.take_front() {
                    prop_assert!(r.len() == step || r.end == 10 + units);
                    front.push((r, b.to_vec()));
                }
            }
            back.reverse();
            let all: Vec<_> = front.into_iter().chain(back).collect();
            let mut at = 10;
            let mut joined = Vec::new();
            for (r, b) in &all {
                prop_assert_eq!(r.start, at);
                prop_assert!(!r.is_empty());
                at = r.end;
                joined.extend_from_slice(b);
            }
            prop_assert_eq!(at, 10 + units);
            prop_assert_eq!(joined, expected);
        }
    }

    #[test]
    fn claims_are_not_locked_between_takes() {
        let mut bytes = vec![0u8; 10];
        let claims = Claims::new(Unclaimed::new(0..10, &mut bytes, 1, 1));
        while let Some((r, _)) = claims.take_front() {
            // Free for another thread's take while this one works on r.
            assert!(claims.0.try_lock().is_ok(), "locked while on {r:?}");
        }
    }

    #[test]
    fn shared_groups_come_back_in_unit_order() {
        let mut bytes: Vec<u8> = (0..100).collect();
        let claims = Claims::new(Unclaimed::new(0..100, &mut bytes, 1, 3));
        HELP_FIRST.set(true);
        let (front, groups) = share(
            &claims,
            || {
                std::iter::from_fn(|| claims.take_front())
                    .map(|(r, _)| r)
                    .collect::<Vec<_>>()
            },
            |units, bytes| (units, bytes.to_vec()),
        );
        HELP_FIRST.set(false);
        assert_eq!(front.first().map(|r| r.start), Some(0));
        assert!(!groups.is_empty());
        let mut at = front.last().map_or(0, |r| r.end);
        for (units, bytes) in groups {
            assert_eq!(units.start, at);
            assert_eq!(
                bytes,
                (units.start as u8..units.end as u8).collect::<Vec<_>>()
            );
            at = units.end;
        }
        assert_eq!(at, 100);
    }

    #[test]
    fn backs_shrink_and_leave_the_last_step_to_the_front() {
        let mut bytes = vec![0u8; 100];
        let mut u = Unclaimed::new(0..100, &mut bytes, 1, 1);
        let sizes: Vec<usize> =
            std::iter::from_fn(|| u.take_back(2).map(|(r, _)| r.len())).collect();
        assert_eq!(sizes[0], 25);
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]));
        assert_eq!(u.take_front().map(|(r, b)| (r, b.len())), Some((0..1, 1)));
        assert!(u.take_front().is_none());
    }
}
