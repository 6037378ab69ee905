"""The steps at which a run's events hold a tag (read with TensorBoard's accumulator)."""

from __future__ import annotations

from tensorboard.backend.event_processing import event_accumulator

from tensorboard_plugin_deephys.log.metadata import Kind, tag_name


def tag_steps(run_dir) -> dict[str, list[int]]:
    """Every tensor tag of ``run_dir`` and the steps that hold it: in its events and,
    since 0.3, in its step packs (arrays and documents)."""
    from tensorboard_plugin_deephys.log import step_pack

    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    steps = {tag: [e.step for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}
    for relative in step_pack.list_packs(str(run_dir)):
        pack = step_pack.StepPack.open(str(run_dir), relative)
        for tag in sorted({*pack.names, *pack.documents}):
            steps.setdefault(tag, []).append(pack.record.step)
    return {tag: sorted(found) for tag, found in steps.items()}


def thumbnail_steps(run_dir, dataset: str) -> list[int]:
    """The steps at which thumbnails of ``dataset`` were written."""
    return tag_steps(run_dir).get(tag_name(Kind.THUMBNAILS, dataset=dataset), [])
