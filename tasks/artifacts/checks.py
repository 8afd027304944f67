"""The one safety check of uploaded model archives, shared by the gateway (at upload, so a
refused file is never stored) and the worker (again, before torch opens the file).

Torch-free: zipfile, json, ast and pickletools only. Uploaded bytes are never unpickled:
pickle streams are read opcode by opcode (`pickletools.genops`) and every global they name
(GLOBAL, STACK_GLOBAL, INST) must be one of the exact set torch's own formats need, so a
REDUCE, BUILD or NEWOBJ can only ever apply a tensor-rebuilding function or a TorchScript
class. A stream whose globals cannot be read statically is refused.

- zip members: no `..` components, absolute paths, drive letters, symlinks or duplicate names.
- torch.export (.pt2): only tensors and the exported graph (no opaque or custom objects, no
  pickled weights or constants, no compiled code, no extra pickles); `sample_inputs` are
  weights-only torch.save files.
- TorchScript: data.pkl, constants.pkl and the debug tables name only TorchScript classes and
  tensor rebuilds; the code is TorchScript's serialized form, without imports or Python-only
  constructs.

Every refusal is an `UnsafeArchive` with the HTTP status the docs promise (415 for a form the
service never loads, 422 for a broken file), the problem slug, the member at fault and the fix.
"""

from __future__ import annotations

import ast
import io
import json
import pickletools
import re
import zipfile
from pathlib import PurePosixPath

REEXPORT = (
    "re-export with torch.export.save(torch.export.export(model.eval(), (example,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2') without extra pickled "
    "members or pickled sample inputs"
)
RESCRIPT = (
    "save it again with torch.jit.save(torch.jit.script(model), 'model.pt'), unmodified, or "
    "export it with torch.export.save; weights alone: save with safetensors "
    "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))"
)
REZIP = "zip the files again with plain relative names (no '..', no leading '/', no links)"

# torch.load(weights_only=True) of tensors, as torch.save writes them: the rebuild functions,
# the typed storages and the dtypes/devices/layouts their arguments name. A subset of
# torch._weights_only_unpickler's allowlist (tests hold it to that).
_STORAGES = (
    "Double Float Half BFloat16 Long Int Short Char Byte Bool ComplexDouble ComplexFloat"
).split()
_DTYPES = (
    "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool complex64 complex128 "
    "float8_e4m3fn float8_e5m2 uint16 uint32 uint64"
).split()
WEIGHTS_ONLY_GLOBALS = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.storage", "UntypedStorage"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch.serialization", "_get_layout"),
        *(("torch", f"{s}Storage") for s in _STORAGES),
        *(("torch", d) for d in _DTYPES),
    }
)

