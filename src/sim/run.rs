//! One replication of one algorithm: the discrete-event loop.
//!
//! Arrivals come from their own random stream and request sizes from
//! another, both seeded by the replication alone, so every algorithm meets
//! exactly the same requests (common random numbers: differences between
//! algorithms are not sampling noise). Each balancer is a [`Pool`] of the
//! engine, seeded by its own stream; the loop only counts, queues and times.

use super::scenario::{Discipline, Scenario};
use super::stats::{Histogram, Spread};
use super::transcript::{InitSpec, Transcript};
use crate::engine::rng::Rng;
use crate::engine::{Algorithm, BackendId, BackendSpec, EngineError, Policy, Pool, PoolBuilder};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;

/// What one replication measured, after the warm-up.
#[derive(Clone, Debug)]
pub struct Replication {
    /// Mean time in system; NaN if no request completed.
    pub mean: f64,
    pub histogram: Histogram,
    /// Requests given to each backend.
    pub picks: Vec<u64>,
    /// The spread (max − min count over backends) seen by each arrival.
    pub spread_sum: u128,
    pub spread_samples: u64,
    pub spread_max: u64,
    pub rejected: u64,
    pub series: Option<Series>,
}

/// Active connections over a window of time just after the warm-up, at
/// every change: one line per backend for small pools, else the lowest,
/// mean and highest count. The window holds about
/// [`SERIES_CHANGES`] changes of count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub times: Vec<f64>,
    pub lines: Vec<(String, Vec<f64>)>,
}

/// Pools up to this size get a line per backend in the series.
pub const SERIES_LINES: usize = 16;
/// About how many changes of count the series window spans: enough to
/// see the pattern, few enough to see each step.
pub const SERIES_CHANGES: f64 = 1500.0;
/// How many arrivals pass between progress reports.
const PROGRESS_EVERY: u64 = 1 << 14;

/// What a replication should produce besides its figures.
pub struct Extras<'a> {
    pub series: bool,
    pub transcript: Option<&'a mut Transcript<Box<dyn Write>>>,
    /// Told how many more arrivals have been simulated, now and then.
    pub progress: &'a mut dyn FnMut(u64),
}

