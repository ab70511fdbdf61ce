"""drgn plugin entry point (``drgn.plugins`` group): registers the ``xa``
command in drgn and drgn-crash.  (Commands are being wired in.)"""
