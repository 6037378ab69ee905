"""The one parser of the log's JSON: plugin contents, record documents, thumbnail
references, detection rows and the headers of ``.thumbs`` packs.

An event file is data, and a damaged or foreign one may hold anything where a
document belongs: ``1e400`` (which Python reads as infinity, and ``int()`` of it
overflows), ``NaN``, a number of a thousand digits, a list where a name belongs, or
thousands of nested brackets (``RecursionError`` in the standard parser). Every
reader of the log parses its JSON here, within bounds, and reads each field as the
type it must have, so that any of these becomes a :class:`MalformedDocument` (a
``ValueError`` that names the document and the field) for that one item, never an
``OverflowError``, ``TypeError`` or ``RecursionError`` that ends a request or a
command:

- a document is at most ``max_bytes`` long (:data:`MAX_DOCUMENT_BYTES` by default),
  UTF-8, nested at most :data:`MAX_DEPTH` deep;
- integers are within ``|n| < 2**53`` (:data:`MAX_INT`: exact as a double, as a
  browser reads them);
- floats are finite; ``NaN`` only where a field allows it (``allow_nan``: the
  detection rows' metrics), ``Infinity`` never.

Example::

    >>> doc = Fields(parse_json(b'{"step": 3, "layers": ["fc"]}', "a record"), "a record")
    >>> doc.count("step"), doc.texts("layers")
    (3, ('fc',))
    >>> try:
    ...     parse_json(b'{"step": 1e400}', "a record")
    ... except MalformedDocument as error:
    ...     print(error)
    a record is malformed: the number 1e400 is out of range (not finite)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

# Integers a document may hold: |n| < MAX_INT (2**53, exact as a double).
MAX_INT = 2**53
# How deep a document may nest lists and objects (the log's own nest 3 deep at most).
MAX_DEPTH = 32
# The longest document (a record of a thousand classes and layers is well below 1 MiB).
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# The longest plugin content (a kind, a version, a layer and a dataset name).
MAX_CONTENT_BYTES = 64 * 1024

_REQUIRED: Any = object()
# A JSON string (escapes included) or a bracket outside strings.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class MalformedDocument(ValueError):
    """A JSON document of the log that cannot be read: not JSON, out of bounds, or a
    field of the wrong type. ``what`` names the document, ``cause`` what is wrong."""

    def __init__(self, what: str, cause: str, message: str | None = None) -> None:
        super().__init__(message or f"{what} is malformed: {cause}")
        self.what = what
        self.cause = cause


def _shown(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."


def type_name(value: Any) -> str:
    """How a JSON value is named in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {_shown(repr(value))}"
    if isinstance(value, str):
        return f"the text {_shown(repr(value))}"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"an object of {len(value)} fields"
    return type(value).__name__


