"""The layout converters of ``xfbench/backends/common.py``, on random tasks with non-square shapes (square shapes
and symmetric data hide a wrong flatten order or a transposed kernel)."""

from __future__ import annotations

import numpy as np
import pytest

from xfbench.backends import common
from xfbench.backends.base import Backend
from xfbench.tasks import SGD, Conv2D, Dataset, Dense, Flatten, MaxPool2D, Task, initial_weights
from xfbench.tasks import reference as ref

HEIGHT, WIDTH, CHANNELS = 7, 5, 3

MODELS = {
    # conv -> flatten -> dense: the dense kernel is fed a 5x4x4 feature map
    "conv-flatten-dense": (Conv2D(4, (3, 2), activation="tanh"), Flatten(), Dense(6)),
    # pooling and a strided 'same' conv with asymmetric padding in between; the second Dense needs no permutation
    "conv-pool-conv-flatten-dense-dense": (
        Conv2D(4, 3, padding="same", activation="relu"), MaxPool2D((2, 1)),
        Conv2D(5, (2, 3), strides=(1, 2), padding="same"), Flatten(), Dense(7, "relu"), Dense(6),
    ),
    # Flatten straight on the NHWC input: a channels-first adapter still flattens C-H-W
    "flatten-dense": (Flatten(), Dense(6)),
}


