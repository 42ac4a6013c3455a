"""Config dataclasses at the edges (after Lightning-AI/litgpt ``config.py``).

Each component has one dataclass that derives :class:`Config`: typed fields with docstrings, validation in
``validate()``, and JSON/YAML round trips. Modules themselves take plain typed arguments; only builders and CLIs
read configs. The component configs live beside their components: ``BackboneConfig`` (models/backbone.py),
``ConnectorConfig`` (models/connector.py), ``MotionTokenizerConfig`` (models/motion_tokenizer.py), ``LoraSettings``
(models/lora.py), ``EngineConfig`` (engine/engine.py), ``SamplingConfig`` (engine/sampling.py),
``MotionBackendConfig`` (engine/motion_backend.py), ``ServerConfig`` (plugin_bridge/server.py) and the training recipes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from a2llm_rt.errors import InputError
from a2llm_rt.utils.fileio import atomic_write

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base of all component configs."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` with a clear message on an invalid combination of fields."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, source: str | Path | None = None) -> C:
        """Build from a dict; unknown keys are an error (a typo must not be ignored silently)."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}", source)
        kw = {}
        for k, v in data.items():
            sub = _config_type(hints.get(k))
            kw[k] = sub.from_dict(v, source=source) if sub is not None and isinstance(v, dict) else v
            if isinstance(v, list) and _is_tuple(hints.get(k)):
                kw[k] = tuple(v)
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"invalid {cls.__name__}: {e}", source) from e

    @classmethod
    def from_file(cls: type[C], path: str | Path) -> C:
        """Read a ``.json`` or ``.yaml``/``.yml`` file."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise InputError(f"cannot read config: {e.strerror}", path) from None
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise InputError(f"a {cls.__name__} file must hold a mapping", path)
        return cls.from_dict(data, source=path)

    def to_file(self, path: str | Path) -> None:
        """Write JSON (or YAML for ``.yaml``/``.yml``), atomically."""
        path = Path(path)
        with atomic_write(path) as f:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                yaml.safe_dump(self.to_dict(), f, sort_keys=False)
            else:
                json.dump(self.to_dict(), f, indent=2)
                f.write("\n")


def _config_type(hint: Any) -> type[Config] | None:
    for t in typing.get_args(hint) or (hint,):
        if isinstance(t, type) and issubclass(t, Config):
            return t
    return None


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple or (
        isinstance(hint, types.UnionType) and any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
    )
