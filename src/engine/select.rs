//! Selection: which eligible backend gets the next request.
//!
//! All of the choosing lives here, once. Scores compare exactly: "active ÷
//! weight" is compared by cross-multiplying in 128 bits, as NGINX and IPVS
//! do, never with floats; with a backend's ramp (slow start, see
//! [`Backend::ramp`](super::Backend::ramp)) the products take up to 135
//! bits, and are compared exactly in two parts.

use super::{NoBackend, Pool, FULL_RAMP};
use crate::names::named_enum;
use std::cmp::Ordering;

named_enum! {
    /// The selection algorithms, by their protocol names.
    #[derive(Default)]
    pub enum Algorithm("algorithm") {
        /// The eligible backend with the lowest active ÷ weight (plain least
        /// connections when all weights are 1), the weight taken at its ramp
        /// (active ÷ (weight × ramp ÷ 100)); ties by the tie-break.
        #[default]
        LeastConnections = "least-connections" | "weighted-least-connections",
        /// NGINX's smooth weighted round-robin over the eligible backends.
        /// Ramps are ignored: a returning backend gets only its share.
        RoundRobin = "round-robin",
        /// An eligible backend at random, in proportion to weight. Ramps
        /// are ignored, as by round-robin.
        Random = "random",
        /// Two distinct eligible backends at random; the lower active ÷ weight
        /// (at its ramp, as for least-connections) wins, the lower position
        /// on a tie.
        PowerOfTwoChoices = "power-of-two-choices",
    }
}

named_enum! {
    /// How least-connections chooses among backends with equal lowest scores.
    #[derive(Default)]
    pub enum TieBreak("tie-break") {
        /// The first in pool order.
        #[default]
        LowestIndex = "lowest-index",
        /// The first whose position is after the previous pick's (by any
        /// algorithm), wrapping around.
        RoundRobin = "round-robin",
        /// One of them at random, uniformly.
        Random = "random",
    }
}

/// Why a backend may not take a new connection, or not this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ineligible {
    /// Marked unhealthy.
    Down,
    /// Weight 0.
    Drained,
    /// At its `max_connections`, or at the largest count.
    Full,
    /// Eligible, but left out of this pick by the front-end (a request
    /// that has already failed on it). Only explanations say this; a
    /// backend's own [`ineligible`](super::Backend::ineligible) never does.
    Excluded,
}

impl Ineligible {
    pub fn name(self) -> &'static str {
        match self {
            Ineligible::Down => "down",
            Ineligible::Drained => "drained",
            Ineligible::Full => "full",
            Ineligible::Excluded => "excluded",
        }
    }
}

/// What least-connections and power-of-two-choices compare for a backend:
/// active ÷ (weight × ramp ÷ 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub active: u64,
    /// Above 0 for an eligible backend.
    pub weight: u64,
    /// The percent of `weight` in effect, 1 to 100.
    pub ramp: u8,
}

/// What an algorithm compares for a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// active ÷ (weight × ramp ÷ 100); lower is better.
    Ratio { active: u64, weight: u64, ramp: u8 },
    /// Smooth round-robin's running weight after this pick's increase;
    /// higher is better.
    CurrentWeight(i128),
}

/// One backend as an algorithm saw it, before the pick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    pub active: u64,
    pub weight: u64,
    /// The percent of `weight` in effect (see
    /// [`Backend::ramp`](super::Backend::ramp)).
    pub ramp: u8,
    pub ineligible: Option<Ineligible>,
    /// `None` for ineligible backends and for algorithms without scores.
    pub score: Option<Score>,
}

/// Several backends shared the best score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tie {
    /// Their positions, in pool order.
    pub tied: Vec<usize>,
    pub rule: TieBreak,
    /// For the round-robin rule: the previous pick's position, if any.
    pub after: Option<usize>,
}

/// Why a pick went where it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub algorithm: Algorithm,
    /// Every backend, in pool order, as it stood before the pick.
    pub candidates: Vec<Candidate>,
    pub tie: Option<Tie>,
    /// For power-of-two-choices: the two positions drawn.
    pub sampled: Option<[usize; 2]>,
}

/// What `choose` decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Choice {
    pub index: usize,
    pub tie: Option<Tie>,
    pub sampled: Option<[usize; 2]>,
}

