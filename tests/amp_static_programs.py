"""Builds static (PIR) programs that call paddle_ops' cross_entropy inside paddle.amp.auto_cast
and prints, as one JSON line, which dtype each op of each program receives. Run by test_amp.py
in a subprocess: static mode runs InferShape/InferDtype, and a wrong one aborts the process.

Each program computes logits = x @ w in float32 outside the AMP region and casts them to the
case's logits dtype (float32, or the AMP dtype as an earlier 16-bit op would leave them); inside
auto_cast it runs a probe matmul (a built-in on Paddle's AMP white list) and the cross_entropy op.
A case is (custom list, AMP level, AMP dtype, logits dtype). The probe shows whether the AMP pass
ran at all; the custom op's operand shows what the pass does to paddle_ops. With dtype='float16'
the pass casts the probe's inputs to float16 and the CPU matmul, which has no float16 kernel,
rejects them while the program is built, so float16 cases run without the probe (and the probe's
TypeError is recorded once).
"""

import json
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import paddle  # noqa: E402

import paddle_ops.nn.functional as POF  # noqa: E402

OP = "paddle_ops_softmax_ce"
CASES = [(lists, level, amp_dtype, fed)
         for lists in ("unlisted", "white", "black")
         for level in ("O1", "O2")
         for amp_dtype in ("float16", "bfloat16")
         for fed in ("float32", "amp")]


def operand_dtypes(op):
    """dtypes of an op's operands; an absent optional input (a null value) has none."""
    out = []
    for value in op.operands_source():
        try:
            out.append(str(value.dtype).replace("paddle.", ""))
        except Exception:
            out.append(None)
    return out


def run_case(lists, level, amp_dtype, fed, probe=True):
    """The case's record. With the probe, the program is inspected with it and executed without
    it: Paddle's bfloat16 CPU matmul raises when run on a host without AVX-512 (the dtypes the
    pass chose are what this test reads; the probe's value is not used)."""
    record, _ = build_case(lists, level, amp_dtype, fed, probe)
    _, (main, loss, feed) = build_case(lists, level, amp_dtype, fed, False)
    value = paddle.static.Executor(paddle.CPUPlace()).run(main, feed=feed, fetch_list=[loss])[0]
    record.update(loss_dtype=str(value.dtype), loss=float(value))
    return record


def build_case(lists, level, amp_dtype, fed, probe):
    logits_dtype = amp_dtype if fed == "amp" else fed
    kwargs = {}
    if lists == "white":
        kwargs["custom_white_list"] = [OP]
    elif lists == "black":
        kwargs["custom_black_list"] = [OP]
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        x = paddle.static.data("x", [4, 3], "float32")
        w = paddle.static.data("w", [3, 5], "float32")
        y = paddle.static.data("y", [4], "int64")
        logits = paddle.matmul(x, w).astype(logits_dtype)
        with paddle.amp.auto_cast(level=level, dtype=amp_dtype, **kwargs):
            if probe:
                paddle.matmul(x, w)
            loss = POF.cross_entropy(logits, y)
    # The probe matmul is the last matmul of the program, so it wins in this dict.
    ops = {op.name(): operand_dtypes(op) for op in main.global_block().ops
           if op.name() in ("pd_op.matmul", "custom_op." + OP)}
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(4, 3)).astype("float32"),
            "w": rng.normal(size=(3, 5)).astype("float32"), "y": np.arange(4, dtype="int64")}
    record = {"case": [lists, level, amp_dtype, logits_dtype],
              "matmul": ops["pd_op.matmul"][0] if probe else None,
              "custom": ops["custom_op." + OP][0]}
    return record, (main, loss, feed)


if __name__ == "__main__":
    paddle.enable_static()
    results = [run_case(*case, probe=case[2] == "bfloat16") for case in CASES]
    try:
        run_case("unlisted", "O1", "float16", "float32")
        fp16_probe = "built"
    except TypeError as error:
        fp16_probe = str(error).splitlines()[0]
    print(json.dumps({"cases": results, "fp16_probe": fp16_probe}))
