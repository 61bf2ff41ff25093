"""Curator's stage-1 package, which shares its name with the standard library's ``ssl``.

``python -m ssl.pretrain`` puts the repository root first on ``sys.path``, so this package shadows
the standard module for the whole process (urllib, asyncio, huggingface_hub...). To keep them
working, the standard module's source is executed into this namespace first: ``import ssl`` still
gives ``SSLContext``, ``create_default_context`` and the rest, and ``ssl.pretrain`` etc. remain
importable as submodules of this package.
"""

import os as _os
import sysconfig as _sysconfig


def _load_stdlib_ssl() -> None:
    path = _os.path.join(_sysconfig.get_paths()["stdlib"], "ssl.py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    exec(compile(source, path, "exec"), globals())


_load_stdlib_ssl()
del _load_stdlib_ssl
