"""One recorded step as a single HTML file you can send: ``deephys-lightning report``.

The page holds the overview and the chosen neuron, image and category views, with
its thumbnails inlined and nothing fetched from elsewhere, for a paper's supplement,
a chat message, or a notebook where TensorBoard's frame does not show. Modules:
``choices`` (what is asked), ``build`` (the content, from ``read_log``), ``content``
(its dataclasses), ``pictures`` (the thumbnails), ``render`` (the HTML), ``write``.

Example::

    from deephys_lightning.report import write_report

    write_report("lightning_logs/version_0", "report.html", neurons=[3, 17],
                 images=[(5, "permuted")], categories=[3])
"""

from deephys_lightning.report.choices import ReportError, parse_images, parse_indices
from deephys_lightning.report.write import write_report

__all__ = ["ReportError", "parse_images", "parse_indices", "write_report"]
