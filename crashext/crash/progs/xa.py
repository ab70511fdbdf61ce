"""crash runs this file for ``xa ARGS`` (crashext-xa-shim).

Found by PyKdump on PYKDUMPPATH (the ``crash-xa`` wrapper puts this
directory there) or run through ``alias xa epython /abs/.../xa.py``.  It
finds crashext from its own location, builds a PykdumpMemory and calls
crashext.frontdoor.run_xa (see crashext.crash.shim_main).  Standard
library only until sys.path holds crashext.
"""

import os
import sys

try:
    import pykdump.API  # noqa: F401  (exit hook flushes stdout; enter hook strips --debug N etc.)
except Exception:
    pass


def _here():
    f = globals().get("__file__")
    if not f or not os.path.isfile(f):
        f = sys.argv[0]
    return os.path.realpath(f)


def _main():
    # .../<root>/crashext/crash/progs/xa.py -> <root>
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(_here()))))
    if root not in sys.path:
        sys.path.append(root)
    try:
        from crashext.crash import shim_main
    except Exception as e:
        sys.stdout.write("xa: error: cannot import crashext from %s: %s: %s "
                         "(run 'crashext crashrc' again)\n"
                         % (root, type(e).__name__, e))
        sys.stdout.flush()
        return
    shim_main(sys.argv[1:])


_main()
