"""syno.codegen: PyTorch modules from operators (see docs/codegen.md).

Lazy exports: ``build_module``, ``operator_factory``, ``SynoModule`` (:mod:`.torch`),
``export_operator``, ``module_source`` (:mod:`.export`), ``compile_operator``, ``compile_model``
(:mod:`.registry`: the explicit tuning step).
"""

_EXPORTS = {
    "build_module": "torch", "operator_factory": "torch", "SynoModule": "torch",
    "export_operator": "export", "module_source": "export",
    "compile_operator": "registry", "compile_model": "registry",
}


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'syno.codegen' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"syno.codegen.{mod}"), name)


__all__ = sorted(_EXPORTS)