def conv_task(model: str = "conv-flatten-dense", seed: int = 0) -> Task:
    """Random 7x5x3 images (NHWC) with 6 classes, through one of ``MODELS``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(16, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)
    y = rng.integers(0, 6, size=16)
    return Task(name=model, data=Dataset(x, y, x[:5], y[:5]), layers=MODELS[model], loss="softmax_cross_entropy",
                optimizer=SGD(0.1), batch_size=4, epochs=1, seed=seed)


def random_weights(task: Task, seed: int = 1) -> dict[str, np.ndarray]:
    """Initial kernels plus non-zero biases, float32 (zero biases would hide a bias mix-up)."""
    rng = np.random.default_rng(seed)
    return {name: (value + (rng.normal(size=value.shape) if name.endswith("bias") else 0)).astype(np.float32)
            for name, value in initial_weights(task, seed).items()}


# ----------------------------------------------------------------------------------------- pure NumPy
def test_chw_flatten_permutation_by_definition():
    """perm[c*H*W + h*W + w] is the H-W-C position h*W*C + w*C + c, for a shape with three different sizes."""
    height, width, channels = 4, 3, 2
    perm = common.chw_flatten_permutation((height, width, channels))
    expected = [h * width * channels + w * channels + c
                for c in range(channels) for h in range(height) for w in range(width)]
    assert perm.tolist() == expected
    image = np.random.default_rng(0).normal(size=(height, width, channels))
    np.testing.assert_array_equal(image.ravel()[perm], image.transpose(2, 0, 1).ravel())


def test_flatten_permutations_only_where_feature_maps_are_flattened():
    task = conv_task("conv-pool-conv-flatten-dense-dense")
    assert task.shapes[3] == (3, 3, 5)  # 7x5 -> pool (2, 1) -> 3x5 -> 'same' conv, strides (1, 2) -> 3x3
    perms = common.flatten_permutations(task)
    assert list(perms) == ["4.Dense.kernel"]  # "5.Dense.kernel" is fed by a Dense: no permutation
    np.testing.assert_array_equal(perms["4.Dense.kernel"], common.chw_flatten_permutation((3, 3, 5)))
    perms = common.flatten_permutations(conv_task("flatten-dense"))
    assert list(perms) == ["1.Dense.kernel"]
    np.testing.assert_array_equal(perms["1.Dense.kernel"], common.chw_flatten_permutation((HEIGHT, WIDTH, CHANNELS)))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_channels_first_round_trip(model: str):
    task = conv_task(model)
    weights = random_weights(task)
    converted = common.to_channels_first(task, weights)
    assert list(converted) == list(weights)
    back = common.from_channels_first(task, converted)
    for name, value in weights.items():
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_to_channels_first_layouts():
    """Element by element: conv HWIO -> OIHW, dense (in, out) -> (out, in) with rows in C-H-W order."""
    task = conv_task("conv-flatten-dense")
    weights = random_weights(task)
    converted = common.to_channels_first(task, weights)
    kernel, torch_kernel = weights["0.Conv2D.kernel"], converted["0.Conv2D.kernel"]
    assert kernel.shape == (3, 2, CHANNELS, 4) and torch_kernel.shape == (4, CHANNELS, 3, 2)
    for h, w, i, o in np.ndindex(*kernel.shape):
        assert torch_kernel[o, i, h, w] == kernel[h, w, i, o]
    height, width, channels = task.shapes[1]  # the conv's output feature map, (5, 4, 4)
    dense, torch_dense = weights["2.Dense.kernel"], converted["2.Dense.kernel"]
    assert torch_dense.shape == (6, height * width * channels)
    for c, h, w in np.ndindex(channels, height, width):
        np.testing.assert_array_equal(torch_dense[:, c * height * width + h * width + w],
                                      dense[h * width * channels + w * channels + c, :])
    np.testing.assert_array_equal(converted["0.Conv2D.bias"], weights["0.Conv2D.bias"])


# ------------------------------------------------------------------------------- through real frameworks
FORWARD_ATOL = 1e-5  # float32 forward vs the float64 reference on O(1) outputs (parity's own tolerance)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_torch_forward_matches_nhwc_reference(model: str, torch_backend: Backend):
    """PyTorch computes in NCHW with converted weights; its outputs equal the NHWC float64 reference."""
    task = conv_task(model)
    weights = random_weights(task)
    outputs = torch_backend.build(task, "cpu", weights).predict(task.data.x_train)
    expected = ref.forward(task, weights, task.data.x_train)
    assert outputs.shape == expected.shape == (16, 6)
    np.testing.assert_allclose(outputs, expected, rtol=0, atol=FORWARD_ATOL)


@pytest.mark.parametrize("model", ["conv-flatten-dense", "flatten-dense"])
def test_wrong_flatten_order_is_caught(model: str, torch_backend: Backend, monkeypatch: pytest.MonkeyPatch):
    """With the identity instead of the C-H-W permutation, the same comparison fails: the test above can fail."""
    task = conv_task(model)
    weights = random_weights(task)
    expected = ref.forward(task, weights, task.data.x_train)
    monkeypatch.setattr(common, "chw_flatten_permutation", lambda shape: np.arange(int(np.prod(shape))))
    outputs = torch_backend.build(task, "cpu", weights).predict(task.data.x_train)
    assert np.abs(outputs - expected).max() > 100 * FORWARD_ATOL


def test_transposed_conv_kernel_is_caught(torch_backend: Backend, monkeypatch: pytest.MonkeyPatch):
    """A conv kernel with its height and width axes swapped (OIWH instead of OIHW) loads into a 3x3 conv without
    complaint; the comparison with the reference catches it."""
    task = conv_task("conv-pool-conv-flatten-dense-dense")  # its first conv kernel is 3x3
    weights = random_weights(task)
    expected = ref.forward(task, weights, task.data.x_train)
    real = common.to_channels_first

    def transposed(task_: Task, weights_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        converted = real(task_, weights_)
        converted["0.Conv2D.kernel"] = np.ascontiguousarray(converted["0.Conv2D.kernel"].transpose(0, 1, 3, 2))
        return converted

    monkeypatch.setattr(common, "to_channels_first", transposed)
    outputs = torch_backend.build(task, "cpu", weights).predict(task.data.x_train)
    assert np.abs(outputs - expected).max() > 100 * FORWARD_ATOL


@pytest.mark.parametrize("model", sorted(MODELS))
def test_forward_matches_reference(model: str, backend: Backend):
    """Every backend (whatever its layout) computes the reference's outputs on the non-square models."""
    task = conv_task(model)
    weights = random_weights(task)
    outputs = backend.build(task, "cpu", weights).predict(task.data.x_train)
    np.testing.assert_allclose(outputs, ref.forward(task, weights, task.data.x_train), rtol=0, atol=FORWARD_ATOL)
