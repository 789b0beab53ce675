//! Replay throughput: reading a recording (checksums, LZ4, decoding each record) and aggregating
//! it into the trace summary, as `escapade report --quiet` does, on one core. Each call is two
//! events, an entry with two arguments and a return with one result. Run with
//! `cargo bench -p escapade --bench replay`; BENCHMARKS.md has the result.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use escapade::record::reader::Replay;
use escapade::views::Output;
use escapade::views::trace::TraceView;

#[path = "../tests/common/synthetic.rs"]
mod synthetic;

const CALLS: u64 = 500_000;

fn replay(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("escapade-bench-{}.esc", std::process::id()));
    // Chunks of about a second of a busy session.
    synthetic::write(&path, CALLS, 20_000, None);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(2 * CALLS));
    group.sample_size(10);
    group.bench_function("decode and aggregate", |b| {
        b.iter(|| {
            let mut replay = Replay::new(&bytes[..]).unwrap();
            let functions = replay.reader.header.functions.clone();
            let mut view = TraceView::new(functions, Output::Text(std::io::sink()), true);
            assert!(replay.run(&mut view).unwrap().is_none());
            assert_eq!(replay.calls, 2 * CALLS);
            view.summary(&Default::default(), None, None).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
