//! Squeeze-and-excite's two paths through a convolution: its fully connected layers (1×1
//! convolutions of a 1×1 plane) and its gate folded into the weights of the 1×1
//! convolution after it (`fast/gate.rs` plans that step).

use super::super::{fmax, matmul};
use super::{Conv2d, Packed};

impl Conv2d {
    /// A 1×1 convolution of a 1×1 plane (squeeze-and-excite's fully connected layers),
    /// bias and activation included: one image is the matrix times its column (dot
    /// products, split over the pool when the weights are large: they come from memory);
    /// several are one product, the weights read once for all of them.
    pub(super) fn fully_connected(&self, x: &[f32], batch: usize, out: &mut [f32]) {
        let (cin, cout) = (self.in_channels, self.out_channels);
        if batch == 1 {
            matmul(
                cout,
                1,
                cin,
                out,
                (&self.weight, cin, 1),
                (x, 1, 1),
                false,
                1.0,
            );
        } else {
            matmul(
                batch,
                cout,
                cin,
                out,
                (x, cin, 1),
                (&self.weight, 1, cin),
                false,
                1.0,
            );
        }
        for row in out.chunks_exact_mut(cout.max(1)) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
                if self.relu {
                    *v = fmax(*v, 0.0);
                }
            }
            if let Some(hard) = self.hard {
                hard.apply(row);
            }
        }
    }

    /// This 1×1 layer for one image whose input channels are multiplied by `scale` (a
    /// squeeze-and-excite gate), the factors folded into a copy of the weights; `None`
    /// for another kernel, a grouped layer, packed weights, or a factor per channel
    /// missing.
    #[must_use]
    pub fn with_scaled_inputs(&self, scale: &[f32]) -> Option<Self> {
        let cin = self.in_channels;
        let fits = self.kernel == [1, 1]
            && self.groups == 1
            && scale.len() == cin
            && matches!(self.packed, Packed::None)
            && self.weight.len() == self.out_channels * cin;
        if !fits {
            return None;
        }
        // Each row of weights times the gate; every value of the reused buffer written.
        let mut weight = super::super::reuse::for_overwrite(self.weight.len());
        for (dst, src) in weight
            .chunks_exact_mut(cin.max(1))
            .zip(self.weight.chunks_exact(cin.max(1)))
        {
            for ((d, w), s) in dst.iter_mut().zip(src).zip(scale) {
                *d = w * s;
            }
        }
        Some(Self {
            weight,
            bias: self.bias.clone(),
            packed: Packed::None,
            ..*self
        })
    }

    /// Gives a copy's weights back for later outputs of the run ([`super::super::reuse`]).
    pub fn recycle(self) {
        super::super::reuse::keep(self.weight);
    }
}
