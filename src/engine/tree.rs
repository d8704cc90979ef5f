//! An index over the pool that makes least-connections picks O(log N).
//!
//! A segment tree over pool positions. Each node covers a range of
//! positions and records the first eligible position whose load (active ÷
//! (weight × ramp ÷ 100)) is the lowest in the range, how many eligible positions share
//! that load, and how many positions in the range are eligible. The root
//! answers "the least loaded, first in pool order" at once; a walk down
//! finds the first tied position after a given one, the k-th tied, or the
//! k-th eligible, in O(log N). Changing one backend updates one path.
//!
//! Until some backend's ramp is below 100 (a slow start), loads compare as
//! active ÷ weight alone, the ramps cancelling out, without even reading
//! them: the index knows whether any ramp may be below 100.
//!
//! HAProxy keeps its servers in a tree keyed by load for the same reason;
//! NGINX scans every peer.

use super::select::{cmp_load, cmp_unramped, Load};
use super::{Backend, FULL_RAMP};
use indexmap::IndexMap;
use std::cmp::Ordering;

type Backends<P> = IndexMap<Box<str>, Backend<P>>;

/// No position: an empty or wholly ineligible range.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Node {
    /// The first position with the lowest load in the range.
    best: u32,
    /// How many eligible positions in the range have that load.
    ties: u32,
    /// How many positions in the range are eligible.
    eligible: u32,
}

const EMPTY: Node = Node {
    best: NONE,
    ties: 0,
    eligible: 0,
};

/// The tree. Leaves are `nodes[leaves..]`; node `p` covers its children
/// `2p` and `2p + 1`; the root is `nodes[1]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LoadTree {
    nodes: Vec<Node>,
    leaves: usize,
    /// False only while every backend's ramp is known to be full: set by
    /// any update of a ramped backend, cleared by a rebuild that finds
    /// none or by [`ramps_ended`](Self::ramps_ended).
    ramps: bool,
}

fn load<P>(backends: &Backends<P>, position: u32) -> Load {
    backends.get_index(position as usize).map_or(
        Load {
            active: 0,
            weight: 1,
            ramp: FULL_RAMP,
        },
        |(_, b)| b.load(),
    )
}

/// Compares two positions' loads, with ramps if `RAMPS` (a constant, so
/// that the usual walk, without, is compiled apart).
fn compare<const RAMPS: bool, P>(backends: &Backends<P>, a: u32, b: u32) -> Ordering {
    let (a, b) = (load(backends, a), load(backends, b));
    if RAMPS {
        cmp_load(a, b)
    } else {
        cmp_unramped(a, b)
    }
}

fn leaf<P>(position: usize, backend: &Backend<P>) -> Node {
    if backend.ineligible().is_some() {
        return EMPTY;
    }
    Node {
        best: position as u32,
        ties: 1,
        eligible: 1,
    }
}

fn combine<const RAMPS: bool, P>(backends: &Backends<P>, left: Node, right: Node) -> Node {
    let eligible = left.eligible + right.eligible;
    let (best, ties) = match (left.best, right.best) {
        (NONE, _) => (right.best, right.ties),
        (_, NONE) => (left.best, left.ties),
        (l, r) => match compare::<RAMPS, P>(backends, l, r) {
            Ordering::Less => (l, left.ties),
            Ordering::Greater => (r, right.ties),
            Ordering::Equal => (l, left.ties + right.ties),
        },
    };
    Node {
        best,
        ties,
        eligible,
    }
}

impl LoadTree {
    /// Builds the tree for every backend, in O(N).
    pub fn rebuild<P>(&mut self, backends: &Backends<P>) {
        let leaves = backends.len().next_power_of_two().max(1);
        self.leaves = leaves;
        self.nodes.clear();
        self.nodes.resize(2 * leaves, EMPTY);
        self.ramps = false;
        for (i, backend) in backends.values().enumerate() {
            self.nodes[leaves + i] = leaf(i, backend);
            self.ramps |= backend.ramp < FULL_RAMP;
        }
        for p in (1..leaves).rev() {
            self.nodes[p] = if self.ramps {
                combine::<true, P>(backends, self.nodes[2 * p], self.nodes[2 * p + 1])
            } else {
                combine::<false, P>(backends, self.nodes[2 * p], self.nodes[2 * p + 1])
            };
        }
    }

    /// Recombines every node above leaf node `p`.
    fn walk_up<P>(&mut self, backends: &Backends<P>, p: usize) {
        if self.ramps {
            self.walk_up_with::<true, P>(backends, p);
        } else {
            self.walk_up_with::<false, P>(backends, p);
        }
    }

