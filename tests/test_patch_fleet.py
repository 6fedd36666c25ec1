"""paddle_ops.patch() and fleet's ParallelCrossEntropy, in one process (the two-process runs, with
fleet's model-parallel group, are in tests/parallel_ce_programs.py).

fleet.init is not called here: in one process it makes a model-parallel group of one, for which
fleet's layer returns None. The layers get that group (Group(0, 0, [0])) or, to compute, a
model_parallel_group of None, which fleet reads as every process (here: this one alone). Static
programs and paddle.jit.to_static run in a subprocess.
"""

import functools
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import paddle
import pytest
from paddle.distributed.collective import Group
from paddle.distributed.fleet import meta_parallel
from paddle.distributed.fleet.layers import mpu
from paddle.distributed.fleet.layers.mpu import mp_layers

import paddle_ops
from paddle_ops import _patch
from reference import TOLERANCES, as64, leaf, rounded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLEET_CLASS = meta_parallel.ParallelCrossEntropy
ORIGINAL_FORWARD = FLEET_CLASS.__dict__["forward"]
# One rounding of a loss in the logits' dtype (bf16 keeps 8 significant bits, fp16 11).
LOSS_TOL = {"f64": (1e-12, 1e-10), "f32": (2e-6, 2e-6), "f16": (1e-6, 2 ** -10),
            "bf16": (1e-6, 2 ** -8)}
NO_CPU_KERNEL = "Do not support c_softmax_with_cross_entropy for cpu kernel"


@pytest.fixture(autouse=True)
def clean():
    _patch._WARNED.clear()
    yield
    paddle_ops.unpatch()


def fleet_layer(group="world", ignore_index=-100):
    """fleet's layer over a group of one (group="one", fleet returns None there) or over every
    process (group="world": model_parallel_group None, this process alone)."""
    layer = FLEET_CLASS(mp_group=Group(0, 0, [0]), ignore_index=ignore_index)
    if group == "world":
        layer.model_parallel_group = None
    return layer


def paddle_messages(caught):
    return [str(w.message) for w in caught if "paddle_ops.patch()" in str(w.message)]


def test_one_class_under_every_name():
    assert meta_parallel.ParallelCrossEntropy is mpu.ParallelCrossEntropy
    assert mpu.ParallelCrossEntropy is mp_layers.ParallelCrossEntropy
    assert _patch._FLEET_PCE_CLASSES == [FLEET_CLASS]


def test_patch_swaps_and_unpatch_restores_the_forward():
    existing = fleet_layer()
    paddle_ops.patch()
    patched = FLEET_CLASS.__dict__["forward"]
    assert patched is not ORIGINAL_FORWARD
    assert mpu.ParallelCrossEntropy.forward is patched
    assert existing.forward.__func__ is patched
    paddle_ops.unpatch()
    assert FLEET_CLASS.__dict__["forward"] is ORIGINAL_FORWARD
    assert existing.forward.__func__ is ORIGINAL_FORWARD
    with paddle_ops.patched():
        assert FLEET_CLASS.__dict__["forward"] is not ORIGINAL_FORWARD
    assert FLEET_CLASS.__dict__["forward"] is ORIGINAL_FORWARD


def test_docstring_lists_what_is_replaced():
    paddle_ops.patch()
    doc = " ".join(_patch.__doc__.split())
    for owner, attribute in _patch._ORIGINALS:
        what = owner.__name__ if isinstance(owner, type) else attribute
        assert what in doc, what
    for path in ("paddle.distributed.fleet.meta_parallel.ParallelCrossEntropy",
                 "fleet.layers.mpu.", "mpu.mp_layers."):
        assert path in doc
    assert (FLEET_CLASS, "forward") in _patch._ORIGINALS


def test_unpatched_fleet_has_no_cpu_kernel():
    """Why the patch matters on CPU (a fact about Paddle 3.3.1)."""
    with pytest.raises(RuntimeError, match=NO_CPU_KERNEL):
        fleet_layer()(paddle.randn([3, 5]), paddle.to_tensor([0, 1, 2]))


