"""Finding the modules a callback records, by their dotted names.

Example::

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    >>> find_module(net, "0", "layer")
    Linear(in_features=2, out_features=3, bias=True)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException


def find_module(model: torch.nn.Module, name: str, param: str) -> torch.nn.Module:
    """The submodule of ``model`` named ``name`` (as in ``named_modules()``), looking
    through ``torch.compile``'d submodules; a wrong name raises with the closest names
    (``param`` names the option in the message)."""
    modules = dict(model.named_modules())
    compiled = _through_compiled(modules, name)
    if compiled is not None:  # a natural name inside a torch.compile'd submodule
        return compiled
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.3)
    hint = close or names[:10]
    raise MisconfigurationException(
        f"DeephysCallback({param}={name!r}): {type(model).__name__} has no such module. "
        f"Closest module names: {', '.join(hint) or '(the model has no submodules)'}"
    )


def _through_compiled(modules: Mapping[str, torch.nn.Module], name: str) -> torch.nn.Module | None:
    """The module that ``name`` names once each torch.compile'd submodule on its path
    (an ``OptimizedModule``, which holds the original under ``_orig_mod``) is looked
    through, so that layers keep their natural names; None if there is none."""
    from torch._dynamo.eval_frame import OptimizedModule

    parts, path = name.split("."), []
    for part in parts:
        path.append(part)
        if isinstance(modules.get(".".join(path)), OptimizedModule):
            path.append("_orig_mod")
    resolved = ".".join(path)
    if resolved == name or resolved not in modules:
        return None
    return modules[resolved]
