//! Cost of one application of the distribution rule as the number of eligible candidates
//! grows: the draw alone, [`crm_core::pick`], and the draw with the verdicts a stored
//! decision keeps, [`crm_core::choose`] (one allocation more).
//!
//! Also the dry run of a weight change, [`crm_core::predict`]: 10,000 picks over 10
//! operators (the Insight issue's goal: well under 10 ms).
//!
//! Run with `cargo bench -p crm-core --bench pick`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use crm_core::{Candidate, OperatorId, choose, pick, predict};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `n` active operators with room to spare and weights 1..=100, all eligible.
fn eligible(n: i64) -> Vec<Candidate> {
    (1..=n)
        .map(|id| Candidate {
            operator_id: OperatorId(id),
            weight: id % 100 + 1,
            is_active: true,
            open_contacts: 0,
            max_active_contacts: 10,
            rate_limited: false,
        })
        .collect()
}

/// One group: `draw` over 10, 100 and 10,000 eligible candidates, a seeded generator each.
fn bench_group<T>(c: &mut Criterion, name: &str, draw: fn(&[Candidate], &mut ChaCha8Rng) -> T) {
    let mut group = c.benchmark_group(name);
    for n in [10, 100, 10_000] {
        let candidates = eligible(n);
        let mut rng = ChaCha8Rng::seed_from_u64(n.unsigned_abs());
        group.bench_with_input(BenchmarkId::from_parameter(n), &candidates, |b, cs| {
            b.iter(|| draw(black_box(cs), &mut rng));
        });
    }
    group.finish();
}

fn bench_pick(c: &mut Criterion) {
    bench_group(c, "pick", pick);
}

fn bench_choose(c: &mut Criterion) {
    bench_group(c, "choose", choose);
}

fn bench_predict(c: &mut Criterion) {
    let candidates = eligible(10);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    c.bench_function("predict/10 operators/10000 picks", |b| {
        b.iter(|| predict(black_box(&candidates), 10_000, &mut rng));
    });
}

criterion_group!(benches, bench_pick, bench_choose, bench_predict);
criterion_main!(benches);
