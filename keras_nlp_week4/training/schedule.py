"""The learning-rate schedule of "Attention Is All You Need" (Vaswani et al., 2017, section 5.3)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_nlp_week4")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then inverse square-root decay.

    `lrate = scale * d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)`
    (Vaswani et al., 2017, eq. 3). The paper uses `scale=1`, `warmup_steps=4000`; `scale` lets a small model
    trained for a few hundred steps reach a useful peak rate without changing the shape of the curve. The peak,
    reached at `step == warmup_steps`, is `scale * (d_model * warmup_steps)^-0.5`.

    Args:
        d_model: the model width the rate is normalised by.
        warmup_steps: steps of linear warm-up.
        scale: a constant factor on the whole curve.

    Example:
    >>> schedule = TransformerSchedule(d_model=512, warmup_steps=4000)
    >>> optimizer = keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.98, epsilon=1e-9)
    """

    def __init__(self, d_model: int, warmup_steps: int = 4000, scale: float = 1.0):
        self.d_model = int(d_model)
        self.warmup_steps = int(warmup_steps)
        self.scale = float(scale)

    def __call__(self, step):
        # Step 0 would divide by zero: the optimizer's first update is step 1 in the paper's counting.
        step = ops.cast(step, "float32") + 1.0
        warmup = ops.cast(self.warmup_steps, "float32")
        rate = ops.minimum(ops.rsqrt(step), step * warmup**-1.5)
        return self.scale * (self.d_model**-0.5) * rate

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}
