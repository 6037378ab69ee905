"""Time the demo: training, logging and all, at its default sizes.

    python benchmarks/demo_time.py

Prints the wall time of ``train_demo`` (3 epochs, 5,000 training and 4 x 1,000
validation images, DeephysCallback recording every epoch), the same run without
the callback beside it, and their ratio. The issue's target for the demo is "under
two minutes on the 2-core machine". For a validation epoch alone see
``bench_callback.py``.
"""

from __future__ import annotations

import tempfile
import time
import warnings

from deephys_lightning.demo.cli import train_demo


def _train_seconds(record: bool) -> float:
    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        train_demo(logdir, epochs=3, quiet=True, record=record)
        return time.perf_counter() - start


def main() -> None:
    warnings.filterwarnings("ignore")
    _train_seconds(False)  # warm-up: imports, data generation code paths
    plain = _train_seconds(False)
    recorded = _train_seconds(True)
    print("demo training, 3 epochs, 5,000 train + 4 x 1,000 val images:")
    print(f"  without DeephysCallback  {plain:6.1f} s")
    print(f"  with DeephysCallback     {recorded:6.1f} s   ratio {recorded / plain:.2f}x")


if __name__ == "__main__":
    main()
