"""Optimizers and learning-rate schedules from the training config, as optax transformations."""

import optax

from ntklab.engine.config import TrainConfig


def make_schedule(train: TrainConfig, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the number of updates already applied."""
    lr = train.optimizer.lr
    schedule = train.schedule
    if schedule.name == "constant":
        return optax.constant_schedule(lr)
    if schedule.name == "step":
        scales: dict[int, float] = {}
        for epoch in schedule.milestones_epochs:
            boundary = round(epoch * steps_per_epoch)
            scales[boundary] = scales.get(boundary, 1.0) * schedule.factor
        return optax.piecewise_constant_schedule(lr, scales)
    if schedule.name == "linear":
        return optax.linear_schedule(lr, 0.0, total_steps)
    if schedule.name == "cosine" and schedule.per_epoch:
        epochs = -(-total_steps // steps_per_epoch)
        by_epoch = optax.cosine_decay_schedule(lr, epochs, alpha=schedule.final_fraction)
        return lambda count: by_epoch(count // steps_per_epoch)
    if schedule.name == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps, alpha=schedule.final_fraction)
    warmup_steps = round(schedule.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        raise ValueError(f"the warm-up of {warmup_steps} steps leaves no decay within {total_steps} steps")
    return optax.warmup_cosine_decay_schedule(
        init_value=schedule.initial_fraction * lr,
        peak_value=schedule.peak_factor * lr,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=schedule.final_fraction * lr,
    )


def _base_optimizer(train: TrainConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    optimizer = train.optimizer
    if optimizer.name == "sgd":
        return optax.sgd(schedule)
    if optimizer.name == "momentum":
        return optax.sgd(schedule, momentum=optimizer.momentum)
    if optimizer.name == "nesterov":
        return optax.sgd(schedule, momentum=optimizer.momentum, nesterov=True)
    return optax.adam(schedule, b1=optimizer.b1, b2=optimizer.b2, eps=optimizer.eps)


def make_optimizer(train: TrainConfig, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
    """Gradient clipping, then coupled weight decay (added to the gradient), then the optimizer.

    Its update needs the parameters (for weight decay): call `update(grads, state, params)`.
    """
    transforms = []
    if train.clip_grad_norm is not None:
        transforms.append(optax.clip_by_global_norm(train.clip_grad_norm))
    if train.weight_decay > 0:
        transforms.append(optax.add_decayed_weights(train.weight_decay))
    transforms.append(_base_optimizer(train, make_schedule(train, steps_per_epoch, total_steps)))
    return optax.chain(*transforms)
