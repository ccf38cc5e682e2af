"""Reading `portero.yaml`: YAML, then the environment's overrides, then strict validation."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from portero.spec.models import Spec
from portero.spec.overrides import SeedEnvironment, apply_overrides

# A spec is a few KiB; one of 1 MB is refused before it is parsed (PyYAML reads about 1 MB/s: a 50 MB file ran
# `validate` for 252 s into a MemoryError). The API's `PUT /spec` takes the same at most.
MAX_SPEC_BYTES = 1_000_000
MAX_NUMBER_CHARS = 100  # longer numbers are no field's value; past 4,300 digits int() itself refuses them
SHOWN_CHARS = 80  # of a refused value, in a problem


class _Oversized(int):
    """A number written with more than MAX_NUMBER_CHARS characters, kept as a huge int that every numeric field
    refuses with its own path and limit (a YAML error could name only a line), and shown by its size."""

    digits: int

    def __new__(cls, digits: int, *, negative: bool) -> _Oversized:
        number = super().__new__(cls, -(10**MAX_NUMBER_CHARS) if negative else 10**MAX_NUMBER_CHARS)
        number.digits = digits
        return number

    def __getnewargs_ex__(self) -> tuple[tuple[int], dict[str, bool]]:  # copied whole (apply_overrides copies)
        return (self.digits,), {"negative": self < 0}

    def __repr__(self) -> str:
        return f"a number of {self.digits} characters"


class _NoAliasLoader(yaml.SafeLoader):
    """YAML anchors and aliases are refused: a spec needs none, and they make a few bytes expand to gigabytes."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a spec", event.start_mark)
        return super().compose_node(parent, index)

    def construct_number(self, node: yaml.ScalarNode) -> object:
        text = self.construct_scalar(node)
        if len(text) > MAX_NUMBER_CHARS:
            return _Oversized(len(text), negative=text.lstrip().startswith("-"))
        if node.tag.endswith(":int"):
            return self.construct_yaml_int(node)
        return self.construct_yaml_float(node)


_NoAliasLoader.add_constructor("tag:yaml.org,2002:int", _NoAliasLoader.construct_number)
_NoAliasLoader.add_constructor("tag:yaml.org,2002:float", _NoAliasLoader.construct_number)


class SpecError(ValueError):
    """A refused spec: every problem names the source, the field path and the reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


def load_spec(path: Path, environ: Mapping[str, str] | None = None) -> Spec:
    try:
        with path.open("rb") as handle:  # at most one byte past the limit is read, whatever the file is
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read the spec file: {exc.strerror}"]) from exc
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(str(path), [_too_large()])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from None
    return parse_spec(text, source=str(path), environ=environ)


def _too_large() -> str:
    return f"the spec is over {MAX_SPEC_BYTES:,} bytes, the limit (a spec is usually a few KiB)"


def parse_spec(text: str, source: str = "portero.yaml", environ: Mapping[str, str] | None = None) -> Spec:
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(source, [_too_large()])
    try:
        raw = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML: {exc}"]) from exc
    except RecursionError:
        raise SpecError(source, ["not accepted: nested too deeply"]) from None
    if not isinstance(raw, dict):
        raise SpecError(source, [f"(root): expected a mapping of settings, got {type(raw).__name__}"])
    try:
        seed = SeedEnvironment() if environ is None else _MappingOnly(**_env_kwargs(environ))
        overrides = seed.set_values()
    except ValidationError as exc:
        raise SpecError("environment", _describe(exc)) from exc
    try:
        return Spec.model_validate(apply_overrides(raw, overrides))
    except ValidationError as exc:
        raise SpecError(source, _describe(exc)) from exc


class _MappingOnly(SeedEnvironment):
    """An explicit mapping is the whole environment: os.environ is not consulted."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _env_kwargs(environ: Mapping[str, str] | None) -> dict[str, Any]:
    """pydantic-settings reads os.environ itself; an explicit mapping (tests, API) is passed as values."""
    if environ is None:
        return {}
    names = SeedEnvironment.model_fields
    return {name: value for name, value in environ.items() if name in names}


def _describe(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        path = ".".join(str(part) for part in error["loc"])
        if not path:
            problems.append(message)  # whole-spec checks name their own fields
            continue
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif "input" in error and error["type"] not in {"missing"} and not isinstance(error["input"], dict):
            message += f" (got {_shown(error['input'])})"
        problems.append(f"{path}: {message}")
    return problems


def _shown(value: object) -> str:
    """The value a problem is about, cut short: a refused 50,000-character string is not printed back whole."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    if isinstance(value, str):
        size = f"{len(value)} characters"
    else:
        size = f"{len(value)} items" if isinstance(value, tuple | list) else f"{len(text)} characters shown"
    return f"{text[:SHOWN_CHARS]}... ({size})"
