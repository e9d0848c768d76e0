"""Parameter profiles (``params/<profile>.yaml``), validated against the notebooks themselves.

Each chapter notebook declares its parameters in the cell tagged ``parameters`` as typed,
commented assignments (``epochs: int = 200  # ...``). That cell is the schema: a profile may only
set names the cell declares, with values of the declared type. Everything is checked before any
work starts and every problem is reported in one error. No torch here.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Parameters the runner provides itself; a profile must not set them.
RUNNER_PARAMETERS = ("profile", "executed_dir", "failed_dir")
PROFILE_KEYS = ("description", "runner", "published", "chapters")
#: The file every bundle of published runs holds (``cifar_utils.engine.bundle.MANIFEST_FILE``; not imported:
#: this module imports no torch).
BUNDLE_MANIFEST = "MANIFEST.json"
#: The profile's ``runner:`` section: limits in seconds (``cell_timeout: 0`` or null: no limit).
RUNNER_KEYS = ("cell_timeout", "start_timeout")


class ProfileError(ValueError):
    """A parameter profile that does not fit the notebooks; the message lists every problem."""


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str  # as written, e.g. "int", "str | None", "list[str]"
    default: Any
    help: str


def parameters_cell(nb: dict) -> dict | None:
    """The first code cell tagged ``parameters``, or None."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell
    return None


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def notebook_parameters(path: Path) -> dict[str, Parameter]:
    """Parse the typed assignments of a notebook's ``parameters`` cell."""
    nb = json.loads(Path(path).read_text())
    cell = parameters_cell(nb)
    if cell is None:
        raise ProfileError(f"{path}: no code cell tagged 'parameters'; every chapter needs one")
    source = _source(cell)
    lines = source.splitlines()
    params: dict[str, Parameter] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            line = lines[node.lineno - 1]
            comment = line.split("#", 1)[1].strip() if "#" in line else ""
            try:
                default = ast.literal_eval(node.value)
            except ValueError:
                default = ast.unparse(node.value)
            params[node.target.id] = Parameter(node.target.id, ast.unparse(node.annotation), default, comment)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            raise ProfileError(f"{path}: parameters cell line {node.lineno}: write parameters as "
                               "'name: type = value  # help' so they are typed and documented")
    return params


def _matches(value: Any, annotation: str) -> bool:
    """Whether a YAML value fits a (simple) type annotation as written in a parameters cell."""
    ann = annotation.replace(" ", "")
    if ann.startswith("Optional[") and ann.endswith("]"):
        ann = ann[len("Optional["):-1] + "|None"
    if "|" in ann:
        return any(_matches(value, part) for part in ann.split("|"))
    if ann == "None":
        return value is None
    if ann == "bool":
        return isinstance(value, bool)
    if ann == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ann == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann == "str":
        return isinstance(value, str)
    if ann in ("list", "tuple") or ann.startswith(("list[", "tuple[")):
        if not isinstance(value, list):
            return False
        inner = ann[ann.index("[") + 1:-1] if "[" in ann else ""
        inner = inner.split(",")[0] if inner else ""
        return not inner or inner == "..." or all(_matches(v, inner) for v in value)
    if ann == "dict" or ann.startswith("dict["):
        return isinstance(value, dict)
    return True  # an annotation we do not model: accept rather than guess


