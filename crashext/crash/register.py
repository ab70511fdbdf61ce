"""Make ``xa`` a crash command: ``crash> epython /abs/.../crashext/crash/register.py
[--path DIRS] [--alias | --register] [--quiet]``, normally from ~/.crashrc
(``crashext crashrc`` prints the lines).  See crashext.crash.register_main.

Runs inside PyKdump's embedded Python: standard library only until
sys.path holds crashext (found from this file's own location).
"""

import os
import sys

try:
    import pykdump.API  # noqa: F401  (its exit hook flushes stdout)
except Exception:       # not inside crash (tests import crashext directly)
    pass


def _here():
    f = globals().get("__file__")
    if not f or not os.path.isfile(f):
        f = sys.argv[0]
    return os.path.realpath(f)


def _main():
    # .../<root>/crashext/crash/register.py -> <root>
    root = os.path.dirname(os.path.dirname(os.path.dirname(_here())))
    if root not in sys.path:
        sys.path.append(root)
    try:
        from crashext.crash import register_main
    except Exception as e:
        sys.stdout.write("crashext: error: cannot import crashext from %s: "
                         "%s: %s\n" % (root, type(e).__name__, e))
        sys.stdout.flush()
        return
    register_main(sys.argv[1:])


_main()