impl Choice {
    fn plain(index: usize) -> Self {
        Choice {
            index,
            tie: None,
            sampled: None,
        }
    }
}

/// Compares active ÷ (weight × ramp ÷ 100) of two backends exactly, by
/// cross-multiplying: a.active × b.weight × b.ramp against b.active ×
/// a.weight × a.ramp. Weights and ramps must be non-zero (eligible backends
/// only).
#[inline]
pub fn cmp_load(a: Load, b: Load) -> Ordering {
    if a.ramp == b.ramp {
        // Equal ramps cancel out: the usual case (both 100) stays within
        // 128 bits.
        cmp_unramped(a, b)
    } else {
        let left = u128::from(a.active) * u128::from(b.weight);
        let right = u128::from(b.active) * u128::from(a.weight);
        cmp_ramped(left, b.ramp, right, a.ramp)
    }
}

/// active ÷ weight alone: [`cmp_load`] for equal ramps, or for an index
/// that knows every ramp to be full.
#[inline]
pub(super) fn cmp_unramped(a: Load, b: Load) -> Ordering {
    (u128::from(a.active) * u128::from(b.weight))
        .cmp(&(u128::from(b.active) * u128::from(a.weight)))
}

/// left × left_ramp against right × right_ramp, exactly: for [`cmp_load`]
/// only while a backend is in a slow start, and kept out of line so that
/// the usual path stays small enough to inline into the index's updates.
#[cold]
#[inline(never)]
fn cmp_ramped(left: u128, left_ramp: u8, right: u128, right_ramp: u8) -> Ordering {
    wide_product(left, left_ramp).cmp(&wide_product(right, right_ramp))
}

/// product × r exactly, which may need up to 135 bits: (the bits above the
/// lowest 128, the lowest 128). Compared as a pair, these order the results.
fn wide_product(product: u128, r: u8) -> (u64, u128) {
    const LOW_64: u128 = u64::MAX as u128;
    let r = u128::from(r);
    // product × r = (high × r) · 2^64 + low × r, each part below 2^72.
    let low = (product & LOW_64) * r;
    let middle = (product >> 64) * r + (low >> 64);
    let above = (middle >> 64) as u64;
    (above, (middle << 64) | (low & LOW_64))
}

impl<P> Pool<P> {
    /// Chooses an eligible backend, updating whatever state the algorithm
    /// keeps, but not the counts. Ties are recorded only if `explain`.
    pub(super) fn choose(
        &mut self,
        algorithm: Algorithm,
        explain: bool,
    ) -> Result<Choice, NoBackend> {
        let choice = match algorithm {
            Algorithm::LeastConnections => self.least_connections(explain),
            Algorithm::RoundRobin => self.smooth_round_robin(explain),
            Algorithm::Random => self.weighted_random(),
            Algorithm::PowerOfTwoChoices => self.power_of_two_choices(explain),
        };
        choice.ok_or_else(|| self.why_none())
    }

    fn least_connections(&mut self, explain: bool) -> Option<Choice> {
        let least = self.tree.least()?;
        let ties = self.tree.ties();
        let rule = self.policy.tie_break;
        let index = match (ties, rule) {
            (1, _) | (_, TieBreak::LowestIndex) => least,
            (_, TieBreak::RoundRobin) => self
                .tree
                .first_tied_from(&self.backends, self.next_after_pick)
                .unwrap_or(least),
            (n, TieBreak::Random) => {
                let k = self.rng.below(n as u64) as usize;
                self.tree.nth_tied(&self.backends, k).unwrap_or(least)
            }
        };
        let tie = (explain && ties > 1).then(|| Tie {
            tied: self.tree.all_tied(&self.backends),
            rule,
            after: self.previous_pick(),
        });
        Some(Choice {
            index,
            tie,
            sampled: None,
        })
    }

    /// The position of the previous pick, as the round-robin tie-break sees
    /// it.
    fn previous_pick(&self) -> Option<usize> {
        self.next_after_pick.checked_sub(1)
    }

