"""The ``>>>`` examples in the library's docstrings hold (they are documentation that can rot)."""

import doctest
import importlib
import pkgutil

import pytest

import adapt
import core
import eval as curator_eval
import ssl as curator_ssl

MODULES = sorted(f"{pkg.__name__}.{m.name}" for pkg in (core, curator_ssl, adapt, curator_eval)
                 for m in pkgutil.iter_modules(pkg.__path__) if m.name != "__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail (see above)"
