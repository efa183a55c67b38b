"""Typed configs: dataclasses loaded from YAML, overridden by ``key.sub=value`` arguments.

Every job takes one dataclass tree. YAML files fill it (several layer, later ones winning),
command-line overrides patch it, and the resolved tree is written next to the job's
outputs so a run can be repeated from its own directory. Unknown keys and values of the
wrong type are errors that name the key: a typo must never silently fall back to a default.

A section annotated ``Annotated[Base, OneOf(...)]`` is one of several dataclasses, picked by
its ``name`` key before its other keys are read (the train job's ``model``: each model has
its own keys).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, TypeVar

import yaml

from cliper_dist import files, quiet
from cliper_dist.errors import UserError

T = TypeVar("T")


_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class ConfigError(UserError):
    """A config file or override that does not fit the job's dataclass."""


@dataclass(frozen=True)
class OneOf:
    """``Annotated[Base, OneOf(variants, default)]``: a section whose ``name`` key picks its
    dataclass among ``variants()`` (name -> a dataclass with a ``name`` field); ``default``
    where the section names none. ``upgrade`` rewrites a section as an older version saved
    it, before it is read."""

    variants: Callable[[], dict[str, type]]
    default: str
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] = lambda section: section


Paths = str | Path | typing.Sequence[str | Path] | None


def load(cls: type[T], paths: Paths = None, overrides: typing.Sequence[str] = ()) -> T:
    """Build ``cls`` from YAML files (none, one, or several merged in order, a later file's
    keys replacing an earlier's), then apply ``key.sub=value`` overrides."""
    tree: dict[str, Any] = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths or ():
        _merge(tree, _read_yaml(Path(path)))
    return _load(cls, tree, overrides)


def load_saved(cls: type[T], path: str | Path, overrides: typing.Sequence[str] = ()) -> T:
    """A run's saved config (``save``) as this version reads it: a key added since the run was
    saved takes the value the run used (``SAVED_WITHOUT``), not today's default; then ``overrides``."""
    return _load(cls, _upgraded(cls, _read_yaml(Path(path))), overrides)


def _load(cls: type[T], tree: dict[str, Any], overrides: typing.Sequence[str]) -> T:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
        keys = key.split(".")
        _set_path(tree, keys, _from_text(_type_at(cls, keys), raw, item))
    return _build(cls, tree, prefix="")


def build(tp: Any, tree: dict[str, Any], key: str) -> Any:
    """The config section ``key`` of annotation ``tp`` (a dataclass, or one ``OneOf``) from ``tree``."""
    return _coerce(tp, tree, key)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with path.open() as f:
        try:
            tree = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return tree


def _merge(tree: dict[str, Any], layer: dict[str, Any]) -> None:
    """``layer`` into ``tree``: sections merge key by key, any other value replaces."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            _merge(tree[key], value)
        else:
            tree[key] = value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _one_of(tp: Any) -> OneOf | None:
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, OneOf)), None)
    return None


def _type_at(cls: type, keys: list[str]) -> Any:
    """The annotation of ``a.b.c`` in the dataclass tree ``cls``; None for no such key (``_build``
    reports it). In a ``OneOf`` section, the key's type in the first variant that has it."""
    tp: Any = cls
    for k in keys:
        one_of = _one_of(tp)
        if one_of is not None:
            tp = next((_hints(v)[k] for v in one_of.variants().values() if k in _hints(v)), None)
        elif dataclasses.is_dataclass(tp):
            tp = _hints(tp).get(k)
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        else:
            return None
    return tp


def _from_text(tp: Any, text: str, item: str) -> Any:
    """A command-line value. Text as typed for a str key or a choice of strings: YAML would
    make ``--out yes`` a bool and ``--out 010`` the number 8. Other keys read it as YAML;
    null (or ~) still means None for a key that may be None, and an empty value is ''."""
    if _takes_text(tp):
        return None if text in _NULLS and _may_be_none(tp) else text
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{item}': not a YAML value ({e.__class__.__name__})") from None


_NULLS = ("null", "Null", "NULL", "~")


def _takes_text(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_text(arg) for arg in typing.get_args(tp) if arg is not type(None))
    if origin is typing.Literal:
        return all(isinstance(choice, str) for choice in typing.get_args(tp))
    return tp is str


