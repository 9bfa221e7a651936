"""The task API for models that are not a plain stack (residual blocks, normalization, attention, embeddings) and the
two built-in tasks made of them, without any framework: one-line errors for bad definitions before any work, shapes
and tensor names, ``spec_hash`` (and the hashes of the older tasks unchanged by the new fields), the generated text,
and the documents and worker jobs the tasks travel in to workers of this and older xfbench versions."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from xfbench.compare.platforms.job import WorkerSpec, read_job, write_job
from xfbench.errors import XfbenchError
from xfbench.tasks import (
    SGD,
    Activation,
    Adam,
    AdamW,
    BatchNorm,
    Conv2D,
    Dataset,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    LayerNorm,
    MaxPool2D,
    PositionEmbedding,
    Residual,
    SelfAttention,
    Task,
    WarmupCosine,
    data,
    get_task,
    initial_weights,
)
from xfbench.tasks.layers import infer_shapes, walk
from xfbench.tasks.serialize import first_newer_feature, task_document, task_from_document

IDS = np.random.default_rng(0).integers(0, 10, size=(12, 6)).astype(np.int32)
NEXT = np.random.default_rng(1).integers(0, 10, size=(12, 6))
IMAGES = np.random.default_rng(2).random((12, 6, 6, 2), dtype=np.float32)
LABELS = np.random.default_rng(3).integers(0, 3, 12)


def sequence_task(layers, x=IDS, y=NEXT, **changes) -> Task:
    values = {"name": "seq", "data": Dataset(x, y, x[:2], y[:2]), "layers": tuple(layers),
              "loss": "softmax_cross_entropy", "optimizer": AdamW(1e-3), "batch_size": 4, "epochs": 1,
              "metrics": ("token_accuracy",), **changes}
    return Task(**values)


def image_task(layers, **changes) -> Task:
    values = {"name": "img", "data": Dataset(IMAGES, LABELS, IMAGES[:2], LABELS[:2]), "layers": tuple(layers),
              "loss": "softmax_cross_entropy", "optimizer": Adam(), "batch_size": 4, "epochs": 1, **changes}
    return Task(**values)


BLOCK = (Embedding(10, 8), PositionEmbedding(6), Residual((LayerNorm(), SelfAttention(2, 4))), Dense(10))

# every bad definition: the one line it gives (a prefix of it), raised when the model or task is built
BAD_MODELS = {
    "residual-shapes": (lambda: image_task((Residual((Conv2D(4, 3, padding="same"),)), Flatten(), Dense(3))),
                        "layer 0 (Residual): its body ends in shape (6, 6, 4) but its input is (6, 6, 2); they are "
                        "added, so they must match; give it a shortcut that projects its input (e.g. a 1x1 Conv2D)"),
    "residual-shortcut-shapes": (lambda: image_task((Residual((Conv2D(4, 3, padding="same"),),
                                                              shortcut=(Conv2D(4, 1, strides=2),)), Flatten(), Dense(3))),
                                 "layer 0 (Residual): its body ends in shape (6, 6, 4) but its shortcut gives (3, 3, 4)"),
    "nested-layer-named": (lambda: image_task((Residual((Conv2D(2, 3, padding="same"), Dense(2))), Flatten(),
                                               Dense(3))),
                           "layer 0 (Residual) body layer 1 (Dense) needs vectors (or sequences of them) but gets "
                           "shape (6, 6, 2); put Flatten() before it"),
    "empty-residual": (lambda: Residual(()), "Residual body needs at least one layer"),
    "residual-not-layers": (lambda: Residual(Dense(3)), "Residual body must be a sequence of layers, got Dense"),
    "heads-not-dividing-width": (lambda: get_task("transformer", width=100, heads=3),
                                 "transformer heads (3) must divide width (100)"),
    "token-out-of-range": (lambda: sequence_task(BLOCK, x=IDS + 5),
                           "token ids must be in [0, 10) for Embedding(vocab_size=10); Dataset.x_train holds ids "
                           "from 5 to 14"),
    "negative-token": (lambda: sequence_task(BLOCK, x=IDS - 1), "token ids must be in [0, 10)"),
    "float-tokens": (lambda: sequence_task(BLOCK, x=IDS.astype(np.float32)),
                     "a model that starts with an Embedding takes integer token ids; Dataset.x_train is float32"),
    "embedding-not-first": (lambda: sequence_task((Embedding(10, 8), Embedding(10, 8), Dense(10))),
                            "layer 1 (Embedding) must be the first layer of the model: its input is token ids"),
    "sequence-too-long": (lambda: sequence_task((Embedding(10, 8), PositionEmbedding(4), Dense(10))),
                          "layer 1 (PositionEmbedding) holds 4 positions but gets sequences of 6"),
    "attention-on-vectors": (lambda: image_task((Flatten(), SelfAttention(2, 4), Dense(3))),
                             "layer 1 (SelfAttention) needs sequences of vectors, shape (length, width) but gets "
                             "shape (72,)"),
    "labels-not-per-position": (lambda: sequence_task(BLOCK, y=NEXT[:, 0]),
                                "softmax_cross_entropy needs integer class labels of shape (n, 6), got int64 (12,)"),
    "accuracy-on-sequences": (lambda: sequence_task(BLOCK, metrics=("accuracy",)),
                              "a model with an output per position is scored per token: use the metric token_accuracy"),
    "token-accuracy-on-images": (lambda: image_task((GlobalAvgPool2D(), Dense(3)), metrics=("token_accuracy",)),
                                 "token_accuracy scores a model with an output per position"),
    "heads": (lambda: SelfAttention(0, 4), "SelfAttention heads must be a positive int, got 0"),
    "scale": (lambda: SelfAttention(2, 4, scale=-1.0), "SelfAttention scale must be a finite number in (0, inf)"),
    "causal": (lambda: SelfAttention(2, 4, causal="yes"), "SelfAttention causal must be True or False, got 'yes'"),
    "layernorm-epsilon": (lambda: LayerNorm(0.0), "LayerNorm epsilon must be a finite number in (0, 1], got 0.0"),
    "batchnorm-momentum": (lambda: BatchNorm(momentum=1.5), "BatchNorm momentum must be a finite number in (0, 1]"),
    "embedding-width": (lambda: Embedding(10, 0), "Embedding width must be a positive int, got 0"),
    "gelu-spelling": (lambda: Activation("GELU"), "unknown activation 'GELU'; choose one of: linear, relu, sigmoid, "
                                                  "tanh, gelu, gelu_tanh"),
    "use-bias": (lambda: Dense(3, use_bias=1), "Dense use_bias must be True or False, got 1"),
    "adamw-decay": (lambda: AdamW(weight_decay=-0.1), "AdamW weight_decay must be a finite number in [0, inf)"),
    "clip": (lambda: Adam(clip_norm=0), "Adam clip_norm must be a finite number in (0, inf), got 0"),
    "schedule-type": (lambda: Adam(schedule="cosine"), "Adam schedule must be an xfbench.tasks.WarmupCosine or None"),
    "schedule-steps": (lambda: WarmupCosine(10, 5), "WarmupCosine total_steps (5) must be more than warmup_steps (10)"),
    "schedule-ratio": (lambda: WarmupCosine(1, 5, final_ratio=2), "WarmupCosine final_ratio must be a finite number in"),
    "resnet-size": (lambda: get_task("resnet", filters=0), "resnet filters must be a positive int, got 0"),
    "transformer-size": (lambda: get_task("transformer", seq_len=-1), "transformer seq_len must be a positive int"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_a_bad_model_definition_is_one_line(case: str):
    build, message = BAD_MODELS[case]
    with pytest.raises(XfbenchError) as caught:
        build()
    text = str(caught.value)
    assert "\n" not in text and text.startswith(message), text


def test_shapes_names_and_state_of_a_residual_model():
    model = (Conv2D(4, 3, padding="same", use_bias=False), BatchNorm(), Activation("relu"),
             Residual((Conv2D(4, 3, padding="same"), BatchNorm()), activation="relu"),
             Residual((Conv2D(8, 3, padding="same"),), shortcut=(Conv2D(8, 1), BatchNorm())),
             MaxPool2D(2), GlobalAvgPool2D(), Dense(3))
    task = image_task(model)
    assert task.shapes == ((6, 6, 2), (6, 6, 4), (6, 6, 4), (6, 6, 4), (6, 6, 4), (6, 6, 8), (3, 3, 8), (8,), (3,))
    assert task.param_names()[:3] == ["0.Conv2D.kernel", "1.BatchNorm.gamma", "1.BatchNorm.beta"]
    assert "3.Residual.body.0.Conv2D.bias" in task.param_names() and "0.Conv2D.bias" not in task.tensors
    assert task.state_names() == ["1.BatchNorm.running_mean", "1.BatchNorm.running_var",
                                  "3.Residual.body.1.BatchNorm.running_mean", "3.Residual.body.1.BatchNorm.running_var",
                                  "4.Residual.shortcut.1.BatchNorm.running_mean",
                                  "4.Residual.shortcut.1.BatchNorm.running_var"]
    weights = initial_weights(task)
    assert list(weights) == list(task.tensors)
    assert weights["1.BatchNorm.running_var"].tolist() == [1.0] * 4 and not weights["1.BatchNorm.running_mean"].any()
    assert [site.prefix for site in walk(task.layers, task.input_shape)][3:6] == [
        "3.Residual", "3.Residual.body.0.Conv2D", "3.Residual.body.1.BatchNorm"]


def test_nested_initial_weights_are_their_own_and_stable():
    """A nested layer draws from a generator of its own position: adding a layer after it, or at the top level
    after the block, leaves its weights alone."""
    block = Residual((Conv2D(2, 3, padding="same"), Conv2D(2, 3, padding="same")))
    short = initial_weights(image_task((block, Flatten(), Dense(3))))
    longer = initial_weights(image_task((block, Conv2D(2, 1), Flatten(), Dense(3))))
    for name in ("0.Residual.body.0.Conv2D.kernel", "0.Residual.body.1.Conv2D.kernel"):
        np.testing.assert_array_equal(short[name], longer[name])
    assert not np.array_equal(short["0.Residual.body.0.Conv2D.kernel"], short["0.Residual.body.1.Conv2D.kernel"])


def test_built_in_tasks_keep_the_hashes_they_had_before_the_new_fields():
    """Dense and Conv2D gained ``use_bias``, Adam ``clip_norm`` and ``schedule``: at their defaults they change
    neither a task's hash (results stored before still compare) nor its document (older workers read it)."""
    assert {name: get_task(name).spec_hash for name in ("regression", "mlp", "mlp-binary", "cnn", "cnn28")} == {
        "regression": "3046d1ca561df304", "mlp": "fb698fdfece47c33", "mlp-binary": "691bafd729b80df7",
        "cnn": "8982b6c57563a8a2", "cnn28": "7d168c4b6f26f929"}
    assert get_task("mlp", width=16).spec_hash == "111f49cc6d28f9d1"
    changed = get_task("mlp").replace(layers=(Dense(64, "relu", use_bias=False), Dense(10)))
    assert changed.spec_hash != get_task("mlp").spec_hash
    assert "use_bias" not in json.dumps(task_document(get_task("cnn"))[0])


