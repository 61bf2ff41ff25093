"""Our ``ssl`` package shadows the standard library's; everything that needs the real one must work."""

import subprocess
import sys

from conftest import ROOT

PROBE = """
import asyncio, ssl, urllib.request
assert ssl.__file__.endswith("ssl/__init__.py"), ssl.__file__   # ours, not the standard module
assert hasattr(ssl, "__path__")                                  # still a package for ssl.pretrain
ctx = ssl.create_default_context()
assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
assert ssl.PROTOCOL_TLS_CLIENT and ssl.OPENSSL_VERSION
opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
assert opener is not None

async def main():
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    server.close()
    await server.wait_closed()
    return await loop.run_in_executor(None, lambda: 42)

assert asyncio.run(main()) == 42
print("ok")
"""


def test_stdlib_ssl_api_served_by_our_package():
    # -c puts the working directory first on sys.path, exactly like python -m ssl.pretrain does.
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
