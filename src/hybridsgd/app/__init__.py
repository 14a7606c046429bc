"""The application layer: many runs at once. ``sweep`` runs configs side by side (a process
pool, or Ray tasks), ``compare`` runs policies on one config and builds the report,
``tuning`` tunes each policy on its own (``space``: grids and search spaces), and
``inputs`` is the check both commands make of what they are given. ``hybridsgd.api``
(``h.compare``, ``h.tune``) is their public face; the command line (``hybridsgd.cli``)
sits on top."""
