"""Which configured models the service has announced it will shut down.

The `openai` package documents announced shutdowns in the docstrings of its typed fields
("Deprecated values: - "gpt-realtime", …: Announced shutdown date: 2027-01-20.") and lists
the models it knows in the fields' `Literal[...]` annotations. Both are read here from the
installed package's source with `ast`, at run time: upgrading the package is what brings
new announcements, with no list of ours to keep up to date. The modules are read, not
imported (importing `openai` costs half a second and nothing here needs its classes).

A layout the parser does not recognise degrades to an empty catalog: no notices, and the
callers say the models could not be checked.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import importlib.util
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import Settings

DEPRECATIONS_PAGE = "https://developers.openai.com/api/docs/deprecations"


@dataclass(frozen=True, slots=True)
class ModelField:
    """A typed field of the openai package whose values are model names."""

    name: str      # our name for it
    module: str    # dotted module inside the openai package
    cls: str
    attribute: str = "model"


MODEL_FIELDS = (
    ModelField("realtime", "openai.types.realtime.realtime_session_create_request", "RealtimeSessionCreateRequest"),
    ModelField("transcription", "openai.types.realtime.audio_transcription", "AudioTranscription"),
    # GPT-Live sessions: no shutdown announced in openai 3.60, read so that a Live engine
    # setting gets its notices by adding one line to MODEL_SETTINGS.
    ModelField("live", "openai.types.live.session_config", "SessionConfig"),
)

# Settings attributes naming a model, and the field that documents their values.
MODEL_SETTINGS = {
    "openai_realtime_model": "realtime",
    "openai_transcribe_model": "transcription",
}


@dataclass(frozen=True, slots=True)
class Deprecation:
    model: str
    shutdown: date | None   # None: deprecated without an announced date
    note: str               # the package's own words after the model names


@dataclass(frozen=True, slots=True)
class FieldModels:
    known: frozenset[str]                    # the field's Literal values
    deprecated: Mapping[str, Deprecation]


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    source: str                              # e.g. "openai 3.60.0"
    fields: Mapping[str, FieldModels]        # by ModelField.name; the fields that parsed
    errors: tuple[str, ...] = ()             # why the others did not

    @property
    def available(self) -> bool:
        return bool(self.fields)


# -------------------------------------------------------------------- docstring parsing

_BLOCK_START = re.compile(r"^Deprecated values:[ \t]*$", re.MULTILINE)
# A bullet: one or more quoted names, a colon, then the package's note about them.
_BULLET = re.compile(r'^(?P<names>\s*"[^"]+"(?:\s*,\s*"[^"]+")*)\s*:\s*(?P<note>.*)$', re.DOTALL)
_NAME = re.compile(r'"([^"]+)"')
_SHUTDOWN = re.compile(r"Announced\s+shutdown\s+date:\s*(\d{4}-\d{2}-\d{2})")


def deprecations_in(docstring: str) -> dict[str, Deprecation]:
    """The models of a docstring's "Deprecated values:" block, each with its shutdown date."""
    text = inspect.cleandoc(docstring)
    start = _BLOCK_START.search(text)
    if start is None:
        return {}
    bullets: list[str] = []
    for line in text[start.end():].splitlines():
        if line.startswith("- "):
            bullets.append(line[2:])
        elif bullets and line[:1].isspace():
            bullets[-1] += " " + line.strip()
        elif line.strip():
            break  # a paragraph after the block
    found: dict[str, Deprecation] = {}
    for bullet in bullets:
        match = _BULLET.match(bullet)
        if match is None:
            continue
        note = " ".join(match["note"].split())
        when = _SHUTDOWN.search(note)
        try:
            shutdown = date.fromisoformat(when.group(1)) if when else None
        except ValueError:
            shutdown = None
        for model in _NAME.findall(match["names"]):
            found[model] = Deprecation(model, shutdown, note)
    return found


# -------------------------------------------------------------------- source reading


