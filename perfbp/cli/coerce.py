"""Option values converted without pydantic, the same as typer converts them.

Recent typer releases convert every option value through a pydantic
``TypeAdapter``, built for each parameter of the command being run, even for
an option left unset.  Importing pydantic and building those adapters is
about 120 ms of a ``perfbp stat`` that otherwise starts in about 100 ms.
perfbp's options are plain: ``str``, ``int`` and ``float`` (some with
``min``), bool flags and lists of strings.

:class:`Command` (the ``cls`` of every perfbp command) hands each of its
parameters a :class:`PlainCoercion`: values in the plain forms it knows
(``[+-]digits`` for an int, a decimal literal for a float, any string for a
str) it converts itself, with the result typer would give; every other value
(``1.0`` for an int, ``inf``, a value out of range, a type it does not know)
goes to typer's own conversion, which imports pydantic then and gives its
usual result or error message.  So the accepted values and the messages are
typer's, and only the common case is faster.  ``tests/test_cli_coerce.py``
compares both on generated values.

The hook uses ``get_runtime_param``, the method typer's parameters convert
through (typer >= 0.2x).  A typer without it (older releases convert with
click, without pydantic) is left as it is.
"""

from __future__ import annotations

import re
import typing

from typer.core import TyperCommand, TyperGroup

_INT = re.compile(r"[+-]?[0-9]{1,4000}\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?\Z")
_FLOAT_LIMIT = 4000  # longer float literals go to typer


class Unhandled(Exception):
    """A value :func:`plain_value` leaves to typer's conversion."""


def _in_range(value, info) -> bool:
    return ((info.min is None or value >= info.min)
            and (info.max is None or value <= info.max))


def plain_value(annotation, info, value):
    """``value`` (a non-None option value) converted for ``annotation``.

    Raises:
        Unhandled: when the value or the annotation is not one of the plain
            cases; typer converts it then.
    """
    if info.parser is not None or getattr(info, "clamp", False):
        raise Unhandled
    if annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is int:
        if type(value) is int:
            number = value
        elif isinstance(value, str) and _INT.match(value):
            number = int(value)
        else:
            raise Unhandled
        if _in_range(number, info):
            return number
    elif annotation is float:
        if type(value) in (int, float):
            number = float(value)
        elif isinstance(value, str) and len(value) <= _FLOAT_LIMIT and _FLOAT.match(value):
            number = float(value)
        else:
            raise Unhandled
        if number == number and abs(number) != float("inf") and _in_range(number, info):
            return number
    elif (typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,)
          and isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)):
        return list(value)
    raise Unhandled


class PlainCoercion:
    """What a parameter's ``get_runtime_param()`` returns under :class:`Command`:
    converts plain values itself and hands the rest to typer's conversion."""

    def __init__(self, param) -> None:
        self._param = param
        self._descriptor = param.type_descriptor

    def __call__(self) -> "PlainCoercion":
        return self

    def coerce(self, value, param, ctx):
        if value is None:  # typer's RuntimeParam.coerce, without building an adapter
            return () if (param.multiple or param.nargs == -1) else None
        try:
            return plain_value(self._descriptor.annotation, self._descriptor.parameter_info, value)
        except Unhandled:
            typers = type(self._param).get_runtime_param(self._param)
            return typers.coerce(value, param=param, ctx=ctx)


def install(params) -> int:
    """Give each typer parameter in ``params`` a :class:`PlainCoercion`;
    returns how many it took (0 with a typer that converts through click)."""
    hooked = 0
    for param in params:
        if hasattr(param, "type_descriptor") and hasattr(type(param), "get_runtime_param"):
            param.get_runtime_param = PlainCoercion(param)
            hooked += 1
    return hooked


class _Plain:
    """Hooks the parameters of a command, its help option (made on demand) included."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        install(self.params)

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None and "get_runtime_param" not in vars(option):
            install([option])
        return option


class Command(_Plain, TyperCommand):
    """A typer command whose plain option values are converted without pydantic."""


class Group(_Plain, TyperGroup):
    """The typer group of the commands, likewise."""
