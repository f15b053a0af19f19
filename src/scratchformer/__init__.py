"""scratchformer: a modern transformer built from tensor operations up.

Layers (imports point downwards only): ``cli`` → ``report`` → ``experiments`` → ``training``
→ ``models`` → ``nn`` → ``functional``; ``data``, ``analysis`` and ``viz`` sit beside them.
"""

__version__ = "0.1.0"
