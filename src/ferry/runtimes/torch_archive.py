"""What a `torch.export` archive (`.pt2`) would run at load, found before torch opens it.

`torch.export.load` is not data-only. Besides the JSON graph and raw weight bytes, an
archive may hold entries that torch unpickles with Python's unrestricted unpickler
(which runs whatever the pickle names), compiled code that torch loads as a shared
library, and strings that torch evaluates as Python:

* legacy weights and constants (`data/weights/<model>.pt`, `data/constants/<model>.pt`)
  and the sample inputs (`data/sample_inputs/<model>.pt`): torch tries
  `torch.load(weights_only=True)` and, when that fails, retries with
  `weights_only=False`, so a crafted entry runs code;
* payloads a weights/constants config marks `use_pickle` (tensor subclasses), script
  objects (`custom_obj_*`) and opaque objects (`opaque_obj_*`): unpickled outright;
* archives in the format of torch 2.7 (a top-level `version` entry), which torch falls
  back to when the current format does not load: every part is unpickled with the same
  retry;
* AOTInductor (`data/aotinductor/`), ExecuTorch and MTIA payloads: compiled code;
* symbolic shape expressions in the program's JSON (`expr_str`, sympy's `srepr` form),
  which torch parses with `sympy.sympify`, that is with `eval`: a program with no pickle
  at all runs whatever Python such a string holds. Each must be a plain sympy
  expression (`safe_shape_expression`); anything else counts as code;
* input guards (`guards_code`), Python source that `ExportedProgram.module()` compiles
  with `exec` (torch in its namespace). Each must be a comparison of input sizes
  (`safe_guard_expression`, the form torch.export writes: `L['y'].size()[0] ==
  L['x'].size()[0]`); anything else counts as code.

Graph nodes themselves are safe to leave to torch: its verifier refuses any call target
that is not an operator. `inspect_archive` lists each kind from the archive's own
structure; an entry torch retries is acceptable only if torch's restricted unpickler
(`weights_only=True`, tensors and plain containers only) reads it, so torch never gets
to the retry. The runtime loads the very bytes that were inspected (never the file
again), so the archive cannot change in between.
"""

from __future__ import annotations

import ast
import io
import json
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from typing import Any

# Folders of compiled code (shared libraries, device binaries) inside the archive.
_CODE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")
_WEIGHTS_DIR = "data/weights/"
_CONSTANTS_DIR = "data/constants/"
_SAMPLE_INPUTS_DIR = "data/sample_inputs/"
# Constants that torch unpickles without the restricted unpickler, by file-name prefix.
_OBJECT_PREFIXES = ("custom_obj_", "opaque_obj_")
# The torch 2.7 archive format's marker; torch.export.load falls back to it.
_OLD_FORMAT_MARKER = "version"
# Cap on how much of a config JSON is read: real ones are kilobytes.
_MAX_CONFIG_BYTES = 64 * 1024 * 1024
_MODELS_DIR = "models/"
# What sympy's `srepr` writes for the shape expressions torch.export records: sympy's
# numbers, arithmetic, relations and logic, and torch's own sympy functions. Nothing
# here evaluates a string (sympify, lambdify, Function, ... are absent on purpose).
_SYMPY_NAMES = frozenset(
    {
        "Symbol", "Dummy", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod",
        "Max", "Min", "Abs", "floor", "ceiling", "sign", "Equality", "Unequality",
        "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "And", "Or",
        "Not", "Xor", "ITE", "Piecewise", "ExprCondPair", "Tuple", "true", "false", "oo",
        "zoo", "nan", "pi", "E", "Half", "Zero", "One", "NegativeOne", "Infinity",
        "NegativeInfinity", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or",
        "BitwiseFn_bitwise_xor", "CeilDiv", "CeilToInt", "CleanDiv", "FloatPow",
        "FloatTrueDiv", "FloorDiv", "FloorToInt", "Identity", "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator", "LShift", "ModularIndexing", "PowByNatural",
        "PythonMod", "RShift", "RoundDecimal", "RoundToInt", "ToFloat", "TruncToFloat",
        "TruncToInt", "Where", "OpaqueUnaryFn_acos", "OpaqueUnaryFn_asin",
        "OpaqueUnaryFn_asinh", "OpaqueUnaryFn_atan", "OpaqueUnaryFn_cos",
        "OpaqueUnaryFn_cosh", "OpaqueUnaryFn_exp", "OpaqueUnaryFn_log", "OpaqueUnaryFn_log2",
        "OpaqueUnaryFn_sin", "OpaqueUnaryFn_sinh", "OpaqueUnaryFn_sqrt", "OpaqueUnaryFn_tan",
        "OpaqueUnaryFn_tanh",
    }
)  # fmt: skip
# The only calls that take a string: a symbol's name, a float's digits.
_STRING_TAKING = frozenset({"Symbol", "Dummy", "Float"})
# Guards: what they may call on an input (`L[...]`), and which functions by name.
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_FUNCTIONS = frozenset({"IsNonOverlappingAndDenseIndicator"})
_GUARD_MATH = frozenset({"floor", "ceil", "trunc", "sqrt", "log", "log2", "exp", "isnan"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GUARD_OPERATORS = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.And, ast.Or, ast.Not,
    ast.USub, ast.UAdd,
)  # fmt: skip


@dataclass
class ArchiveContents:
    """What loading the archive would run: entries torch would unpickle without the
    restricted unpickler (`pickled`) and compiled code it would load (`code`)."""

    pickled: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)


