"""What a pause measures: the plasticity probe and the diagnostics, one module each.

Each module registers its diagnostic (``registry.register("diagnostic", ...)``: its config schema,
range checks and place in the order); importing this package imports every module, so a new
diagnostic is one module here (``base.Diagnostic`` says what it declares). ``pause.run_pause`` runs
those due at a pause; ``config.DiagnosticsConfig`` is made from the registrations.
"""

from __future__ import annotations

from .. import registry

registry.load_modules(__name__, __path__)
