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


# --- command lines from config dataclasses --------------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the first sentence of the docstring under it (or of its trailing comment), over ``cls``'s MRO."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        lines = source.splitlines()
        for node, nxt in zip(body, [*body[1:], None], strict=True):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            text = ""
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                text = str(nxt.value.value)
            elif "#" in lines[node.lineno - 1]:
                text = lines[node.lineno - 1].split("#", 1)[1]
            text = " ".join(text.split())
            docs[node.target.id] = text.split(". ")[0].rstrip(".").replace("%", "%%")
    return docs


def add_config_args(
    parser: Any,
    cls: type[Config],
    *,
    only: tuple[str, ...] | None = None,
    skip: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
    helps: dict[str, str] | None = None,
    prefix: str = "",
) -> None:
    """One ``--field-name`` option per scalar field of ``cls`` (str, int, float, bool and their ``| None``), typed and
    documented from the dataclass: its default (or ``defaults[name]``), its docstring (or ``helps[name]``), its flag
    (or ``flags[name]``). Bools become ``--x / --no-x``. The destination is ``prefix`` + the field name, so
    :func:`config_from_args` can build the config back (a prefix keeps two configs' same-named fields apart)."""
    import argparse

    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    flags, defaults, helps = flags or {}, defaults or {}, helps or {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip or (only is not None and f.name not in only):
            continue
        base = [t for t in (typing.get_args(hints[f.name]) or (hints[f.name],)) if t is not type(None)]
        if len(base) != 1 or base[0] not in (str, int, float, bool):
            continue  # nested configs, tuples: not command-line fields
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        doc = helps.get(f.name, docs.get(f.name, ""))
        kw: dict[str, Any] = {"dest": prefix + f.name, "default": default, "help": doc}
        if base[0] is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = base[0]
            kw["metavar"] = {str: "STR", int: "N", float: "X"}[base[0]]
        parser.add_argument(flags.get(f.name, "--" + f.name.replace("_", "-")), **kw)


def config_from_args(cls: type[C], args: Any, prefix: str = "", **overrides: Any) -> C:
    """``cls`` from the options :func:`add_config_args` added (attributes ``prefix`` + field name of ``args``; missing
    ones and ``None`` values keep the dataclass default), then ``overrides``."""
    kw = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
          if f.init and getattr(args, prefix + f.name, None) is not None}  # fmt: skip
    kw.update(overrides)
    return cls(**kw)
