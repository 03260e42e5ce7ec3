"""Every operating error's wire code is defined, and checked unique, in dfs/errors.py."""

from __future__ import annotations

import ast
from pathlib import Path

from vmstore.dfs import errors

REPO = Path(__file__).resolve().parents[2]


def _classes_with_a_code(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            # `code = 50`; a message's annotated field `code: int` is no error class.
            if not (isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                    and isinstance(statement.value.value, int)):
                continue
            if any(isinstance(t, ast.Name) and t.id == "code" for t in statement.targets):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: class {node.name}")
    return found


def test_no_error_code_is_defined_outside_errors_py() -> None:
    # dfs/errors.py registers its classes when it is imported; a subclass
    # defined elsewhere later is never registered, so its code could repeat
    # another's and a peer would raise the wrong class.
    outside = [
        where
        for root in ("dfs", "cli", "fuse")
        for path in sorted((REPO / root).rglob("*.py"))
        if path != REPO / "dfs" / "errors.py"
        for where in _classes_with_a_code(path)
    ]
    assert not outside, "error codes outside dfs/errors.py:\n" + "\n".join(outside)


def test_every_error_class_crosses_the_wire_as_itself() -> None:
    # Subclasses elsewhere without a code of their own (tls.PeerSpeaksNoTls)
    # are local refinements: they cross the wire as their parent.
    classes = [cls for cls in _all_subclasses(errors.DfsError)
               if cls.__module__ == errors.__name__]
    assert len(classes) == len(errors._BY_CODE)
    for cls in classes:
        assert errors._BY_CODE[cls.code] is cls
        error = errors.error_from_code(cls.code, "message", server_id=3)
        assert type(error) is cls
        assert (error.message, error.server_id) == ("message", 3)


def _all_subclasses(cls: type[errors.DfsError]) -> list[type[errors.DfsError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found
