"""The reference set: images the feature detectors are fitted on, never scored.

OpenOOD and pytorch-ood fit class means, covariances, neighbour banks, clipping
thresholds and principal spaces on training data, never on the set they score. With
``DeephysCallback(reference=loader)`` the callback runs ``loader`` (for example a
fixed subset of the training set) through the LightningModule's ``forward`` at each
recorded epoch, after the evaluation and in its mode (eval, no gradients), and keeps
each recorded layer's features and the classifier outputs. Under DDP each process runs
every ``world_size``-th batch and the rows are gathered as the datasets' are.

:func:`with_fit_set` adds the gathered rows, and a copy of the candidate heads'
weights, to a recorded epoch.

Example::

    rows = reference_rows(pl_module, loader, layers, logits_module, settings, rank=0,
                          world_size=1, to_device=trainer.strategy.batch_to_device)
    rows.acts["fc1"]        # float16 [N, M], as the datasets' are stored
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from deephys_lightning.recording import finiteness
from deephys_lightning.recording import rows as columns
from deephys_lightning.recording.capture import batch_inputs, reduce_activations, select_output
from deephys_lightning.recording.gather import Collectives
from deephys_lightning.recording.head import head_candidates, snapshot
from deephys_lightning.recording.recorder import EpochRows
from deephys_lightning.recording.rows import Rows
from tensorboard_plugin_deephys.log.metadata import NO_PREDICTION


@dataclasses.dataclass(frozen=True)
class FitSources:
    """What the detectors fitted on features are fitted with: the reference set's
    dataloader (None: no reference set), the recorded layers' modules, the module whose
    output is the logits, the capture settings of the callback, and the linear layers
    that may be the head (``recording.head``; none without head detectors)."""

    loader: Iterable[Any] | None
    layers: Mapping[str, torch.nn.Module]
    logits_module: torch.nn.Module
    settings: Any
    heads: Mapping[str, torch.nn.Linear]

    @classmethod
    def of(
        cls,
        model: torch.nn.Module,
        callback: Any,
        layers: Mapping[str, torch.nn.Module],
        logits_module: torch.nn.Module,
        settings: Any,
    ) -> FitSources | None:
        """The sources of ``callback`` (its ``reference`` and ``head``) on ``model``:
        the head candidates serve the contributions (``deephys_lightning.contributions``)
        and the head detectors; None when there is neither a candidate nor a
        reference set."""
        heads = head_candidates(model, callback.head, num_classes=None)
        if not heads and callback.reference is None:
            return None
        return cls(callback.reference, layers, logits_module, settings, heads)


def with_fit_set(
    epoch: EpochRows, trainer: Any, collectives: Collectives, sources: FitSources
) -> EpochRows:
    """``epoch`` with what the detectors on features are fitted with: the reference
    set's rows (every process runs its share, gathered like the datasets') and the
    weights of the linear layers that may be the head, copied now (training goes on
    while the record is written)."""
    reference = None
    if sources.loader is not None:
        local = reference_rows(
            trainer.lightning_module,
            sources.loader,
            sources.layers,
            sources.logits_module,
            sources.settings,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
            to_device=trainer.strategy.batch_to_device,
        )
        reference = collectives.rows(local)
    # only the layers as wide as the logits are copied (a ViT has dozens of others)
    heads = snapshot(
        {
            name: module
            for name, module in sources.heads.items()
            if module.out_features == epoch.num_classes
        }
    )
    return dataclasses.replace(epoch, reference=reference, heads=heads)


def reference_rows(
    module: torch.nn.Module,
    loader: Iterable[Any],
    layers: Mapping[str, torch.nn.Module],
    logits_module: torch.nn.Module,
    settings: Any,
    *,
    rank: int,
    world_size: int,
    to_device: Callable[[Any], Any],
) -> Rows | None:
    """This process's rows of the reference ``loader`` (every ``world_size``-th batch
    from ``rank``): positions, labels, each layer's float16 activations (reduced as the
    recorded layers are: ``settings`` is the callback's ``CaptureSettings``) with their
    per-image statuses (``recording.finiteness``), the float32 classifier outputs with
    theirs. None when this process ran no batch."""
    captured: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    outputs: list[torch.Tensor] = []

    def layer_hook(name: str) -> Callable:
        def hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
            selected = select_output(output, settings.selector(name), layer=name)
            captured[name].append(
                reduce_activations(
                    selected, relu=settings.relu, reduction=settings.reduction, layer=name
                )
            )

        return hook

    def logits_hook(_module: torch.nn.Module, _args: Any, output: Any) -> None:
        selected = select_output(output, None, layer="logits")
        outputs.append(selected.detach().float())

    handles = [module_.register_forward_hook(layer_hook(n)) for n, module_ in layers.items()]
    handles.append(logits_module.register_forward_hook(logits_hook))
    chunks: list[Rows] = []
    seen = 0
    try:
        with torch.no_grad():
            for index, batch in enumerate(loader):
                if index % world_size != rank:
                    seen += _batch_size(batch, settings)
                    continue
                for pending in (*captured.values(), outputs):
                    pending.clear()
                x, y = batch_inputs(
                    to_device(batch), settings.input_key, settings.target_key, settings.unpack_batch
                )
                module(x)
                chunks.append(_batch_rows(x, y, captured, outputs, seen))
                seen += len(y)
    finally:
        for handle in handles:
            handle.remove()
    return Rows.cat(chunks) if chunks else None


def _batch_size(batch: Any, settings: Any) -> int:
    """How many images a batch that this process skips holds (for the positions)."""
    _, y = batch_inputs(batch, settings.input_key, settings.target_key, settings.unpack_batch)
    return len(y)


def _batch_rows(
    x: torch.Tensor,
    y: torch.Tensor,
    captured: Mapping[str, list[torch.Tensor]],
    outputs: list[torch.Tensor],
    start: int,
) -> Rows:
    count = len(y)
    missing = [name for name, found in captured.items() if not found]
    if missing or not outputs:
        what = f"layers {missing}" if missing else "the classifier outputs"
        raise RuntimeError(
            f"DeephysCallback(reference=...): {what} did not run when the LightningModule's "
            "forward ran on a reference batch; the reference set goes through forward(x), "
            "so the recorded layers must run there"
        )
    logits = torch.cat(outputs).reshape(count, -1)
    bad_inputs = finiteness.input_not_finite(x)
    status = finiteness.with_input_cause(finiteness.prediction_status(logits), bad_inputs)
    predicted = status == finiteness.FINITE
    row = {
        columns.POSITIONS: torch.arange(start, start + count, device=logits.device),
        columns.LABELS: y.detach().to(torch.int64).to(logits.device),
        columns.PREDS: torch.where(predicted, logits.argmax(dim=-1), NO_PREDICTION),
        columns.LOGITS: logits,
        columns.LEFT_OUT: status,
    }
    for name, found in captured.items():
        acts = torch.cat(found)
        stored = acts.to(torch.float16)
        row[columns.act_column(name)] = stored
        row[columns.left_out_column(name)] = finiteness.with_input_cause(
            finiteness.activation_status(acts, stored), bad_inputs
        )
    return Rows({name: column.to(logits.device) for name, column in row.items()})
