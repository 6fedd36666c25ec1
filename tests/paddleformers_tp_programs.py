"""Run by tests/test_paddleformers.py under `python -m paddle.distributed.launch --nproc_per_node 2`
(gloo on CPU, fleet's model-parallel group of 2): a tiny PaddleFormers Llama with
tensor_model_parallel_size=2 (vocabulary-parallel embedding and LM head, column/row-parallel
layers), trained one step three ways on the same weights and batch:

- `reference`: the model's final hidden states and the whole LM head weight (both ranks' shards
  gathered), then unpatched Paddle: matmul, paddle.nn.functional.cross_entropy per token, the
  criterion's mean over labels != -100;
- `patched`: the model under paddle_ops.patch() (PaddleFormers' criterion calls fleet's
  ParallelCrossEntropy, whose forward patch() replaces: Paddle 3.3.1 has no CPU kernel for it);
- `applied`: paddle_ops.integrations.paddleformers.apply(model): the vocabulary-parallel fused
  linear cross-entropy on this rank's shard, no logits;
- `applied_eval`: the applied model in eval(): logits as before, the criterion's fleet
  ParallelCrossEntropy computed by paddle_ops for the call (no patch(); fleet's own has no
  CPU kernel).

The patched and applied losses are compared with the reference, the LM head's gradient shard with
the reference's rows, and every parameter's gradient of the applied run with the patched run's.
Each rank writes rank<r>.json ({check: [problems]}, an empty list is a pass) into the directory
given as the only argument; nothing is asserted here, so that no rank is left waiting.

Gloo has no all_reduce "on the calc stream", which fleet's tensor-parallel layers call; the same
collectives (forward all-reduce with identity backward, and the reverse) are substituted through
paddle.distributed.all_reduce before the model is built.
"""

import json
import os
import sys
import traceback
import warnings

warnings.simplefilter("ignore")

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
from paddle.autograd import PyLayer  # noqa: E402
from paddle.distributed import fleet  # noqa: E402

paddle.set_device("cpu")

VOCAB, HIDDEN = 512, 64
LOSS_RTOL, GRAD_TOL = 2e-6, 1e-4


class _SumForward(PyLayer):
    """All-reduce (sum) forward, identity backward: fleet's mp_allreduce."""

    @staticmethod
    def forward(ctx, x, group):
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, dy):
        return dy


