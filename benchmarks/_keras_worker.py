"""Keras 3 half of ``benchmarks/keras_parity.py``: runs in its own process with ``KERAS_BACKEND`` set.

Usage: ``python benchmarks/_keras_worker.py TASK IN.npz OUT.npz``. ``IN.npz`` holds the neutral initial weights
(``w:<name>``), the first batch (``first_x``) and the K training batches (``x<i>``, ``y<i>``); ``OUT.npz`` gets the
float32 forward outputs on the first batch (``outputs``) and the weights after K steps (``w:<name>``), plus
``jit_compile`` (what Keras resolved its default to on this machine).

The model is an ordinary Keras Sequential in channels_last, built from the xfbench layer spec, with the task's
loss and optimizer passed to ``compile`` and trained with ``train_on_batch``: Keras as a user would run it.
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from xfbench.backends.keras import keras_layer, keras_loss, keras_optimizer  # the same Keras model as keras-*
from xfbench.tasks import get_task
from xfbench.tasks.init import param_shapes


def main(task_name: str, in_path: str, out_path: str) -> None:
    task = get_task(task_name)
    data = np.load(in_path)
    names = list(param_shapes(task))  # layer order, kernel then bias: Keras' get_weights order too
    model = keras.Sequential([keras.Input(shape=task.input_shape), *map(keras_layer, task.layers)])
    model.set_weights([data[f"w:{name}"] for name in names])
    model.compile(optimizer=keras_optimizer(task), loss=keras_loss(task))
    outputs = np.asarray(model.predict_on_batch(data["first_x"].astype(np.float32)))
    steps = sum(1 for key in data.files if key.startswith("y"))
    for step in range(steps):
        y = data[f"y{step}"]
        y = y.astype(np.int64) if task.loss == "softmax_cross_entropy" else y.astype(np.float32)
        model.train_on_batch(data[f"x{step}"].astype(np.float32), y)
    final = dict(zip(names, model.get_weights(), strict=True))
    np.savez(out_path, outputs=outputs, jit_compile=np.array(bool(model.jit_compile)),
             **{f"w:{name}": np.asarray(value) for name, value in final.items()})


if __name__ == "__main__":
    main(*sys.argv[1:4])