/// A seed for one random stream of one replication.
pub fn stream_seed(seed: u64, replication: u32, stream: u64) -> u64 {
    let mut rng = Rng::new(seed ^ u64::from(replication).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let base = rng.next_u64();
    Rng::new(base ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

const ARRIVAL_STREAM: u64 = 1;
const SIZE_STREAM: u64 = 2;
/// Balancer k's pool is seeded by stream `BALANCER_STREAMS + k`.
const BALANCER_STREAMS: u64 = 100;

/// An event in time order; `seq` orders simultaneous events as scheduled.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    /// Non-negative times order as their bit patterns.
    time: u64,
    seq: u64,
    kind: Kind,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A request leaves its backend (FIFO and delay disciplines).
    Done(Job),
    /// The processor-sharing backend's earliest job may be finishing, if
    /// nothing arrived there since this was scheduled.
    SharedDone { backend: usize, version: u64 },
    /// The balancer catches up with every backend's count.
    Sync { balancer: usize },
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
struct Job {
    backend: usize,
    balancer: usize,
    request: u64,
    /// Bits of the arrival time.
    arrived: u64,
}

/// A processor-sharing backend. Its virtual time is the work each of its
/// jobs has received since it was last empty: it grows at speed ÷ jobs, so
/// a job of size w that arrives at virtual time v leaves when it reaches
/// v + w, and the job with the least such target leaves first.
#[derive(Debug, Default)]
struct Shared {
    virtual_time: f64,
    updated: f64,
    /// (bits of the target virtual time, job).
    jobs: BinaryHeap<Reverse<(u64, Job)>>,
    version: u64,
}

struct Sim<'a, 'x> {
    s: &'a Scenario,
    names: &'a [String],
    pools: Vec<Pool>,
    /// Each backend's id, by position.
    ids: Vec<BackendId>,
    /// The true count of every backend.
    counts: Vec<u64>,
    spread: Spread,
    events: BinaryHeap<Reverse<Event>>,
    seq: u64,
    /// FIFO: when each backend finishes the work it has been given.
    free_at: Vec<f64>,
    shared: Vec<Shared>,
    /// Requests numbered below this are warm-up.
    warmup: u64,
    /// Every balancer sees exact counts, so each change is copied to all.
    mirror: bool,
    /// The series records counts from the first measured arrival (`None`
    /// until then) for this long.
    series_start: Option<f64>,
    series_length: f64,
    issued: u64,
    out: Replication,
    sum: f64,
    measured: u64,
    extras: Extras<'x>,
}

/// Runs one replication of `algorithm`.
pub fn replicate(
    s: &Scenario,
    names: &[String],
    algorithm: Algorithm,
    replication: u32,
    extras: Extras<'_>,
) -> Result<Replication, EngineError> {
    let n = s.speeds.len();
    let mut pools = Vec::with_capacity(s.balancers);
    for k in 0..s.balancers {
        let policy = Policy {
            algorithm,
            tie_break: s.tie_break,
            seed: stream_seed(s.seed, replication, BALANCER_STREAMS + k as u64),
        };
        let mut builder = PoolBuilder::new(policy, n);
        for (name, &weight) in names.iter().zip(&s.weights) {
            builder.push(BackendSpec {
                name,
                weight,
                max_connections: s.max_connections,
            })?;
        }
        pools.push(builder.build());
    }
    // Every balancer's pool was built alike, so a backend's id is the same
    // in each; the simulation itself goes by position (no backend leaves).
    let ids = (0..n).filter_map(|i| pools[0].id_at(i)).collect();
    let mut sim = Sim {
        s,
        names,
        pools,
        ids,
        counts: vec![0; n],
        spread: Spread::new(n),
        events: BinaryHeap::new(),
        seq: 0,
        free_at: vec![0.0; n],
        shared: Vec::new(),
        warmup: s.warmup_requests(),
        mirror: s.balancers > 1 && s.sync == 0.0,
        series_start: None,
        // Each request changes a count twice.
        series_length: SERIES_CHANGES / (2.0 * s.rate),
        issued: 0,
        out: Replication {
            mean: f64::NAN,
            histogram: Histogram::default(),
            picks: vec![0; n],
            spread_sum: 0,
            spread_samples: 0,
            spread_max: 0,
            rejected: 0,
            series: None,
        },
        sum: 0.0,
        measured: 0,
        extras,
    };
    if s.discipline == Discipline::Ps {
        sim.shared.resize_with(n, Shared::default);
    }
    if sim.extras.series {
        let lines: Vec<String> = if n <= SERIES_LINES {
            names.to_vec()
        } else {
            vec!["lowest".into(), "mean".into(), "highest".into()]
        };
        sim.out.series = Some(Series {
            times: Vec::new(),
            lines: lines.into_iter().map(|name| (name, Vec::new())).collect(),
        });
    }
    if let Some(t) = sim.extras.transcript.as_deref_mut() {
        t.init(&InitSpec {
            names,
            weights: &s.weights,
            max_connections: s.max_connections,
            algorithm,
            tie_break: s.tie_break,
            seed: sim.pools[0].policy().seed,
        });
    }
    sim.run(replication)?;
    Ok(sim.finish())
}

impl Sim<'_, '_> {
    fn schedule(&mut self, time: f64, kind: Kind) {
        self.seq += 1;
        self.events.push(Reverse(Event {
            time: time.to_bits(),
            seq: self.seq,
            kind,
        }));
    }

    fn run(&mut self, replication: u32) -> Result<(), EngineError> {
        let s = self.s;
        let mut arrival_rng = Rng::new(stream_seed(s.seed, replication, ARRIVAL_STREAM));
        let mut size_rng = Rng::new(stream_seed(s.seed, replication, SIZE_STREAM));
        if s.balancers > 1 && s.sync > 0.0 {
            // Staggered, so that the balancers' views differ.
            for k in 0..s.balancers {
                let first = s.sync * (k + 1) as f64 / s.balancers as f64;
                self.schedule(first, Kind::Sync { balancer: k });
            }
        }
        let mean_gap = s.burst as f64 / s.rate;
        let mut next_arrival = s.arrivals.first(mean_gap, &mut arrival_rng);
        let mut left_in_burst = s.burst;
        let mut reported = 0;
        loop {
            let event_first = match self.events.peek() {
                // Completions before arrivals at the same instant.
                Some(Reverse(e)) => self.issued == s.requests || e.time <= next_arrival.to_bits(),
                None if self.issued == s.requests => break,
                None => false,
            };
            if event_first {
                if let Some(Reverse(event)) = self.events.pop() {
                    self.handle(f64::from_bits(event.time), event.kind)?;
                }
                continue;
            }
            let request = self.issued;
            let balancer = if s.balancers > 1 {
                arrival_rng.below(s.balancers as u64) as usize
            } else {
                0
            };
            let size = s.service.sample(&mut size_rng);
            self.arrive(next_arrival, request, balancer, size)?;
            self.issued += 1;
            left_in_burst -= 1;
            if left_in_burst == 0 {
                left_in_burst = s.burst;
                next_arrival += s.arrivals.gap(mean_gap, &mut arrival_rng);
            }
            if self.issued - reported == PROGRESS_EVERY {
                (self.extras.progress)(PROGRESS_EVERY);
                reported = self.issued;
            }
        }
        (self.extras.progress)(self.issued - reported);
        Ok(())
    }

    fn arrive(
        &mut self,
        now: f64,
        request: u64,
        balancer: usize,
        size: f64,
    ) -> Result<(), EngineError> {
        let measured = request >= self.warmup;
        if measured {
            let spread = self.spread.max() - self.spread.min();
            self.out.spread_sum += u128::from(spread);
            self.out.spread_samples += 1;
            self.out.spread_max = self.out.spread_max.max(spread);
        }
        if let Some(t) = self.extras.transcript.as_deref_mut() {
            t.request(request, now);
        }
        if measured && self.series_start.is_none() {
            self.series_start = Some(now);
            self.sample_series(now);
        }
        let Ok(backend) = self.pools[balancer].pick(None, &[], false).chosen else {
            if measured {
                self.out.rejected += 1;
            }
            return Ok(());
        };
        self.spread.increment(self.counts[backend]);
        self.counts[backend] += 1;
        self.copy_count(balancer, backend)?;
        self.sample_series(now);
        if measured {
            self.out.picks[backend] += 1;
        }
        let job = Job {
            backend,
            balancer,
            request,
            arrived: now.to_bits(),
        };
        let duration = size / self.s.speeds[backend];
        match self.s.discipline {
            Discipline::Fifo => {
                let done = self.free_at[backend].max(now) + duration;
                self.free_at[backend] = done;
                self.schedule(done, Kind::Done(job));
            }
            Discipline::Delay => self.schedule(now + duration, Kind::Done(job)),
            Discipline::Ps => {
                self.advance_shared(backend, now);
                let shared = &mut self.shared[backend];
                let target = shared.virtual_time + size;
                shared.jobs.push(Reverse((target.to_bits(), job)));
                self.schedule_shared(backend, now);
            }
        }
        Ok(())
    }

    fn handle(&mut self, now: f64, kind: Kind) -> Result<(), EngineError> {
        match kind {
            Kind::Done(job) => self.depart(now, job),
            Kind::SharedDone { backend, version } => {
                if self.shared[backend].version != version {
                    return Ok(()); // superseded by a later arrival
                }
                let shared = &mut self.shared[backend];
                let Some(Reverse((target, job))) = shared.jobs.pop() else {
                    return Ok(());
                };
                shared.virtual_time = if shared.jobs.is_empty() {
                    0.0
                } else {
                    f64::from_bits(target)
                };
                shared.updated = now;
                self.schedule_shared(backend, now);
                self.depart(now, job)
            }
            Kind::Sync { balancer } => {
                for (&id, &count) in self.ids.iter().zip(&self.counts) {
                    self.pools[balancer].set_active(id, count)?;
                }
                if self.issued < self.s.requests {
                    self.schedule(now + self.s.sync, Kind::Sync { balancer });
                }
                Ok(())
            }
        }
    }

    fn depart(&mut self, now: f64, job: Job) -> Result<(), EngineError> {
        let backend = job.backend;
        self.spread.decrement(self.counts[backend]);
        self.counts[backend] -= 1;
        self.pools[job.balancer].release(self.ids[backend], true, None)?;
        self.copy_count(job.balancer, backend)?;
        self.sample_series(now);
        if job.request >= self.warmup {
            let time = now - f64::from_bits(job.arrived);
            self.out.histogram.record(time);
            self.sum += time;
            self.measured += 1;
        }
        if let Some(t) = self.extras.transcript.as_deref_mut() {
            t.complete(job.request, &self.names[backend], now);
        }
        Ok(())
    }

    /// With exact sharing, every other balancer learns the new count now.
    fn copy_count(&mut self, from: usize, backend: usize) -> Result<(), EngineError> {
        if self.mirror {
            let (id, count) = (self.ids[backend], self.counts[backend]);
            for (k, pool) in self.pools.iter_mut().enumerate() {
                if k != from {
                    pool.set_active(id, count)?;
                }
            }
        }
        Ok(())
    }

    fn advance_shared(&mut self, backend: usize, now: f64) {
        let speed = self.s.speeds[backend];
        let shared = &mut self.shared[backend];
        let jobs = shared.jobs.len();
        if jobs > 0 {
            shared.virtual_time += (now - shared.updated) * speed / jobs as f64;
        }
        shared.updated = now;
    }

    /// Schedules the backend's next departure, superseding any earlier one.
    fn schedule_shared(&mut self, backend: usize, now: f64) {
        let speed = self.s.speeds[backend];
        let shared = &mut self.shared[backend];
        shared.version += 1;
        let version = shared.version;
        if let Some(Reverse((target, _))) = shared.jobs.peek() {
            let work_left = (f64::from_bits(*target) - shared.virtual_time).max(0.0);
            let at = now + work_left * shared.jobs.len() as f64 / speed;
            self.schedule(at, Kind::SharedDone { backend, version });
        }
    }

    /// Records the counts if a series is kept and `now` is in its window.
    fn sample_series(&mut self, now: f64) {
        let (Some(series), Some(start)) = (&mut self.out.series, self.series_start) else {
            return;
        };
        if now > start + self.series_length {
            return;
        }
        series.times.push(now);
        if self.counts.len() <= SERIES_LINES {
            for ((_, line), &count) in series.lines.iter_mut().zip(&self.counts) {
                line.push(count as f64);
            }
        } else {
            let values = [
                self.spread.min() as f64,
                // Summed here, inside the chart's window only, rather
                // than kept on every event.
                self.counts.iter().sum::<u64>() as f64 / self.counts.len() as f64,
                self.spread.max() as f64,
            ];
            for ((_, line), value) in series.lines.iter_mut().zip(values) {
                line.push(value);
            }
        }
    }

    fn finish(mut self) -> Replication {
        if self.measured > 0 {
            self.out.mean = self.sum / self.measured as f64;
        }
        self.out
    }
}
