"""crashext: find page-cache corruption (large-folio XArray damage) in vmcores.

The engine (everything except ``cli``, ``drgn_plugin``, ``crash/`` and the
backends) is pure Python with no third-party import, so it runs inside
PyKdump's embedded interpreter as well as standalone with drgn.
"""

__version__ = "0.1.0"
