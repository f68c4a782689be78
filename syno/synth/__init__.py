"""syno.synth"""