def _may_be_none(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


class ToolHelp(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` of the tools: descriptions as written, every argument with its default."""


def from_cli(cls: type[T], argv: typing.Sequence[str], description: str, flags: typing.Sequence[str]) -> T:
    """A launcher's command line: ``--config FILE``, ``--KEY VALUE`` for the top-level keys in
    ``flags`` (also spelt with dashes; help from the field's comment), and ``key.sub=value``
    overrides before or after them; flags apply first. Known-harmless library warnings are
    hidden unless ``--verbose``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="config keys (YAML or key.sub=value; default, then meaning):\n"
                                            + "\n".join(describe(cls)))
    parser.add_argument("--config", action="append",
                        help=f"YAML file of {cls.__name__} keys; repeat it to layer files, later ones winning")
    comments = _field_comments(cls)
    for key in flags:
        spellings = dict.fromkeys([f"--{key.replace('_', '-')}", f"--{key}"])
        parser.add_argument(*spellings, dest=key, help=comments.get(key))
    parser.add_argument("--verbose", action="store_true",
                        help="show the library warnings that are hidden as known-harmless (cliper_dist/quiet.py)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_intermixed_args(list(argv))
    if not args.verbose:
        quiet.hide_known_library_noise()
    given = [f"{k}={v}" for k in flags if (v := getattr(args, k))]
    return load(cls, args.config, given + args.overrides)


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per key of the dataclass tree ``cls``: name, type, default and the comment that
    follows the field in its source, so ``--help`` cannot drift from the code."""
    hints, comments, lines = _hints(cls), _field_comments(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        one_of = _one_of(tp)
        if one_of is not None:
            lines += _describe_variants(one_of, f"{prefix}{f.name}", comments.get(f.name))
            continue
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        line = f"  {prefix}{f.name} ({_type_name(tp)}) = {default!r}"
        lines.append(line + (f"  # {comments[f.name]}" if f.name in comments else ""))
    return lines


def _describe_variants(one_of: OneOf, key: str, comment: str | None) -> list[str]:
    variants = one_of.variants()
    lines = [f"  {key}.name ({' | '.join(variants)}) = {one_of.default!r}" + (f"  # {comment}" if comment else "")]
    for name, cls in variants.items():
        lines.append(f"  {key}.name={name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        lines += ["  " + line for line in describe(cls, f"{key}.") if not line.startswith(f"  {key}.name ")]
    return lines


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(str(c) for c in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _field_comments(cls: type) -> dict[str, str]:
    """field name -> the ``# comment`` on its line in the source of the class, or of the
    nearest dataclass base that declares it."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        source = textwrap.dedent(inspect.getsource(klass))
        comments = {tok.start[0]: tok.string.lstrip("# ").strip() for tok in
                    tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
        out.update({node.target.id: comments[node.lineno] for node in ast.parse(source).body[0].body
                    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and node.lineno in comments})
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: the override keys of a config tree."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def save(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically, so a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def refuse_changed(cfg: Any, meta: dict[str, Any], resumable: set[str], what: str) -> None:
    """A job resumes from a checkpoint only under the config it was written with (``meta["config"]``),
    up to the top-level keys in ``resumable``; input paths (``data``, ``features``, ``init``, a
    model ``.json``) compare resolved."""
    if "config" not in meta:
        raise UserError(f"{cfg.out} holds a checkpoint without its config (written by an older version); "
                        "pass a new --out, or resume=never to start over in this one")
    saved, now = flatten(_upgraded(type(cfg), meta["config"])), flatten(to_dict(cfg))
    for paths in (saved, now):  # the same file or directory, however it is spelt
        for key in ("data", "features", "init", "model"):
            value = paths.get(key)
            if value and (key != "model" or str(value).endswith(".json")):
                paths[key] = str(Path(value).resolve())
    changed = [k for k in sorted(saved.keys() | now.keys())
               if k.split(".")[0] not in resumable and saved.get(k) != now.get(k)]
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed[:4])
        more = f" (and {len(changed) - 4} more)" if len(changed) > 4 else ""
        raise UserError(f"{cfg.out} holds {what} made with another config ({diff}{more}); "
                        "pass a new --out, or resume=never to start over in this one")


def _upgraded(cls: type, tree: dict[str, Any]) -> dict[str, Any]:
    """A saved ``tree`` as this version reads it: every ``OneOf`` section upgraded
    (``OneOf.upgrade``), and a key added since it was saved given the value its run used (the
    section class's ``SAVED_WITHOUT``: key -> the behaviour before the key existed). For saved
    configs only (the resume check, ``load_saved``): a saved config is complete, a user's YAML may
    not be, and takes the defaults."""
    out = {**getattr(cls, "SAVED_WITHOUT", {}), **tree}
    for name, tp in _hints(cls).items():
        value, one_of = out.get(name), _one_of(tp)
        if not isinstance(value, dict):
            continue
        if one_of is not None and value.get("name") in one_of.variants():
            section = one_of.upgrade(value)
            out[name] = _upgraded(one_of.variants()[section["name"]], section)
        elif dataclasses.is_dataclass(tp):
            out[name] = _upgraded(tp, value)
    return out


def _set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{'.'.join(keys)}': '{k}' is a value, not a section")
        node = child
    node[keys[-1]] = value


def _build(cls: type[T], tree: dict[str, Any], prefix: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _hints(cls)
    unknown = sorted(set(tree) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' (valid keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in tree.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow only lossless conversions."""
    one_of = _one_of(tp)
    if one_of is not None:
        return _variant(one_of, value, key)
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' is a section; got {type(value).__name__} {value!r}")
        return _build(tp, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key '{key}': bad value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {list(choices)}; got {value!r}")
        return value
    if origin in (list, tuple):
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list; got {value!r}")
        items = [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping; got {value!r}")
        return {_coerce(key_tp, k, key): _coerce(val_tp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. a run name such as 2024 in a YAML file
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"config key '{key}' must be {tp.__name__}; got {type(value).__name__} {value!r}")
    return value


def _variant(one_of: OneOf, value: Any, key: str) -> Any:
    """The dataclass that ``value``'s name picks, built from it; a key of another variant is
    refused naming the variants that own it."""
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' is a section; got {type(value).__name__} {value!r}")
    variants = one_of.variants()
    name = value.get("name", one_of.default)
    if name not in variants:
        raise ConfigError(f"config key '{key}.name' must be one of {list(variants)}; got {name!r}")
    value = one_of.upgrade({**value, "name": name})
    own = {f.name for f in dataclasses.fields(variants[name])}
    for k in sorted(set(value) - own):
        owners = [n for n, cls in variants.items() if k in {f.name for f in dataclasses.fields(cls)}]
        keys = f"{name}'s keys: {', '.join(sorted(own - {'name'}))}"
        if owners:
            raise ConfigError(f"config key '{key}.{k}' belongs to {_and(owners)}, not {name} ({keys})")
        raise ConfigError(f"unknown config key '{key}.{k}' ({keys})")
    return _build(variants[name], value, prefix=f"{key}.")


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
