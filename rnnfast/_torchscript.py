"""torch.jit.script and rnnfast's modules.

TorchScript cannot compile the modules' forward (Python that checks and lays out the arguments, then calls the
ops through bindings and torch.func-aware routing), and its own error points at a line of rnnfast with a type
complaint. torch.jit.script asks every module it meets for __prepare_scriptable__ first, so that is where the
modules say what happened and what works instead: torch.jit.trace records their ops, as torch.compile and
torch.export do, and a model whose rnnfast modules are replaced by their traces scripts (tests/test_torchscript.py)."""


class NotScriptable:
    """Mixin for a module that torch.jit.script cannot compile: scripting it, or any model that holds it, raises
    NotImplementedError naming it and the ways that work."""

    def __prepare_scriptable__(self):
        name = f"rnnfast.{type(self).__name__}"
        raise NotImplementedError(
            f"torch.jit.script cannot compile {name}: its forward is Python that TorchScript does not take (and "
            "torch deprecates torch.jit.script for torch.compile and torch.export). torch.jit.trace records "
            f"{name}'s rnnfast ops instead: the traced module trains, takes other batch sizes and sequence "
            "lengths, and saves and loads with torch.jit.save/load (rnnfast imported, for its ops); replace the "
            "module in a model by its trace (model.rnn = torch.jit.trace(model.rnn, example_input)) and the model "
            "scripts. torch.compile(fullgraph=True) and torch.export trace it too."
        )
