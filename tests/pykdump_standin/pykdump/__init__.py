"""Stand-in for the PyKdump package (test code; see ../crash.py).

Only ``pykdump.API`` is provided: the one module PyKdump programs import.
"""

__version__ = "3.5"          # the PyKdump release the stand-in imitates
STANDIN = True               # real PyKdump has no such attribute

minimal_cmod_version = "3.2.0"


def require_cmod_version(version):
    return True