def _check_depth(text: str, what: str, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` before the parser recurses into it."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot nest deeper: the common case, without a scan
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise MalformedDocument(what, f"it nests deeper than {max_depth} levels")
        elif token in "]}":
            depth -= 1


def parse_json(
    raw: bytes | bytearray | memoryview | str,
    what: str,
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
    allow_nan: bool = False,
) -> Any:
    """The JSON value of ``raw`` (UTF-8), within the bounds of this module.

    ``what`` names the document in the error (``"the record at step 3"``);
    ``allow_nan``: a ``NaN`` literal is read as a float NaN (``Infinity`` never is).

    Raises:
        MalformedDocument: anything else (not JSON, too long, too deep, a number out
            of range).
    """
    if len(raw) > max_bytes:
        raise MalformedDocument(what, f"it is {len(raw)} bytes long, over {max_bytes}")
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedDocument(what, f"it is not UTF-8 ({error.reason})") from None
    _check_depth(text, what, max_depth)

    def parse_int(token: str) -> int:
        # 2**53 has 16 digits: a longer token is out of range before int() reads it.
        value = int(token) if len(token.lstrip("-")) <= 16 else MAX_INT
        if abs(value) >= MAX_INT:
            raise MalformedDocument(what, f"the integer {_shown(token, 24)} is out of range")
        return value

    def parse_float(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            raise MalformedDocument(
                what, f"the number {_shown(token, 24)} is out of range (not finite)"
            )
        return value

    def parse_constant(token: str) -> float:
        if token == "NaN" and allow_nan:
            return math.nan
        raise MalformedDocument(what, f"it holds {token}, not a finite number")

    try:
        return json.loads(
            text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant
        )
    except MalformedDocument:
        raise
    except json.JSONDecodeError as error:
        raise MalformedDocument(what, f"it is not JSON ({error.msg} at {error.pos})") from None
    except (ValueError, RecursionError) as error:  # the depth check makes these unlikely
        raise MalformedDocument(what, f"it is not JSON ({type(error).__name__})") from None


class Fields:
    """The fields of one JSON object, each read as the type it must have.

    Every reader raises :class:`MalformedDocument` naming the field and what it held;
    a field that is absent takes ``default`` when one is given. Integers are never
    booleans, floats or text; names are text.

    Example::

        >>> row = Fields({"detector": "msp", "auroc": None}, "a detection row")
        >>> row.text("detector"), row.number("auroc", allow_nan=True)
        ('msp', nan)
    """

    def __init__(self, value: Any, what: str) -> None:
        if not isinstance(value, dict):
            raise MalformedDocument(what, f"it is {type_name(value)}, not an object")
        self.data: Mapping[str, Any] = value
        self.what = what

    def _bad(self, key: str, value: Any, wanted: str) -> MalformedDocument:
        return MalformedDocument(self.what, f"its {key!r} is {type_name(value)}, not {wanted}")

    def _get(self, key: str, default: Any) -> tuple[bool, Any]:
        """(present, value): absent with a default gives ``(False, default)``."""
        if key in self.data:
            return True, self.data[key]
        if default is _REQUIRED:
            raise MalformedDocument(self.what, f"it has no {key!r}")
        return False, default

    def text(self, key: str, default: Any = _REQUIRED) -> str:
        present, value = self._get(key, default)
        if present and not isinstance(value, str):
            raise self._bad(key, value, "a text")
        return value

    def optional_text(self, key: str) -> str | None:
        """A name, or None where the field is absent or null."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, value, "a text or null")
        return value

    def integer(self, key: str, default: Any = _REQUIRED, *, minimum: int | None = None) -> int:
        present, value = self._get(key, default)
        if present:
            check_integer(value, f"its {key!r}", self.what, minimum=minimum)
        return value

    def count(self, key: str, default: Any = _REQUIRED) -> int:
        """A non-negative integer."""
        return self.integer(key, default, minimum=0)

    def number(self, key: str, default: Any = _REQUIRED, *, allow_nan: bool = False) -> float:
        """A finite number; with ``allow_nan``, null (and NaN) read as NaN."""
        present, value = self._get(key, default)
        if not present:
            return value
        if value is None and allow_nan:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, value, "a number")
        if not allow_nan and math.isnan(value):
            raise self._bad(key, value, "a number")
        return float(value)

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        present, value = self._get(key, default)
        if present and not isinstance(value, bool):
            raise self._bad(key, value, "true or false")
        return value

    def list(self, key: str, default: Any = _REQUIRED) -> list[Any]:
        """A list of any values (null reads as the default, when there is one)."""
        present, value = self._get(key, default)
        if not present or (value is None and default is not _REQUIRED):
            return list(default)
        if not isinstance(value, list):
            raise self._bad(key, value, "a list")
        return value

    def texts(self, key: str, default: Any = _REQUIRED) -> tuple[str, ...]:
        """A list of texts (null reads as the default, when there is one)."""
        present, value = self._get(key, default)
        if not present or (value is None and default is not _REQUIRED):
            return tuple(default)
        if not isinstance(value, list):
            raise self._bad(key, value, "a list of texts")
        for item in value:
            if not isinstance(item, str):
                raise self._bad(key, item, "a text (in a list of texts)")
        return tuple(value)

    def counts(self, key: str, default: Any = _REQUIRED) -> tuple[int, ...]:
        """A list of non-negative integers."""
        present, value = self._get(key, default)
        if not present:
            return tuple(default)
        if not isinstance(value, list):
            raise self._bad(key, value, "a list of counts")
        for item in value:
            check_integer(item, f"an item of {key!r}", self.what, minimum=0)
        return tuple(value)

    def counts_by_name(
        self, key: str, default: Any = _REQUIRED, *, optional: bool = False
    ) -> dict[str, int | None]:
        """An object of non-negative integers (``optional``: or nulls) by name (null
        reads as the default, when there is one)."""
        present, value = self._get(key, default)
        if not present or (value is None and default is not _REQUIRED):
            return dict(default)
        if not isinstance(value, dict):
            raise self._bad(key, value, "an object of counts")
        for name, item in value.items():
            if item is None and optional:
                continue
            check_integer(item, f"{key!r}[{_shown(repr(name))}]", self.what, minimum=0)
        return dict(value)


def check_integer(value: Any, field: str, what: str, *, minimum: int | None = None) -> int:
    """``value`` when it is an integer (not a boolean) within bounds, else
    :class:`MalformedDocument` naming ``field`` of ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedDocument(what, f"{field} is {type_name(value)}, not an integer")
    if abs(value) >= MAX_INT or (minimum is not None and value < minimum):
        raise MalformedDocument(what, f"{field} is {_shown(str(value), 24)}, out of range")
    return value


def items(value: Any, what: str) -> list[Any]:
    """``value`` when it is a list, else :class:`MalformedDocument`."""
    if not isinstance(value, list):
        raise MalformedDocument(what, f"it is {type_name(value)}, not a list")
    return value