class _Source:
    """One module of the openai package, parsed but not imported."""

    def __init__(self, root: Path, module: str) -> None:
        self.module = module
        path = root.joinpath(*module.split(".")[1:]).with_suffix(".py")
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

    def field(self, cls: str, attribute: str) -> tuple[ast.expr, str]:
        """A class attribute's annotation and docstring (the string statement right after it)."""
        for node in self.tree.body:
            if isinstance(node, ast.ClassDef) and node.name == cls:
                return _annotated(node.body, attribute, f"{self.module}.{cls}.{attribute}")
        raise LookupError(f"no class {cls} in {self.module}")

    def alias(self, name: str) -> tuple[ast.expr, str] | None:
        """A module-level `Name = …` / `Name: TypeAlias = …`, and its docstring."""
        for index, node in enumerate(self.tree.body):
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if isinstance(target, ast.Name) and target.id == name and node.value is not None:
                return node.value, _docstring_after(self.tree.body, index)
        return None

    def imported_from(self, name: str) -> str | None:
        """The module a name comes from, for relative imports inside the package."""
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom) and node.level and any(
                    (alias.asname or alias.name) == name for alias in node.names):
                base = self.module.split(".")[:-node.level]
                return ".".join(base + ([node.module] if node.module else []))
        return None


def _annotated(body: list[ast.stmt], attribute: str, where: str) -> tuple[ast.expr, str]:
    for index, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == attribute:
            return node.annotation, _docstring_after(body, index)
    raise LookupError(f"no annotated attribute {where}")


def _docstring_after(body: list[ast.stmt], index: int) -> str:
    following = body[index + 1] if index + 1 < len(body) else None
    if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)):
        return following.value.value
    return ""


