"""Options defined once: a config field carries its help, choices and text parser as metadata.

``TrainConfig`` and ``EvalConfig`` (robustgsl/config.py) declare their fields with ``setting``. From that
one declaration the CLI builds its click options (robustgsl/cli.py), the report labels the
hyperparameters of a run (robustgsl/report/tables.py), and ``parse_text`` reads any option's value from
a string: a command-line value, or one value of a sweep grid.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from robustgsl.errors import InputError

_METADATA_KEY = "robustgsl.option"


class ParseError(ValueError):
    """Raised by a parser with what it expected (e.g. "an integer"); ``parse_text`` names the option."""


@dataclass(frozen=True)
class OptionSpec:
    """One option: a config field as the command line, the report and a sweep see it."""

    name: str  # the config field
    help: str
    default: Any  # the field's default value
    value_type: type  # bool, int, float, str, list or tuple (after dropping ``None``)
    parse: Callable[[str], Any]  # text -> value; raises ParseError or InputError
    flag: str  # "--batch-size"
    choices: tuple[str, ...] | None = None
    metavar: str | None = None  # how the help shows a value (None: from the type and choices)
    default_text: str | None = None  # how the help shows a default of None ("max", "number of classes")
    shown_default: str | None = None  # how the help shows a default better read as the text it parses from ("all")
    folder: bool = False  # the value is a folder path
    cli: bool = True  # offered on the command line
    multiple: bool = False  # given once per item (e.g. once per --model); the value is a tuple
    applies: Callable[[Mapping[str, Any]], bool] | None = None  # config -> whether the field is used (None: always)

    @property
    def is_flag(self) -> bool:
        return self.value_type is bool

    def applies_to(self, config: Mapping[str, Any]) -> bool:
        """Whether this field means something for ``config`` (a config.json dict or ``TrainConfig.to_dict()``)."""
        return self.applies is None or bool(self.applies(config))


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
            parse: Callable[[str], Any] | None = None, flag: str | None = None, metavar: str | None = None,
            default_text: str | None = None, shown_default: str | None = None, folder: bool = False,
            cli: bool = True, multiple: bool = False,
            applies: Callable[[Mapping[str, Any]], bool] | None = None):
    """A dataclass field with its option metadata (a list default is copied per instance; a default of
    ``dataclasses.MISSING`` makes the field required)."""
    metadata = {_METADATA_KEY: dict(help=help, choices=choices, parse=parse, flag=flag, metavar=metavar,
                                    default_text=default_text, shown_default=shown_default, folder=folder, cli=cli,
                                    multiple=multiple,
                                    applies=applies)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_specs(config_class: type) -> tuple[OptionSpec, ...]:
    """The options of a config dataclass, in field order."""
    hints = typing.get_type_hints(config_class)
    specs = []
    for field in dataclasses.fields(config_class):
        meta = dict(field.metadata[_METADATA_KEY])
        value_type = _value_type(hints[field.name])
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:  # a required field
            default = None
        specs.append(OptionSpec(
            name=field.name, default=default, value_type=value_type,
            parse=meta.pop("parse") or _PARSERS[value_type],
            flag=meta.pop("flag") or "--" + field.name.replace("_", "-"), **meta,
        ))
    return tuple(specs)


def parse_text(spec: OptionSpec, text: str) -> Any:
    """The value of ``spec`` written as ``text``; a clear InputError names the option otherwise."""
    try:
        return spec.parse(text)
    except ParseError as error:
        raise InputError(f"{spec.name} must be {error}, got {text!r}") from None


def format_value(value: Any, default_text: str | None = None) -> str:
    """A value as the help text and a sweep grid write it: on/off, comma lists, short numbers."""
    if value is None:
        return default_text or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _value_type(hint) -> type:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint


# --- parsers: text -> value -----------------------------------------------------------------------

def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ParseError("on or off (true/false, yes/no, 1/0)")


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ParseError("an integer") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ParseError("a number") from None


def parse_int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ParseError("comma-separated integers") from None


def parse_name_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


_PARSERS: dict[type, Callable[[str], Any]] = {
    bool: parse_bool, int: parse_int, float: parse_float, str: str, list: parse_int_list, tuple: parse_name_list,
}
