//! How a Winograd layer's work is cut into tasks.

use super::{BLOCK_BUDGET, CHUNK, ROWS, panels};

/// How a layer's work is cut: blocks of tiles × ranges of output channels. Each task
/// transforms its tiles' input, multiplies them by its channels' weights and transforms
/// them back, so the products of a block stay in L2 cache and a task streams only its
/// channels' weights once. Deep layers on small images (ResNet-50's 512 channels on
/// 7×7: 16 tiles, 16.8 MB of transformed weights) were cut by tiles alone into blocks of
/// 6, each reading every weight again from memory: 3.5 ms a layer in the model, 2.8 ms
/// cut into 4 ranges of 128 channels (one thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    /// Tiles per block: a multiple of the panel kernel's rows.
    pub(super) block: usize,
    pub(super) blocks: usize,
    /// Output channels per range: whole register tiles of the AVX-512 kernel (64).
    pub(super) width: usize,
    pub(super) ranges: usize,
}

impl Split {
    /// Output channels per range at most.
    const WIDTH: usize = 128;

    pub(super) fn new(tiles: usize, cin: usize, cout: usize, threads: usize) -> Self {
        let wide = panels::PANEL * 4;
        let mut width = if cout <= Self::WIDTH + wide / 2 {
            cout
        } else {
            Self::WIDTH
        };
        // A task for every thread: narrower ranges first (each costs one more input
        // transform), then smaller blocks; tasks are even, so whole rounds of them keep
        // the threads equally busy (7 blocks on 2 threads left one idle a seventh of the
        // layer; 4 ranges where 2 would do transformed the input twice as often).
        let wanted = threads.max(1);
        let fits = |width: usize| {
            let block = (BLOCK_BUDGET / (16 * width.max(cin.min(CHUNK))).max(1)) / ROWS * ROWS;
            block.clamp(ROWS, tiles.next_multiple_of(ROWS))
        };
        if width > wide && tiles.div_ceil(fits(width)) * cout.div_ceil(width) < wanted {
            width = wide;
        }
        let ranges = cout.div_ceil(width.max(1));
        let mut blocks = tiles.div_ceil(fits(width)).max(wanted.div_ceil(ranges));
        while !(blocks * ranges).is_multiple_of(wanted) {
            blocks += 1;
        }
        let blocks = blocks.min(tiles.div_ceil(ROWS));
        // Even blocks, none much shorter than the others; shorter ones where whole row
        // tiles would leave threads without a task (49 tiles for 16 threads).
        let mut block = tiles.div_ceil(blocks.max(1)).next_multiple_of(ROWS);
        if tiles.div_ceil(block) * ranges < wanted {
            block = (tiles / blocks.max(1) / ROWS * ROWS).max(ROWS);
        }
        Self {
            block,
            blocks: tiles.div_ceil(block),
            width,
            ranges,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every split covers the tiles with even blocks of whole row tiles and the output
    /// channels with ranges starting on a panel, and has a task for every thread where the
    /// layer has that many.
    #[test]
    fn splits_cover_every_tile_and_channel_once() {
        for tiles in [1, 16, 49, 196, 784, 6400] {
            for cin in [16, 64, 512] {
                for cout in [8, 100, 160, 161, 512] {
                    for threads in [1, 2, 3, 16] {
                        let split = Split::new(tiles, cin, cout, threads);
                        let what = format!("{tiles} {cin} {cout} {threads}: {split:?}");
                        assert!(
                            split.block.is_multiple_of(ROWS) && split.block > 0,
                            "{what}"
                        );
                        assert!(split.blocks * split.block >= tiles, "{what}");
                        assert!((split.blocks - 1) * split.block < tiles, "{what}");
                        assert!(split.width.is_multiple_of(panels::PANEL) || split.width == cout);
                        assert!(split.ranges * split.width >= cout, "{what}");
                        assert!((split.ranges - 1) * split.width < cout, "{what}");
                        let most = tiles.div_ceil(ROWS) * cout.div_ceil(64);
                        assert!(split.blocks * split.ranges >= threads.min(most), "{what}");
                    }
                }
            }
        }
    }
}