@pytest.mark.parametrize("name", ["transformer", "resnet"])
def test_modern_tasks_round_trip_through_their_document(name: str):
    task = get_task(name, **({"num_sequences": 60, "seq_len": 8, "width": 16} if name == "transformer" else
                             {"num_samples": 60}))
    document, arrays = task_document(task)
    json.dumps(document)  # plain data
    again = task_from_document(json.loads(json.dumps(document)), arrays)
    assert again.spec_hash == task.spec_hash and again.layers == task.layers and again.optimizer == task.optimizer


def test_a_document_field_this_xfbench_does_not_know_is_one_line():
    document, arrays = task_document(get_task("mlp"))
    document["layers"][0]["dropout"] = 0.1
    with pytest.raises(XfbenchError, match=r"^Dense has no field 'dropout' in this xfbench"):
        task_from_document(document, arrays)


def test_what_the_first_task_api_cannot_express():
    assert first_newer_feature(get_task("cnn28")) is None
    assert first_newer_feature(get_task("resnet", num_samples=60)) == "layer 0 (Conv2D) use_bias=False"
    assert first_newer_feature(get_task("mlp").replace(optimizer=Adam(clip_norm=1.0))) == "optimizer Adam clip_norm"
    assert first_newer_feature(get_task("mlp").replace(layers=(Dense(64, "gelu"), Dense(10)))) == (
        "layer 0 (Dense) activation 'gelu'")


