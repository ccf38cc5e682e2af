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


class _NoAliasLoader(yaml.SafeLoader):
    """YAML anchors and aliases are refused: a spec needs none, and they make a few bytes expand to gigabytes."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a spec", event.start_mark)
        return super().compose_node(parent, index)


class SpecError(ValueError):
    """A refused spec: every problem names the source, the field path and the reason."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


def load_spec(path: Path, environ: Mapping[str, str] | None = None) -> Spec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"cannot read the spec file: {exc.strerror}"]) from exc
    return parse_spec(text, source=str(path), environ=environ)


def parse_spec(text: str, source: str = "portero.yaml", environ: Mapping[str, str] | None = None) -> Spec:
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
            message += f" (got {error['input']!r})"
        problems.append(f"{path}: {message}")
    return problems
