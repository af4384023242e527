"""The strip engine: a generator in horizontal strips, exactly, within a
memory budget.

Why strips. AnimeGANv2 follows every convolution with GroupNorm(1, C), whose
mean and variance run over the whole image, so tiles normalised on their own
leave seams. Everything else in the network is local (convolutions, the x2
upsamplings), so the engine computes one layer at a time in strips of rows: a
strip of layer k needs only a few rows of layer k-1 (the halo), and GroupNorm
needs only two numbers from layer k, its sum and its sum of squares,
accumulated strip by strip. Once a layer is complete its normalisation is known
and is applied, with the LeakyReLU, the reflection padding and the upsampling,
when the next layer reads its rows: the glue runs on strips that are still in
cache, and the result equals the untiled network up to float rounding.

The other families' whole-image operations are per-channel statistics of one
layer too, learnt the same way (layers.Layer.norm): an instance norm (AnimeGAN
v1), LADE (AnimeGANv3: the statistics of the conv's output and of a 1x1 conv
of it), and external attention's softmax over all positions (per channel, the
sum of exp() over every position). Layers without a norm (v3 tiny's convs:
bias and activation) need no pass of their own. A family is a layer list
(each models/ file builds its own; the engine knows no model): convolutions with one-sided (TensorFlow) padding, stride 2,
torch's or TensorFlow's legacy bilinear x2, skips added before or after the
activation at any resolution.

Which layers are kept whole is the plan (plan.py):

  "strips"  every layer is stored (raw convolution outputs, in row chunks) and
            freed chunk by chunk while the next layer consumes it. One pass of
            compute; the peak is about one full-size activation of the widest
            layer (64 channels at full resolution: 128 bytes a pixel in bf16).
  "stream"  when that does not fit the budget, only some layers are stored
            (checkpoints) and the others are recomputed from the last
            checkpoint, streaming windows of rows through the chain, once for
            every GroupNorm whose statistics are still unknown. Still exact;
            it costs several passes. The checkpoints are chosen by a small
            dynamic programme: the least recomputation that fits the budget.

Where it saves passes, the stored layers are kept in 8 bits (each row and
channel over its own range: ~60 dB from float32, half the memory of bfloat16).

Threads: a pass runs at most two band workers (cpu.MAX_WORKERS), each a
Python thread with its own strips (or, when layers stream, its own band of
rows) and a oneDNN team of its share of the threads: one thread each on two
cores, eight each on sixteen. Memory is planned for the workers, so it does
not grow with the cores; idle team threads sleep (OMP_WAIT_POLICY=PASSIVE):
spinning, they made a busy 2-core machine up to 8x slower.

Memory: stored layers and streaming windows live in blocks mapped for the run
and reused (BlockPool), strip temporaries in one scratch buffer per worker: in
the C heap the mix fragmented and the process held ~1.5x what was alive. The
planner's memory model counts both (see Engine for what a budget covers).

The package, by what each file holds:

  engine.py    Engine (what lasts: layers, weights, cores, precision,
               planning) and Run (one picture: its plan's passes)
  geometry.py  sizes, rows and passes of a network input (Geometry) and the
               memory model
  plan.py      the planner: which layers are stored (Plan, best_plan)
  layers.py    the network as a flat list of layers (Layer), and each layer's dtype
  int8.py      int8 convolutions (oneDNN's, through torch.ops.onednn) from a calibration table
  bands.py     one worker's share of a pass, and the layers computed in it
  norms.py     the statistics each norm learns strip by strip, and applying them
  stored.py    layers kept whole between passes, and when their rows are freed
  rows.py      memory: mapped blocks (BlockPool), a layer's rows (Pages), scratch
  pictures.py  where rows come from and go to (a tensor, an RGB picture)
  cpu.py       cores and how files share them, native bfloat16, the C allocator

Precision. "bf16" (the default where the CPU has native bfloat16 dot products)
runs the convolutions in bfloat16 with float32 accumulation, and keeps the
statistics and the output layer in float32: about twice the speed of float32
for 53-56 dB PSNR against the float32 network on photos (the attention and
the output layer stay in float32). "int8" runs the dense convolutions of
activations on uint8 codes of their input (one range a layer, from a style's
calibration on real photos) and int8 weights, everything else in float32:
1.3-2.2x float32 for 43-48 dB, the fastest where bfloat16 is not native.
"fp32" is exact up to float rounding.
"""

from .cpu import Cores, bf16_works, bound_malloc, default_threads, native_bf16, resolve_precision, trim_malloc
from .engine import Cancelled, Engine, Rendered, Run
from .geometry import MIN_SIZE, padded_size
from .pictures import PictureSink, PictureSource, TensorSource
from .plan import Plan

__all__ = [
    "Cancelled", "Cores", "Engine", "MIN_SIZE", "PictureSink", "PictureSource", "Plan", "Rendered", "Run",
    "TensorSource", "bf16_works", "bound_malloc", "default_threads", "native_bf16", "padded_size", "resolve_precision",
    "trim_malloc",
]