def inspect_archive(torch: Any, content: bytes) -> ArchiveContents:
    """The pickled and compiled entries of a `.pt2` archive's bytes.

    Raises ValueError for a file that is not a zip archive or names entries outside it.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as exc:
        raise ValueError(f"not a torch.export archive (zip): {exc}") from None
    found = ArchiveContents()
    with archive:
        names = archive.namelist()
        for name in names:
            parts = name.split("/")
            if name.startswith("/") or ".." in parts:
                raise ValueError(f"archive entry {name!r} points outside the archive")
        if _OLD_FORMAT_MARKER in names:
            found.pickled.append(f"{_OLD_FORMAT_MARKER} (torch 2.7 format, every part pickled)")
        for name in names:
            relative = _without_root(name)
            base = posixpath.basename(relative)
            if relative.startswith(_CODE_DIRS):
                found.code.append(name)
            elif any(prefix in relative for prefix in _OBJECT_PREFIXES):
                found.pickled.append(name)
            elif relative.startswith((_WEIGHTS_DIR, _CONSTANTS_DIR)):
                if base.endswith(".json"):
                    found.pickled.extend(_pickled_payloads(archive, name))
                elif base.endswith(".pt"):
                    _check_restricted(torch, archive, name, found)
            elif relative.startswith(_SAMPLE_INPUTS_DIR):
                _check_restricted(torch, archive, name, found)
            elif relative.startswith(_MODELS_DIR) and base.endswith(".json"):
                expressions, guards = _program_strings(archive, name)
                found.code.extend(
                    f"{name}: shape expression {text[:80]!r}"
                    for text in expressions
                    if not safe_shape_expression(text)
                )
                found.code.extend(
                    f"{name}: guard {text[:80]!r}"
                    for text in guards
                    if not safe_guard_expression(text)
                )
    return found


def safe_shape_expression(text: str) -> bool:
    """Whether `text` is a plain sympy expression in `srepr` form: calls of the sympy
    names above with numbers, booleans and (for names and digits only) strings. Such a
    string evaluates to a sympy object and does nothing else."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    allowed_strings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _SYMPY_NAMES:
                return False
            if any(k.arg is None or not _is_number(k.value) for k in node.keywords):
                return False
            first = node.args[0] if node.args else None
            if node.func.id in _STRING_TAKING and isinstance(first, ast.Constant):
                allowed_strings.add(id(first))
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and id(node) not in allowed_strings:
                return False
            if not isinstance(node.value, str) and not _is_number(node):
                return False
        elif isinstance(node, ast.Name):
            if node.id not in _SYMPY_NAMES:
                return False
        elif not isinstance(
            node, ast.Expression | ast.Load | ast.keyword | ast.UnaryOp | ast.USub | ast.UAdd
        ):
            return False
    return True


