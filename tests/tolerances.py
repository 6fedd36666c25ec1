"""The one per-dtype tolerance table of the tests, shared by the CPU suite (through
tests/reference.py, which re-exports it) and the GPU suite (tests/gpu/, which runs where Paddle is
absent and so cannot import reference.py). Standard library only."""

# The one per-dtype tolerance table of the tests: id -> (dtype, loss (atol, rtol), gradient
# (atol, rtol)). Losses are accumulated in fp32 for fp32/fp16/bf16 inputs, so their tolerance is
# fp32's whatever the input dtype: log-sum-exps of logits up to ~10 carry ~1e-6 absolute error,
# which losses and divergences inherit; 2e-5 leaves room for rows of 70,001 classes. Gradients are
# computed in fp32 and rounded once to the input dtype: one ulp of the 16-bit type relative
# (fp16: 2^-10, bf16: 2^-7; rounding to nearest uses at most half of it) plus an absolute term for
# values near zero, where terms such as p (log p - log q - KL) cancel and keep only the fp32 error
# of log-probabilities of size ~10 (~1e-6 times p, times an upstream factor up to 2 / T).
TOLERANCES = {
    "f64": ("float64", (1e-10, 1e-10), (1e-12, 1e-10)),
    "f32": ("float32", (2e-5, 2e-5), (1e-6, 2e-5)),
    "f16": ("float16", (2e-5, 2e-5), (1e-6, 2 ** -10)),
    "bf16": ("bfloat16", (2e-5, 2e-5), (1e-6, 2 ** -7)),
}
