"""Guided synthesis: canonical enumeration of operators, bounds, sampling (see docs/synthesis.md).

Public API (imported lazily so that ``syno.synth.protocol`` stays light):

* :class:`~syno.synth.options.SynthOptions` -- the space's options and presets;
* :class:`~syno.synth.space.SynthSpace`, :class:`~syno.synth.space.Node`,
  :func:`~syno.synth.space.iterate_finals`;
* :func:`~syno.synth.sampler.sample_operators`, :func:`~syno.synth.sampler.sample`;
* :func:`~syno.synth.pathfind.path_of`; :func:`~syno.synth.canon.canonical_form`.
"""

_EXPORTS = {
    "SynthOptions": "options", "Problem": "options",
    "SynthSpace": "space", "Node": "space", "iterate_finals": "space",
    "sample_operators": "sampler", "sample": "sampler",
    "path_of": "pathfind", "canonical_form": "canon", "canonical_hash": "canon",
    "Next": "protocol", "path_to_str": "protocol", "path_from_str": "protocol",
}


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'syno.synth' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"syno.synth.{mod}"), name)


__all__ = sorted(_EXPORTS)