def safe_guard_expression(text: str) -> bool:
    """Whether `text` is an input guard of the form torch.export writes: arithmetic,
    comparisons and logic over numbers and input sizes (`L['x'].size()[0]`, keys plain
    identifiers), with no name but `L` and a few size functions. Such code only reads
    the inputs' sizes, also once torch has substituted its own names for `L[...]`."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    return _safe_guard_node(tree.body)


def _safe_guard_node(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, bool | int | float)
    if isinstance(node, ast.BoolOp):
        return isinstance(node.op, _GUARD_OPERATORS) and all(map(_safe_guard_node, node.values))
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, _GUARD_OPERATORS) and _safe_guard_node(node.operand)
    if isinstance(node, ast.BinOp):
        return (
            isinstance(node.op, _GUARD_OPERATORS)
            and _safe_guard_node(node.left)
            and _safe_guard_node(node.right)
        )
    if isinstance(node, ast.Compare):
        return all(isinstance(op, _GUARD_OPERATORS) for op in node.ops) and all(
            map(_safe_guard_node, [node.left, *node.comparators])
        )
    if isinstance(node, ast.Call):
        if node.keywords or not all(map(_safe_guard_node, node.args)):
            return False
        function = node.func
        if isinstance(function, ast.Name):
            return function.id in _GUARD_FUNCTIONS
        if isinstance(function, ast.Attribute):
            if isinstance(function.value, ast.Name) and function.value.id == "math":
                return function.attr in _GUARD_MATH
            return function.attr in _GUARD_METHODS and _is_input(function.value)
        return False
    if isinstance(node, ast.Subscript):
        # A size or stride element: `L['x'].size()[0]`.
        return (
            isinstance(node.slice, ast.Constant)
            and type(node.slice.value) is int
            and isinstance(node.value, ast.Call)
            and _safe_guard_node(node.value)
        )
    return False  # names, bare inputs, anything else


def _is_input(node: ast.expr) -> bool:
    """`L['name']`, `L['name'][0]`, `L['name'].field`: an input, by its path."""
    while True:
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
            if not (type(key) is int or (isinstance(key, str) and _IDENTIFIER.fullmatch(key))):
                return False
            node = node.value
        elif isinstance(node, ast.Attribute) and not node.attr.startswith("_"):
            node = node.value
        else:
            return isinstance(node, ast.Name) and node.id == "L"


def _is_number(node: ast.expr) -> bool:
    """A number or boolean literal (negated numbers included)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, bool | int | float)


def _program_strings(archive: zipfile.ZipFile, name: str) -> tuple[list[str], list[str]]:
    """Every `expr_str` (torch hands each to sympy.sympify) and every `guards_code` line
    (torch execs them) in a serialized program."""
    try:
        program = json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"archive entry {name} is not JSON: {exc}") from None
    expressions: list[str] = []
    guards: list[str] = []
    pending = [program]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    expressions.append(value if isinstance(value, str) else repr(value))
                elif key == "guards_code":
                    lines = value if isinstance(value, list) else [value]
                    guards.extend(v if isinstance(v, str) else repr(v) for v in lines)
                else:
                    pending.append(value)
        elif isinstance(item, list):
            pending.extend(item)
    return expressions, guards


def _without_root(name: str) -> str:
    """The entry's path below the archive's root folder (torch names the root freely)."""
    _, sep, rest = name.partition("/")
    return rest if sep else name


def _pickled_payloads(archive: zipfile.ZipFile, name: str) -> list[str]:
    """Entries that a weights/constants config tells torch to unpickle (`use_pickle`)."""
    if archive.getinfo(name).file_size > _MAX_CONFIG_BYTES:
        raise ValueError(f"archive entry {name} is too large for a payload config")
    try:
        config = json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"archive entry {name} is not JSON: {exc}") from None
    payloads = config.get("config", {}) if isinstance(config, dict) else {}
    if not isinstance(payloads, dict):
        raise ValueError(f"archive entry {name} is not a payload config")
    return [
        f"{posixpath.dirname(name)}/{meta.get('path_name', key)}"
        for key, meta in payloads.items()
        if not isinstance(meta, dict) or meta.get("use_pickle", False) is not False
    ]


def _check_restricted(
    torch: Any, archive: zipfile.ZipFile, name: str, found: ArchiveContents
) -> None:
    """An entry torch retries unrestricted: acceptable only if the restricted unpickler
    reads it (then torch's own first try succeeds and the retry never happens)."""
    try:
        torch.load(io.BytesIO(archive.read(name)), weights_only=True, map_location="cpu")
    except Exception:
        found.pickled.append(name)
