"""Training a tiny PaddleFormers Llama on CPU: PaddleFormers' own loss against paddle_ops'.

The model is ``paddleformers.transformers.LlamaForCausalLM`` built from a config (nothing is
downloaded), float32, random weights from ``paddle.seed(0)``: vocabulary 32000, hidden 128,
intermediate 256, 2 layers, 4 attention heads and 4 key/value heads, tied word embeddings (the LM
head's weight is the embedding), ``fuse_rms_norm=False`` (the fused RMSNorm has no CPU kernel).
Each step trains on a new batch of 4 x 1024 tokens (4096 per step; shape ``4x1024x128x32000`` in
the CSV: batch x sequence x hidden x vocabulary), drawn with a fixed NumPy seed from a Zipf-like
distribution over the vocabulary (p(k) ~ 1 / k^1.1, so the loss has something to learn and falls),
``labels`` the inputs shifted by one token, and each sequence's tail (a random 0-25% of it)
padding: input id 0, label -100. AdamW, lr 1e-3, Paddle's other defaults. One step is the forward
with labels, ``loss.backward()``, ``optimizer.step()`` and ``optimizer.clear_grad()``.

Variants (the CSV's provider), each in a fresh process (a clean allocator) with the same seed,
weights and batches:

- ``unpatched``: PaddleFormers as installed: ``lm_head`` writes the [4096, 32000] logits and
  ``CriterionLayer`` runs ``paddle.nn.CrossEntropyLoss(reduction='none')`` on them.
- ``unpatched_threads``: the same with Paddle's CPU math (its matmuls) on as many threads as
  paddle_ops' kernels use (``paddle.base.core.set_num_threads(paddle_ops.get_num_threads())``;
  Paddle's default is ``FLAGS_paddle_num_threads=1``). paddle_ops runs the fused head's matmuls
  with its own thread count (``_runtime.matmul_threads``), so this row tells how much of
  ``apply``'s time comes from the threads and how much from the fusion.
- ``apply_threads``: ``apply`` with Paddle's CPU math on the same threads as in
  ``unpatched_threads`` (the whole model's matmuls, not only the head's).
- ``patch``: ``paddle_ops.patch()`` before the model is built, so that the criterion's
  ``CrossEntropyLoss`` is paddle_ops' (Paddle's numbers); the logits still exist.
- ``apply``: ``paddle_ops.integrations.paddleformers.apply(model)``: the training call hands the
  criterion the hidden states and the head's weight, and the loss is paddle_ops'
  ``linear_cross_entropy`` (chunked; the logits, their float32 copy and their gradient never
  exist; the call returns ``logits=None``, which the child checks).
- ``pf_fused_head``: PaddleFormers' own fused head and loss, config
  ``use_fused_head_and_loss_fn=True`` with ``loss_subbatch_sequence_length=512`` (the full run;
  32 in ``--quick``). Without the latter, or with a sequence not longer than it,
  ``sft_loss.sft_calculate_loss`` falls back to the whole logits (``calc_lm_head_logits``); with
  it, ``FusedHeadAndCrossEntropy`` loops over chunks of 512 tokens of the flattened batch (its
  forward and backward each hold a few [512, 32000] float32 temporaries at a time). The child
  counts, in ``sft_loss``, the calls of ``fused_head_and_loss_fn`` and of the fallback's
  ``calc_lm_head_logits``: the run fails unless the first ran once per step and the second never.

What is measured, per variant (in its own process):

- step time: ``time.perf_counter`` around each step (the step-0 gradient copy excluded); p50,
  p20 and p80 over the steps after ``--warmup`` (default 2) untimed ones: 18 of the 20 by default.
- peak_mb, the peak memory growth of a step: ``harness.PeakRSS`` around those same timed steps,
  i.e. the largest resident memory (VmRSS, the kernel's exact high-water mark VmHWM reset before
  the steps, plus a sampler every 50 ms) minus the resident memory just before the first timed
  step, after ``malloc_trim`` (and emptying paddle_ops' gradient cache). The baseline holds what
  lives between steps: the weights, AdamW's two moments, the zeroed gradients (``clear_grad``
  keeps them) and the batches; what a step adds on top (activations, logits, the loss's saved
  tensors and gradients, workspaces) is peak_mb. With ``--warmup 0`` AdamW's moments are
  allocated inside the measured steps and count too.
- the loss of every step (``--steps``, default 20) and, at step 0, the gradient of every
  parameter (after backward, before the optimizer step).

In the parent, against ``unpatched``: the largest relative loss difference over the steps
(max_i |l_i - ref_i| / |ref_i|, target <= 2e-6), the largest gradient difference at step 0 (max
over parameters of max|g - g_ref| / max|g_ref|, target <= 1e-4), the peak-growth ratio and the
step-time ratio (peak_mb and p50 over unpatched's; targets for ``apply``: <= 0.30 and <= 0.8). The
variants run one after the other, not interleaved, so the time ratios carry the machine's load of
each stretch: the load average before and after each variant is printed. If ``patch`` or
``apply`` miss the loss or gradient tolerance, the script exits with status 1 without writing
rows; the other targets are printed, not asserted. Otherwise it upserts one row per variant into
benchmarks/results.csv (op ``paddleformers_llama``, mode ``loop``, gbps empty).

    python benchmarks/bench_paddleformers.py            # about 13 minutes on 2 cores
    python benchmarks/bench_paddleformers.py --quick    # a tiny model: a smoke run (~15 s)

Threads are Paddle's and paddle_ops' defaults, except in ``unpatched_threads``. Needs paddleformers (tested with 1.2.0).
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time

import harness

harness.use_repository()

import numpy as np  # noqa: E402

OP = "paddleformers_llama"
REFERENCE = "unpatched"
VARIANTS = (REFERENCE, "unpatched_threads", "patch", "apply", "apply_threads", "pf_fused_head")
SEED = 0
LR = 1e-3
IGNORE = -100

# batch, seq, hidden, intermediate, layers, heads (= kv heads), vocab, PaddleFormers' subbatch
FULL = {"batch": 4, "seq": 1024, "hidden": 128, "intermediate": 256, "layers": 2, "heads": 4,
        "vocab": 32000, "subbatch": 512}
QUICK = {"batch": 2, "seq": 64, "hidden": 32, "intermediate": 64, "layers": 1, "heads": 4,
         "vocab": 1000, "subbatch": 32}

LOSS_TOL = 2e-6   # max relative loss difference over the steps
GRAD_TOL = 1e-4   # max over parameters of max|g - g_ref| / max|g_ref| at step 0
APPLY_PEAK_RATIO = 0.30
APPLY_TIME_RATIO = 0.8
# Variants whose loss and gradients are paddle_ops' contract: a miss fails the run.
CHECKED = ("patch", "apply", "apply_threads")


def shape_of(cfg):
    return (cfg["batch"], cfg["seq"], cfg["hidden"], cfg["vocab"])


def make_batches(cfg, steps):
    """[(input_ids, labels)] as int64 NumPy arrays, the same in every process."""
    rng = np.random.default_rng(SEED)
    b, s, v = cfg["batch"], cfg["seq"], cfg["vocab"]
    p = 1.0 / np.arange(1, v + 1) ** 1.1
    p /= p.sum()
    out = []
    for _ in range(steps):
        tokens = rng.choice(v, size=(b, s + 1), p=p).astype(np.int64)
        ids, labels = tokens[:, :-1].copy(), tokens[:, 1:].copy()
        for row in range(b):
            keep = s - int(rng.integers(0, s // 4 + 1))
            ids[row, keep:] = 0
            labels[row, keep:] = IGNORE
        out.append((ids, labels))
    return out


# ----------------------------------------------------------------------------------------------
# The child: one variant in this process


def run_variant(variant, cfg, steps, warmup, grads_path):
    import paddle
    from paddleformers.transformers import LlamaConfig, LlamaForCausalLM

    extra = {}
    if variant == "pf_fused_head":
        extra = {"use_fused_head_and_loss_fn": True,
                 "loss_subbatch_sequence_length": cfg["subbatch"]}
    if variant == "patch":
        import paddle_ops
        paddle_ops.patch()
    if variant.endswith("_threads"):
        import paddle_ops
        paddle.base.core.set_num_threads(paddle_ops.get_num_threads())
    config = LlamaConfig(vocab_size=cfg["vocab"], hidden_size=cfg["hidden"],
                         intermediate_size=cfg["intermediate"],
                         num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
                         num_key_value_heads=cfg["heads"], max_position_embeddings=cfg["seq"],
                         tie_word_embeddings=True, fuse_rms_norm=False, **extra)
    paddle.seed(SEED)
    model = LlamaForCausalLM(config)
    model.train()
    assert model.lm_head.weight is model.model.embed_tokens.weight, "word embeddings not tied"
    params = list(model.named_parameters())
    digest = hashlib.sha256()
    for _, p in params:
        digest.update(p.numpy().tobytes())

    fused_calls, fallback_calls = [0], [0]
    if variant in ("apply", "apply_threads"):
        from paddle_ops.integrations import paddleformers as po_pf
        po_pf.apply(model)
    elif variant == "pf_fused_head":
        # Count PaddleFormers' chunked head + loss calls: the proof that the fused path ran
        # rather than its fallback to the whole logits.
        import paddleformers.nn.criterion.sft_loss as sft

        def counted(function, counter):
            def call(*args, **kwargs):
                counter[0] += 1
                return function(*args, **kwargs)
            return call
        sft.fused_head_and_loss_fn = counted(sft.fused_head_and_loss_fn, fused_calls)
        sft.calc_lm_head_logits = counted(sft.calc_lm_head_logits, fallback_calls)

    optimizer = paddle.optimizer.AdamW(learning_rate=LR, parameters=model.parameters())
    batches = [(paddle.to_tensor(i), paddle.to_tensor(y)) for i, y in make_batches(cfg, steps)]

    losses, times, grads = [], [], {}
    logits_none = []
    meter = harness.PeakRSS(interval_s=0.05)
    rss_before_mb = float("nan")
    for i, (ids, labels) in enumerate(batches):
        if i == warmup:
            meter.__enter__()
            rss_before_mb = meter._base_kb / 1024.0 if meter._base_kb else float("nan")
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=labels)
        loss = out[0]
        loss.backward()
        t1 = time.perf_counter()
        logits_none.append(out[1] is None)
        losses.append(float(loss))
        if i == 0:
            grads = {name: (p.grad.numpy().copy() if p.grad is not None else None)
                     for name, p in params}
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.clear_grad()
        del out, loss
        times.append((t1 - t0 + time.perf_counter() - t2) * 1e3)
    if warmup < steps:
        meter.__exit__(None, None, None)
    if variant in ("apply", "apply_threads") and not all(logits_none):
        raise RuntimeError(f"{variant}: a training call returned logits (the fused path did not "
                           "run)")
    if variant == "pf_fused_head" and (fused_calls[0] != steps or fallback_calls[0]):
        raise RuntimeError(f"pf_fused_head: in {steps} steps fused_head_and_loss_fn ran "
                           f"{fused_calls[0]} times and the whole logits' calc_lm_head_logits "
                           f"{fallback_calls[0]} times")
    missing = [name for name, g in grads.items() if g is None]
    np.savez(grads_path, **{name: g for name, g in grads.items() if g is not None})
    timed = times[warmup:]
    return {"variant": variant, "losses": losses, "step_ms": times,
            "p50": float(np.median(timed)) if timed else float("nan"),
            "p20": float(np.percentile(timed, 20)) if timed else float("nan"),
            "p80": float(np.percentile(timed, 80)) if timed else float("nan"),
            "peak_mb": meter.peak_mb, "rss_before_mb": rss_before_mb,
            "weights_sha256": digest.hexdigest(), "missing_grads": missing,
            "fused_calls": fused_calls[0], "fallback_calls": fallback_calls[0],
            "logits_none": all(logits_none)}


# ----------------------------------------------------------------------------------------------
# The parent: every variant in a fresh process, then the comparison


def rel_loss_diff(losses, ref):
    a, b = np.asarray(losses, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def grad_diff(grads, ref):
    """max over parameters of max|g - g_ref| / max|g_ref|, and the parameter it comes from; a
    parameter with a reference gradient but none here counts as 1 (inf if the reference is 0)."""
    worst, where = 0.0, None
    for name in ref.files:
        g_ref = ref[name].astype(np.float64)
        scale = float(np.abs(g_ref).max())
        if name in grads.files:
            diff = float(np.abs(grads[name].astype(np.float64) - g_ref).max())
        else:
            diff = scale
        value = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
        if value > worst or where is None:
            worst, where = value, name
    extra = [n for n in grads.files if n not in ref.files]
    if extra:
        worst, where = float("inf"), extra[0]
    return worst, where


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _, variant, cfg_json, steps, warmup, grads_path = argv
        print(json.dumps(run_variant(variant, json.loads(cfg_json), int(steps), int(warmup),
                                     grads_path)))
        return 0

    parser = argparse.ArgumentParser(description="Training a tiny PaddleFormers Llama with "
                                     "PaddleFormers' loss and with paddle_ops', each in a fresh "
                                     "process.")
    parser.add_argument("--quick", "--smoke", dest="quick", action="store_true",
                        help="a tiny model (2 x 64 tokens, hidden 32, vocab 1000): a smoke run")
    parser.add_argument("--steps", type=int, default=None,
                        help="AdamW steps per variant, all compared (default 20, --quick 3)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="first steps left out of the time and peak (default 2)")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed steps: sets --steps to --warmup + REPS (if that is more)")
    parser.add_argument("--variants", type=harness.comma_list, default=list(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} "
                             f"({REFERENCE} always runs)")
    parser.add_argument("--csv", default=harness.RESULTS_CSV, help="results CSV to upsert into")
    parser.add_argument("--no-csv", action="store_true", help="write no rows")
    args = parser.parse_args(argv)
    harness.check_choices(parser, "variant", args.variants, VARIANTS)
    cfg = QUICK if args.quick else FULL
    steps = args.steps or (3 if args.quick else 20)
    if args.reps is not None:
        steps = max(steps, args.warmup + args.reps)
    if args.warmup >= steps:
        parser.error("--warmup must be less than --steps")
    variants = [REFERENCE] + [v for v in args.variants if v != REFERENCE]

    import paddle

    import paddle_ops
    device = harness.cpu_description()
    pf_version = importlib.metadata.version("paddleformers")
    ours = harness.git_version(paddle_ops.__version__, library=paddle_ops.LIBRARY_PATH)
    theirs = f"paddle {paddle.__version__} paddleformers {pf_version}"
    versions = {v: (f"{ours} {theirs}" if v in CHECKED else theirs) for v in variants}
    shape = shape_of(cfg)
    print(f"{OP}: device {device}; {ours}; {theirs}")
    print(f"  shape batch x seq x hidden x vocab {harness.shape_str(shape)}, "
          f"{cfg['layers']} layers, {steps} steps, {args.warmup} warm-up")

    results, loads = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants:
            path = os.path.join(tmp, f"{v}.npz")
            before = os.getloadavg()[0]
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", v,
                                   json.dumps(cfg), str(steps), str(args.warmup), path],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-5000:])
                raise SystemExit(f"variant {v} failed (status {proc.returncode})")
            results[v] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[v]["grads"] = np.load(path)
            loads[v] = (before, os.getloadavg()[0])
            r = results[v]
            print(f"  {v:<14} step p50 {r['p50']:9.1f} ms [{r['p20']:.1f}, {r['p80']:.1f}]  "
                  f"peak +{r['peak_mb']:7.1f} MB (RSS before {r['rss_before_mb']:.0f} MB)  "
                  f"loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}  "
                  f"({time.perf_counter() - t0:.0f} s, load {before:.2f} -> "
                  f"{loads[v][1]:.2f})", flush=True)

        ref = results[REFERENCE]
        table, failed = [], []
        for v in variants:
            r = results[v]
            if r["weights_sha256"] != ref["weights_sha256"]:
                raise SystemExit(f"variant {v} started from other weights than {REFERENCE}")
            loss_d = rel_loss_diff(r["losses"], ref["losses"])
            grad_d, grad_at = grad_diff(r["grads"], ref["grads"])
            peak_ratio = r["peak_mb"] / ref["peak_mb"] if ref["peak_mb"] > 0 else float("nan")
            time_ratio = r["p50"] / ref["p50"]
            table.append((v, r, loss_d, grad_d, grad_at, peak_ratio, time_ratio))
            if v in CHECKED and not (loss_d <= LOSS_TOL and grad_d <= GRAD_TOL):
                failed.append(v)

    logits_mb = cfg["batch"] * cfg["seq"] * cfg["vocab"] * 4 / 2**20
    print(f"\nDevice: {device}; [tokens, vocab] float32 logits: {logits_mb:.1f} MB")
    print("\n| variant | step p50 ms | p20-p80 ms | peak growth MB | peak ratio | time ratio "
          "| max rel loss diff | max grad diff (param) | load avg before/after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for v, r, loss_d, grad_d, grad_at, peak_ratio, time_ratio in table:
        print(f"| {v} | {r['p50']:.1f} | {r['p20']:.1f}-{r['p80']:.1f} | {r['peak_mb']:.1f} "
              f"| {peak_ratio:.3f} | {time_ratio:.3f} | {loss_d:.2e} | {grad_d:.2e} ({grad_at}) "
              f"| {loads[v][0]:.2f} / {loads[v][1]:.2f} |")
    print(f"\nRatios and differences are against {REFERENCE} in this run: peak growth and p50 "
          f"over {REFERENCE}'s; loss over {steps} steps, gradients at step 0.")

    by = {t[0]: t for t in table}
    targets = []
    for v in variants[1:]:
        targets.append((f"{v}: max relative loss difference over {steps} steps", by[v][2],
                        LOSS_TOL, "<="))
        targets.append((f"{v}: max over parameters of max|g - g_ref| / max|g_ref| at step 0",
                        by[v][3], GRAD_TOL, "<="))
    if "apply" in by:
        targets.append(("apply: peak growth / unpatched's", by["apply"][5], APPLY_PEAK_RATIO,
                        "<="))
        targets.append(("apply: step time p50 / unpatched's", by["apply"][6], APPLY_TIME_RATIO,
                        "<="))
    if "pf_fused_head" in by:
        r = results["pf_fused_head"]
        print(f"pf_fused_head: in {steps} steps PaddleFormers' chunked fused_head_and_loss_fn ran "
              f"{r['fused_calls']} times, the whole logits' calc_lm_head_logits "
              f"{r['fallback_calls']} times")
    if "apply" in by:
        print(f"apply: every training call returned logits=None: "
              f"{results['apply']['logits_none']}")
    met = sum(value <= bound for _, value, bound, _ in targets)
    print(f"\nTargets met: {met} of {len(targets)}\n")
    print("| target | measured | bound | met |")
    print("|---|---:|---:|---|")
    for text, value, bound, op in targets:
        print(f"| {text} | {value:.3g} | {op} {bound:g} | {'yes' if value <= bound else 'NO'} |")

    if failed:
        print(f"\n{', '.join(failed)} disagree with {REFERENCE} beyond the tolerances "
              f"(loss {LOSS_TOL:g}, gradient {GRAD_TOL:g}): no rows written.")
        return 1
    if args.no_csv:
        return 0
    rows = [harness.result_row(OP, v, "loop", "float32", shape,
                               {"p50": r["p50"], "p20": r["p20"], "p80": r["p80"]}, None,
                               r["peak_mb"], device, versions[v])
            for v, r, *_ in table]
    harness.upsert(args.csv, rows)
    print(f"\nUpserted {len(rows)} rows into {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