class _SumBackward(PyLayer):
    """Identity forward, all-reduce (sum) backward: fleet's c_identity."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.clone()

    @staticmethod
    def backward(ctx, dy):
        out = dy.clone()
        dist.all_reduce(out, group=ctx.group)
        return out


def _use_gloo_collectives():
    from paddle.distributed import collective
    from paddle.distributed.fleet.layers.mpu import mp_ops

    def mp_allreduce(tensor, op=None, group=None, use_calc_stream=True, use_model_parallel=True,
                     skip_c_identity_dynamic=False):
        return _SumForward.apply(tensor, group)

    def c_identity(tensor, group=None, skip_c_identity_dynamic=False):
        return _SumBackward.apply(tensor, group)

    mp_ops._mp_allreduce = mp_allreduce
    mp_ops._c_identity = c_identity
    collective._c_identity = c_identity


def compare(name, got, want, rtol=None, scale_tol=None):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return [f"{name}: shape {got.shape} != {want.shape}"]
    if rtol is not None:
        err = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-30)))
        limit = rtol
    else:
        err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
        limit = scale_tol
    return [] if err <= limit else [f"{name}: error {err:.3e} > {limit:.0e}"]


def build(config_cls, model_cls, rank):
    config = config_cls(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                        tie_word_embeddings=False, fuse_rms_norm=False,
                        tensor_model_parallel_size=2, tensor_parallel_output=True)
    paddle.seed(0)
    model = model_cls(config)
    # The shards differ per rank (each draws its own): make the head's shard depend on the rank
    # explicitly so that the gathered reference weight is not two equal halves by accident.
    head = model.lm_head.weight
    rng = np.random.default_rng(10 + rank)
    head.set_value(paddle.to_tensor(rng.normal(0, 0.3, head.shape).astype("float32")))
    model.train()
    return model


def grads_of(model):
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


def main(out_dir):
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": 2, "pp_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    _use_gloo_collectives()
    rank = dist.get_rank()
    results = {}

    import paddle_ops
    from paddle_ops.integrations import paddleformers as po_pf
    from paddleformers.transformers import LlamaConfig, LlamaForCausalLM

    rng = np.random.default_rng(3)
    ids = paddle.to_tensor(rng.integers(0, VOCAB, (2, 24)))
    labels_np = np.roll(ids.numpy(), -1, axis=1)
    labels_np[:, :4] = -100
    labels = paddle.to_tensor(labels_np)
    model = build(LlamaConfig, LlamaForCausalLM, rank)
    group = fleet.get_hybrid_communicate_group().get_model_parallel_group()

    try:
        # Reference: unpatched Paddle on the gathered head.
        with paddle.no_grad():
            hidden = model.model(ids, return_dict=True).last_hidden_state
        shards = []
        dist.all_gather(shards, model.lm_head.weight.detach(), group=group)
        weight = paddle.concat(shards)
        weight.stop_gradient = False
        logits = paddle.matmul(hidden, weight, transpose_y=True)
        token = paddle.nn.functional.cross_entropy(logits, labels.unsqueeze(-1),
                                                   reduction="none").reshape([-1])
        mask = (labels.reshape([-1]) != -100).astype("float32")
        ref_loss = (token * mask).sum() / mask.sum()
        ref_loss.backward()
        rows = VOCAB // 2
        ref_head = weight.grad.numpy()[rank * rows:(rank + 1) * rows]
        ref_loss = float(ref_loss)
    except Exception:  # noqa: BLE001
        results["reference"] = [traceback.format_exc()]
        ref_loss = ref_head = None

    runs = {}
    for variant in ("patched", "applied"):
        try:
            model.clear_gradients()
            if variant == "patched":
                with paddle_ops.patched():
                    output = model(ids, labels=labels)
            else:
                calls = []
                original = po_pf._fused_criterion

                def counting(*args, **kwargs):
                    calls.append(1)
                    return original(*args, **kwargs)

                po_pf._fused_criterion = counting
                po_pf.apply(model)
                try:
                    output = model(ids, labels=labels)
                finally:
                    po_pf._fused_criterion = original
                    po_pf.revert(model)
            loss = output[0]
            loss.backward()
            runs[variant] = (float(loss), grads_of(model))
            problems = []
            if variant == "applied":
                if not calls:
                    problems.append("the fused loss did not run")
                if output[1] is not None:
                    problems.append("a fused training call returned logits")
            if ref_loss is not None:
                problems += compare(f"{variant} loss", float(loss), ref_loss, rtol=LOSS_RTOL)
                problems += compare(f"{variant} lm_head gradient shard",
                                    runs[variant][1]["lm_head.weight"], ref_head,
                                    scale_tol=GRAD_TOL)
            results[variant] = problems
        except Exception:  # noqa: BLE001
            results[variant] = [traceback.format_exc()]

    # Evaluation keeps the logits shard: the criterion's fleet ParallelCrossEntropy then runs on
    # paddle_ops for the length of the call (apply's cross_entropy=True), without patch().
    try:
        model.eval()
        po_pf.apply(model)
        with paddle.no_grad():
            output = model(ids, labels=labels)
        po_pf.revert(model)
        model.train()
        problems = [] if not paddle_ops.is_patched() else ["patch() left in effect"]
        if output[1] is None or output[1].shape[-1] != VOCAB // 2:
            problems.append("evaluation did not return this rank's logits shard")
        if ref_loss is not None:
            problems += compare("applied_eval loss", float(output[0]), ref_loss, rtol=LOSS_RTOL)
        results["applied_eval"] = problems
    except Exception:  # noqa: BLE001
        results["applied_eval"] = [traceback.format_exc()]

    try:
        problems = []
        if "patched" in runs and "applied" in runs:
            patched, applied = runs["patched"][1], runs["applied"][1]
            if sorted(patched) != sorted(applied):
                problems.append(f"gradients of {sorted(set(patched) ^ set(applied))} missing")
            for name in sorted(set(patched) & set(applied)):
                problems += compare(f"gradient of {name}", applied[name], patched[name],
                                    scale_tol=GRAD_TOL)
        else:
            problems.append("a run failed")
        results["applied_gradients_match_patched"] = problems
    except Exception:  # noqa: BLE001
        results["applied_gradients_match_patched"] = [traceback.format_exc()]

    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world_size": dist.get_world_size(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