@pytest.mark.parametrize("version", [1, 2])
def test_worker_jobs_carry_a_task(tmp_path, version: int):
    spec = WorkerSpec("jax", "cpu", 2, [get_task("cnn", epochs=1)], job_version=version)
    path = write_job(spec, str(tmp_path / "job"))
    back = read_job(path)
    assert back.job_version == version and back.tasks[0].spec_hash == spec.tasks[0].spec_hash
    assert json.loads(Path(path).read_text())["version"] == version


def test_a_version_0_job_names_the_classes_where_the_older_xfbench_has_them(tmp_path):
    """Version 0 is a pickle for an xfbench from before the move (``test_gate``'s cross-version ab runs one): the
    spec classes by their path there, the fields that xfbench knew, no cached values of today's Task."""
    task = get_task("cnn", epochs=1)
    task.tensors  # noqa: B018  (a cached value that must not travel)
    path = write_job(WorkerSpec("jax", "cpu", 2, [task], job_version=0), str(tmp_path / "job"))
    text = Path(path).read_bytes()
    assert b"xfbench.tasks.spec" in text and b"xfbench.compare.executor" in text
    assert b"xfbench.tasks.layers" not in text and b"use_bias" not in text and b"tensors" not in text


def _old_class(name: str, fields: tuple[str, ...]) -> type:
    """A stand-in for a class of the xfbench before the move, pickled under that xfbench's path."""
    def init(self, *args):
        self.__dict__.update(zip(fields, args, strict=True))
    module = "xfbench.compare.executor" if name == "WorkerSpec" else "xfbench.tasks.spec"
    return type(name, (), {"__init__": init, "__module__": module, "__qualname__": name})


