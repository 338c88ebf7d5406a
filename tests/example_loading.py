"""Imports an example script from examples/ as a module, so tests reuse its definitions instead of copying them."""

import importlib.util
import os
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def load_example(name):
    spec = importlib.util.spec_from_file_location(name[: -len(".py")], os.path.join(EXAMPLES, name))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, EXAMPLES)  # the examples import their shared module, example_support, from there
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(EXAMPLES)
    return module