CASES = {
    # id: (dtype id, input shape, label with a trailing 1, ignore_index)
    "f32_label_rows": ("f32", (7, 11), False, -100),
    "f32_label_rows_1": ("f32", (7, 11), True, -100),
    "f32_3d": ("f32", (2, 5, 9), False, -100),
    "f32_ignore_index_3": ("f32", (7, 11), False, 3),
    "f64_label_rows_1": ("f64", (6, 13), True, -100),
    "bf16_label_rows": ("bf16", (7, 40), False, -100),
    "f16_label_rows_1": ("f16", (7, 40), True, -100),
}


@pytest.mark.parametrize("case", list(CASES))
def test_patched_layer_gives_paddles_cross_entropy(case):
    dtype_id, shape, label_1, ignore_index = CASES[case]
    dtype, _, bwd_tol = TOLERANCES[dtype_id]
    rng = np.random.default_rng(len(case))
    x = rounded(rng.normal(0, 3, shape), dtype)
    y = rng.integers(0, shape[-1], shape[:-1])
    y.reshape(-1)[::3] = ignore_index
    g = rounded(rng.uniform(-2, 2, shape[:-1] + (1,)), dtype)
    # Paddle's own cross_entropy (unpatched; 16-bit values in float32: Paddle has no 16-bit CPU
    # kernel) with a [..., 1] label: loss [..., 1].
    whole = leaf(x, "float64" if dtype == "float64" else "float32")
    ref = paddle.nn.functional.cross_entropy(whole, paddle.to_tensor(y[..., None]),
                                             ignore_index=ignore_index, reduction="none")
    paddle.autograd.backward([ref], [paddle.to_tensor(g, dtype=ref.dtype)])
    assert list(ref.shape) == list(shape[:-1]) + [1]

    layer = fleet_layer(ignore_index=ignore_index)
    with paddle_ops.patched(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        local = leaf(x, dtype)
        loss = layer(local, paddle.to_tensor(y[..., None] if label_1 else y))
    assert paddle_messages(caught) == []
    assert loss.dtype == local.dtype
    assert list(loss.shape) == list(ref.shape)
    paddle.autograd.backward([loss], [paddle.to_tensor(g, dtype=loss.dtype)])
    got = as64(loss)
    assert np.all(got[y == ignore_index] == 0)
    np.testing.assert_allclose(got, as64(ref), atol=LOSS_TOL[dtype_id][0],
                               rtol=LOSS_TOL[dtype_id][1])
    assert local.grad.dtype == local.dtype
    np.testing.assert_allclose(as64(local.grad), as64(whole.grad), atol=bwd_tol[0],
                               rtol=bwd_tol[1])


def test_keyword_arguments_are_fleets():
    x, y = paddle.randn([4, 6]), paddle.to_tensor([0, 5, -100, 2])
    with paddle_ops.patched(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        by_name = fleet_layer()(label=y, input=x)
        positional = fleet_layer()(x, y)
    assert paddle_messages(caught) == []
    np.testing.assert_array_equal(by_name.numpy(), positional.numpy())


@pytest.mark.parametrize("group", [Group(0, 0, [0]), Group(-1, 3, [0, 1])],
                         ids=["group_of_one", "not_a_member"])
def test_non_member_gets_none_as_in_fleet(group):
    layer = fleet_layer()
    layer.model_parallel_group = group
    x, y = paddle.randn([3, 4]), paddle.to_tensor([0, 1, 2])
    assert layer(x, y) is None          # fleet's own (unpatched): None, no kernel reached
    with paddle_ops.patched():
        assert layer(x, y) is None


@pytest.fixture
def fleet_spy(monkeypatch):
    """fleet's forward as the fallback target replaced by a spy that records its calls and
    returns "fleet" (fleet's own has no CPU kernel); in effect for patch() calls made after."""
    calls = []

    @functools.wraps(ORIGINAL_FORWARD)         # fleet's signature, which the patch binds to
    def spy(self, *args, **kwargs):
        calls.append((args, kwargs))
        return "fleet"

    monkeypatch.setitem(_patch._FLEET_FORWARDS, FLEET_CLASS, spy)
    return calls


def test_rejected_call_falls_back_once_with_a_warning(fleet_spy):
    x = paddle.randn([4, 6])
    bad_label = paddle.zeros([4, 2], "int64")      # fleet's check accepts [rows, k <= classes]
    with paddle_ops.patched(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [fleet_layer()(x, bad_label) for _ in range(2)]
    assert got == ["fleet", "fleet"] and len(fleet_spy) == 2
    messages = paddle_messages(caught)
    assert len(messages) == 1, messages
    assert "ParallelCrossEntropy.forward falls back" in messages[0]
    assert "paddle_ops rejected the call (ValueError: label shape [4, 2]" in messages[0]


def test_rejected_call_raises_fleets_error_where_fleet_fails_too():
    with paddle_ops.patched(), pytest.raises(ValueError, match=r"Input\(Label\) should be 1"):
        fleet_layer()(paddle.randn([4, 6]), paddle.zeros([4, 2], "int64"))
    with paddle_ops.patched(), pytest.raises(RuntimeError, match=NO_CPU_KERNEL):
        fleet_layer()(paddle.randn([4, 6]), paddle.zeros([4], "float32"))


def test_extra_arguments_fall_back(fleet_spy):
    x, y = paddle.randn([4, 6]), paddle.to_tensor([0, 1, 2, 3])
    with paddle_ops.patched(), pytest.warns(UserWarning, match="does not take"):
        assert fleet_layer()(x, y, 7) == "fleet"
    assert fleet_spy == [((x, y, 7), {})]


def test_extra_arguments_raise_fleets_error():
    x, y = paddle.randn([4, 6]), paddle.to_tensor([0, 1, 2, 3])
    with paddle_ops.patched(), pytest.warns(UserWarning, match="does not take"):
        with pytest.raises(TypeError, match="positional argument"):
            fleet_layer()(x, y, 7)


def test_device_without_kernel_falls_back(fleet_spy, monkeypatch):
    monkeypatch.setattr(_patch, "_device_reason", lambda x: "tensors on a test device")
    with paddle_ops.patched(), pytest.warns(UserWarning, match="tensors on a test device"):
        assert fleet_layer()(paddle.randn([4, 6]), paddle.to_tensor([0, 1, 2, 3])) == "fleet"
    assert len(fleet_spy) == 1


@pytest.mark.parametrize("black_listed", [True, False], ids=["black_list", "not_listed"])
def test_amp_black_list_keeps_fleets_float32_loss(monkeypatch, black_listed):
    """Where AMP is active (GPUs; on CPU Paddle leaves it off, hence the simulated state), fleet's
    op is on its black list by default: the loss of 16-bit logits is float32."""
    tracer = paddle.base.framework._dygraph_tracer()
    white, black = tracer._get_amp_op_list()
    monkeypatch.setattr(paddle, "is_autocast_enabled", lambda *a: True)
    tracer._set_amp_op_list(set(), {"c_softmax_with_cross_entropy"} if black_listed else set())
    try:
        with paddle_ops.patched():
            loss = fleet_layer()(paddle.randn([4, 6]).astype("bfloat16"),
                                 paddle.to_tensor([0, 1, 2, 3]))
    finally:
        tracer._set_amp_op_list(white, black)
    assert loss.dtype == (paddle.float32 if black_listed else paddle.bfloat16)


# Static programs (PIR and the old IR) and paddle.jit.to_static (both modes), each patched and
# unpatched: a subprocess, as a wrong static-graph op can abort the whole process.
_STATIC_PROGRAM = r"""
import json, sys, warnings
warnings.filterwarnings("ignore", message="No ccache")
import numpy as np
import paddle
import paddle_ops
from paddle.distributed.collective import Group
from paddle.distributed.fleet import meta_parallel

def layer():
    out = meta_parallel.ParallelCrossEntropy(mp_group=Group(0, 0, [0]))
    out.model_parallel_group = None      # every process: this one
    return out

def outcome(run):
    paddle_ops._patch._WARNED.clear()           # each run's own warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = run()
        except Exception as e:
            result = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    return dict(result=result, warnings=[str(w.message) for w in caught
                                         if "paddle_ops.patch()" in str(w.message)])

def static_program():
    main, startup = paddle.static.Program(), paddle.static.Program()
    paddle.enable_static()
    try:
        with paddle.static.program_guard(main, startup):
            x = paddle.static.data("x", [-1, 6], "float32")
            y = paddle.static.data("y", [-1], "int64")
            layer()(x, y)
    finally:
        paddle.disable_static()
    return sorted({op.type if hasattr(op, "type") else op.name()
                   for op in main.global_block().ops})

def old_ir_program():
    with paddle.pir_utils.OldIrGuard():
        return static_program()

class Model(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.head = paddle.nn.Linear(6, 6)
        self.loss = layer()
    def forward(self, x, y):
        return self.loss(self.head(x), y)

def to_static(full_graph):
    paddle.seed(0)
    model = Model()
    x = paddle.to_tensor(np.random.default_rng(0).normal(size=(4, 6)).astype("float32"))
    y = paddle.to_tensor([[0], [5], [-100], [2]])
    paddle_cross_entropy = paddle_ops._patch._PADDLE["cross_entropy"]    # Paddle's, unpatched
    want = paddle_cross_entropy(model.head(x), y, reduction="none")
    loss = paddle.jit.to_static(model, full_graph=full_graph)(x, y)
    loss.sum().backward()
    return dict(loss=loss.numpy().tolist(), want=want.numpy().tolist(),
                head_grad=model.head.weight.grad is not None)

runs = dict(pir=static_program, old_ir=old_ir_program, sot=lambda: to_static(False),
            ast=lambda: to_static(True))
out = {}
for name, run in runs.items():
    # Patched first: to_static caches its translations, and the patched run is the one that must
    # not see a translation made for another forward.
    with paddle_ops.patched():
        out["patched_" + name] = outcome(run)
    out["unpatched_" + name] = outcome(run)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def static_outcomes(tmp_path_factory):
    # From a file: to_static(full_graph=True) converts the model's forward from its source.
    program = tmp_path_factory.mktemp("patch_fleet") / "static_program.py"
    program.write_text(_STATIC_PROGRAM)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(program)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


STATIC_WARNING = "static mode (paddle_ops.distributed.parallel_cross_entropy runs in dygraph"


@pytest.mark.parametrize("mode", ["pir", "old_ir", "ast"])
def test_static_mode_falls_back_to_fleet_with_a_warning(static_outcomes, mode):
    """Static programs and to_static(full_graph=True) get fleet's forward: under the old IR it
    puts fleet's op in the program; under PIR fleet's static path itself raises TypeError in
    Paddle 3.3.1, patched or not."""
    patched, unpatched = static_outcomes["patched_" + mode], static_outcomes["unpatched_" + mode]
    assert unpatched["warnings"] == []
    assert len(patched["warnings"]) == 1, patched["warnings"]
    assert "ParallelCrossEntropy.forward falls back" in patched["warnings"][0]
    assert STATIC_WARNING in patched["warnings"][0]
    assert patched["result"] == unpatched["result"]
    if mode == "old_ir":
        assert "c_softmax_with_cross_entropy" in patched["result"]
    else:
        assert "TypeError" in str(patched["result"])


def test_to_static_default_mode_computes_in_dygraph(static_outcomes):
    """to_static's default (SOT) mode tries a graph (fleet's static path, which fails), then runs
    the layer in dygraph: unpatched fleet's CPU error, patched paddle_ops' result."""
    assert NO_CPU_KERNEL in static_outcomes["unpatched_sot"]["result"]
    got = static_outcomes["patched_sot"]["result"]
    assert isinstance(got, dict), got
    assert got["head_grad"]
    np.testing.assert_allclose(got["loss"], got["want"], rtol=1e-5, atol=1e-6)
