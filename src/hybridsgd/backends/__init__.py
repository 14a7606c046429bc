"""Backends supply time and transport; every decision comes from the core.

* ``sim`` — discrete-event virtual time (:mod:`hybridsgd.backends.sim`).
"""
