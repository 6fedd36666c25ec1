"""The paddle_ops demo: one LM-sized cross-entropy, forward and backward, with paddle_ops and with
Paddle's built-in; prints the difference and the times.

    python -m paddle_ops.demo [--tokens 2048] [--vocab 32000]
"""

import argparse
import time

import numpy as np
import paddle

import paddle_ops.nn.functional as POF


def _timed(fn, reps):
    fn()  # warm-up: first-call set-up is not what a training step costs
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, 1e3 * float(np.median(times))


def _loss_and_grad(loss_fn, logits_np, labels, dtype, reps):
    """Median ms of forward+backward on a prepared leaf tensor (its creation is not timed), and
    the loss and gradient of the last repetition."""
    x = paddle.to_tensor(logits_np).astype(dtype)
    x.stop_gradient = False

    def step():
        x.clear_gradient(set_to_zero=False)
        loss = loss_fn(x, labels)
        loss.backward()
        return loss

    loss, ms = _timed(step, reps)
    return float(loss), x.grad.astype("float32").numpy(), ms


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    paddle.set_device("cpu")

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (args.tokens, args.vocab)).astype("float32")
    label_np = rng.integers(0, args.vocab, args.tokens)
    label_np[: args.tokens // 10] = -100  # padding positions
    labels = paddle.to_tensor(label_np)
    print(f"cross-entropy over [{args.tokens}, {args.vocab}] logits, "
          f"{(label_np == -100).sum()} padding positions (ignore_index=-100)\n")

    ours, g_ours, t_ours = _loss_and_grad(POF.cross_entropy, logits, labels, "float32",
                                          args.reps)
    theirs, g_theirs, t_theirs = _loss_and_grad(paddle.nn.functional.cross_entropy, logits,
                                                labels, "float32", args.reps)
    valid = (label_np != -100).sum()
    # Paddle's mean divides by every position, padding included (Paddle issue 48663); rescale it
    # to the mean over real tokens before comparing.
    theirs_fixed = theirs * args.tokens / valid
    print(f"{'':28}{'loss':>12}{'fwd+bwd ms':>14}")
    print(f"{'paddle_ops fp32':28}{ours:12.6f}{t_ours:14.1f}")
    print(f"{'paddle built-in fp32':28}{theirs:12.6f}{t_theirs:14.1f}   <- mean over all positions")
    print(f"{'  rescaled to real tokens':28}{theirs_fixed:12.6f}")
    grad_diff = np.abs(g_ours - g_theirs * args.tokens / valid).max()
    print(f"\n|loss difference| = {abs(ours - theirs_fixed):.2e}, "
          f"max |gradient difference| = {grad_diff:.2e}")
    print(f"speed-up (fwd+bwd): {t_theirs / t_ours:.1f}x")

    bf16_loss, _, t_bf16 = _loss_and_grad(POF.cross_entropy, logits, labels, "bfloat16",
                                          args.reps)
    print(f"\nbf16 logits (Paddle has no CPU kernel): loss {bf16_loss:.6f} (fp32 accumulation), "
          f"fwd+bwd {t_bf16:.1f} ms")


if __name__ == "__main__":
    main()
