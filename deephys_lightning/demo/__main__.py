"""``python -m deephys_lightning.demo``: same as the ``deephys-demo`` command."""

from deephys_lightning.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