def load_profile(path: Path) -> dict:
    """Read a profile file; a missing file names the profiles that exist."""
    path = Path(path)
    if not path.is_file():
        available = sorted(p.stem for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ProfileError(f"no profile {path.stem!r} ({path} does not exist); "
                           f"available profiles: {', '.join(available) or 'none'}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping with keys {', '.join(PROFILE_KEYS)}")
    return data


def published_folders(profile: dict, root: Path | str) -> list[Path]:
    """The bundles of published runs a profile reads beneath its store (its ``published:`` key: a folder, or a
    list of folders, relative to the book ``root``), as absolute paths; none without the key."""
    value = profile.get("published")
    if value is None:
        return []
    values = [value] if isinstance(value, str) else list(value)
    return [(Path(root) / v).resolve() for v in values]


def _published_problems(value: Any, root: Path | None) -> list[str]:
    """What is wrong with a profile's ``published:`` key (see :func:`published_folders`)."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    what = ("'published' must name a bundle of published runs, a folder relative to the book root (e.g. "
            "results/full), or a list of them")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        return [f"{what}; got {value!r}"]
    out = []
    for v in values:
        if Path(v).is_absolute() or ".." in Path(v).parts:
            out.append(f"published: {v!r} must be relative to the book root and inside it (e.g. results/full)")
        elif root is not None and not (Path(root) / v / BUNDLE_MANIFEST).is_file():
            out.append(f"published: {v!r}: no bundle there ({Path(root) / v / BUNDLE_MANIFEST} is missing); publish "
                       "runs into it with `python -m cifar_utils.publish --profile <profile>`, or remove the key")
    return out


def validate_profile(profile: dict, notebooks: dict[str, Path], source: str = "profile",
                     required: list[str] | None = None, subset: bool = False,
                     root: Path | str | None = None) -> dict[str, dict]:
    """Check a profile against the notebooks' parameter cells and the RunConfig field rules.

    ``notebooks`` maps chapter id -> notebook path; ``required`` lists the chapters that will run,
    each of which the profile must name with a mapping (``{}`` runs the notebook's defaults on
    purpose; a missing or null chapter would silently run the full protocol). ``subset`` says the
    chapters were picked with ``--chapters`` (only changes the wording). Values of parameters named
    like a RunConfig field (``epochs``, ``source``, ``device``, ``seed``/``seeds``...) are checked
    with :mod:`cifar_utils.config_rules`, the rules ``RunConfig.validate`` uses. Returns chapter id
    -> parameters to inject. Raises one ProfileError listing every problem and what is allowed.
    ``published`` (the bundles of published runs read beneath the store) must name folders inside the book
    ``root`` that hold a bundle (checked when ``root`` is given).
    """
    from cifar_utils.config_rules import parameter_problems

    problems: list[str] = []
    for key in profile:
        if key not in PROFILE_KEYS:
            problems.append(f"unknown top-level key {key!r}; allowed: {', '.join(PROFILE_KEYS)}")
    problems += _runner_section_problems(profile.get("runner"))
    problems += _published_problems(profile.get("published"), Path(root) if root is not None else None)
    chapters = profile.get("chapters") or {}
    if not isinstance(chapters, dict):
        raise ProfileError(f"{source}: 'chapters' must map chapter ids to parameter mappings")
    missing = [c for c in (required or []) if chapters.get(c) is None]
    if missing:
        null = [c for c in missing if c in chapters]
        absent = [c for c in missing if c not in chapters]
        scope = "the chapters chosen with --chapters" if subset else "every chapter it runs"
        what = "; ".join(filter(None, [
            f"missing: {', '.join(absent)}" if absent else "",
            f"set to null: {', '.join(null)}" if null else ""]))
        problems.append(f"the profile must give parameters for {scope} ({what}); add a section per chapter "
                        f"(write `{{}}` to run a notebook's own defaults, which are the full protocol), "
                        f"or pick chapters with --chapters. Chapters: {', '.join(required or [])}")
    out: dict[str, dict] = {}
    for chapter, values in chapters.items():
        if chapter not in notebooks:
            problems.append(f"unknown chapter {chapter!r}; chapters in _toc.yml: {', '.join(notebooks)}")
            continue
        values = values or {}
        if not isinstance(values, dict):
            problems.append(f"chapter {chapter!r}: expected a mapping of parameters, got {type(values).__name__}")
            continue
        declared = notebook_parameters(notebooks[chapter])
        settable = {k: v for k, v in declared.items() if k not in RUNNER_PARAMETERS}
        for name, value in values.items():
            if name in RUNNER_PARAMETERS:
                problems.append(f"chapter {chapter!r}: {name!r} is set by the runner, not by a profile")
            elif name not in settable:
                allowed = ", ".join(f"{p.name}: {p.annotation}" for p in settable.values()) or "none"
                problems.append(f"chapter {chapter!r}: unknown parameter {name!r}; allowed: {allowed}")
            elif not _matches(value, settable[name].annotation):
                problems.append(f"chapter {chapter!r}: parameter {name!r} must be {settable[name].annotation}, "
                                f"got {value!r} ({type(value).__name__})")
            else:
                problems += [f"chapter {chapter!r}: {p}" for p in parameter_problems(name, value)]
        out[chapter] = dict(values)
    if problems:
        raise ProfileError(f"{source}: " + ("\n  - " if len(problems) > 1 else "")
                           + "\n  - ".join(problems))
    return out


def _runner_section_problems(section: Any) -> list[str]:
    if section is None:
        return []
    if not isinstance(section, dict):
        return [f"'runner' must be a mapping with keys {', '.join(RUNNER_KEYS)}"]
    out = []
    for key, value in section.items():
        if key not in RUNNER_KEYS:
            out.append(f"runner: unknown key {key!r}; allowed: {', '.join(RUNNER_KEYS)}")
        elif key == "cell_timeout" and not (value is None or (type(value) is int and value >= 0)):
            out.append(f"runner: cell_timeout must be seconds (an integer >= 0; 0 or null: no limit), got {value!r}")
        elif key == "start_timeout" and not (type(value) is int and value > 0):
            out.append(f"runner: start_timeout must be seconds (an integer > 0), got {value!r}")
    return out


def chapter_parameters(root: Path | str, chapter: str, profile: str | Path) -> dict[str, Any]:
    """A chapter's parameters as the runner gives them to its kernel: the defaults of the notebook's
    ``parameters`` cell (``<root>/book/<chapter>.ipynb``; none if it does not exist), updated with the
    profile's section for the chapter, and ``profile`` set to the profile's name. ``profile`` is a
    name (``params/<name>.yaml`` under ``root``) or a path. The one place that rebuilds a chapter's
    parameters outside its kernel (the claims ledger and ``bench/gpu_check.py`` use it)."""
    root = Path(root)
    path = Path(profile) if str(profile).endswith((".yaml", ".yml")) else root / "params" / f"{profile}.yaml"
    data = load_profile(path)
    notebook = root / "book" / f"{chapter}.ipynb"
    params = {n: p.default for n, p in notebook_parameters(notebook).items()} if notebook.is_file() else {}
    params.update(((data.get("chapters") or {}).get(chapter)) or {})
    if "profile" in params or notebook.is_file():
        params["profile"] = path.stem
    return params
