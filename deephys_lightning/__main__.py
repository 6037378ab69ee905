"""``python -m deephys_lightning``: same as the ``deephys-lightning`` command."""

from deephys_lightning.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