    fn walk_up_with<const RAMPS: bool, P>(&mut self, backends: &Backends<P>, mut p: usize) {
        while p > 1 {
            p /= 2;
            self.nodes[p] = combine::<RAMPS, P>(backends, self.nodes[2 * p], self.nodes[2 * p + 1]);
        }
    }

    /// Says that every backend's ramp is full again, in O(1): loads compare
    /// without ramps from now on (as every ramp is 100, every node stands).
    pub fn ramps_ended(&mut self) {
        self.ramps = false;
    }

    /// Takes a change to the backend at `position` (or a new backend there)
    /// into account, in O(log N) (amortized, when the tree must grow).
    pub fn update<P>(&mut self, backends: &Backends<P>, position: usize) {
        if position >= self.leaves {
            self.rebuild(backends);
            return;
        }
        let p = self.leaves + position;
        self.nodes[p] = match backends.get_index(position) {
            Some((_, backend)) => {
                self.ramps |= backend.ramp < FULL_RAMP;
                leaf(position, backend)
            }
            None => EMPTY,
        };
        self.walk_up(backends, p);
    }

    /// Leaves the backend at `position` out of every query until the next
    /// [`update`](Self::update) of it, in O(log N): as if it were not
    /// eligible.
    pub fn exclude<P>(&mut self, backends: &Backends<P>, position: usize) {
        if position >= self.leaves {
            return;
        }
        let p = self.leaves + position;
        self.nodes[p] = EMPTY;
        self.walk_up(backends, p);
    }

    fn root(&self) -> Node {
        self.nodes.get(1).copied().unwrap_or(EMPTY)
    }

    /// The first eligible position with the lowest load.
    pub fn least(&self) -> Option<usize> {
        let best = self.root().best;
        (best != NONE).then_some(best as usize)
    }

    /// How many eligible positions share the lowest load.
    pub fn ties(&self) -> usize {
        self.root().ties as usize
    }

    /// How many positions are eligible.
    pub fn eligible(&self) -> usize {
        self.root().eligible as usize
    }

    /// Whether node `p`'s lowest load is the lowest of all.
    fn holds_least<P>(&self, backends: &Backends<P>, p: usize) -> bool {
        let (node, root) = (self.nodes[p], self.root());
        if node.best == NONE {
            return false;
        }
        let order = if self.ramps {
            compare::<true, P>(backends, node.best, root.best)
        } else {
            compare::<false, P>(backends, node.best, root.best)
        };
        order == Ordering::Equal
    }

    /// The first position at or after `start` with the lowest load.
    pub fn first_tied_from<P>(&self, backends: &Backends<P>, start: usize) -> Option<usize> {
        if self.least().is_none() || start >= self.leaves {
            return None;
        }
        // Walk down towards `start`, remembering the right siblings passed
        // (at most one per level, and a pool has fewer than 2^32 positions).
        let mut siblings = [0usize; 32];
        let mut passed = 0;
        let (mut p, mut lo, mut span) = (1, 0, self.leaves);
        while span > 1 {
            span /= 2;
            if start < lo + span {
                siblings[passed] = 2 * p + 1;
                passed += 1;
                p *= 2;
            } else {
                p = 2 * p + 1;
                lo += span;
            }
        }
        if self.holds_least(backends, p) {
            return Some(lo);
        }
        // The nearest right sibling holding a least-loaded position: its
        // first such position is the answer.
        let p = siblings[..passed]
            .iter()
            .rev()
            .copied()
            .find(|&p| self.holds_least(backends, p))?;
        Some(self.nodes[p].best as usize)
    }

    /// The `k`-th (from 0) least-loaded position in pool order.
    pub fn nth_tied<P>(&self, backends: &Backends<P>, mut k: usize) -> Option<usize> {
        if k >= self.ties() {
            return None;
        }
        let mut p = 1;
        while p < self.leaves {
            let left = 2 * p;
            let in_left = if self.holds_least(backends, left) {
                self.nodes[left].ties as usize
            } else {
                0
            };
            if k < in_left {
                p = left;
            } else {
                k -= in_left;
                p = left + 1;
            }
        }
        Some(p - self.leaves)
    }

    /// The `k`-th (from 0) eligible position in pool order.
    pub fn nth_eligible(&self, mut k: usize) -> Option<usize> {
        if k >= self.eligible() {
            return None;
        }
        let mut p = 1;
        while p < self.leaves {
            let in_left = self.nodes[2 * p].eligible as usize;
            if k < in_left {
                p *= 2;
            } else {
                k -= in_left;
                p = 2 * p + 1;
            }
        }
        Some(p - self.leaves)
    }

