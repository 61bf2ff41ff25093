"""The ``>>>`` examples in the library's docstrings hold (they are documentation that can rot)."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import adapt
import core
import eval as curator_eval
import ssl as curator_ssl


def _modules_with_examples() -> list[str]:
    """Every module of the four packages (subpackages included) whose source holds a ``>>>`` example."""
    names = []
    for pkg in (core, curator_ssl, adapt, curator_eval):
        for info in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}."):
            path = Path(info.module_finder.path) / (info.name.rsplit(".", 1)[1] + ("/__init__.py" if info.ispkg
                                                                                   else ".py"))
            if not info.name.endswith("__main__") and ">>> " in path.read_text(encoding="utf-8"):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has a '>>> ' line but no example doctest finds"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail (see above)"
