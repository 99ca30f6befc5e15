"""Declared configuration fields, and how a raw value becomes a checked one.

A configuration class declares each field as ``name: type = field(default, description=...)``;
``Record`` turns a mapping of raw values (strings from the environment, or Python values from
the command line and tests) into a frozen object of those fields, and reports every invalid
field at once, each with a message that says what to write instead. It reads the few types
settings are made of: str, int, float, bool, Literal, Secret, tuples of them, dict[str, str],
and any of them or None.

Not msgspec's ``convert``, which the request bodies use: it stops at the first invalid value
and speaks of JSON types (``Expected `int` >= 1 - at `$.port```), where a start-up error
should list every variable to fix in the words of the README's table, and booleans are
environment words (on, off, yes, no) it does not read.
"""

from __future__ import annotations

import operator
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from msgspec import Struct

from proxy.errors import echo

_T = TypeVar("_T")

_REQUIRED: Any = object()
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}
Location = tuple[str | int, ...]
Check = Callable[[Any], Any]


class Secret:
    """A string that never shows in a repr, a log line or an error: tokens and keys."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)


class ConfigError(ValueError):
    """Invalid configuration: one (location, message) per mistake."""

    def __init__(self, problems: list[tuple[Location, str]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {m}" for loc, m in problems))
        self.problems = problems


class Field(Struct, frozen=True):
    default: Any
    description: str
    default_factory: Callable[[], Any] | None
    ge: float | None
    gt: float | None
    le: float | None
    pattern: str | None

    def initial(self) -> Any:
        return self.default_factory() if self.default_factory else self.default


def field(
    default: Any = _REQUIRED,
    *,
    description: str = "",
    default_factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    pattern: str | None = None,
) -> Any:
    """One declared field: its default (none: required), bounds and description."""
    return Field(default, description, default_factory, ge, gt, le, pattern)


class Record:
    """A frozen object of declared fields, built from raw values by ``build``."""

    _declared: ClassVar[dict[type, dict[str, tuple[Field, Any]]]] = {}

    @classmethod
    def fields(cls) -> dict[str, tuple[Field, Any]]:
        """Each declared field by name, with its type (resolved on first use, not at import)."""
        found = Record._declared.get(cls)
        if found is None:
            found = {}
            for klass in reversed(cls.__mro__):
                declared = {k: v for k, v in vars(klass).items() if isinstance(v, Field)}
                if declared:  # only classes that declare fields: others may annotate more
                    hints = typing.get_type_hints(klass)
                    found.update({name: (f, hints[name]) for name, f in declared.items()})
            Record._declared[cls] = found
        return found

    @classmethod
    def build(
        cls,
        raw: Mapping[str, object],
        *,
        before: Mapping[str, Check] = MappingProxyType({}),
        after: Mapping[str, Check] = MappingProxyType({}),
        forbid_extra: bool = False,
    ) -> dict[str, Any]:
        """The checked value of every field from ``raw``; a ConfigError naming each invalid
        (and, with ``forbid_extra``, each unknown) field. ``before`` checks of a field see its
        raw value, ``after`` ones its converted value; either raises a ValueError that says
        what to write instead."""
        fields = cls.fields()
        problems: list[tuple[Location, str]] = []
        values: dict[str, Any] = {}
        for name, (declared, hint) in fields.items():
            if name not in raw:
                if declared.default is _REQUIRED and declared.default_factory is None:
                    problems.append(((name,), "is required"))
                else:
                    values[name] = declared.initial()
                continue
            try:
                value = raw[name]
                if name in before:
                    value = before[name](value)
                value = convert(value, hint, declared)
                values[name] = after[name](value) if name in after else value
            except ValueError as exc:
                problems.append(((name,), str(exc)))
        if forbid_extra:
            problems += [((k,), "is not a setting") for k in raw if k not in fields]
        if problems:
            raise ConfigError(problems)
        return values

    def __init__(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be set")

    def replace(self, **changes: Any) -> typing.Self:
        """A copy with ``changes`` (already checked values), as dataclasses.replace."""
        copy = object.__new__(type(self))
        for name, value in {**vars(self), **changes}.items():
            object.__setattr__(copy, name, value)
        return copy

    def items(self) -> Iterator[tuple[str, Any]]:
        for name in self.fields():
            yield name, getattr(self, name)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.items())
        return f"{type(self).__name__}({shown})"


def convert(value: object, hint: Any, declared: Field) -> Any:
    """``value`` as the type ``hint`` within ``declared``'s bounds; a ValueError that says
    what is expected."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(value, inner, declared)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"must be one of {', '.join(map(repr, args))}; got {echo(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"must be a list; got {echo(value)}")
        return tuple(convert(item, args[0], declared) for item in value)
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ValueError(f"must be name=value pairs; got {echo(value)}")
        return dict(value)
    if hint is Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise ValueError("must be a string")  # a secret is never echoed
        return Secret(value)
    if hint is str:
        text = _text(value)
        if declared.pattern and not re.search(declared.pattern, text):
            raise ValueError(f"must match {declared.pattern}; got {echo(text)}")
        return text
    if hint is bool:
        return _boolean(value)
    if hint is int:
        return _bounded(_integer(value), declared, "an integer")
    if hint is float:
        return _bounded(_number(value), declared, "a number")
    raise TypeError(f"no conversion to {hint!r}")  # a declaration this module cannot read


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string; got {echo(value)}")
    return value


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower() if isinstance(value, str | int) else None
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"must be true or false (1/0, yes/no, on/off); got {echo(value)}")


def _integer(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _from_text(value, int, "an integer")


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _from_text(value, float, "a number")


def _from_text(value: object, parse: Callable[[str], _T], what: str) -> _T:
    """``value`` read by ``parse`` when it is text (surrounding blanks ignored); anything else,
    or text ``parse`` refuses, is a ValueError that says it must be ``what``."""
    if isinstance(value, str):
        try:
            return parse(value.strip())
        except ValueError:
            pass
    raise ValueError(f"must be {what}; got {echo(value)}")


def _bounded(number: float, declared: Field, kind: str) -> Any:
    bounds = [
        (bound, check, words)
        for bound, check, words in (
            (declared.ge, operator.ge, "at least"),
            (declared.gt, operator.gt, "greater than"),
            (declared.le, operator.le, "at most"),
        )
        if bound is not None
    ]
    if number != number or not all(check(number, bound) for bound, check, _ in bounds):
        if declared.ge is not None and declared.le is not None:
            expected = f"from {declared.ge:g} to {declared.le:g}"
        else:
            expected = " and ".join(f"{words} {bound:g}" for bound, _, words in bounds)
        raise ValueError(f"must be {kind} {expected}".rstrip() + f"; got {number}")
    return number
