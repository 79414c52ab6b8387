"""Optional bridges to other frameworks; each needs its extra (``pip install cfstream[faust]``)
and is imported by its own name, never by the core package."""
