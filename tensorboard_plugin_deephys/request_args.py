"""Query parameters and JSON responses of the plugin's routes.

Every route reads its parameters through these helpers, so a bad parameter is a
4xx JSON answer that names it, never a traceback. The contract is
``docs/http_api.md``.

Example::

    @json_route
    def _serve_neuron(self, request, ctx, experiment_id):
        return self.neuron_impl(ctx, experiment_id, **required_args(request, "run", "layer"),
                                neuron=index_arg(request, "neuron", default=0))
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, overload

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from werkzeug import wrappers

from tensorboard_plugin_deephys.log import storage

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

# The largest index a route accepts (image, neuron, class, page: int32 arrays).
MAX_INDEX = 2**31 - 1
MAX_STEP = 2**62
_INTEGER = re.compile(r"-?[0-9]+")


def json_route(handler: Callable) -> Callable:
    """Wrap a route: it gets the request context and experiment id, and returns
    either a response or data sent as JSON; errors become JSON with their 4xx code
    instead of tracebacks, and a read past its deadline 504 JSON."""

    @functools.wraps(handler)
    def route(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        # A WSGI method; Request.application (typed for a function of the request, not
        # a method) makes the request and turns werkzeug's HTTP errors into answers.
        @wrappers.Request.application
        def respond(request: wrappers.Request) -> wrappers.Response:
            try:
                result = handler(
                    self,
                    request,
                    plugin_util.context(request.environ),
                    plugin_util.experiment_id(request.environ),
                )
            except errors.PublicError as error:
                return http_util.Respond(
                    request, {"error": str(error)}, "application/json", code=error.http_code
                )
            except storage.ReadTimeout as error:  # the read goes on; this thread does not
                return http_util.Respond(
                    request, {"error": str(error)}, "application/json", code=504
                )
            if isinstance(result, wrappers.Response):
                return result
            return http_util.Respond(request, result, "application/json")

        return respond(environ, start_response)

    return route


def required_arg(request: wrappers.Request, name: str) -> str:
    """A parameter that must be given and not empty."""
    value = request.args.get(name)
    if value is None or value == "":
        raise errors.InvalidArgumentError(f"missing query parameter {name!r}")
    return value


def required_args(request: wrappers.Request, *names: str) -> dict[str, str]:
    """Several required parameters by name, e.g. ``**required_args(request, "run", "layer")``."""
    return {name: required_arg(request, name) for name in names}


@overload
def int_arg(
    request: wrappers.Request,
    name: str,
    *,
    default: int,
    minimum: int | None = 0,
    maximum: int | None = MAX_INDEX,
) -> int: ...


@overload
def int_arg(
    request: wrappers.Request,
    name: str,
    *,
    default: None = None,
    minimum: int | None = 0,
    maximum: int | None = MAX_INDEX,
) -> int | None: ...


def int_arg(
    request: wrappers.Request,
    name: str,
    *,
    default: int | None = None,
    minimum: int | None = 0,
    maximum: int | None = MAX_INDEX,
) -> int | None:
    """An integer parameter in ``[minimum, maximum]`` (None: unbounded on that side);
    ``default`` when absent or empty."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # ASCII digits with an optional minus, as the URLs the tab makes: Python's int()
    # also takes "+1", " 1", "1_000" and other scripts' digits.
    if not _INTEGER.fullmatch(raw) or len(raw) > 40:
        raise errors.InvalidArgumentError(
            f"query parameter {name!r} must be an integer, got {raw[:40]!r}"
        )
    value = int(raw)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            bound = f">= {minimum}"
        elif minimum is None:
            bound = f"<= {maximum}"
        else:
            bound = f"in [{minimum}, {maximum}]"
        raise errors.InvalidArgumentError(f"query parameter {name!r} must be {bound}, got {value}")
    return value


@overload
def index_arg(request: wrappers.Request, name: str, *, default: int) -> int: ...


@overload
def index_arg(request: wrappers.Request, name: str, *, default: None = None) -> int | None: ...


def index_arg(request: wrappers.Request, name: str, *, default: int | None = None) -> int | None:
    """An index parameter (a neuron, an image, a class, a page): any integer, ``default``
    when absent. Its range depends on the data, so the read model checks it
    (``StepData.check_*``), in one wording for both ends: ``neuron -1 is out of range:
    layer 'fc1' has 50 neurons (0–49)``."""
    return int_arg(request, name, default=default, minimum=None, maximum=None)


def bool_arg(request: wrappers.Request, name: str, *, default: bool = False) -> bool:
    """A yes/no parameter: ``1``/``true`` or ``0``/``false``; ``default`` when absent."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true"):
        return True
    if raw.lower() in ("0", "false"):
        return False
    raise errors.InvalidArgumentError(
        f"query parameter {name!r} must be 1, 0, true or false, got {raw[:40]!r}"
    )


def step_arg(request: wrappers.Request, name: str = "step") -> int | None:
    """The ``step`` parameter (or another named step, such as ``other_step``): a recorded
    global step, or None for the latest."""
    return int_arg(request, name, maximum=MAX_STEP)
