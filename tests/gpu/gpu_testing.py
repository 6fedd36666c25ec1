"""Inputs and comparisons shared by the GPU test modules: seeded CUDA generators, logits rounded
to the dtype under test, random per-row upstream gradients, misaligned views, and the one
tolerance check."""

import torch

from tolerances import TOLERANCES

import gpu_ops


def dtype_of(dtype_id):
    return getattr(torch, TOLERANCES[dtype_id][0])


def generator(seed):
    return torch.Generator(device="cuda").manual_seed(seed)


def logits(shape, dtype, seed, scale=3.0):
    """N(0, scale^2) values rounded to `dtype` (drawn in fp32, or fp64 for fp64)."""
    base = torch.float64 if dtype == torch.float64 else torch.float32
    return (torch.randn(shape, generator=generator(seed), device="cuda", dtype=base)
            * scale).to(dtype)


def upstream(rows_shape, dtype, seed):
    """Random per-row upstream gradients of both signs, |g| in [0.5, 2]."""
    g = generator(seed)
    acc = gpu_ops.acc_dtype(dtype)
    mag = 0.5 + 1.5 * torch.rand(rows_shape, generator=g, device="cuda", dtype=acc)
    negative = torch.rand(rows_shape, generator=g, device="cuda") < 0.25
    return mag * (1.0 - 2.0 * negative.to(acc))


def close(actual, expected, tol, what, equal_nan=False):
    """actual (any dtype) against a float64 reference; equal_nan: NaN matches NaN (for inputs
    that contain NaN or infinities on purpose)."""
    torch.testing.assert_close(actual.to(torch.float64), expected, atol=tol[0], rtol=tol[1],
                               equal_nan=equal_nan, msg=lambda m: f"{what}: {m}")


def misaligned(t):
    """A contiguous copy of `t` that starts one element into its buffer, so that no row is
    16-byte aligned and the vector loops run their scalar prologue and tail."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    view = buf[1:].view(t.shape)
    view.copy_(t)
    return view
