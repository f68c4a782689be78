"""syno.codegen: PyTorch modules from operators (see docs/codegen.md).

Lazy exports: ``build_module``, ``operator_factory``, ``SynoModule`` (:mod:`.torch`),
``export_operator``, ``module_source`` (:mod:`.export`), ``compile_operator``, ``compile_model``
(:mod:`.registry`: the explicit tuning step).
"""

from __future__ import annotations

from syno._lazy import lazy_exports

_EXPORTS = {
    "torch": ["build_module", "operator_factory", "SynoModule"],
    "export": ["export_operator", "module_source"],
    "registry": ["compile_operator", "compile_model", "CompiledOperator"],
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
