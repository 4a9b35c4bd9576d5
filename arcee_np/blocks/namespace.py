"""``array_namespace`` remembered per input types: a decode step asks for it a few hundred times.

The namespace array-api-compat returns depends only on the types of the arrays (NumPy, CuPy,
array_api_strict ...), so the answer for a tuple of types is looked up once and reused.
"""

from array_api_compat import array_namespace as _array_namespace

_known: dict = {}


def array_namespace(*arrays):
    """The array-API namespace of ``arrays`` (as array_api_compat.array_namespace), cached by type."""
    key = tuple(map(type, arrays))
    namespace = _known.get(key)
    if namespace is None:
        namespace = _known[key] = _array_namespace(*arrays)
    return namespace
