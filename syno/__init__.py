"""syno: synthesize neural operators from fine-grained primitives and find fast, accurate ones."""

__version__ = "0.1.0"
