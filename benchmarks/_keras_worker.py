"""Keras 3 half of ``benchmarks/keras_parity.py``: runs in its own process with ``KERAS_BACKEND`` set.

Usage: ``python benchmarks/_keras_worker.py TASK IN.npz OUT.npz [PARAMS_JSON]``. ``IN.npz`` holds the neutral initial
weights (``w:<name>``), the first batch (``first_x``) and the K training batches (``x<i>``, ``y<i>``); ``OUT.npz``
gets the float32 forward outputs on the first batch (``outputs``) and the weights after K steps (``w:<name>``), plus
``jit_compile`` (what Keras resolved its default to on this machine).

The model is an ordinary Keras functional model in channels_last of Keras' own layers (``Dense``, ``Conv2D``,
``Embedding``, ``MultiHeadAttention``, ``LayerNormalization``, ``BatchNormalization``...), built from the xfbench
layer spec with none of the keras-* adapters' corrections (``stock=True``), with the task's loss and optimizer passed
to ``compile`` and trained with ``train_on_batch``: Keras as a user would run it.
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np

from xfbench.backends.common import as_inputs, as_labels
from xfbench.backends.keras import from_keras, keras_loss, keras_optimizer, keras_variables, to_keras
from xfbench.tasks import get_task


def main(task_name: str, in_path: str, out_path: str, params: str = "{}") -> None:
    task = get_task(task_name, **json.loads(params))
    data = np.load(in_path)
    model, variables = keras_variables(task, stock=True)
    for name, variable in variables.items():
        variable.assign(to_keras(data[f"w:{name}"], tuple(variable.shape)))
    model.compile(optimizer=keras_optimizer(task), loss=keras_loss(task))
    outputs = np.asarray(model.predict_on_batch(as_inputs(task, data["first_x"])))
    steps = sum(1 for key in data.files if key.startswith("y"))
    for step in range(steps):
        model.train_on_batch(as_inputs(task, data[f"x{step}"]), as_labels(task, data[f"y{step}"]))
    to_numpy = keras.ops.convert_to_numpy
    np.savez(out_path, outputs=outputs, jit_compile=np.array(bool(model.jit_compile)),
             **{f"w:{name}": from_keras(task, name, to_numpy(variable.value)) for name, variable in variables.items()})


if __name__ == "__main__":
    main(*sys.argv[1:5])