class _Reader:
    """Reads fields, following type aliases into the modules that define them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._sources: dict[str, _Source] = {}

    def source(self, module: str) -> _Source:
        if module not in self._sources:
            self._sources[module] = _Source(self.root, module)
        return self._sources[module]

    def field(self, spec: ModelField) -> FieldModels:
        source = self.source(spec.module)
        annotation, docstring = source.field(spec.cls, spec.attribute)
        known: set[str] = set()
        deprecated = deprecations_in(docstring)
        self._collect(source, annotation, known, deprecated, depth=0)
        if not known and not deprecated:
            raise LookupError(f"{spec.module}.{spec.cls}.{spec.attribute} names no model")
        return FieldModels(frozenset(known), deprecated)

    def _collect(self, source: _Source, node: ast.expr, known: set[str],
                 deprecated: dict[str, Deprecation], depth: int) -> None:
        """Literal strings under an annotation; names are followed to their alias (a few hops)."""
        if depth > 4:
            return
        for child in ast.walk(node):
            if isinstance(child, ast.Subscript) and _simple_name(child.value) == "Literal":
                known.update(value.value for value in ast.walk(child.slice)
                             if isinstance(value, ast.Constant) and isinstance(value.value, str))
            elif isinstance(child, ast.Name) and child.id not in _TYPING_NAMES:
                self._follow(source, child.id, known, deprecated, depth)

    def _follow(self, source: _Source, name: str, known: set[str],
                deprecated: dict[str, Deprecation], depth: int) -> None:
        alias = source.alias(name)
        if alias is None:
            module = source.imported_from(name)
            if module is None or not module.startswith("openai."):
                return
            try:
                source = self.source(module)
            except (OSError, SyntaxError):
                return
            alias = source.alias(name)
            if alias is None:
                return
        value, docstring = alias
        for model, deprecation in deprecations_in(docstring).items():
            deprecated.setdefault(model, deprecation)
        self._collect(source, value, known, deprecated, depth + 1)


_TYPING_NAMES = frozenset({"Union", "Optional", "Literal", "Required", "NotRequired", "Annotated",
                           "List", "Dict", "str", "int", "float", "bool", "None", "TypeAlias"})


def _simple_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def read_catalog(fields: tuple[ModelField, ...] = MODEL_FIELDS) -> ModelCatalog:
    """Parse the installed openai package (synchronous: file reads; see `load_installed_catalog`)."""
    try:
        spec = importlib.util.find_spec("openai")  # a top-level package is located, not imported
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return ModelCatalog("openai (not installed)", {}, ("the openai package is not installed",))
    try:
        source = f"openai {importlib.metadata.version('openai')}"
    except importlib.metadata.PackageNotFoundError:
        source = "openai (unknown version)"
    reader = _Reader(Path(next(iter(spec.submodule_search_locations))))
    parsed: dict[str, FieldModels] = {}
    errors: list[str] = []
    for field in fields:
        try:
            parsed[field.name] = reader.field(field)
        except (OSError, SyntaxError, ValueError, LookupError) as exc:  # ValueError: undecodable source too
            errors.append(f"{field.name}: {exc}")
    return ModelCatalog(source, parsed, tuple(errors))


@cache
def installed_catalog() -> ModelCatalog:
    """The catalog of the installed package, parsed once per process."""
    return read_catalog()


async def load_installed_catalog() -> ModelCatalog:
    """`installed_catalog()` without blocking the event loop on the first parse."""
    if installed_catalog.cache_info().currsize:
        return installed_catalog()
    return await asyncio.to_thread(installed_catalog)


# -------------------------------------------------------------------- configured models


@dataclass(frozen=True, slots=True)
class ModelNotice:
    """A configured model the service has announced it will shut down (or already has)."""

    variable: str               # the environment variable, e.g. OPENAI_REALTIME_MODEL
    model: str
    shutdown: date | None
    shut_down: bool             # the shutdown date has come
    replacement: str | None     # the current default, when it is not deprecated itself
    note: str

    @property
    def message(self) -> str:
        if self.shutdown is None:
            return f"the openai package lists this model as deprecated ({self.note})"
        if self.shut_down:
            return f"this model was shut down on {self.shutdown.isoformat()}, calls fail with it"
        return f"the service shuts this model down on {self.shutdown.isoformat()}"

    @property
    def fix(self) -> str:
        if self.replacement:
            return f"set {self.variable}={self.replacement}"
        return f"set {self.variable} to a current model (see {DEPRECATIONS_PAGE})"

    @property
    def text(self) -> str:
        return f"{self.variable}={self.model}: {self.message}. Fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {"variable": self.variable, "model": self.model,
                "shutdown_date": self.shutdown.isoformat() if self.shutdown else None,
                "shut_down": self.shut_down, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class ConfiguredModel:
    variable: str
    model: str
    known: bool | None          # in the package's list; None when its field could not be read
    notice: ModelNotice | None


def environment_variable(settings_cls: type[Settings], attribute: str) -> str:
    return f"{settings_cls.model_config.get('env_prefix', '')}{attribute}".upper()


def configured_models(settings: Settings, *, today: date | None = None,
                      catalog: ModelCatalog | None = None) -> list[ConfiguredModel]:
    """Each model setting, whether the package knows the model, and its notice if deprecated."""
    catalog = catalog if catalog is not None else installed_catalog()
    today = today or date.today()
    settings_cls = type(settings)
    result = []
    for attribute, field_name in MODEL_SETTINGS.items():
        if attribute not in settings_cls.model_fields:
            continue
        variable = environment_variable(settings_cls, attribute)
        model = str(getattr(settings, attribute))
        field = catalog.fields.get(field_name)
        if field is None:
            result.append(ConfiguredModel(variable, model, None, None))
            continue
        notice = None
        deprecation = field.deprecated.get(model)
        if deprecation is not None:
            default = settings_cls.model_fields[attribute].default
            replacement = default if isinstance(default, str) and default not in field.deprecated else None
            notice = ModelNotice(variable, model, deprecation.shutdown,
                                 deprecation.shutdown is not None and today >= deprecation.shutdown,
                                 replacement, deprecation.note)
        result.append(ConfiguredModel(variable, model, model in field.known or deprecation is not None, notice))
    return result


def model_notices(settings: Settings, *, today: date | None = None,
                  catalog: ModelCatalog | None = None) -> list[ModelNotice]:
    """The configured models that are going away, or gone."""
    return [entry.notice for entry in configured_models(settings, today=today, catalog=catalog)
            if entry.notice is not None]


__all__ = ["MODEL_FIELDS", "MODEL_SETTINGS", "ConfiguredModel", "Deprecation", "FieldModels", "ModelCatalog",
           "ModelField", "ModelNotice", "configured_models", "deprecations_in", "installed_catalog",
           "load_installed_catalog", "model_notices", "read_catalog"]