    fn smooth_round_robin(&mut self, explain: bool) -> Option<Choice> {
        // Backends appended since the last round-robin pick start at 0.
        self.running_weights.resize(self.backends.len(), 0);
        let mut total: i128 = 0;
        let mut best: Option<(usize, i128)> = None;
        // Only an explanation needs the tied positions.
        let mut tied = Vec::new();
        let eligible = self
            .backends
            .values()
            .zip(self.running_weights.iter_mut())
            .enumerate()
            .filter(|&(index, (backend, _))| {
                backend.ineligible().is_none() && !self.excluded.contains(&index)
            });
        for (index, (backend, running)) in eligible {
            let weight = i128::from(backend.weight);
            *running += weight;
            total += weight;
            let current = *running;
            match best {
                Some((_, top)) if current < top => continue,
                Some((_, top)) if current == top => {}
                _ => {
                    best = Some((index, current));
                    tied.clear();
                }
            }
            if explain {
                tied.push(index);
            }
        }
        let (index, _) = best?;
        self.running_weights[index] -= total;
        let tie = (tied.len() > 1).then_some(Tie {
            tied,
            rule: TieBreak::LowestIndex,
            after: None,
        });
        Some(Choice {
            index,
            tie,
            sampled: None,
        })
    }

    fn weighted_random(&mut self) -> Option<Choice> {
        let eligible = |(index, b): &(usize, &super::Backend<P>)| {
            b.ineligible().is_none() && !self.excluded.contains(index)
        };
        let total: u128 = self
            .backends
            .values()
            .enumerate()
            .filter(eligible)
            .map(|(_, b)| u128::from(b.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut ticket = self.rng.below_u128(total);
        for (index, backend) in self.backends.values().enumerate() {
            if !eligible(&(index, backend)) {
                continue;
            }
            let weight = u128::from(backend.weight);
            if ticket < weight {
                return Some(Choice::plain(index));
            }
            ticket -= weight;
        }
        None // unreachable: the tickets add up to the total
    }

    fn power_of_two_choices(&mut self, explain: bool) -> Option<Choice> {
        let n = self.tree.eligible() as u64;
        match n {
            0 => None,
            1 => self.tree.nth_eligible(0).map(Choice::plain),
            _ => {
                // Two distinct draws among the eligible, in pool order: the
                // second skips over the first.
                let first = self.rng.below(n);
                let mut second = self.rng.below(n - 1);
                if second >= first {
                    second += 1;
                }
                let a = self.tree.nth_eligible(first as usize)?;
                let b = self.tree.nth_eligible(second as usize)?;
                let (low, high) = (a.min(b), a.max(b));
                let load = |i: usize| {
                    self.backends.get_index(i).map_or(
                        Load {
                            active: 0,
                            weight: 1,
                            ramp: FULL_RAMP,
                        },
                        |(_, b)| b.load(),
                    )
                };
                let order = cmp_load(load(high), load(low));
                let index = if order == Ordering::Less { high } else { low };
                let tie = (explain && order == Ordering::Equal).then(|| Tie {
                    tied: vec![low, high],
                    rule: TieBreak::LowestIndex,
                    after: None,
                });
                Some(Choice {
                    index,
                    tie,
                    sampled: Some([low, high]),
                })
            }
        }
    }

    /// Every backend as `algorithm` sees it now, for an explanation.
    pub(super) fn describe(&self, algorithm: Algorithm) -> Explanation {
        let candidates = self
            .backends
            .values()
            .enumerate()
            .map(|(index, b)| {
                let ineligible = b.ineligible().or_else(|| {
                    self.excluded
                        .contains(&index)
                        .then_some(Ineligible::Excluded)
                });
                let score = match algorithm {
                    _ if ineligible.is_some() => None,
                    Algorithm::LeastConnections | Algorithm::PowerOfTwoChoices => {
                        Some(Score::Ratio {
                            active: b.active,
                            weight: b.weight,
                            ramp: b.ramp,
                        })
                    }
                    Algorithm::RoundRobin => Some(Score::CurrentWeight(
                        self.running_weights.get(index).copied().unwrap_or(0)
                            + i128::from(b.weight),
                    )),
                    Algorithm::Random => None,
                };
                Candidate {
                    index,
                    active: b.active,
                    weight: b.weight,
                    ramp: b.ramp,
                    ineligible,
                    score,
                }
            })
            .collect();
        Explanation {
            algorithm,
            candidates,
            tie: None,
            sampled: None,
        }
    }
}
