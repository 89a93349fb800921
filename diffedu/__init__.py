"""diffedu: learn diffusion models by building them.

The package's modules, in layers (each imports only from the layers below it), are drawn and listed in
docs/developing.md, "The package". The lessons import from it; it never imports from the lessons.
"""

__version__ = "0.1.0"