def test_a_version_0_job_from_an_older_driver_is_rebuilt_field_by_field(tmp_path, monkeypatch):
    """An older driver pickled its own WorkerSpec, Task and layers (no ``use_bias``, no ``clip_norm``): this worker
    rebuilds them through today's constructors, the fields added since at their defaults."""
    import sys
    import types

    import xfbench.tasks.spec as spec_module

    old = {name: _old_class(name, fields) for name, fields in {
        "Dense": ("units", "activation", "init"), "Adam": ("learning_rate", "beta1", "beta2", "epsilon"),
        "Dataset": ("x_train", "y_train", "x_test", "y_test"),
        "Task": ("name", "data", "layers", "loss", "optimizer", "batch_size", "epochs", "metrics", "seed",
                 "description", "target", "input_shape", "shapes"),
        "WorkerSpec": ("backend", "device", "threads", "tasks", "malloc", "python", "env")}.items()}
    executor = types.ModuleType("xfbench.compare.executor")
    executor.WorkerSpec = old["WorkerSpec"]
    monkeypatch.setitem(sys.modules, "xfbench.compare.executor", executor)
    for name in ("Dense", "Adam", "Dataset", "Task"):
        monkeypatch.setattr(spec_module, name, old[name])
    x = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    y = np.arange(20) % 3
    layers = (old["Dense"](8, "relu", "glorot_uniform"), old["Dense"](3, "linear", "glorot_uniform"))
    task = old["Task"]("t", old["Dataset"](x[:16], y[:16], x[16:], y[16:]), layers, "softmax_cross_entropy",
                       old["Adam"](0.001, 0.9, 0.999, 1e-8), 4, 1, ("accuracy",), 0, "", None, (4,), ((4,), (8,), (3,)))
    payload = pickle.dumps(old["WorkerSpec"]("jax", "cpu", 2, [task], "steady", None, {}), protocol=4)
    monkeypatch.undo()
    path = tmp_path / "old.pkl"
    path.write_bytes(payload)
    back = read_job(str(path))
    rebuilt = back.tasks[0]
    assert back.job_version == 0 and isinstance(rebuilt, Task)
    assert rebuilt.layers == (Dense(8, "relu"), Dense(3)) and rebuilt.layers[0].use_bias is True
    assert rebuilt.optimizer == Adam(0.001) and rebuilt.optimizer.clip_norm is None
    assert rebuilt.spec_hash == Task("t", Dataset(x[:16], y[:16], x[16:], y[16:]), (Dense(8, "relu"), Dense(3)),
                                     "softmax_cross_entropy", Adam(0.001), 4, 1).spec_hash


