"""The Deephys demo: Colored MNIST, the paper's small CNN, logged for TensorBoard.

Run ``deephys-demo`` (or ``python -m deephys_lightning.demo``); see ``cli.py``.
"""
