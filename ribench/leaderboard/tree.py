"""The leaderboard tree on disk: ``<root>/<suite>/<pretrain>/<entry>.json``, read, checked and written.

A file's place must agree with its content (suite, pretrain, method label, kind),
so the tree can be browsed by folder; reported entries' file names start with
``reported-``. Files are written in a stable layout, so rewriting an unchanged
entry leaves its bytes alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ribench.errors import RibenchError
from ribench.leaderboard.schema import EntryError, validate_entry

__all__ = ["check_tree", "dumps_entry", "entry_filename", "entry_paths", "entry_slug", "inside", "load_entry",
           "load_tree", "write_entry"]

REPORTED_PREFIX = "reported-"
TUNED_PREFIX = "tuned-"


def entry_slug(label: str) -> str:
    """'lp[fit=lbfgs]' -> 'lp_fit_lbfgs': safe in paths and URLs on every platform."""
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_.")
    if not slug:
        raise EntryError(f"method label {label!r} gives an empty file name")
    return slug


def entry_filename(entry: dict) -> str:
    """<slug>.json for a reference entry, tuned-<slug>.json for a tuned one, reported-<slug>.json for a reported one."""
    tuned = (entry.get("protocol") or {}).get("name") == "tuned"
    prefix = REPORTED_PREFIX if entry.get("kind") == "reported" else TUNED_PREFIX if tuned else ""
    return prefix + entry_slug(entry["method"]["label"]) + ".json"


MAX_ENTRY_BYTES = 1 << 20      # a real entry is a few kB; anything past this is refused unread
MAX_DEPTH = 32                 # a real entry nests 5 levels; json's recursion would crash far deeper


def load_entry(path: str | Path, root: str | Path | None = None) -> dict:
    """Read and validate one entry; with ``root``, it must be a plain file inside the tree whose place
    matches its content."""
    path = Path(path)
    problems = _location_problems(path, Path(root)) if root is not None else []
    if problems:
        raise EntryError(f"{path}: {problems[0]}")
    try:
        size = path.stat().st_size
        if size > MAX_ENTRY_BYTES:
            raise EntryError(f"{path}: {size} bytes, larger than the {MAX_ENTRY_BYTES} an entry may have")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise EntryError(f"{path}: cannot read: {error}") from None
    if _nesting(text) > MAX_DEPTH:
        raise EntryError(f"{path}: nested deeper than {MAX_DEPTH} levels; not an entry")
    try:
        entry = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as error:
        raise EntryError(f"{path}: not valid JSON: {error}") from None
    problems = validate_entry(entry)
    if not problems and root is not None:
        problems = _placement_problems(entry, path, Path(root))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise EntryError(f"{path}: {problems[0]}{more}")
    return entry


def _nesting(text: str) -> int:
    """The deepest nesting of [ and { outside strings, read without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed in an entry (use null)")


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, every link followed, lies inside `root` (also resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def _location_problems(path: Path, root: Path) -> list[str]:
    """An entry is a plain file at <root>/<suite>/<pretrain>/<name>.json: no link anywhere on the way,
    nothing outside the root (a pull request can carry a symbolic link)."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return [f"not under the leaderboard folder {root}"]
    step = root
    for part in parts:
        step = step / part
        if step.is_symlink():
            return [f"{step} is a symbolic link; entries must be plain files inside the leaderboard folder"]
    if not inside(path, root):
        return [f"lies outside the leaderboard folder {root}"]
    if len(parts) != 3:
        return ["not an entry's place; entries live at <root>/<suite>/<pretrain>/<entry>.json"]
    return []


def _placement_problems(entry: dict, path: Path, root: Path) -> list[str]:
    """leaderboards/<suite>/<pretrain>/<slug>.json must agree with the entry's fields."""
    problems = []
    suite, pretrain, name = path.relative_to(root).parts
    if entry["suite"] != suite:
        problems.append(f"field 'suite': {entry['suite']!r} but the file is in folder {suite!r}")
    if entry["pretrain"] != pretrain:
        problems.append(f"field 'pretrain': {entry['pretrain']!r} but the file is in folder {pretrain!r}")
    expected = entry_filename(entry)
    if name != expected:
        problems.append(f"field 'method.label': {entry['method']['label']!r} ({entry['kind']}) "
                        f"belongs in a file named {expected!r}")
    return problems


def entry_paths(root: str | Path) -> list[Path]:
    """Every entry file: <root>/<suite>/<pretrain>/*.json (distances/ holds no entries)."""
    root = Path(root)
    return sorted(p for p in root.glob("*/*/*.json") if p.parent.name != "distances")


def load_tree(root: str | Path, suite: str | None = None) -> list[dict]:
    """Every entry under ``root`` (of one suite if given), validated; the first bad file stops it."""
    root = Path(root)
    if not root.is_dir():
        raise RibenchError(f"no leaderboard folder at {root}")
    entries = []
    for path in entry_paths(root):
        if suite is None or path.parent.parent.name == suite:
            entry = load_entry(path, root)
            entry["_path"] = str(path)
            entries.append(entry)
    return entries


def check_tree(root: str | Path) -> tuple[int, list[str]]:
    """(number of entries, one problem line per bad file) for every entry under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise RibenchError(f"no leaderboard folder at {root}")
    paths = entry_paths(root)
    stray = sorted(p for p in root.rglob("*.json")
                   if p not in paths and p.parent.name != "distances")
    problems = [f"{p}: not an entry's place; entries live at <root>/<suite>/<pretrain>/<entry>.json"
                for p in stray]
    for path in paths:
        try:
            load_entry(path, root)
        except EntryError as error:
            problems.append(str(error))
    return len(paths), problems



def dumps_entry(entry: dict, width: int = 110) -> str:
    """JSON with small objects and lists on one line, so an entry reads (and diffs) like a table."""
    def render(value, indent: int, column: int) -> str:
        flat = json.dumps(value, ensure_ascii=False, allow_nan=False)
        if not isinstance(value, (dict, list)) or column + len(flat) <= width:
            return flat
        pad, inner = " " * indent, " " * (indent + 2)
        if isinstance(value, list):
            items = [inner + render(item, indent + 2, indent + 2) for item in value]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        items = []
        for key, item in value.items():
            name = json.dumps(key, ensure_ascii=False) + ": "
            items.append(inner + name + render(item, indent + 2, indent + 2 + len(name)))
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"

    return render({k: v for k, v in entry.items() if not k.startswith("_")}, 0, 0) + "\n"


def write_entry(entry: dict, root: str | Path, replace: bool = False) -> tuple[Path, str]:
    """Write ``entry`` at its place under ``root``; returns (path, 'written' | 'unchanged' | 'replaced')."""
    problems = validate_entry(entry)
    if problems:
        raise EntryError(f"entry for {entry.get('method', {}).get('label')}: {problems[0]}")
    path = Path(root) / entry["suite"] / entry["pretrain"] / entry_filename(entry)
    problems = _location_problems(path, Path(root))
    if problems:
        raise RibenchError(f"{path}: {problems[0]}")
    text = dumps_entry(entry)
    state = "written"
    if path.exists():
        if path.read_text(encoding="utf-8") == text:
            return path, "unchanged"
        if not replace:
            raise RibenchError(f"{path} exists with other numbers; pass --replace to overwrite it")
        state = "replaced"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path, state
