"""The GPU harness (csrc/harness/gpu_harness.cc) without a GPU: `make check-harness` builds it
and runs this script, which imports it and calls only what launches nothing (module attributes,
argument checks, workspace sizes, empty problems). What the kernels compute is tests/gpu's, on a
GPU. Needs no PyTorch; the harness module must be on sys.path."""

import sys

import paddle_ops_gpu_harness as h

LAUNCHERS = ("softmax_ce_fwd", "softmax_ce_bwd", "softmax_ce_fwd_stats", "softmax_ce_shard_fwd",
             "softmax_ce_shard_bwd", "kl_logits_fwd", "kl_logits_bwd", "kl_div_fwd", "kl_div_bwd",
             "binary_fwd", "binary_bwd", "gaussian_kl_fwd", "gaussian_kl_bwd", "softmax_fwd",
             "softmax_bwd")


def raises(fn, *args, match):
    try:
        fn(*args)
    except ValueError as e:
        assert match in str(e), f"{fn.__name__}: {e!r} does not say {match!r}"
        return
    raise AssertionError(f"{fn.__name__}{args} did not raise ValueError")


def main():
    missing = [name for name in LAUNCHERS if not hasattr(h, name)]
    assert not missing, f"harness lacks {missing}"
    # The per-row statistics of the KL family: kKLStats in csrc/kernels/kl.h.
    assert h.KL_STATS == 6, h.KL_STATS
    raises(h.binary_fwd_workspace, "int8", 1, 1, match="unsupported floating dtype: int8")
    raises(h.kl_logits_fwd, "float32", "int64", 1, 10, 1, 9, 1.0, 0.5, -100, 0, 0, 0, 0, 0, 0,
           match="unknown KL mode 9")
    raises(h.binary_fwd, "float32", 1, 1, 7, 0, 0, 0.25, 2.0, 0, 0, 0, 0, 0, 0, 0, 0,
           match="unknown binary loss 7")
    raises(h.softmax_ce_shard_fwd, "float32", "int64", 2, 8, -100, 0.0, 4, 10, 0, 0, 0, 0, 0, 0,
           match="does not fit in 10 classes")
    # Most shapes need no row-sum workspace; a single long row does.
    assert h.binary_fwd_workspace("float32", 64, 100) == 0
    assert h.binary_fwd_workspace("float32", 1, 100003) > 0
    assert h.gaussian_kl_fwd_workspace("bfloat16", 8, 70001) > 0
    # Empty problems return cudaSuccess before touching the device.
    assert h.softmax_ce_fwd("float32", "int64", 0, 10, 1, -100, 0.0, 0.0, True,
                            0, 0, 0, 0, 0, 0, 0) == 0
    assert h.kl_logits_fwd("bfloat16", "int32", 0, 10, 1, 0, 1.0, 0.5, -100,
                           0, 0, 0, 0, 0, 0) == 0
    assert h.kl_div_fwd("float64", 0, 5, False, 0, 0, 0, 0, 0) == 0
    print(f"check-harness: {h.__file__} imports; {len(LAUNCHERS)} launchers, argument checks and "
          "empty launches behave")
    return 0


if __name__ == "__main__":
    sys.exit(main())