    /// Every least-loaded position, in pool order (for explanations).
    pub fn all_tied<P>(&self, backends: &Backends<P>) -> Vec<usize> {
        (0..self.ties())
            .filter_map(|k| self.nth_tied(backends, k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::BackendSpec;
    use proptest::prelude::*;

    /// Backends from (active, weight, ramp, healthy).
    fn backends(spec: &[(u64, u64, u8, bool)]) -> Backends<()> {
        spec.iter()
            .enumerate()
            .map(|(i, &(active, weight, ramp, healthy))| {
                let mut b = Backend::new(
                    &BackendSpec {
                        name: "",
                        weight,
                        max_connections: None,
                    },
                    (),
                );
                b.active = active;
                b.ramp = ramp;
                b.healthy = healthy;
                (format!("b{i}").into(), b)
            })
            .collect()
    }

    /// a's load below (`Less`), equal to or above b's, as fractions
    /// compared the plain way: (a.active × 100) ÷ (a.weight × a.ramp)
    /// against b's, cross-multiplied in four 64-bit limbs each side,
    /// independently of `cmp_load`.
    fn by_fractions(a: &Backend, b: &Backend) -> Ordering {
        /// x × y × z as big-endian 64-bit limbs.
        fn product(x: u64, y: u64, z: u64) -> [u64; 4] {
            let mut limbs = [0u64; 4];
            limbs[3] = x;
            for factor in [y, z] {
                let mut carry = 0u128;
                for limb in limbs.iter_mut().rev() {
                    let v = u128::from(*limb) * u128::from(factor) + carry;
                    *limb = v as u64;
                    carry = v >> 64;
                }
                assert_eq!(carry, 0);
            }
            limbs
        }
        let left = product(a.active, b.weight, u64::from(b.ramp));
        let right = product(b.active, a.weight, u64::from(a.ramp));
        left.cmp(&right)
    }

    /// Checks every query against a plain scan.
    fn check(tree: &LoadTree, backends: &Backends<()>) {
        let eligible: Vec<usize> = (0..backends.len())
            .filter(|&i| backends[i].ineligible().is_none())
            .collect();
        let least = eligible.iter().copied().reduce(|best, i| {
            if by_fractions(&backends[i], &backends[best]) == Ordering::Less {
                i
            } else {
                best
            }
        });
        assert_eq!(tree.least(), least);
        let tied: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|&i| by_fractions(&backends[i], &backends[least.unwrap()]) == Ordering::Equal)
            .collect();
        assert_eq!(tree.ties(), tied.len());
        assert_eq!(tree.all_tied(backends), tied);
        assert_eq!(tree.eligible(), eligible.len());
        for (k, &i) in eligible.iter().enumerate() {
            assert_eq!(tree.nth_eligible(k), Some(i));
        }
        assert_eq!(tree.nth_eligible(eligible.len()), None);
        for start in 0..=backends.len() + 1 {
            let expected = tied.iter().copied().find(|&i| i >= start);
            assert_eq!(
                tree.first_tied_from(backends, start),
                expected,
                "from {start}"
            );
        }
    }

    /// Mostly full, so that ties stay common; 50 ties with twice the load
    /// at 100, 25 with four times.
    fn ramp() -> impl Strategy<Value = u8> {
        prop_oneof![3 => Just(100u8), 1 => Just(50u8), 1 => Just(25u8), 1 => 1..=100u8]
    }

    proptest! {
        #[test]
        fn queries_match_a_plain_scan(
            spec in prop::collection::vec((0..4u64, 0..3u64, ramp(), prop::bool::weighted(0.8)), 0..40),
            changes in prop::collection::vec((any::<usize>(), 0..4u64, 0..3u64, ramp()), 0..20),
        ) {
            let mut backends = backends(&spec);
            let mut tree = LoadTree::default();
            tree.rebuild(&backends);
            check(&tree, &backends);
            for (at, active, weight, ramp) in changes {
                if backends.is_empty() {
                    break;
                }
                let i = at % backends.len();
                backends[i].active = active;
                backends[i].weight = weight;
                backends[i].ramp = ramp;
                tree.update(&backends, i);
                check(&tree, &backends);
            }
            // Every slow start over: the loads compare without ramps again.
            for i in 0..backends.len() {
                backends[i].ramp = FULL_RAMP;
                tree.update(&backends, i);
            }
            tree.ramps_ended();
            check(&tree, &backends);
            // Appending past the tree's capacity makes it grow.
            for extra in 0..5u64 {
                let i = backends.len();
                let mut b = Backend::new(&BackendSpec::named(""), ());
                b.active = extra;
                backends.insert(format!("new{extra}").into(), b);
                tree.update(&backends, i);
                check(&tree, &backends);
            }
        }
    }
}