def test_generated_text_is_deterministic_learnable_and_in_the_alphabet():
    first, again, other = data.text(2000, seed=0), data.text(2000, seed=0), data.text(2000, seed=1)
    assert first == again != other and set(first) <= set(data.ALPHABET)
    x, y = data.text_sequences(10, 32)
    assert x.dtype == np.int32 and y.dtype == np.int64 and x.max() < len(data.ALPHABET)
    assert (x[:, 1:] == y[:, :-1]).all() and x[1, 0] == y[0, -1]  # windows follow each other
    stories = first.splitlines()
    repeated = [line for line in stories if " gives " in line]
    assert repeated and all(line.split()[0] == line.rstrip(".").split()[-1] for line in repeated)  # "X gives ... X."


def test_the_transformer_and_resnet_are_what_their_docstrings_say():
    transformer = get_task("transformer")
    assert transformer.shapes[0] == (64,) and transformer.shapes[-1] == (64, len(data.ALPHABET))
    attention = [site.layer for site in walk(transformer.layers, transformer.input_shape)
                 if isinstance(site.layer, SelfAttention)]
    assert len(attention) == 2 and all(layer.heads == 4 and layer.head_size == 32 for layer in attention)
    assert math.isclose(attention[0].scale, 1 / math.sqrt(32))
    opt = transformer.optimizer
    assert isinstance(opt, AdamW) and opt.clip_norm == 1.0 and opt.schedule.total_steps == transformer.num_steps
    assert transformer.metrics == ("token_accuracy", "perplexity") and transformer.target == 0.75
    wide = get_task("transformer", seq_len=128, width=256)
    assert wide.shapes[0] == (128,) and wide.spec_hash != transformer.spec_hash
    resnet = get_task("resnet")
    assert resnet.input_shape == (28, 28, 1) and resnet.shapes[-2:] == ((32,), (10,))
    assert resnet.state_names() and isinstance(resnet.optimizer, Adam) and resnet.target == 0.9
    assert infer_shapes((28, 28, 1), resnet.layers) == resnet.shapes
    assert isinstance(get_task("mlp").optimizer, Adam) and not isinstance(get_task("regression").optimizer, Adam)
    assert isinstance(get_task("regression").optimizer, SGD)
