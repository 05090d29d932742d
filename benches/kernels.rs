//! cairn's CPU kernels on the layer shapes of the shared models: convolutions (stems,
//! depthwise, pointwise, YOLO's deep 3×3), max pooling, and the fully connected products of
//! BERT, ViT and the classifier heads, the panel kernel beside the `gemm` crate.
//!
//! `[CAIRN_BENCH_THREADS=N] cargo bench --bench kernels [-- FILTER]`: one thread unless
//! told (0: every core); each call runs as an inference does ([`threads::spread`]: on the
//! pool, its other workers awake).

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use cairn::engine::kernels::{Conv2d, Dense, Packed, Pool, PoolKind, matmul, panels};
use cairn::engine::limits::Cap;
use criterion::{Criterion, criterion_group, criterion_main};

/// Sizes the intra-op pool from `CAIRN_BENCH_THREADS` (default 1).
fn configure_threads() {
    let threads = std::env::var("CAIRN_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    cairn::engine::threads::configure(threads);
}

/// Times `f` as an inference runs it: on the pool when it splits work, the other workers
/// awake between its parallel regions (a whole batch of iterations is one inference).
fn timed<R>(b: &mut criterion::Bencher, mut f: impl FnMut() -> R + Send) {
    b.iter_custom(|iterations| {
        let splits = AtomicBool::new(true);
        cairn::engine::threads::spread(&splits, || {
            let start = Instant::now();
            for _ in 0..iterations {
                black_box(f());
            }
            start.elapsed()
        })
    });
}

fn ramp(len: usize) -> Vec<f32> {
    (0..len).map(|i| (i % 19) as f32 / 19.0 - 0.5).collect()
}

fn convolutions(c: &mut Criterion) {
    configure_threads();
    let mut group = c.benchmark_group("kernels/conv");
    // (name, in channels, out channels, groups, kernel, stride, pad, side)
    for (name, cin, cout, groups, kernel, stride, pad, side) in [
        ("stem_3to24_s2_224", 3, 24, 1, 3, 2, 1, 224),
        ("stem_3to16_s2_320", 3, 16, 1, 3, 2, 1, 320),
        ("s2_16to32_160", 16, 32, 1, 3, 2, 1, 160),
        ("deep_576to64_40", 576, 64, 1, 3, 1, 1, 40),
        ("pointwise_24to24_56", 24, 24, 1, 1, 1, 0, 56),
        ("pointwise_16to72_56", 16, 72, 1, 1, 1, 0, 56),
        ("pointwise_96to576_7", 96, 576, 1, 1, 1, 0, 7),
        ("pointwise_192to1024_7", 192, 1024, 1, 1, 1, 0, 7),
        ("depthwise3_24_s2_56", 24, 24, 24, 3, 2, 1, 56),
        ("depthwise3_96_s1_14", 96, 96, 96, 3, 1, 1, 14),
        ("depthwise5_96_s1_14", 96, 96, 96, 5, 1, 2, 14),
    ] {
        let mut conv = Conv2d {
            weight: ramp(cout * cin / groups * kernel * kernel),
            bias: ramp(cout),
            out_channels: cout,
            in_channels: cin,
            groups,
            kernel: [kernel, kernel],
            stride: [stride, stride],
            dilation: [1, 1],
            relu: true,
            hard: None,
            packed: Packed::None,
        };
        let x = Dense::new(ramp(cin * side * side), vec![1, cin, side, side]).unwrap();
        let pads = [(pad, pad), (pad, pad)];
        // The path the plan takes, and im2col + GEMM beside it where that is another.
        let im2col = conv.clone();
        conv.prepare();
        if !conv.packed.is_empty() {
            group.bench_function(format!("{name}_im2col"), |b| {
                timed(b, || {
                    im2col.run(black_box(&x), pads, Cap::unlimited()).unwrap()
                });
            });
        }
        group.bench_function(name, |b| {
            timed(b, || {
                conv.run(black_box(&x), pads, Cap::unlimited()).unwrap()
            });
        });
    }
    group.finish();
}

fn pools(c: &mut Criterion) {
    configure_threads();
    let mut group = c.benchmark_group("kernels/pool");
    // (name, channels, kernel, stride, pad, side): ShuffleNet's stem pool, YOLO's SPPF.
    for (name, channels, kernel, stride, pad, side) in [
        ("max3_s2_24_112", 24, 3, 2, 1, 112),
        ("max5_s1_128_20", 128, 5, 1, 2, 20),
        ("max2_s2_16_160", 16, 2, 2, 0, 160),
    ] {
        let pool = Pool {
            kernel: [kernel, kernel],
            stride: [stride, stride],
            dilation: [1, 1],
            ceil: false,
            kind: PoolKind::Max,
        };
        let x = Dense::new(ramp(channels * side * side), vec![1, channels, side, side]).unwrap();
        let pads = [(pad, pad), (pad, pad)];
        group.bench_function(name, |b| {
            timed(b, || {
                pool.run(black_box(&x), pads, Cap::unlimited()).unwrap()
            });
        });
    }
    group.finish();
}

fn products(c: &mut Criterion) {
    configure_threads();
    let mut group = c.benchmark_group("kernels/linear");
    // (name, rows of A, depth, columns)
    for (name, m, k, n) in [
        ("bert_qkv_32x128x128", 32, 128, 128),
        ("bert_up_32x128x512", 32, 128, 512),
        ("bert_down_32x512x128", 32, 512, 128),
        ("vit_up_197x192x768", 197, 192, 768),
        ("head_1x1024x1000", 1, 1024, 1000),
    ] {
        let a = ramp(m * k);
        let b = ramp(k * n);
        let packed = panels::pack(&b, k, n, (n, 1), 1.0);
        let bias = ramp(n);
        let mut out = vec![0f32; m * n];
        group.bench_function(format!("{name}/panels"), |bench| {
            timed(bench, || {
                panels::multiply(
                    m,
                    n,
                    k,
                    (black_box(&a), k),
                    &packed,
                    (&mut out, n),
                    panels::Start::ColumnBias(&bias),
                    false,
                );
            });
        });
        group.bench_function(format!("{name}/gemm_crate"), |bench| {
            timed(bench, || {
                for row in out.chunks_exact_mut(n) {
                    row.copy_from_slice(&bias);
                }
                matmul(
                    m,
                    n,
                    k,
                    &mut out,
                    (black_box(&a), k, 1),
                    (&b, n, 1),
                    true,
                    1.0,
                );
            });
        });
    }
    group.finish();
}

criterion_group!(benches, convolutions, pools, products);
criterion_main!(benches);