# TorchScript's own unpickler (torch/csrc/jit/serialization/unpickler.cpp): tensor rebuilds,
# storages, the jit's list/tuple builders, and classes of the archive's compiled code.
TORCHSCRIPT_GLOBALS = frozenset(
    {
        ("collections", "OrderedDict"),
        ("builtins", "complex"),
        ("torch", "device"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_qtensor"),
        ("torch._utils", "_rebuild_sparse_tensor"),
        *(("torch", f"{s}Storage") for s in _STORAGES),
        *(
            ("torch.jit._pickle", f)
            for f in (
                "build_intlist",
                "build_tensorlist",
                "build_doublelist",
                "build_boollist",
                "build_tensor_from_id",
                "restore_type_tag",
            )
        ),
    }
)
TORCHSCRIPT_CLASS_PREFIX = "__torch__"

_GLOBAL_OPS = {"GLOBAL", "INST"}
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING"}
_STRING_OPS |= {"SHORT_BINSTRING", "BINSTRING"}
_MEMO_PUT = {"BINPUT", "LONG_BINPUT", "PUT"}
_MEMO_GET = {"BINGET", "LONG_BINGET", "GET"}
_NEVER = {"EXT1", "EXT2", "EXT4"}  # the copyreg extension registry: any callable at all

_PICKLE_SUFFIXES = (".pkl", ".pickle")
_TORCH_SAVE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class UnsafeArchive(Exception):
    """The archive is refused. `status` 415: holds what the service never loads (pickled
    objects, code, links out of the archive); 422: broken. `member` is the entry at fault."""

    def __init__(
        self,
        title: str,
        detail: str,
        status: int = 415,
        slug: str = "unsafe-archive",
        member: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.status = status
        self.slug = slug
        self.member = member


# ------------------------------------------------------------------------------ zip members
_DRIVE = re.compile(r"^[A-Za-z]:")
_S_IFMT, _S_IFLNK = 0o170000, 0o120000


def check_members(zf: zipfile.ZipFile, label: str) -> None:
    """Refuse members a naive extraction would write outside its folder or through a link,
    and names given twice (two readers could see two different files)."""
    seen: set[str] = set()
    for info in zf.infolist():
        name = info.filename
        unix = name.replace("\\", "/")
        parts = unix.split("/")
        why = None
        if unix.startswith("/") or _DRIVE.match(unix):
            why = "is an absolute path"
        elif ".." in parts:
            why = "has a '..' component, pointing outside the archive's folder"
        elif (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
            why = "is a symbolic link"
        if why:
            raise UnsafeArchive(
                "Unsafe zip archive",
                f"{label}: member {name!r} {why}; such members are never accepted. {REZIP}",
                member=name,
            )
        if name in seen:
            raise UnsafeArchive(
                "Corrupt zip archive",
                f"{label}: member {name!r} appears twice in the archive; {REZIP}",
                422,
                "corrupt-zip",
                name,
            )
        seen.add(name)


# ----------------------------------------------------------------------------- pickle streams
def pickle_globals(data: bytes) -> list[tuple[str, str] | None]:
    """Every global a pickle stream would import, in order, read without unpickling it; None
    for one whose name is not a literal in the stream. Raises ValueError for a broken stream
    or an opcode that reaches callables outside globals (the copyreg extension registry)."""
    found: list[tuple[str, str] | None] = []
    memo: dict[object, object] = {}
    recent: list[object] = []  # the values the last opcodes pushed (strings, or None)
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name in _NEVER:
                raise ValueError(f"opcode {name} names a callable from the extension registry")
            if name in _GLOBAL_OPS:
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
                recent.append(None)
            elif name == "STACK_GLOBAL":
                pair = recent[-2:]
                if len(pair) == 2 and all(isinstance(v, str) for v in pair):
                    found.append((str(pair[0]), str(pair[1])))
                else:
                    found.append(None)
                recent.append(None)
            elif name in _STRING_OPS:
                value = arg.decode("latin-1") if isinstance(arg, bytes) else arg
                recent.append(value)
            elif name in _MEMO_PUT:
                memo[arg] = recent[-1] if recent else None
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in _MEMO_GET:
                recent.append(memo.get(arg))
            else:
                recent.append(None)
            del recent[:-4]
    except ValueError:
        raise
    except Exception as e:  # genops raises bare ValueError or struct/EOF errors on bad bytes
        raise ValueError(f"not a readable pickle stream ({type(e).__name__}: {e})") from e
    return found


def check_pickle(
    data: bytes,
    allowed: frozenset[tuple[str, str]],
    label: str,
    member: str,
    fix: str,
    class_prefix: str | None = None,
) -> None:
    """Refuse a pickle stream naming a global outside `allowed` (or, when given, the classes
    under `class_prefix`), or one whose globals cannot be read."""
    try:
        names = pickle_globals(data)
    except ValueError as e:
        raise UnsafeArchive(
            "Unsafe model archive",
            f"{label}: member {member!r} is a pickle that cannot be checked ({e}); it is never "
            f"loaded. Instead, {fix}",
            member=member,
        ) from e
    for g in names:
        ok = g is not None and (
            g in allowed
            or (class_prefix is not None and g[0].split(".", 1)[0] == class_prefix and g[1])
        )
        if not ok:
            what = "a global it does not name literally" if g is None else f"{g[0]}.{g[1]}"
            raise UnsafeArchive(
                "Unsafe model archive",
                f"{label}: member {member!r} is a pickle that calls {what}, which is not a "
                f"tensor; pickled Python objects are never loaded. Instead, {fix}",
                member=member,
            )


def _looks_pickled(head: bytes) -> bool:
    """A pickle of protocol 2 or later starts with PROTO n."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def check_torch_save(data: bytes, label: str, member: str, fix: str) -> None:
    """A torch.save file (zip format) that torch.load(weights_only=True) reads as tensors."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as e:
        raise UnsafeArchive(
            "Unsafe model archive",
            f"{label}: member {member!r} is not a torch.save archive of tensors (a bare "
            f"pickle, never loaded). Instead, {fix}",
            member=member,
        ) from e
    with inner:
        check_members(inner, f"{label}: member {member!r}")
        pickles = [n for n in inner.namelist() if n.endswith(_PICKLE_SUFFIXES)]
        if not pickles:
            raise UnsafeArchive(
                "Corrupt model archive",
                f"{label}: member {member!r} holds no data.pkl; {fix}",
                422,
                "corrupt",
                member,
            )
        for name in pickles:
            check_pickle(inner.read(name), WEIGHTS_ONLY_GLOBALS, label, f"{member}/{name}", fix)


# -------------------------------------------------------------------------------- torch.export
def check_pt2(zf: zipfile.ZipFile, name: str) -> None:
    """Raise UnsafeArchive for pickled objects or tensors, non-tensor constants, compiled code,
    extra pickles or sample inputs that are not plain tensors."""
    check_members(zf, name)
    names = zf.namelist()
    for member in names:
        parts = PurePosixPath(member).parts
        base = parts[-1] if parts else ""
        if base.startswith(("opaque_obj_", "custom_obj_")):
            raise UnsafeArchive(
                "Unsafe model archive",
                f"{name}: member {member!r} holds a pickled Python object; only tensors "
                f"and the exported graph are accepted. Instead, {REEXPORT}",
                member=member,
            )
        if "aotinductor" in parts or "executorch" in parts:
            raise UnsafeArchive(
                "Unsupported model archive",
                f"{name}: member {member!r} holds compiled code; upload the plain "
                "torch.export archive instead",
                member=member,
            )
        if base.lower().endswith(_PICKLE_SUFFIXES):
            raise UnsafeArchive(
                "Unsafe model archive",
                f"{name}: member {member!r} is a pickle, which torch.export.save never "
                f"writes; it is never loaded. Instead, {REEXPORT}",
                member=member,
            )
    raw = _pt2_tensor_configs(zf, name)
    _check_pt2_targets(zf, name)
    for member in names:
        if member.endswith("/") or member.endswith(".json"):
            continue
        parts = PurePosixPath(member).parts
        if "data" in parts and parts[-1] in raw:
            continue  # a tensor's raw bytes, named by its config
        data = zf.read(member)
        if member.lower().endswith(_TORCH_SAVE_SUFFIXES) or data[:4] == b"PK\x03\x04":
            check_torch_save(data, name, member, REEXPORT)
        elif _looks_pickled(data[:2]):
            raise UnsafeArchive(
                "Unsafe model archive",
                f"{name}: member {member!r} is a pickle, which torch.export.save never "
                f"writes; it is never loaded. Instead, {REEXPORT}",
                member=member,
            )


# what torch.export's deserializer resolves a node's target to and its verifier accepts: an
# operator, torch.ops.<namespace>.<op>[.<overload>] (higher-order ones included; aten's bitwise
# operators are named like Python's dunders), or a symbolic-shape builtin (_operator.add,
# math.trunc, torch.sym_max, ...); no other dunder, so no lookup can climb out of torch.ops
_OP_TARGET = re.compile(r"^torch\.ops\.(?!__)\w+\.(\w+)(\.(?!__)\w+)?$")
_SYM_TARGET = re.compile(r"^(_operator|math|torch)\.(?!__)\w+$")
_OPERATOR_BUILTINS = frozenset(
    "getitem add sub mul truediv floordiv mod pow neg pos abs eq ne le ge lt gt and_ or_ xor "
    "not_ invert lshift rshift".split()
)
_OP_DUNDERS = frozenset(
    f"__{n}__" for n in "and or xor lshift rshift iand ior ixor ilshift irshift".split()
)


def _is_operator(target: object) -> bool:
    if not isinstance(target, str):
        return False
    op = _OP_TARGET.match(target)
    if op is not None:
        return not op.group(1).startswith("__") or op.group(1) in _OP_DUNDERS
    sym = _SYM_TARGET.match(target)
    if sym is None:
        return False
    module, attr = target.split(".", 1)
    if module == "_operator":
        return attr in _OPERATOR_BUILTINS
    return module == "math" or "sym_" in attr


def _check_pt2_targets(zf: zipfile.ZipFile, name: str) -> None:
    """Every graph node of every serialized program calls an operator: a target the
    deserializer would resolve by attribute lookup elsewhere (torch.serialization.os.system)
    is refused, as torch's verifier refuses it when the worker loads the archive."""
    for member in zf.namelist():
        parts = PurePosixPath(member).parts
        if "models" not in parts or not member.endswith(".json"):
            continue
        try:
            stack: list[object] = [json.loads(zf.read(member))]
        except (ValueError, RecursionError) as e:
            raise UnsafeArchive(
                "Corrupt model archive",
                f"{name}: member {member!r} is not a serialized program ({type(e).__name__}); "
                f"{REEXPORT}",
                422,
                "corrupt",
                member,
            ) from e
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
                continue
            if not isinstance(item, dict):
                continue
            target = item.get("target")
            if "inputs" in item and "outputs" in item and target is not None:
                if not _is_operator(target):
                    raise UnsafeArchive(
                        "Unsafe model archive",
                        f"{name}: member {member!r} has a graph node calling {target!r}, "
                        f"which is not an operator. Instead, {REEXPORT}",
                        member=member,
                    )
            stack.extend(item.values())


def _pt2_tensor_configs(zf: zipfile.ZipFile, name: str) -> set[str]:
    """The raw tensor files the weights and constants configs name; refuses pickled entries
    and constants that are not tensors."""
    raw: set[str] = set()
    for member in zf.namelist():
        is_constants = member.endswith("_constants_config.json")
        if not (is_constants or member.endswith("_weights_config.json")):
            continue
        try:
            config = json.loads(zf.read(member)).get("config", {})
            entries = [(str(fqn), dict(entry)) for fqn, entry in config.items()]
        except (AttributeError, TypeError, ValueError, RecursionError) as e:
            raise UnsafeArchive(
                "Corrupt model archive",
                f"{name}: unreadable tensor config {member!r}",
                422,
                "corrupt",
                member,
            ) from e
        for fqn, entry in entries:
            if entry.get("use_pickle"):
                raise UnsafeArchive(
                    "Unsafe model archive",
                    f"{name}: {fqn!r} in {member!r} is stored as a pickle; torch.export.save "
                    f"writes plain tensors. Instead, {REEXPORT}",
                    member=member,
                )
            path_name = str(entry.get("path_name", ""))
            if is_constants and not path_name.startswith("tensor_"):
                raise UnsafeArchive(
                    "Unsafe model archive",
                    f"{name}: constant {fqn!r} in {member!r} is not a tensor; only tensor "
                    f"constants are accepted. Instead, {REEXPORT}",
                    member=member,
                )
            raw.add(path_name)
    return raw


# -------------------------------------------------------------------------------- TorchScript
# Python that TorchScript's serialized code never holds: importing, reflection, I/O.
_FORBIDDEN_NODES = (
    ast.Import,
    ast.ImportFrom,
    ast.Global,
    ast.Nonlocal,
    ast.Lambda,
    ast.Yield,
    ast.YieldFrom,
    ast.Await,
    ast.AsyncFunctionDef,
    ast.AsyncFor,
    ast.AsyncWith,
    ast.Try,
)
_FORBIDDEN_NAMES = frozenset(
    "eval exec compile open __import__ globals locals vars setattr delattr breakpoint input "
    "exit quit help memoryview os sys subprocess shutil socket builtins importlib pickle "
    "marshal ctypes pathlib io".split()
)
# reflection that reaches Python's interpreter; TorchScript's own operators (__not__,
# __getitem__, __is__, ...) are dunders too, so only these are refused
_REFLECTION = frozenset(
    "__import__ __builtins__ __globals__ __subclasses__ __class__ __bases__ __base__ __mro__ "
    "__code__ __dict__ __reduce__ __reduce_ex__ __getattribute__ __loader__ __spec__ __file__ "
    "__closure__ __func__ __self__ __module__ __qualname__ __init_subclass__ __new__ __del__ "
    "__setattr__ __delattr__ __getattr__".split()
)


def _code_problem(tree: ast.AST) -> str | None:
    bound = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
    }
    bound |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    for node in ast.walk(tree):
        if isinstance(node, _FORBIDDEN_NODES):
            return f"a Python {type(node).__name__.lower()} statement"
        ident: str | None = None
        if isinstance(node, ast.Name):
            ident = node.id
            if ident in _FORBIDDEN_NAMES and ident not in bound:
                return f"a reference to {ident!r}"
        elif isinstance(node, ast.Attribute):
            ident = node.attr
        if ident in _REFLECTION:
            return f"a reference to {ident!r}"
    return None


def check_torchscript(zf: zipfile.ZipFile, name: str) -> None:
    """Raise UnsafeArchive unless every pickle names only tensors and TorchScript classes and
    the code is TorchScript's serialized form."""
    check_members(zf, name)
    for info in zf.infolist():
        member = info.filename
        parts = PurePosixPath(member).parts
        if member.endswith("/"):
            continue
        if member.endswith((".pkl", ".debug_pkl")):
            check_pickle(
                zf.read(member),
                TORCHSCRIPT_GLOBALS,
                name,
                member,
                RESCRIPT,
                class_prefix=TORCHSCRIPT_CLASS_PREFIX,
            )
        elif "code" in parts[:2] and member.endswith(".py"):
            try:
                tree = ast.parse(zf.read(member).decode("utf-8"), member)
            except (SyntaxError, UnicodeDecodeError, ValueError, RecursionError) as e:
                raise UnsafeArchive(
                    "Unsafe model archive",
                    f"{name}: member {member!r} is not TorchScript code ({type(e).__name__}); "
                    f"{RESCRIPT}",
                    member=member,
                ) from e
            why = _code_problem(tree)
            if why:
                raise UnsafeArchive(
                    "Unsafe model archive",
                    f"{name}: member {member!r} holds {why}, which TorchScript never writes: "
                    f"code injected into the archive is never run. Instead, {RESCRIPT}",
                    member=member,
                )
        elif member.endswith((".py", ".pyc", ".so", ".pyd")):
            raise UnsafeArchive(
                "Unsafe model archive",
                f"{name}: member {member!r} is code outside the archive's code/ folder; {RESCRIPT}",
                member=member,
            )
